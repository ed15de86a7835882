import { test } from 'node:test'
import assert from 'node:assert/strict'
import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import * as syncProtocol from 'y-protocols/sync'
import * as authProtocol from 'y-protocols/auth'
import * as awarenessProtocol from 'y-protocols/awareness'
import {
  ProtocolError,
  MessageType,
  decodeYMessage,
  encodeSyncStep1,
  encodeSyncStep2,
  encodeSyncUpdate,
  encodeAwareness,
  encodeQueryAwareness,
  encodePermissionDenied,
  decodeAwarenessUpdate,
  encodeAwarenessUpdate
} from '../protocol/index.js'

function hex (text: string): Uint8Array {
  const clean = text.replace(/\s+/g, '')
  return Uint8Array.from(clean.match(/../g) ?? [], byte => parseInt(byte, 16))
}

function toHex (bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('hex')
}

function assertProtocolError (fn: () => unknown, closeCode: 1002 | 1007, why = ''): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof ProtocolError, `expected ProtocolError, got ${String(error)} ${why}`)
    assert.equal(error.closeCode, closeCode, `${why}: ${error.message}`)
    return true
  })
}

test('message types are the y-protocols numbers', () => {
  assert.deepEqual(MessageType, { sync: 0, awareness: 1, auth: 2, queryAwareness: 3 })
})

test('encoders write the byte vectors of the y-websocket format', () => {
  assert.equal(toHex(encodeSyncStep1(hex('010203'))), '0000' + '03' + '010203')
  assert.equal(toHex(encodeSyncStep2(hex('0000'))), '0001' + '02' + '0000')
  assert.equal(toHex(encodeSyncUpdate(hex('aabb'))), '0002' + '02' + 'aabb')
  assert.equal(toHex(encodeAwareness(hex('00'))), '01' + '01' + '00')
  assert.equal(toHex(encodeQueryAwareness()), '03')
  assert.equal(toHex(encodePermissionDenied('no')), '0200' + '02' + '6e6f')
  assert.equal(toHex(encodePermissionDenied('é')), '0200' + '02' + 'c3a9')
  assert.equal(toHex(encodePermissionDenied('')), '0200' + '00')
  // 200 = 0xc8: low seven bits 0x48 with the continuation bit, then 1.
  const big = new Uint8Array(200).fill(7)
  const frame = encodeSyncUpdate(big)
  assert.equal(toHex(frame.subarray(0, 4)), '0002c801')
  assert.equal(frame.length, 204)
  assert.deepEqual(frame.subarray(4), big)
  // 16384 = 2^14 needs three varuint bytes: 80 80 01.
  assert.equal(toHex(encodeSyncStep2(new Uint8Array(16384)).subarray(0, 5)), '0001808001')
})

test('decoder reads each byte vector into its message', () => {
  assert.deepEqual(decodeYMessage(hex('0000 03 010203')), { kind: 'sync-step-1', stateVector: hex('010203') })
  assert.deepEqual(decodeYMessage(hex('0001 02 0000')), { kind: 'sync-step-2', update: hex('0000') })
  assert.deepEqual(decodeYMessage(hex('0002 00')), { kind: 'sync-update', update: new Uint8Array(0) })
  assert.deepEqual(decodeYMessage(hex('01 04 01020304')), { kind: 'awareness', update: hex('01020304') })
  assert.deepEqual(decodeYMessage(hex('0200 02 c3a9')), { kind: 'auth-denied', reason: 'é' })
  assert.deepEqual(decodeYMessage(hex('03')), { kind: 'query-awareness' })
})

test('decoded payloads are views into the frame, not copies', () => {
  const frame = hex('0002 03 090807')
  const message = decodeYMessage(frame)
  assert.equal(message.kind, 'sync-update')
  if (message.kind !== 'sync-update') return
  assert.equal(message.update.buffer, frame.buffer)
  assert.equal(message.update.byteOffset, 3)
  frame[3] = 1
  assert.equal(message.update[0], 1)
})

test('round trips through encoder and decoder', () => {
  const payload = Uint8Array.from({ length: 300 }, (_, i) => i & 0xff)
  assert.deepEqual(decodeYMessage(encodeSyncStep1(payload)), { kind: 'sync-step-1', stateVector: payload })
  assert.deepEqual(decodeYMessage(encodeSyncStep2(payload)), { kind: 'sync-step-2', update: payload })
  assert.deepEqual(decodeYMessage(encodeSyncUpdate(payload)), { kind: 'sync-update', update: payload })
  assert.deepEqual(decodeYMessage(encodeAwareness(payload)), { kind: 'awareness', update: payload })
  assert.deepEqual(decodeYMessage(encodeQueryAwareness()), { kind: 'query-awareness' })
  assert.deepEqual(decodeYMessage(encodePermissionDenied('room is closed 🚪')), { kind: 'auth-denied', reason: 'room is closed 🚪' })
})

