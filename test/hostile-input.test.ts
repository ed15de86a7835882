import assert from 'node:assert/strict'
import { request } from 'node:http'
import { after, before, describe, it } from 'node:test'
import * as encoding from 'lib0/encoding'
import * as Y from 'yjs'
import type { WebsocketProvider } from 'y-websocket'
import { decodeYMessage, encodeAwareness, encodeSyncStep1, encodeSyncStep2, encodeSyncUpdate } from '../protocol/index.js'
import { canonicalState, converged, destroy, provider, RawClient, synced } from './harness/clients.js'
import { startServer, tempDir, type InProcessServer } from './harness/server.js'
import { until, withDeadline } from './harness/wait.js'

// Malformed and hostile frames over real sockets. For every case: the offender is closed with the
// documented code, the other clients of the room are untouched and keep editing, the document in
// memory and in LevelDB is unchanged, and the process still answers /health/live.

const MAX_MESSAGE_BYTES = 64 * 1024

function getStatus(port: number, path: string): Promise<number> {
  return withDeadline(
    new Promise<number>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path, agent: false }, (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode ?? 0))
      })
      req.on('error', reject)
      req.end()
    }),
    `GET ${path}`,
  )
}

function varUintBytes(n: number): Uint8Array {
  const encoder = encoding.createEncoder()
  encoding.writeVarUint(encoder, n)
  return encoding.toUint8Array(encoder)
}

function concat(...parts: Uint8Array[]): Uint8Array {
  return Uint8Array.from(Buffer.concat(parts))
}

/** An awareness message whose single entry carries `state` as raw bytes. */
function awarenessWithRawState(clientId: number, clock: number, state: Uint8Array): Uint8Array {
  return encodeAwareness(concat(varUintBytes(1), varUintBytes(clientId), varUintBytes(clock), varUintBytes(state.length), state))
}

/**
 * A real update that inserts text and deletes part of it, so it ends with a non-empty delete set.
 * Its structs are new to any other document: applied half-way, they would show up.
 */
function updateWithDeletion(): Uint8Array {
  const doc = new Y.Doc()
  doc.getText('text').insert(0, 'HALF-APPLIED and more')
  doc.getText('text').delete(0, 5)
  const update = Y.encodeStateAsUpdate(doc)
  const decoded = Y.decodeUpdate(update)
  assert.ok(decoded.ds.clients.size > 0, 'the update has a delete set')
  return update
}

type Offence = { what: string; code: 1002 | 1007 | 1009; send(raw: RawClient): void; check?: (doc: Y.Doc) => void }

const offences: Offence[] = [
  { what: 'a truncated varint', code: 1002, send: (raw) => raw.send(Uint8Array.of(0x80)) },
  { what: 'a truncated payload length', code: 1002, send: (raw) => raw.send(Uint8Array.of(0, 2, 0xff)) },
  { what: 'an unknown message type', code: 1002, send: (raw) => raw.send(Uint8Array.of(9, 0)) },
  { what: 'an unknown sync sub-type', code: 1002, send: (raw) => raw.send(Uint8Array.of(0, 7, 0)) },
  {
    what: 'trailing garbage after a valid message',
    code: 1002,
    send: (raw) => raw.send(concat(encodeSyncStep1(Y.encodeStateVector(new Y.Doc())), Uint8Array.of(0xde, 0xad))),
  },
  { what: 'an empty frame', code: 1002, send: (raw) => raw.send(new Uint8Array(0)) },
  { what: 'a text frame', code: 1002, send: (raw) => raw.socket.send('{"type":"sync"}') },
  // yjs#498: an empty update made Y.applyUpdate hang.
  { what: 'a zero-length update in sync step 2', code: 1007, send: (raw) => raw.send(encodeSyncStep2(new Uint8Array(0))) },
  { what: 'a zero-length update in an update message', code: 1007, send: (raw) => raw.send(encodeSyncUpdate(new Uint8Array(0))) },
  // yjs#479: these bytes made Y.applyUpdate loop forever.
  { what: 'the yjs#479 "garbagedoc" update', code: 1007, send: (raw) => raw.send(encodeSyncUpdate(Buffer.from('garbagedoc', 'base64'))) },
  {
    what: 'an update truncated in its delete set',
    code: 1007,
    send: (raw) => {
      const update = updateWithDeletion()
      raw.send(encodeSyncUpdate(update.subarray(0, update.length - 1)))
    },
    // Yjs integrates structs before it reads the delete set: nothing of them may be in the document.
    check: (doc) => assert.ok(!doc.getText('text').toString().includes('and more'), 'no struct of the truncated update was applied'),
  },
  {
    what: 'an update truncated in its delete set, sent as sync step 2',
    code: 1007,
    send: (raw) => {
      const update = updateWithDeletion()
      raw.send(encodeSyncStep2(update.subarray(0, update.length - 2)))
    },
    check: (doc) => assert.ok(!doc.getText('text').toString().includes('and more'), 'no struct of the truncated update was applied'),
  },
  // Sync step 1 carries a state vector, which is a payload like an update: a broken one is 1007.
  { what: 'a sync step 1 with a truncated state vector', code: 1007, send: (raw) => raw.send(encodeSyncStep1(Uint8Array.of(2, 1))) },
  {
    what: 'a sync step 1 whose state vector clock exceeds 2^53',
    code: 1007,
    send: (raw) => raw.send(encodeSyncStep1(Uint8Array.of(1, 7, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f))),
  },
  {
    what: 'an awareness state that is not JSON',
    code: 1007,
    send: (raw) => raw.send(awarenessWithRawState(4242, 1, new TextEncoder().encode('{not json'))),
  },
  {
    what: 'an awareness state that is not UTF-8',
    code: 1007,
    send: (raw) => raw.send(awarenessWithRawState(4242, 1, Uint8Array.of(0x22, 0xff, 0xfe, 0x22))),
  },
  // 2^40 entries announced in a handful of bytes: must be refused before anything loops or allocates.
  { what: 'an awareness update with a huge count', code: 1007, send: (raw) => raw.send(encodeAwareness(varUintBytes(2 ** 40))) },
  {
    what: 'a frame over --max-message-bytes',
    code: 1009,
    send: (raw) => raw.send(encodeSyncUpdate(new Uint8Array(MAX_MESSAGE_BYTES + 1024).fill(1))),
  },
]

