// HTTP requests and WebSocket upgrades made by hand, for tests that look at the answer itself.
import { randomBytes } from 'node:crypto'
import { request, type IncomingHttpHeaders } from 'node:http'
import { connect, type Socket } from 'node:net'
import { WebSocket } from 'ws'
import { withDeadline } from './wait.js'

export interface HttpAnswer {
  status: number
  headers: IncomingHttpHeaders
  body: string
}

/**
 * One HTTP request to 127.0.0.1:`port` on its own socket (no keep-alive), `path` as written, with
 * `body` (and its Content-Length) when given; or a WebSocket upgrade request when `upgrade` (then a
 * 101 resolves with an empty body and the socket is destroyed).
 */
export function httpRequest(port: number, path: string, options: { method?: string; headers?: Record<string, string>; body?: Uint8Array | string; upgrade?: boolean } = {}): Promise<HttpAnswer> {
  const headers: Record<string, string> = { ...options.headers }
  if (options.body !== undefined) headers['content-length'] = String(Buffer.byteLength(options.body))
  if (options.upgrade === true) {
    Object.assign(headers, {
      Connection: 'Upgrade',
      Upgrade: 'websocket',
      'Sec-WebSocket-Version': '13',
      'Sec-WebSocket-Key': randomBytes(16).toString('base64'),
    })
  }
  return withDeadline(
    new Promise<HttpAnswer>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path, method: options.method ?? 'GET', headers, agent: false })
      req.on('response', (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (chunk: string) => {
          body += chunk
        })
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
      })
      req.on('upgrade', (res, socket) => {
        socket.destroy()
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: '' })
      })
      req.on('error', reject)
      req.end(options.body)
    }),
    `${options.method ?? 'GET'} ${path}`,
  )
}

/** An answer whose body is kept as bytes (binary Yjs updates), from `httpBytes`. */
export interface BytesAnswer {
  status: number
  body: Buffer
}

/** One request to the server at `base` (an http:// URL) on its own socket; the body comes back as bytes. */
export function httpBytes(base: string, method: string, path: string, options: { headers?: Record<string, string>; body?: Uint8Array | string; timeoutMs?: number } = {}): Promise<BytesAnswer> {
  const headers: Record<string, string> = { ...options.headers }
  if (options.body !== undefined) headers['content-length'] = String(Buffer.byteLength(options.body))
  return withDeadline(
    new Promise<BytesAnswer>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: Number(new URL(base).port), method, path, headers, agent: false }, (res) => {
        const chunks: Buffer[] = []
        res.on('data', (chunk: Buffer) => chunks.push(chunk))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }))
      })
      req.on('error', reject)
      req.end(options.body)
    }),
    `${method} ${path}`,
    options.timeoutMs,
  )
}

/**
 * A WebSocket handshake done by hand over TCP; resolves with the socket once the 101 is read.
 * Whatever the server sends from then on (sync step 1, pings, a close) is read and ignored: the
 * client never answers anything.
 */
export function silentUpgrade(port: number, path: string, what = 'the raw upgrade'): Promise<Socket> {
  return withDeadline(
    new Promise<Socket>((resolve, reject) => {
      const socket = connect(port, '127.0.0.1')
      let head = ''
      const onData = (chunk: Buffer): void => {
        head += chunk.toString('latin1')
        if (!head.includes('\r\n\r\n')) return
        socket.off('data', onData)
        if (!head.startsWith('HTTP/1.1 101')) {
          reject(new Error(`upgrade refused: ${head.split('\r\n')[0]}`))
          return
        }
        socket.on('data', () => {})
        resolve(socket)
      }
      socket.on('data', onData)
      socket.on('error', reject)
      socket.write(
        `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      )
    }),
    what,
  )
}

/** What a `ws` client's upgrade of `url` came to: 101 when it opened (the socket is then terminated), else the refusal. */
export function upgradeOutcome(url: string, headers: Record<string, string> = {}): Promise<{ status: number; retryAfter: string | undefined }> {
  return withDeadline(
    new Promise((resolve) => {
      const socket = new WebSocket(url, { headers })
      socket.once('unexpected-response', (_req, res) => {
        resolve({ status: res.statusCode ?? 0, retryAfter: res.headers['retry-after'] })
        res.resume()
        socket.terminate()
      })
      socket.once('open', () => {
        resolve({ status: 101, retryAfter: undefined })
        socket.terminate()
      })
      socket.once('error', () => {})
    }),
    `upgrade of ${url}`,
  )
}

/** The HTTP status of a refused upgrade, or 101 when the socket opened. */
export async function upgradeStatus(url: string, headers: Record<string, string> = {}): Promise<number> {
  return (await upgradeOutcome(url, headers)).status
}

/** The upgrade's HTTP answer when the server refuses it; rejects when it is admitted. */
export async function refusedUpgrade(url: string): Promise<{ status: number; retryAfter: string | undefined }> {
  const outcome = await upgradeOutcome(url)
  if (outcome.status === 101) throw new Error(`${url} was admitted`)
  return outcome
}

/** Waits for the upgrade to be refused; resolves with the HTTP status. */
export async function refusedWith(url: string): Promise<number> {
  return (await refusedUpgrade(url)).status
}

/** POSTs `update` to the room's updates endpoint under `http` (a base URL) on its own socket; resolves with the status. */
export function postUpdateStatus(http: string, room: string, update: Uint8Array): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(`${http}/api/rooms/${room}/updates`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, agent: false }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.on('error', reject)
    req.end(Buffer.from(update))
  })
}
