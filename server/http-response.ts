import { STATUS_CODES, type ServerResponse } from 'node:http'
import { HttpError, type HttpErrorCode } from './codes.js'

/** How long a refused client should wait before it comes back, in seconds. */
export const RETRY_AFTER_SECONDS = 5

export type Headers = Record<string, string | number>

export function sendJson(res: ServerResponse, status: number, body: unknown, extraHeaders: Headers = {}): void {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...extraHeaders })
  res.end(text)
}

/** The contract's error answer: `{error, message}` with the code's status; 429/503 carry Retry-After. */
export function sendError(res: ServerResponse, code: HttpErrorCode, message: string, extraHeaders: Headers = {}): void {
  if (res.headersSent) {
    res.destroy()
    return
  }
  const status = HttpError[code]
  const headers: Headers = { ...extraHeaders }
  if ((status === 503 || status === 429) && headers['retry-after'] === undefined) headers['retry-after'] = RETRY_AFTER_SECONDS
  sendJson(res, status, { error: code, message }, headers)
}

/**
 * The same error as raw HTTP/1.1 bytes, for sockets that never became a request/response pair:
 * refused WebSocket upgrades and requests Node's parser rejected.
 */
export function rawError(code: HttpErrorCode, message: string): string {
  const status = HttpError[code]
  const body = JSON.stringify({ error: code, message })
  const retry = status === 503 || status === 429 ? `Retry-After: ${RETRY_AFTER_SECONDS}\r\n` : ''
  return (
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\n` +
    `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${retry}Connection: close\r\n\r\n${body}`
  )
}
