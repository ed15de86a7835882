import * as Y from 'yjs'
import { framePayload, varUintSize, writeVarUint } from '../protocol/varuint-writer.js'

/** The longest varuint of a length below 2^35: room left before the update for its length. */
const MAX_LENGTH_BYTES = 5

/**
 * A Yjs update encoder (V1) that writes into one buffer sized up front, after `reserve` free
 * bytes, and hands out a view of that buffer instead of a copy while everything fitted.
 */
class PresizedUpdateEncoder extends Y.UpdateEncoderV1 {
  constructor (reserve: number, capacity: number) {
    super()
    this.restEncoder.cbuf = new Uint8Array(reserve + capacity)
    this.restEncoder.cpos = reserve
  }

  override toUint8Array (): Uint8Array {
    const rest = this.restEncoder
    return rest.bufs.length === 0 ? rest.cbuf.subarray(0, rest.cpos) : super.toUint8Array()
  }
}

/**
 * A sync step 2 frame: `prefix`, then the document's state as an update against `stateVector`
 * (what `Y.encodeStateAsUpdate` returns) as var-bytes.
 *
 * The update is encoded straight into the frame's buffer, sized from `capacityHint` (bytes the
 * update is expected to take at most), with room before it for `prefix` and the length. Encoding
 * and then framing takes three buffers of the document's size (the encoder's, doubling as it
 * grows, its copy, and the frame): for a 20 MB document on a VM, where touching fresh memory is
 * what costs, about 300 ms of the event loop against 100 ms for one. A hint too small costs only
 * what encoding and framing cost anyway: the encoder grows and its copy keeps the reserved bytes
 * in front; one far too big costs a copy.
 */
export function encodeFramedState (doc: Y.Doc, stateVector: Uint8Array, prefix: Uint8Array, capacityHint: number): Uint8Array {
  const reserve = prefix.length + MAX_LENGTH_BYTES
  const encoded = encodePresized(doc, stateVector, reserve, capacityHint)
  if (encoded === null) return framePayload(prefix, Y.encodeStateAsUpdate(doc, stateVector))
  const length = encoded.length - reserve
  const start = reserve - prefix.length - varUintSize(length)
  encoded.set(prefix, start)
  writeVarUint(encoded, start + prefix.length, length)
  return fitted(encoded.subarray(start))
}

/**
 * The document's whole state as one update: the bytes of `Y.encodeStateAsUpdate(doc)`, encoded
 * into one buffer sized from `capacityHint` as encodeFramedState does. For a 20 MB document on a
 * VM: 277 ms of the event loop against 501 on the first encode, a tenth to a half once memory is warm.
 */
export function encodeState (doc: Y.Doc, capacityHint: number): Uint8Array {
  const encoded = encodePresized(doc, EMPTY_STATE_VECTOR, 0, capacityHint)
  return encoded === null ? Y.encodeStateAsUpdate(doc) : fitted(encoded)
}

const EMPTY_STATE_VECTOR = Uint8Array.of(0)

/**
 * The update against `stateVector` in a PresizedUpdateEncoder's buffer, after `reserve` bytes
 * (the view starts at 0); null while Yjs holds pending structs or deletes, which it merges into
 * the encoded update only for its own encoder class.
 */
function encodePresized (doc: Y.Doc, stateVector: Uint8Array, reserve: number, capacity: number): Uint8Array | null {
  if (doc.store.pendingStructs !== null || doc.store.pendingDs !== null) return null
  return Y.encodeStateAsUpdateV2(doc, stateVector, new PresizedUpdateEncoder(reserve, capacity))
}

/** `view` itself, or a copy when its buffer is over twice its size: whoever keeps it keeps the whole buffer alive. */
function fitted (view: Uint8Array): Uint8Array {
  return view.byteLength * 2 < view.buffer.byteLength ? view.slice() : view
}
