import { SignJWT } from 'jose'

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
