import assert from 'node:assert/strict'
import { request } from 'node:http'
import { after, before, describe, it } from 'node:test'
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'
import { WebSocket } from 'ws'
import * as Y from 'yjs'
import {
  encodeHocuspocusAwareness,
  encodeHocuspocusClientAuthToken,
  encodeHocuspocusSyncStep1,
  encodeHocuspocusSyncStep2,
  encodeHocuspocusSyncUpdate,
} from '../protocol/index.js'
import { canonicalState, converged, destroy, provider, RawClient, synced } from './harness/clients.js'
import { startServer, type InProcessServer } from './harness/server.js'
import { until, withDeadline } from './harness/wait.js'
import { metricValue } from './harness/metrics.js'

// Malformed Hocuspocus frames over real sockets, and frames for a document that never
// authenticates. The offender is closed with the documented code; the server, the room's other
// clients (a Hocuspocus provider and a y-websocket provider) and the document are untouched.

/** The session's bound on frames held before a document is authenticated (server.ts PENDING_MESSAGES). */
const HELD_FRAMES_BOUND = 1_000

function liveStatus(port: number): Promise<number> {
  return withDeadline(
    new Promise<number>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path: '/health/live', agent: false }, (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode ?? 0))
      })
      req.on('error', reject)
      req.end()
    }),
    'GET /health/live',
  )
}

/** varString name (names here are under 128 bytes: a one-byte length), then `rest`. */
function named(name: string, ...rest: number[]): Uint8Array {
  const bytes = new TextEncoder().encode(name)
  assert.ok(bytes.length < 128)
  return Uint8Array.from([bytes.length, ...bytes, ...rest])
}

function concat(...parts: Uint8Array[]): Uint8Array {
  return Uint8Array.from(Buffer.concat(parts))
}

type Offence = { what: string; code: 1002 | 1007; frame(room: string): Uint8Array }

const emptyStateVector = Y.encodeStateVector(new Y.Doc())

const offences: Offence[] = [
  { what: 'an empty frame', code: 1002, frame: () => new Uint8Array(0) },
  { what: 'a document name longer than the frame', code: 1002, frame: () => Uint8Array.of(20, 0x61, 0x62, 0x63) },
  { what: 'a name and no message type', code: 1002, frame: (room) => named(room) },
  { what: 'an unknown message type', code: 1002, frame: (room) => named(room, 42) },
  { what: 'a server-only message type (SyncStatus)', code: 1002, frame: (room) => named(room, 8, 1) },
  { what: 'an unknown sync sub-type', code: 1002, frame: (room) => named(room, 0, 7, 0) },
  { what: 'trailing garbage after a valid sync step 1', code: 1002, frame: (room) => concat(encodeHocuspocusSyncStep1(room, emptyStateVector), Uint8Array.of(0xde, 0xad)) },
  // yjs#479: these bytes made Y.applyUpdate loop forever.
  { what: 'the yjs#479 "garbagedoc" update', code: 1007, frame: (room) => encodeHocuspocusSyncUpdate(room, Buffer.from('garbagedoc', 'base64')) },
  // yjs#498: an empty update made Y.applyUpdate hang.
  { what: 'a zero-length update', code: 1007, frame: (room) => encodeHocuspocusSyncUpdate(room, new Uint8Array(0)) },
  { what: 'a zero-length sync step 2', code: 1007, frame: (room) => encodeHocuspocusSyncStep2(room, new Uint8Array(0)) },
  { what: 'a truncated state vector', code: 1007, frame: (room) => encodeHocuspocusSyncStep1(room, Uint8Array.of(2, 1)) },
  { what: 'a state vector clock past 2^53', code: 1007, frame: (room) => encodeHocuspocusSyncStep1(room, Uint8Array.of(1, 7, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f)) },
  { what: 'an awareness update with a huge count', code: 1007, frame: (room) => encodeHocuspocusAwareness(room, Uint8Array.of(0x80, 0x80, 0x80, 0x80, 0x80, 0x20)) },
  { what: 'a document name that is not UTF-8', code: 1007, frame: () => Uint8Array.of(2, 0xff, 0xfe, 0, 0, 0) },
]

interface Hocuspocus {
  provider: HocuspocusProvider
  socket: HocuspocusProviderWebsocket
  doc: Y.Doc
}

function hocuspocus(url: string, name: string): Hocuspocus {
  const socket = new HocuspocusProviderWebsocket({ url: `${url}/`, WebSocketPolyfill: WebSocket, delay: 100, minDelay: 50, maxDelay: 500 })
  const doc = new Y.Doc()
  const p = new HocuspocusProvider({ websocketProvider: socket, name, document: doc })
  p.attach()
  return { provider: p, socket, doc }
}

