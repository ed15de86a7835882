import type { WebSocket } from 'ws'

/**
 * The one place weft reads `ws` internals (ws 8.x; test/compression-ws-internals.test.ts fails
 * if an upgrade changes them).
 *
 * Why: the shared compressed frames (frame-compression.ts) are only valid for a socket whose
 * negotiated permessage-deflate has `server_no_context_takeover` and the full 15-bit window (a
 * client may ask for a smaller `server_max_window_bits`; such a socket gets plain frames). `ws`
 * makes public only the extension's name (`WebSocket#extensions`), not its parameters, which
 * live on the extension object in `_extensions`.
 */
interface NegotiatedParams {
  server_no_context_takeover?: boolean
  server_max_window_bits?: number | boolean
}

interface WithExtensions {
  _extensions?: Record<string, { params?: NegotiatedParams | null } | undefined>
}

/** zlib's largest window, which the shared frames are compressed with. */
const FULL_WINDOW_BITS = 15

/** Whether `socket` can receive the shared compressed frames weft writes itself. */
export function takesSharedDeflate(socket: WebSocket): boolean {
  const params = (socket as unknown as WithExtensions)._extensions?.['permessage-deflate']?.params
  if (params === undefined || params === null) return false
  if (params.server_no_context_takeover !== true) return false
  const bits = params.server_max_window_bits
  return bits === undefined || bits === true || bits === FULL_WINDOW_BITS
}

/**
 * Inflations of client messages running at once, for the whole process (ws's `concurrencyLimit`
 * is one limiter shared by every socket): libuv's default thread pool size, so inflating never
 * starves file system work (LevelDB) of threads.
 */
const ZLIB_CONCURRENCY = 4

/**
 * The `perMessageDeflate` option of the WebSocketServer for --compression. ws's `maxPayload`
 * bounds the inflated size of a client message (a small frame that inflates past
 * --max-message-bytes closes with 1009 as soon as the inflated bytes pass it).
 */
export function deflateNegotiation(thresholdBytes: number): {
  serverNoContextTakeover: true
  clientNoContextTakeover: true
  concurrencyLimit: number
  threshold: number
} {
  return { serverNoContextTakeover: true, clientNoContextTakeover: true, concurrencyLimit: ZLIB_CONCURRENCY, threshold: thresholdBytes }
}