test('sync messages match y-protocols byte for byte in both directions', () => {
  const doc = new Y.Doc()
  doc.getText('t').insert(0, 'hello')
  doc.getMap('m').set('k', [1, 'two', { three: 3 }])
  const update = Y.encodeStateAsUpdate(doc)

  const step1 = encoding.createEncoder()
  encoding.writeVarUint(step1, 0)
  syncProtocol.writeSyncStep1(step1, doc)
  assert.deepEqual(encodeSyncStep1(Y.encodeStateVector(doc)), encoding.toUint8Array(step1))

  const step2 = encoding.createEncoder()
  encoding.writeVarUint(step2, 0)
  syncProtocol.writeSyncStep2(step2, doc)
  assert.deepEqual(encodeSyncStep2(update), encoding.toUint8Array(step2))

  const upd = encoding.createEncoder()
  encoding.writeVarUint(upd, 0)
  syncProtocol.writeUpdate(upd, update)
  assert.deepEqual(encodeSyncUpdate(update), encoding.toUint8Array(upd))

  // y-protocols reading our frames must change a fresh doc the same way.
  const remote = new Y.Doc()
  for (const frame of [encodeSyncStep2(update), encodeSyncUpdate(update)]) {
    const decoder = decoding.createDecoder(frame)
    assert.equal(decoding.readVarUint(decoder), MessageType.sync)
    syncProtocol.readSyncMessage(decoder, encoding.createEncoder(), remote, null)
  }
  assert.equal(remote.getText('t').toString(), 'hello')
  assert.deepEqual(remote.getMap('m').toJSON(), { k: [1, 'two', { three: 3 }] })

  const denied = encoding.createEncoder()
  encoding.writeVarUint(denied, MessageType.auth)
  authProtocol.writePermissionDenied(denied, 'nope')
  assert.deepEqual(encodePermissionDenied('nope'), encoding.toUint8Array(denied))
  doc.destroy()
  remote.destroy()
})

test('malformed frames are 1002', () => {
  const cases: Array<[string, string]> = [
    ['empty frame', ''],
    ['truncated varint type', '80'],
    ['unknown message type', '04'],
    ['unknown message type as multi-byte varint', '8001'],
    ['sync without sub-type', '00'],
    ['unknown sync sub-type', '0003 00'],
    ['sync without length', '0000'],
    ['truncated length varint', '0000 ff'],
    ['payload shorter than its length', '0000 05 0102'],
    ['huge length field', '0001 ffffffff0f 00'],
    ['trailing garbage after sync', '0002 01 00 ff'],
    ['trailing garbage after awareness', '01 00 00'],
    ['trailing garbage after query-awareness', '03 00'],
    ['unknown auth sub-type', '0201 00'],
    ['auth without reason', '0200'],
    ['varuint above 2^53 as type', 'ffffffffffffff7f'],
    ['varuint of 2^53 as length', '0000 8080808080808010'],
    ['varuint longer than 8 bytes', '808080808080808000'],
    ['varuint longer than 8 bytes as length', '0000 808080808080808000']
  ]
  for (const [name, bytes] of cases) assertProtocolError(() => decodeYMessage(hex(bytes)), 1002, name)
})

test('a bad reason text is well-formed framing with a malformed payload: 1007', () => {
  assertProtocolError(() => decodeYMessage(hex('0200 02 fffe')), 1007)
})

test('a Buffer viewing part of a larger ArrayBuffer is bounded by its own length', () => {
  // The pool holds a complete message, but the view ends two bytes into its payload.
  const pool = new ArrayBuffer(64)
  new Uint8Array(pool).set(hex('0002 05 0102030405'))
  const view = Buffer.from(pool, 0, 5)
  assertProtocolError(() => decodeYMessage(view), 1002)
  // The same bytes at a non-zero offset, with the whole message inside the view, decode.
  new Uint8Array(pool).set(hex('0002 05 0102030405'), 16)
  const inner = decodeYMessage(Buffer.from(pool, 16, 8))
  assert.deepEqual(inner, { kind: 'sync-update', update: Buffer.from(hex('0102030405')) })
})

