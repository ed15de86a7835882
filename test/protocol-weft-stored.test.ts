import { test } from 'node:test'
import assert from 'node:assert/strict'
import { ProtocolError, WeftMessageType, SAVED_ACKS_PARAM, decodeYMessage, encodeWeftStored } from '../protocol/index.js'

function hex(text: string): Uint8Array {
  return Uint8Array.from(text.replace(/\s+/g, '').match(/../g) ?? [], (byte) => parseInt(byte, 16))
}

function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('hex')
}

test('the stored acknowledgement is type 100 and a varuint count, byte for byte', () => {
  assert.equal(WeftMessageType.stored, 100)
  assert.equal(SAVED_ACKS_PARAM, 'weft-saved')
  assert.equal(toHex(encodeWeftStored(0)), '6400')
  assert.equal(toHex(encodeWeftStored(1)), '6401')
  assert.equal(toHex(encodeWeftStored(127)), '647f')
  // 128 needs two varuint bytes: 80 01; 300 = 0xac 0x02.
  assert.equal(toHex(encodeWeftStored(128)), '648001')
  assert.equal(toHex(encodeWeftStored(300)), '64ac02')
  assert.equal(toHex(encodeWeftStored(2 ** 32)), '648080808010')
})

test('the stored acknowledgement decodes from its bytes and round trips', () => {
  assert.deepEqual(decodeYMessage(hex('64 00')), { kind: 'weft-stored', count: 0 })
  assert.deepEqual(decodeYMessage(hex('64 ac02')), { kind: 'weft-stored', count: 300 })
  for (const count of [0, 1, 127, 128, 16_383, 16_384, 2 ** 31, Number.MAX_SAFE_INTEGER]) {
    assert.deepEqual(decodeYMessage(encodeWeftStored(count)), { kind: 'weft-stored', count })
  }
})

test('malformed stored acknowledgements are protocol errors (1002), bad counts refused by the encoder', () => {
  for (const [what, bytes] of [['no count', '64'], ['truncated varuint', '6480'], ['trailing bytes', '6401 00']] as const) {
    assert.throws(() => decodeYMessage(hex(bytes)), (err: unknown) => err instanceof ProtocolError && err.closeCode === 1002, what)
  }
  for (const count of [-1, 1.5, Number.NaN, 2 ** 53]) assert.throws(() => encodeWeftStored(count), RangeError, String(count))
})
