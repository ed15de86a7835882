import { constants, deflateRawSync } from 'node:zlib'
import { webSocketFrame } from './wire-format.js'

/**
 * zlib level of the shared compressed frames. The deflate runs synchronously on the event loop
 * (see `FrameCompression`), so its cost is bounded by choosing the fastest level: Yjs updates
 * are repetitive (client IDs, clocks, text), and level 1 keeps most of the gain of level 6 at a
 * fraction of the time (bench/README.md, "Compression").
 */
const LEVEL = constants.Z_BEST_SPEED

/**
 * RFC 7692 §7.2.1: the sender flushes the deflate stream with an empty stored block and removes
 * its last four octets (0x00 0x00 0xff 0xff); the receiver appends them again.
 */
const SYNC_FLUSH_TAIL = 4

/** Recorded for a payload whose deflate did not come out smaller: it goes out plain. */
const NOT_SMALLER = new Uint8Array(0)

/** What a compression run is reported to (metrics). */
export interface CompressionCounters {
  compressed(inputBytes: number, outputBytes: number): void
}

/**
 * permessage-deflate for frames many sockets share (issue 19, item 8).
 *
 * Each payload is deflated at most once, however many recipients it has: the compressed frame is
 * remembered against the payload buffer itself (a WeakMap, so it goes when the payload does).
 * A room encodes a broadcast once per wire format and hands every member the same buffer, and
 * joiners with the same state vector share one sync reply buffer, so both are compressed once.
 * This only works because weft negotiates `server_no_context_takeover`: every message is
 * compressed on its own, with no history, so one compressed payload is valid for every socket.
 *
 * The deflate is synchronous, on purpose: a frame's place among a connection's frames is decided
 * when it is written, and the frames of a room must reach each member in the order the room sent
 * them. An asynchronous deflate would have to hold every later frame to every recipient (plain
 * ones to other members included, or two members could see updates and awareness in different
 * orders) until it finished. Its cost is paid once per broadcast, not per recipient, only above
 * the threshold, at the fastest level.
 */
export class FrameCompression {
  private readonly frames = new WeakMap<Uint8Array, Uint8Array>()

  constructor(
    /** Payloads shorter than this go out plain: a deflate header costs more than it saves. */
    readonly thresholdBytes: number,
    private readonly counters: CompressionCounters,
  ) {}

  /**
   * The whole WebSocket frame (final, binary, RSV1 set) carrying `payload` compressed, or null
   * when it goes out plain: below the threshold, or no smaller compressed.
   */
  wireFrame(payload: Uint8Array): Uint8Array | null {
    if (payload.length < this.thresholdBytes) return null
    let frame = this.frames.get(payload)
    if (frame === undefined) {
      frame = this.compress(payload)
      this.frames.set(payload, frame)
    }
    return frame === NOT_SMALLER ? null : frame
  }

  private compress(payload: Uint8Array): Uint8Array {
    const deflated = deflateRawSync(payload, { level: LEVEL, finishFlush: constants.Z_SYNC_FLUSH })
    const body = deflated.subarray(0, deflated.length - SYNC_FLUSH_TAIL)
    this.counters.compressed(payload.length, body.length)
    if (body.length >= payload.length) return NOT_SMALLER
    return webSocketFrame(body, true)
  }
}