function hocuspocusSynced(client: Hocuspocus): Promise<void> {
  if (client.provider.isSynced) return Promise.resolve()
  return withDeadline(new Promise<void>((resolve) => client.provider.on('synced', () => resolve())), 'the Hocuspocus provider to sync')
}

/** A raw Hocuspocus client with `room` open: its token sent and the server's step 2 received. */
async function openRaw(url: string, room: string): Promise<RawClient> {
  const raw = await RawClient.open(`${url}/`)
  raw.send(encodeHocuspocusClientAuthToken(room, '', 'raw-test'))
  raw.send(encodeHocuspocusSyncStep1(room, emptyStateVector))
  const step2Prefix = named(room, 0, 1)
  await raw.frame((f) => Buffer.from(f.subarray(0, step2Prefix.length)).equals(Buffer.from(step2Prefix)), 'the server sync step 2')
  return raw
}

describe('hostile Hocuspocus frames over real sockets', () => {
  let server: InProcessServer

  before(async () => {
    // No inbound pacing: the held-frames case sends a thousand frames at once.
    server = await startServer({ inboundMessagesPerSecond: 1_000_000 })
  })
  after(async () => {
    await server.stop()
  })

  offences.forEach((offence, index) => {
    it(`closes the sender of ${offence.what} with ${offence.code}; the server, the room and its other clients are untouched`, async () => {
      const room = `hp-hostile-${index}`
      const hp = hocuspocus(server.url, room)
      const yw = provider(server.url, room)
      let raw: RawClient | null = null
      try {
        await Promise.all([hocuspocusSynced(hp), synced(yw)])
        hp.doc.getText('text').insert(0, 'legitimate ')
        const serverRoom = server.server.loadedRoom(room)
        assert.ok(serverRoom !== undefined)
        await converged([hp.doc, yw.doc, serverRoom.doc], 'the room to converge before the offence')
        const before = canonicalState(serverRoom.doc)
        const bystanderSocket = hp.socket.webSocket

        raw = await openRaw(server.url, room)
        raw.send(offence.frame(room))
        const code = await raw.waitClosed()
        assert.equal(code, offence.code, `close reason: ${raw.closeReason}`)
        assert.deepEqual(canonicalState(serverRoom.doc), before, 'the server document is unchanged')
        assert.equal(await liveStatus(server.port), 200)

        hp.doc.getMap('map').set('after', index)
        yw.doc.getMap('map').set('yw-after', index)
        await until(() => yw.doc.getMap('map').get('after') === index && hp.doc.getMap('map').get('yw-after') === index, 'edits after the offence to cross')
        assert.equal(hp.socket.webSocket, bystanderSocket, 'the Hocuspocus bystander kept its socket')
        await converged([hp.doc, yw.doc, serverRoom.doc])
      } finally {
        raw?.socket.terminate()
        hp.provider.destroy()
        hp.socket.destroy()
        destroy(yw)
      }
    })
  })

  it(`holds frames for a document before its auth within the bound (${HELD_FRAMES_BOUND}), and closes past it with 1013`, async () => {
    const within = await RawClient.open(`${server.url}/`)
    const flood = await RawClient.open(`${server.url}/`)
    try {
      // Within the bound: the held frames are handled once the token arrives. The first step 1 is
      // answered at once; the repeats wait (--repeat-answer-interval-ms) and the newest is answered then.
      const held = HELD_FRAMES_BOUND - 10
      const deferredBefore = (await metricValue(server.http, 'weft_sync_asks_deferred_total')) ?? 0
      for (let i = 0; i < held; i++) within.send(encodeHocuspocusSyncStep1('hp-held', emptyStateVector))
      within.send(encodeHocuspocusClientAuthToken('hp-held', '', 'raw-test'))
      const step2Prefix = named('hp-held', 0, 1)
      await until(
        () => within.frames.filter((f) => Buffer.from(f.subarray(0, step2Prefix.length)).equals(Buffer.from(step2Prefix))).length === 2,
        'the held step 1s to be answered after the token',
      )
      assert.equal(await metricValue(server.http, 'weft_sync_asks_deferred_total'), deferredBefore + held - 1, 'every held step 1 was handled')
      assert.equal(within.closeCode, null, 'the socket within the bound stays open')

      // Past the bound, for a document whose token never comes.
      for (let i = 0; i < HELD_FRAMES_BOUND + 50; i++) flood.send(encodeHocuspocusSyncStep1('hp-never', emptyStateVector))
      assert.equal(await flood.waitClosed(), 1013, `close reason: ${flood.closeReason}`)
      assert.equal(server.server.loadedRoom('hp-never'), undefined, 'the never-authenticated document was never loaded')
      assert.equal(await liveStatus(server.port), 200)
      assert.equal(within.closeCode, null, 'the other socket is unaffected')
    } finally {
      within.socket.terminate()
      flood.socket.terminate()
    }
  })
})