test('awareness update byte vectors', () => {
  const entries = [{ clientId: 1, clock: 2, state: '{"a":1}' }, { clientId: 300, clock: 0, state: 'null' }]
  const expected = '02' + '01' + '02' + '07' + Buffer.from('{"a":1}').toString('hex') + 'ac02' + '00' + '04' + Buffer.from('null').toString('hex')
  assert.equal(toHex(encodeAwarenessUpdate(entries)), expected)
  assert.deepEqual(decodeAwarenessUpdate(hex(expected)), entries)
  assert.equal(toHex(encodeAwarenessUpdate([])), '00')
  assert.deepEqual(decodeAwarenessUpdate(hex('00')), [])
  const max = { clientId: Number.MAX_SAFE_INTEGER, clock: Number.MAX_SAFE_INTEGER, state: '"é"' }
  assert.deepEqual(decodeAwarenessUpdate(encodeAwarenessUpdate([max])), [max])
})

test('awareness updates match y-protocols in both directions', () => {
  const doc = new Y.Doc()
  const awareness = new awarenessProtocol.Awareness(doc)
  const peerDoc = new Y.Doc()
  const peer = new awarenessProtocol.Awareness(peerDoc)
  try {
    awareness.setLocalState({ user: { name: 'Ada', color: '#ff0000' }, cursor: { anchor: 3, head: 5 }, note: 'ünïcödé ✓' })
    const theirs = awarenessProtocol.encodeAwarenessUpdate(awareness, [doc.clientID])
    const decoded = decodeAwarenessUpdate(theirs)
    assert.equal(decoded.length, 1)
    assert.equal(decoded[0]?.clientId, doc.clientID)
    assert.deepEqual(JSON.parse(decoded[0]?.state ?? ''), awareness.getLocalState())
    assert.deepEqual(encodeAwarenessUpdate(decoded), theirs)

    // Ours applied by y-protocols, including a removal ("null" with a newer clock).
    const ours = encodeAwarenessUpdate([{ clientId: 77, clock: 1, state: '{"user":"Bob"}' }])
    awarenessProtocol.applyAwarenessUpdate(peer, ours, null)
    assert.deepEqual(peer.getStates().get(77), { user: 'Bob' })
    awarenessProtocol.applyAwarenessUpdate(peer, encodeAwarenessUpdate([{ clientId: 77, clock: 2, state: 'null' }]), null)
    assert.equal(peer.getStates().has(77), false)

    awareness.setLocalState(null)
    const removal = decodeAwarenessUpdate(awarenessProtocol.encodeAwarenessUpdate(awareness, [doc.clientID]))
    assert.equal(removal[0]?.state, 'null')
  } finally {
    awareness.destroy()
    peer.destroy()
    doc.destroy()
    peerDoc.destroy()
  }
})

test('malformed awareness updates are 1007', () => {
  const good = encodeAwarenessUpdate([{ clientId: 1, clock: 1, state: '{"x":[1,2]}' }])
  for (let end = 0; end < good.length; end++) {
    assertProtocolError(() => decodeAwarenessUpdate(good.subarray(0, end)), 1007)
  }
  const cases: string[] = [
    toHex(good) + '00', // trailing bytes
    '05' + '0101' + '01' + '30', // count 5 with room for one entry
    'ffffffff0f', // huge count
    '01 01 01 03' + Buffer.from('{x}').toString('hex'), // not JSON
    '01 01 01 00', // empty string is not JSON
    '01 01 01 03' + Buffer.from('und').toString('hex'),
    '01 01 01 02 fffe', // not UTF-8
    '01 ffffffffffffff7f 01 01 30', // clientId above 2^53
    '01 01 01 ffffffff0f 30' // state length past the end
  ]
  for (const bytes of cases) assertProtocolError(() => decodeAwarenessUpdate(hex(bytes)), 1007)
  const state = JSON.stringify('x'.repeat(100))
  const update = encodeAwarenessUpdate([{ clientId: 1, clock: 1, state }])
  assert.equal(decodeAwarenessUpdate(update, state.length)[0]?.state, state)
  assertProtocolError(() => decodeAwarenessUpdate(update, state.length - 1), 1007)
  // Default limit: 1 MiB of state text.
  const huge = JSON.stringify('y'.repeat(1024 * 1024))
  assertProtocolError(() => decodeAwarenessUpdate(encodeAwarenessUpdate([{ clientId: 1, clock: 1, state: huge }])), 1007)
})

test('encoders refuse numbers that are not varuints', () => {
  assert.throws(() => encodeAwarenessUpdate([{ clientId: -1, clock: 0, state: 'null' }]), RangeError)
  assert.throws(() => encodeAwarenessUpdate([{ clientId: 1.5, clock: 0, state: 'null' }]), RangeError)
  assert.throws(() => encodeAwarenessUpdate([{ clientId: 1, clock: 2 ** 53, state: 'null' }]), RangeError)
})
