import { createHmac, timingSafeEqual } from 'node:crypto'

/**
 * The webhook signature (issue 16): HMAC-SHA256 with --webhook-secret over `${timestamp}.${body}`,
 * sent as `Weft-Signature: t=<unix seconds>,v1=<hex>`. The timestamp is inside the signed text,
 * so a receiver that refuses old timestamps refuses replays of captured requests too.
 */

/** How old a delivery a receiver should still accept, in seconds (README: receivers refuse older ones). */
export const SIGNATURE_TOLERANCE_SECONDS = 5 * 60

export function signature(secret: string, timestampSeconds: number, body: string): string {
  return createHmac('sha256', secret).update(`${timestampSeconds}.${body}`).digest('hex')
}

/** The value of the Weft-Signature header. */
export function signatureHeader(secret: string, timestampSeconds: number, body: string): string {
  return `t=${timestampSeconds},v1=${signature(secret, timestampSeconds, body)}`
}

/**
 * True when `header` is a Weft-Signature over `body` made with `secret` within `toleranceSeconds`
 * of `nowSeconds` (either side: clocks differ). What a receiver does; used by weft's own tests.
 */
export function verifySignatureHeader(secret: string, header: string, body: string, nowSeconds = Math.floor(Date.now() / 1000), toleranceSeconds = SIGNATURE_TOLERANCE_SECONDS): boolean {
  const parts = new Map(header.split(',').map((part) => {
    const eq = part.indexOf('=')
    return [part.slice(0, eq).trim(), part.slice(eq + 1).trim()] as const
  }))
  const timestamp = Number(parts.get('t'))
  const given = parts.get('v1')
  if (!Number.isSafeInteger(timestamp) || given === undefined || !/^[0-9a-f]{64}$/.test(given)) return false
  if (Math.abs(nowSeconds - timestamp) > toleranceSeconds) return false
  return timingSafeEqual(Buffer.from(given, 'hex'), Buffer.from(signature(secret, timestamp, body), 'hex'))
}
