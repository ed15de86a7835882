import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose'

export interface TokenOptions {
  /** The HS256 key, as the server's --auth-secret. */
  secret: string
  subject: string
  /** exp is this far from now; 600 unless told. */
  expiresInSeconds?: number
  /** Whether to set iat (now); true unless told. */
  issuedAt?: boolean
}

/** An HS256 JWT as weft's --auth-secret verifies it, with `claims` (rooms, access...) in its payload. */
export async function signToken(claims: Record<string, unknown>, options: TokenOptions): Promise<string> {
  const now = Math.floor(Date.now() / 1000)
  const jwt = new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setSubject(options.subject)
  if (options.issuedAt ?? true) jwt.setIssuedAt(now)
  return jwt.setExpirationTime(now + (options.expiresInSeconds ?? 600)).sign(new TextEncoder().encode(options.secret))
}

export interface IdentityProviderKey {
  alg: 'RS256' | 'ES256' | 'EdDSA'
  kid: string
  privateKey: CryptoKey
  /** The public half as a JWK, with `kid`, `alg` and `use`: one entry of a JWKS. */
  jwk: JWK
}

/** A key pair as an identity provider holds it (generated here, never a fixture). */
export async function identityProviderKey(alg: IdentityProviderKey['alg'], kid: string): Promise<IdentityProviderKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true })
  return { alg, kid, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' } }
}

/** A JWT as an identity provider signs it: `kid` in the header, `iss`/`aud` when given. */
export async function signWithKey(
  key: IdentityProviderKey,
  claims: Record<string, unknown>,
  options: { subject: string; issuer?: string; audience?: string | string[]; expiresInSeconds?: number; kid?: string },
): Promise<string> {
  const now = Math.floor(Date.now() / 1000)
  const jwt = new SignJWT(claims).setProtectedHeader({ alg: key.alg, kid: options.kid ?? key.kid }).setSubject(options.subject).setIssuedAt(now)
  if (options.issuer !== undefined) jwt.setIssuer(options.issuer)
  if (options.audience !== undefined) jwt.setAudience(options.audience)
  return jwt.setExpirationTime(now + (options.expiresInSeconds ?? 600)).sign(key.privateKey)
}
