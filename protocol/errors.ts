/**
 * 1002: the frame is not a valid message (unknown type, truncated varint, trailing bytes).
 * 1007: the message is well-formed but its payload (Yjs update, awareness JSON) is not.
 * The server closes the socket with `closeCode`, so the two must never be mixed up.
 */
export class ProtocolError extends Error {
  constructor (readonly closeCode: 1002 | 1007, message: string) {
    super(message)
    this.name = 'ProtocolError'
  }
}
