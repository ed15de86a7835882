import { readFile } from 'node:fs/promises'
import { createLocalJWKSet, errors as joseErrors, type CryptoKey, type JSONWebKeySet, type JWSHeaderParameters, type FlattenedJWSInput } from 'jose'

/** Token algorithms verified against a JWKS (the issue: RS256, ES256, EdDSA; `Ed25519` is EdDSA's RFC 9864 name). */
export const JWKS_ALGORITHMS: readonly string[] = Object.freeze(['RS256', 'ES256', 'EdDSA', 'Ed25519'])

/** Largest JWKS document read: an identity provider's set is a few kilobytes; more is a wrong URL. */
export const MAX_JWKS_BYTES = 1024 * 1024

/** How long one fetch of a JWKS URL may take. */
const FETCH_TIMEOUT_MS = 5_000

export interface JwksOptions {
  /** A file path, or an http(s) URL. */
  source: string
  /** Least time between two loads triggered by tokens (an unknown `kid`, or keys not loaded yet). */
  refreshCooldownMs: number
  /** Keys older than this are loaded again at the next token, so removed keys stop verifying. */
  maxAgeMs: number
  /** Every load, with its outcome; for metrics and logs. */
  onLoad?(result: { ok: true; keys: number } | { ok: false; error: string }): void
  now?(): number
}

type KeyLookup = ReturnType<typeof createLocalJWKSet>

/** A JWKS source is a URL when it starts with http:// or https://, else a file path. */
export function isJwksUrl(source: string): boolean {
  return /^https?:\/\//i.test(source)
}

/** Parses a JWKS document; throws with a short reason when it is not one. */
export function parseJwks(text: string): JSONWebKeySet {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    throw new Error('not JSON')
  }
  const keys = (value as { keys?: unknown } | null)?.keys
  if (!Array.isArray(keys) || !keys.every((key) => typeof key === 'object' && key !== null && !Array.isArray(key))) {
    throw new Error('not a JWKS: no "keys" array of objects')
  }
  // createLocalJWKSet validates the rest (and throws JWKSInvalid).
  createLocalJWKSet(value as JSONWebKeySet)
  return value as JSONWebKeySet
}

/**
 * The verification keys of an identity provider, from a JWKS file or URL, cached.
 *
 * A token whose `kid` is not in the cache (a key rotation), or any token while nothing is loaded
 * yet (the URL was unreachable at start), loads the set again, but at most once per
 * `refreshCooldownMs` however many such tokens arrive: tokens with made-up `kid`s cannot make weft
 * hammer the identity provider. Keys older than `maxAgeMs` are loaded again (once, for everyone
 * waiting) so that a key removed from the set stops verifying. Concurrent loads are one load.
 */
export class JwksKeys {
  private lookup: KeyLookup | null = null
  private loadedAt = -Infinity
  private lastAttempt = -Infinity
  private inFlight: Promise<void> | null = null
  private readonly now: () => number
  /** Loads attempted so far (for tests and the status of the cache). */
  loads = 0

  constructor(private readonly options: JwksOptions) {
    this.now = options.now ?? Date.now
  }

  get source(): string {
    return this.options.source
  }

  /** Whether a set is loaded (tokens can be verified). */
  get ready(): boolean {
    return this.lookup !== null
  }

  /** Loads the set now (at start); resolves false when it failed, the error is reported to onLoad. */
  async load(): Promise<boolean> {
    await this.refresh()
    return this.lookup !== null
  }

  /** jose's key lookup: the key for a token's header, loading the set again when allowed. */
  readonly resolve = async (header: JWSHeaderParameters, token: FlattenedJWSInput): Promise<CryptoKey> => {
    if (this.lookup === null || this.now() - this.loadedAt >= this.options.maxAgeMs) await this.refreshIfAllowed()
    if (this.lookup === null) throw new JwksUnavailableError()
    try {
      return await this.lookup(header, token)
    } catch (err) {
      if (!(err instanceof joseErrors.JWKSNoMatchingKey)) throw err
      // A rotation: the provider signs with a key published after the set was cached.
      if (!(await this.refreshIfAllowed())) throw err
      return await this.lookup(header, token)
    }
  }

  /** Loads the set again unless one was attempted within the cooldown; true when it did. */
  private async refreshIfAllowed(): Promise<boolean> {
    if (this.inFlight !== null) {
      await this.inFlight
      return true
    }
    if (this.now() - this.lastAttempt < this.options.refreshCooldownMs) return false
    await this.refresh()
    return true
  }

  private refresh(): Promise<void> {
    this.inFlight ??= this.fetchSet().finally(() => {
      this.inFlight = null
    })
    return this.inFlight
  }

  private async fetchSet(): Promise<void> {
    this.lastAttempt = this.now()
    this.loads++
    try {
      const jwks = parseJwks(await this.read())
      this.lookup = createLocalJWKSet(jwks)
      this.loadedAt = this.now()
      this.options.onLoad?.({ ok: true, keys: jwks.keys.length })
    } catch (err) {
      // A failed load keeps the keys there were: an identity provider's outage must not turn
      // away every user whose token the cached keys still verify.
      this.options.onLoad?.({ ok: false, error: err instanceof Error ? err.message : String(err) })
    }
  }

  private async read(): Promise<string> {
    const { source } = this.options
    if (!isJwksUrl(source)) {
      const bytes = await readFile(source)
      if (bytes.length > MAX_JWKS_BYTES) throw new Error(`larger than ${MAX_JWKS_BYTES} bytes`)
      return bytes.toString('utf8')
    }
    const response = await fetch(source, { signal: AbortSignal.timeout(FETCH_TIMEOUT_MS), redirect: 'follow', headers: { accept: 'application/json' } })
    if (!response.ok) throw new Error(`HTTP ${response.status}`)
    const declared = Number(response.headers.get('content-length') ?? '0')
    if (declared > MAX_JWKS_BYTES) throw new Error(`larger than ${MAX_JWKS_BYTES} bytes`)
    // Read in chunks and stop past the bound: a body without a length must not fill memory.
    const chunks: Buffer[] = []
    let bytes = 0
    for await (const chunk of response.body ?? []) {
      bytes += (chunk as Uint8Array).byteLength
      if (bytes > MAX_JWKS_BYTES) throw new Error(`larger than ${MAX_JWKS_BYTES} bytes`)
      chunks.push(Buffer.from(chunk as Uint8Array))
    }
    return Buffer.concat(chunks).toString('utf8')
  }
}

/** No key set is loaded (the JWKS URL has not answered yet): the token cannot be checked. */
export class JwksUnavailableError extends Error {
  constructor() {
    super('the signing keys of the identity provider are not available')
    this.name = 'JwksUnavailableError'
  }
}
