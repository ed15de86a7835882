import { request as httpRequest } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { signatureHeader } from './signature.js'

/** The outcome of one delivery attempt: delivered on any 2xx answer, else why not. */
export type AttemptResult = { ok: true } | { ok: false; error: string }

export interface Attempt {
  url: string
  deliveryId: string
  type: string
  body: string
  secret: string
  timeoutMs: number
}

/**
 * POSTs one signed event. The signature is made now, with the current time, so a retry hours
 * later is not refused by a receiver as a replay. Bounded by `timeoutMs` from start to the end of
 * the answer (a receiver that accepts the connection and never answers is a failed attempt);
 * `signal` aborts it (shutdown).
 */
export function attemptDelivery(attempt: Attempt, signal: AbortSignal): Promise<AttemptResult> {
  const timestamp = Math.floor(Date.now() / 1000)
  const url = new URL(attempt.url)
  const send = url.protocol === 'https:' ? httpsRequest : httpRequest
  return new Promise<AttemptResult>((resolve) => {
    let settled = false
    const finish = (result: AttemptResult): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      signal.removeEventListener('abort', onAbort)
      resolve(result)
    }
    const req = send(
      url,
      {
        method: 'POST',
        agent: false,
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(attempt.body),
          'user-agent': 'weft-webhooks',
          'weft-event': attempt.type,
          'weft-delivery': attempt.deliveryId,
          'weft-timestamp': String(timestamp),
          'weft-signature': signatureHeader(attempt.secret, timestamp, attempt.body),
        },
      },
      (res) => {
        const status = res.statusCode ?? 0
        // The answer's body is not used; reading it to its end lets the socket close cleanly.
        res.resume()
        res.on('end', () => finish(status >= 200 && status < 300 ? { ok: true } : { ok: false, error: `HTTP ${status}` }))
        res.on('error', (err) => finish({ ok: false, error: err.message }))
      },
    )
    const timer = setTimeout(() => {
      finish({ ok: false, error: `no answer within ${attempt.timeoutMs} ms` })
      req.destroy()
    }, attempt.timeoutMs)
    const onAbort = (): void => {
      finish({ ok: false, error: 'aborted at shutdown' })
      req.destroy()
    }
    signal.addEventListener('abort', onAbort)
    req.on('error', (err: NodeJS.ErrnoException) => finish({ ok: false, error: err.code ?? err.message }))
    req.end(attempt.body)
  })
}
