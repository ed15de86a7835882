import { JwtAuthorizer, openAccess, type Authorizer } from './access.js'
import type { WeftOptions } from './config.js'
import { JwksKeys, isJwksUrl } from './jwks.js'
import type { Logger } from './logger.js'
import type { ServerMetrics } from './metrics.js'
import { RevocationAwareAuthorizer, RevocationList } from './revocation.js'

export interface TokenAccess {
  /** Open mode when neither --auth-secret nor --auth-jwks is set; else tokens, minus revoked ones. */
  authorizer: Authorizer
  /** The identity provider's keys (--auth-jwks); null without. */
  jwks: JwksKeys | null
  revocations: RevocationList
}

/** The authorizer the settings ask for: HS256 (--auth-secret), a JWKS (--auth-jwks), or both. */
export function createTokenAccess(options: Readonly<WeftOptions>, metrics: ServerMetrics, log: Logger): TokenAccess {
  const revocations = new RevocationList(options.authMaxRevocations, () => metrics.revocationEvictions.inc())
  const jwks =
    options.authJwks === null
      ? null
      : new JwksKeys({
          source: options.authJwks,
          refreshCooldownMs: options.authJwksRefreshSeconds * 1000,
          maxAgeMs: options.authJwksMaxAgeSeconds * 1000,
          onLoad: (result) => {
            metrics.jwksLoads.inc({ result: result.ok ? 'ok' : 'error' })
            // The URL may carry credentials in its user part: only its origin is logged.
            const source = isJwksUrl(options.authJwks as string) ? new URL(options.authJwks as string).origin : options.authJwks
            if (result.ok) log.info({ source, keys: result.keys }, 'jwks loaded')
            else log.error({ source, error: result.error }, 'jwks could not be loaded; tokens signed by the identity provider are refused until it loads (cached keys still verify)')
          },
        })
  if (options.authSecret === null && jwks === null) return { authorizer: openAccess, jwks, revocations }
  const tokens = new JwtAuthorizer(options.authSecret, {
    keys: jwks,
    issuer: options.authIssuer,
    audience: options.authAudience,
    clockSkewSeconds: options.authClockSkewSeconds,
  })
  return { authorizer: new RevocationAwareAuthorizer(tokens, revocations, () => metrics.revokedRefusals.inc()), jwks, revocations }
}