describe('hostile input over real sockets', () => {
  let server: InProcessServer
  let dir: { path: string; remove(): Promise<void> }
  /** Room → the canonical state the room must have in LevelDB at the end: the legitimate edits only. */
  const expected = new Map<string, Uint8Array>()

  before(async () => {
    dir = await tempDir()
    server = await startServer({ data: dir.path, maxMessageBytes: MAX_MESSAGE_BYTES })
  })
  after(async () => {
    await server.stop()
    await dir.remove()
  })

  offences.forEach((offence, index) => {
    it(`closes the sender of ${offence.what} with ${offence.code} and leaves the room intact`, async () => {
      const room = `hostile-${index}`
      const a = provider(server.url, room)
      const b = provider(server.url, room)
      let raw: RawClient | null = null
      try {
        await Promise.all([synced(a), synced(b)])
        a.doc.getText('text').insert(0, 'legitimate ')
        a.doc.getMap('map').set('before', true)
        const doc = server.server.loadedRoom(room)?.doc
        assert.ok(doc !== undefined)
        await converged([a.doc, b.doc, doc], 'room to converge before the offence')
        const before = canonicalState(doc)
        const bystanderSocket = b.ws

        const offender = await RawClient.open(`${server.url}/${room}`)
        raw = offender
        // The session has started (its sync step 1 is out), so the frame is handled, not held.
        await offender.frame((frame) => decodeYMessage(frame).kind === 'sync-step-1', 'server sync step 1')
        offence.send(offender)
        const code = await offender.waitClosed()
        assert.equal(code, offence.code, `close reason: ${offender.closeReason}`)

        assert.deepEqual(canonicalState(doc), before, 'the server document is unchanged')
        offence.check?.(doc)
        assert.equal(await getStatus(server.port, '/health/live'), 200)

        // The bystander kept its socket and still receives edits made after the offence.
        a.doc.getMap('map').set('after', index)
        await until(() => b.doc.getMap('map').get('after') === index, 'b to receive the edit made after the offence')
        assert.equal(b.ws, bystanderSocket, 'b was not disconnected')
        assert.equal(b.wsconnected, true)
        const final = await converged([a.doc, b.doc, doc], 'room to converge after the offence')
        offence.check?.(b.doc)
        expected.set(room, final)
      } finally {
        raw?.socket.terminate()
        destroy(a, b)
      }
    })
  })

  it('stored only the legitimate edits: a fresh server on the same LevelDB has exactly them', async () => {
    assert.ok(expected.size > 0, 'some case ran to its end')
    await server.stop()
    server = await startServer({ data: dir.path, maxMessageBytes: MAX_MESSAGE_BYTES })
    for (const [room, state] of expected) {
      const reader: WebsocketProvider = provider(server.url, room)
      try {
        await synced(reader)
        assert.deepEqual(canonicalState(reader.doc), state, `stored ${room}`)
        assert.ok(!reader.doc.getText('text').toString().includes('and more'))
      } finally {
        destroy(reader)
      }
    }
  })
})
