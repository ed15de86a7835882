import assert from 'node:assert/strict'
import { request } from 'node:http'
import { connect } from 'node:net'
import { performance } from 'node:perf_hooks'
import { after, before, describe, it } from 'node:test'
import { WebSocket } from 'ws'
import * as Y from 'yjs'
import type { WebsocketProvider } from 'y-websocket'
import {
  decodeAwarenessUpdate,
  decodeHocuspocusMessage,
  decodeYMessage,
  encodeAwareness,
  encodeAwarenessUpdate,
  encodeHocuspocusAwareness,
  encodeHocuspocusClientAuthToken,
  encodeHocuspocusClientBroadcastStateless,
  encodeHocuspocusClientClose,
  encodeHocuspocusClientPong,
  encodeHocuspocusQueryAwareness,
  encodeHocuspocusStateless,
  encodeHocuspocusSyncStep1,
  encodeHocuspocusSyncStep2,
  encodeHocuspocusSyncUpdate,
  encodePermissionDenied,
  encodeQueryAwareness,
  encodeSyncStep1,
  encodeSyncStep2,
  encodeSyncUpdate,
  ProtocolError,
  validateStateVector,
  validateUpdate,
} from '../protocol/index.js'
import { canonicalState, converged, destroy, provider, RawClient, synced } from './harness/clients.js'
import { startServer, type InProcessServer } from './harness/server.js'
import { concat, envNumber, randomBytes, rngFor as seededRng, varUint, type Rng } from './harness/fuzz.js'
import { LIVE_HANG_MS } from './harness/live-probe.js'
import { withDeadline } from './harness/wait.js'

// Hostile frames through real sockets against one in-process server, over both protocols, from
// many short-lived connections. For every frame the test predicts, with the pure codec and a
// model document, what the server must do: close with 1002/1007/1009, or keep the connection
// (a probe sent after the frame is answered). Then, per batch:
//  - every /health/live probe issued while the batch ran was answered within 100 ms;
//  - in the shared rooms, a stock y-websocket provider pair converges on an edit made after the
//    batch, and the server's document holds exactly the pair's edits (the fuzzer's frames there
//    are all refused or harmless);
//  - in the fuzz-only rooms, where only the fuzzer writes, the server's document is byte-identical
//    (canonical state) to a model that applied exactly the updates predicted to be accepted: a
//    refused update leaves no trace, not even half of itself.
// Seed and count: WEFT_FUZZ_SEED, WEFT_FUZZ_SERVER_CASES (default 3000).

const MAX_MESSAGE_BYTES = 256 * 1024
const DEFAULT_SEED = 0x5eed_0007
const DEFAULT_CASES = 3_000
const BATCHES = 6
const SHARED_LANES = 12
const PROBE_EVERY_MS = 20
const FILE_BUDGET_MS = 40_000

const SHARED_ROOMS = ['fz-s0', 'fz-s1', 'fz-s2', 'fz-s3']
const FUZZ_ROOMS = ['fz-f0', 'fz-f1']
/** The document name hostile Hocuspocus frames are built with; replaced by the real room (same length). */
const PLACEHOLDER = 'fz-xx'


const SEED = envNumber('WEFT_FUZZ_SEED', DEFAULT_SEED)
const CASES = envNumber('WEFT_FUZZ_SERVER_CASES', DEFAULT_CASES)

// ---------------------------------------------------------------------------------------------
// Deterministic randomness and mutation (the same shapes as fuzz-decoders, over whole frames)

const rngFor = (seed: number, index: number): Rng => seededRng(seed, index, 0x51ed_5e4e)




const HUGE = [varUint(0xffffffff), varUint(Number.MAX_SAFE_INTEGER), Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)]

function mutate(rng: Rng, input: Uint8Array): Uint8Array {
  let bytes: Uint8Array = Uint8Array.from(input)
  for (let r = 1 + rng.int(2); r > 0; r--) {
    const at = bytes.length === 0 ? 0 : rng.int(bytes.length)
    switch (rng.int(8)) {
      case 0:
        if (bytes.length > 0) bytes[at]! ^= 1 << rng.int(8)
        break
      case 1:
        bytes = bytes.subarray(0, at)
        break
      case 2:
        bytes = concat(bytes.subarray(0, at), rng.pick(HUGE), bytes.subarray(at + 1))
        break
      case 3:
        bytes = concat(bytes.subarray(0, at), rng.pick(HUGE), bytes.subarray(at))
        break
      case 4:
        if (bytes.length > 0) bytes[at] = 0
        break
      case 5:
        bytes = concat(bytes.subarray(0, at), randomBytes(rng, 1 + rng.int(4)), bytes.subarray(at))
        break
      case 6:
        if (bytes.length > 0) bytes[at] = rng.int(256)
        break
      default:
        bytes = concat(bytes, randomBytes(rng, 1 + rng.int(3)))
    }
  }
  return bytes
}

// ---------------------------------------------------------------------------------------------
// Cases

type Protocol = 'y-websocket' | 'hocuspocus'
type Expected = 1002 | 1007 | 1009 | null

interface ServerCase {
  index: number
  protocol: Protocol
  /** Text frames are a protocol error; everything else is binary. */
  text: string | null
  frame: Uint8Array
  room: string
  expected: Expected
  /** The update the server must apply (accepted sync-step-2 / update for this room). */
  update: Uint8Array | null
  /** A Hocuspocus CLOSE for the probed document: the probe has to authenticate again. */
  closesDocument: boolean
}

function smallUpdate(rng: Rng): Uint8Array {
  const doc = new Y.Doc()
  doc.clientID = 1 + rng.int(2 ** 30)
  doc.getText('t').insert(0, `fuzz-${rng.int(1000)}`)
  if (rng.chance(0.5)) doc.getMap('m').set(`k${rng.int(5)}`, { n: rng.int(100), s: 'x'.repeat(rng.int(8)) })
  if (rng.chance(0.3)) doc.getText('t').delete(0, 2)
  const update = Y.encodeStateAsUpdate(doc)
  doc.destroy()
  return update
}

function awarenessUpdate(rng: Rng): Uint8Array {
  return encodeAwarenessUpdate([{ clientId: 1 + rng.int(2 ** 30), clock: rng.int(10), state: JSON.stringify({ user: { name: `f${rng.int(9)}` } }) }])
}

/** A frame with raw state bytes in an awareness entry: not JSON, not UTF-8, or huge. */
function rawAwareness(state: Uint8Array): Uint8Array {
  return concat(varUint(1), varUint(7), varUint(1), varUint(state.length), state)
}

function baseFrame(rng: Rng, protocol: Protocol): Uint8Array {
  const update = smallUpdate(rng)
  const sv = rng.chance(0.5) ? Y.encodeStateVectorFromUpdate(update) : Uint8Array.of(0)
  if (protocol === 'y-websocket') {
    return rng.pick([
      () => encodeSyncStep1(sv),
      () => encodeSyncStep2(update),
      () => encodeSyncUpdate(update),
      () => encodeAwareness(awarenessUpdate(rng)),
      () => encodeQueryAwareness(),
      () => encodePermissionDenied('denied'),
    ])()
  }
  return rng.pick([
    () => encodeHocuspocusSyncStep1(PLACEHOLDER, sv),
    () => encodeHocuspocusSyncStep2(PLACEHOLDER, update),
    () => encodeHocuspocusSyncUpdate(PLACEHOLDER, update),
    () => encodeHocuspocusAwareness(PLACEHOLDER, awarenessUpdate(rng)),
    () => encodeHocuspocusQueryAwareness(PLACEHOLDER),
    () => encodeHocuspocusStateless(PLACEHOLDER, 'hello'),
    () => encodeHocuspocusClientBroadcastStateless(PLACEHOLDER, 'hi all'),
    () => encodeHocuspocusClientAuthToken(PLACEHOLDER, 'tok', '4.8.0'),
    () => encodeHocuspocusClientClose(PLACEHOLDER),
    () => encodeHocuspocusClientPong(),
  ])()
}

function hostileFrame(rng: Rng, protocol: Protocol): { frame: Uint8Array; text: string | null } {
  const wrap = (payloadKind: 'update' | 'awareness', payload: Uint8Array): Uint8Array => {
    if (protocol === 'y-websocket') return payloadKind === 'update' ? encodeSyncUpdate(payload) : encodeAwareness(payload)
    return payloadKind === 'update' ? encodeHocuspocusSyncUpdate(PLACEHOLDER, payload) : encodeHocuspocusAwareness(PLACEHOLDER, payload)
  }
  switch (rng.int(20)) {
    case 0: return { frame: randomBytes(rng, rng.int(32)), text: null }
    case 1: return { frame: new Uint8Array(0), text: null }
    case 2: return { frame: new Uint8Array(0), text: '{"type":"sync"}' }
    // yjs#479 and yjs#498.
    case 3: return { frame: wrap('update', new Uint8Array(Buffer.from('garbagedoc', 'base64'))), text: null }
    case 4: return { frame: wrap('update', new Uint8Array(0)), text: null }
    case 5: return { frame: wrap('awareness', rawAwareness(new TextEncoder().encode('{not json'))), text: null }
    // Awareness JSON of 200 KB: under the frame limit, over nothing else; and one over the frame limit.
    case 6: return { frame: wrap('awareness', rawAwareness(new TextEncoder().encode(`"${'a'.repeat(200_000)}"`))), text: null }
    case 7: return { frame: concat(wrap('awareness', rawAwareness(new Uint8Array(MAX_MESSAGE_BYTES + 1).fill(0x61)))), text: null }
    case 8: return { frame: wrap('update', mutate(rng, smallUpdate(rng))), text: null }
    case 9: return { frame: baseFrame(rng, protocol), text: null }
    default: return { frame: mutate(rng, baseFrame(rng, protocol)), text: null }
  }
}

/** What the server must do with `frame` on a connection to `room`, and what it must apply. */
function predict(protocol: Protocol, frame: Uint8Array, text: string | null, room: string, model: Y.Doc | null): { expected: Expected; update: Uint8Array | null; closesDocument: boolean } {
  if (text !== null) return { expected: 1002, update: null, closesDocument: false }
  if (frame.length > MAX_MESSAGE_BYTES) return { expected: 1009, update: null, closesDocument: false }
  try {
    let kind: string
    let payload: Uint8Array | null = null
    if (protocol === 'y-websocket') {
      const message = decodeYMessage(frame)
      kind = message.kind
      if (message.kind === 'sync-step-1') payload = message.stateVector
      if (message.kind === 'sync-step-2' || message.kind === 'sync-update' || message.kind === 'awareness') payload = message.update
    } else {
      const message = decodeHocuspocusMessage(frame)
      kind = message.kind
      // Frames for a document this socket has not authenticated are held, never looked at.
      if (message.kind === 'ping' || message.kind === 'pong' || message.document !== room) return { expected: null, update: null, closesDocument: false }
      if (message.kind === 'close') return { expected: null, update: null, closesDocument: true }
      if (message.kind === 'sync-step-1') payload = message.stateVector
      if (message.kind === 'sync-step-2' || message.kind === 'sync-update' || message.kind === 'awareness') payload = message.update
    }
    if (kind === 'sync-step-1') validateStateVector(payload as Uint8Array)
    if (kind === 'awareness') decodeAwarenessUpdate(payload as Uint8Array)
    if (kind === 'sync-step-2' || kind === 'sync-update') {
      const update = payload as Uint8Array
      const summary = validateUpdate(update)
      if (model !== null) {
        // An update that depends on clocks the document lacks is refused (1007), never held pending.
        for (const [client, clock] of summary.requires) {
          if (Y.getState(model.store, client) < clock) return { expected: 1007, update: null, closesDocument: false }
        }
        // The contract: an update Yjs throws on is refused (1007) and leaves no trace.
        const trial = new Y.Doc()
        Y.applyUpdate(trial, Y.encodeStateAsUpdate(model))
        try {
          Y.applyUpdate(trial, update)
        } catch {
          return { expected: 1007, update: null, closesDocument: false }
        } finally {
          trial.destroy()
        }
      }
      return { expected: null, update: Uint8Array.from(update), closesDocument: false }
    }
    return { expected: null, update: null, closesDocument: false }
  } catch (err) {
    if (err instanceof ProtocolError) return { expected: err.closeCode, update: null, closesDocument: false }
    throw err
  }
}

function describeDoc(doc: Y.Doc): string {
  const update = Y.decodeUpdate(Y.encodeStateAsUpdate(doc))
  const clients = new Set(update.structs.map((s) => s.id.client))
  return `${update.structs.length} structs from ${clients.size} clients, ${update.ds.clients.size} deleting clients, ${Y.encodeStateAsUpdate(doc).length} bytes`
}

function withRoomName(frame: Uint8Array, room: string): Uint8Array {
  const out = Uint8Array.from(frame)
  const from = Buffer.from(PLACEHOLDER)
  const to = Buffer.from(room)
  let at = Buffer.from(out.buffer).indexOf(from)
  while (at !== -1) {
    out.set(to, at)
    at = Buffer.from(out.buffer).indexOf(from, at + 1)
  }
  return out
}

/**
 * Builds all cases up front (the test's own CPU work must not sit inside the latency probes) and
 * the model documents of the fuzz-only rooms, in the order each room's lane will send them.
 */
function buildCases(models: Map<string, Y.Doc>): { batches: ServerCase[][]; expectedStates: Array<Map<string, Uint8Array>> } {
  const batches: ServerCase[][] = []
  const expectedStates: Array<Map<string, Uint8Array>> = []
  let fuzzRoomTurn = 0
  let sharedRoomTurn = 0
  for (let b = 0; b < BATCHES; b++) {
    const batch: ServerCase[] = []
    const perBatch = Math.ceil(CASES / BATCHES)
    for (let i = b * perBatch; i < Math.min(CASES, (b + 1) * perBatch); i++) {
      const rng = rngFor(SEED, i)
      const protocol: Protocol = rng.chance(0.5) ? 'y-websocket' : 'hocuspocus'
      const { frame: raw, text } = hostileFrame(rng, protocol)
      // Decide the room: anything that would change a document goes to a fuzz-only room.
      const probe = predict(protocol, protocol === 'hocuspocus' ? withRoomName(raw, 'fz-s0') : raw, text, 'fz-s0', null)
      const changes = probe.update !== null
      const room = changes ? (FUZZ_ROOMS[fuzzRoomTurn++ % FUZZ_ROOMS.length] as string) : (SHARED_ROOMS[sharedRoomTurn++ % SHARED_ROOMS.length] as string)
      const frame = protocol === 'hocuspocus' ? withRoomName(raw, room) : raw
      const model = models.get(room) ?? null
      const { expected, update, closesDocument } = predict(protocol, frame, text, room, model)
      if (update !== null && model !== null) Y.applyUpdate(model, update)
      batch.push({ index: i, protocol, text, frame, room, expected, update, closesDocument })
    }
    batches.push(batch)
    // What each fuzz-only room must hold once this batch has run.
    expectedStates.push(new Map([...models].map(([room, model]) => [room, canonicalState(model)])))
  }
  return { batches, expectedStates }
}

// ---------------------------------------------------------------------------------------------
// Sockets

function startsWith(frame: Uint8Array, prefix: Uint8Array): boolean {
  return frame.length >= prefix.length && prefix.every((byte, i) => frame[i] === byte)
}

function hocuspocusPrefix(room: string, ...bytes: number[]): Uint8Array {
  const name = Buffer.from(room)
  return concat(varUint(name.length), name, Uint8Array.from(bytes))
}

/**
 * One short-lived connection: the hostile frame, then a probe whose answer proves the frame was
 * handled without a close. Resolves with the server's close code, or null when the probe was answered.
 */
async function runCase(url: string, c: ServerCase): Promise<number | null> {
  const target = c.protocol === 'y-websocket' ? `${url}/${c.room}` : `${url}/`
  const socket = new WebSocket(target, { maxPayload: 64 * 1024 * 1024 })
  const client = new RawClient(socket)
  await withDeadline(client.opened, `case ${c.index} to connect`)
  const reply = c.protocol === 'y-websocket' ? Uint8Array.of(0, 1) : hocuspocusPrefix(c.room, 0, 1)
  const probe = c.protocol === 'y-websocket' ? encodeSyncStep1(Uint8Array.of(0)) : encodeHocuspocusSyncStep1(c.room, Uint8Array.of(0))
  let replies = 0
  let onReply = (): void => {}
  socket.on('message', (data: Buffer) => {
    if (!startsWith(new Uint8Array(data), reply)) return
    replies++
    onReply()
  })
  const reply_ = (count: number): Promise<void> =>
    new Promise((resolve) => {
      onReply = () => {
        if (replies >= count) resolve()
      }
      onReply()
    })
  if (c.protocol === 'hocuspocus') {
    // The document must be open (authenticated and loaded) before the hostile frame: a CLOSE or
    // token sent while it is still opening takes another path (see the ordering test below).
    socket.send(encodeHocuspocusClientAuthToken(c.room, ''))
    socket.send(probe)
    await withDeadline(Promise.race([reply_(1), client.closed]), `case ${c.index}: hocuspocus document to open`)
  }
  const answered = reply_(c.protocol === 'hocuspocus' ? 2 : 1)
  if (c.text !== null) socket.send(c.text)
  else socket.send(c.frame)
  // A second token for an open document is ignored; after a CLOSE it opens the document again.
  if (c.protocol === 'hocuspocus') socket.send(encodeHocuspocusClientAuthToken(c.room, ''))
  socket.send(probe)
  const outcome = await withDeadline(
    Promise.race([answered.then(() => null), client.closed.then((code) => code)]),
    `case ${c.index} (${c.protocol}, room ${c.room}, expected ${c.expected ?? 'no close'}, frame ${Buffer.from(c.frame).toString('hex').slice(0, 200)}) to be answered or closed`,
  )
  if (outcome === null) {
    socket.close()
    await client.waitClosed()
  }
  return outcome
}

function getLive(port: number): Promise<{ status: number; ms: number }> {
  const started = performance.now()
  return withDeadline(
    new Promise((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path: '/health/live', agent: false }, (res) => {
        res.resume()
        res.on('end', () => resolve({ status: res.statusCode ?? 0, ms: performance.now() - started }))
      })
      req.on('error', reject)
      req.end()
    }),
    'GET /health/live',
    LIVE_HANG_MS,
  )
}

/** Raw HTTP upgrade with `path` written byte for byte into the request line. */
function rawUpgrade(port: number, path: Buffer): Promise<{ status: number; contentType: string; body: string }> {
  return withDeadline(
    new Promise((resolve, reject) => {
      const socket = connect(port, '127.0.0.1')
      const chunks: Buffer[] = []
      socket.on('data', (chunk: Buffer) => {
        chunks.push(chunk)
        const text = Buffer.concat(chunks).toString('latin1')
        if (text.startsWith('HTTP/1.1 101')) socket.destroy()
      })
      socket.on('error', reject)
      socket.on('close', () => {
        const text = Buffer.concat(chunks).toString('latin1')
        const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0)
        const head = text.split('\r\n\r\n')[0] ?? ''
        const contentType = /\r\ncontent-type: *([^\r]*)/i.exec(head)?.[1] ?? ''
        resolve({ status, contentType, body: text.slice(head.length + 4) })
      })
      socket.write(
        Buffer.concat([
          Buffer.from('GET '),
          path,
          Buffer.from(' HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n'),
        ]),
      )
    }),
    `upgrade of ${JSON.stringify(path.toString('latin1'))}`,
  )
}

// ---------------------------------------------------------------------------------------------

describe('fuzz: the server through real sockets', { timeout: FILE_BUDGET_MS + 20_000 }, () => {
  let weft: InProcessServer
  const pairs = new Map<string, { a: WebsocketProvider; b: WebsocketProvider; legit: Y.Doc }>()
  const keepers: RawClient[] = []
  const fileStarted = Date.now()

  before(async () => {
    console.log(`fuzz-server: seed ${SEED}, ${CASES} cases; replay with WEFT_FUZZ_SEED=${SEED} WEFT_FUZZ_SERVER_CASES=${CASES}`)
    weft = await startServer({
      maxMessageBytes: MAX_MESSAGE_BYTES,
      // The fuzzer is one address opening thousands of short-lived connections; admission is
      // tested elsewhere and must not be what refuses it here.
      maxConnectionsPerIp: 10_000,
      upgradesPerSecondPerIp: 100_000,
      upgradesPerSecond: 100_000,
    })
    for (const room of SHARED_ROOMS) {
      const a = provider(weft.url, room)
      const b = provider(weft.url, room)
      const legit = new Y.Doc()
      a.doc.on('update', (update: Uint8Array, origin: unknown) => {
        if (origin !== a) Y.applyUpdate(legit, update)
      })
      pairs.set(room, { a, b, legit })
      await Promise.all([synced(a), synced(b)])
    }
    // Keeps each fuzz-only room loaded between short-lived connections.
    for (const room of FUZZ_ROOMS) keepers.push(await RawClient.open(`${weft.url}/${room}`))
  })

  after(async () => {
    for (const { a, b, legit } of pairs.values()) {
      destroy(a, b)
      legit.destroy()
    }
    for (const keeper of keepers) keeper.close()
    await weft?.stop()
  })

  it(`${CASES} hostile frames over both protocols: documented close codes, /health/live answers throughout, rooms intact (seed ${SEED})`, async (t) => {
    const models = new Map(FUZZ_ROOMS.map((room) => [room, new Y.Doc()] as const))
    const { batches, expectedStates } = buildCases(models)
    const codes = new Map<string, number>()
    const mismatches: string[] = []
    const probes: Array<{ status: number; ms: number } | Error> = []
    let edit = 0

    for (const [b, batch] of batches.entries()) {
      const before = new Map(FUZZ_ROOMS.map((room) => [room, canonicalState((weft.server.loadedRoom(room) as { doc: Y.Doc }).doc)]))
      // Liveness probes for the whole batch, each issued on a timer while the fuzzing runs.
      let fuzzing = true
      const probing = (async () => {
        while (fuzzing) {
          probes.push(await getLive(weft.port).catch((err: Error) => err))
          await new Promise((resolve) => setTimeout(resolve, PROBE_EVERY_MS))
        }
      })()
      const run = async (c: ServerCase): Promise<void> => {
        const code = await runCase(weft.url, c)
        const key = `${c.protocol} ${code ?? 'none'}`
        codes.set(key, (codes.get(key) ?? 0) + 1)
        if (code !== c.expected) {
          mismatches.push(`case ${c.index} ${c.protocol} ${c.room}: expected ${c.expected ?? 'no close'}, got ${code ?? 'no close'}; frame ${Buffer.from(c.frame).toString('hex').slice(0, 160)}${c.text === null ? '' : ` text ${c.text}`}`)
        }
      }
      // Fuzz-only rooms: one connection at a time per room, in the model's order. Shared rooms: many at once.
      const lanes = FUZZ_ROOMS.map(async (room) => {
        for (const c of batch.filter((x) => x.room === room)) await run(c)
      })
      const shared = batch.filter((c) => SHARED_ROOMS.includes(c.room))
      let next = 0
      for (let l = 0; l < SHARED_LANES; l++) {
        lanes.push(
          (async () => {
            while (next < shared.length) await run(shared[next++] as ServerCase)
          })(),
        )
      }
      try {
        await Promise.all(lanes)
      } finally {
        fuzzing = false
        await probing
      }

      // The stored documents: fuzz-only rooms equal their model (refused frames left nothing).
      for (const room of FUZZ_ROOMS) {
        const doc = (weft.server.loadedRoom(room) as { doc: Y.Doc }).doc
        const actual = Buffer.from(canonicalState(doc))
        const expected = Buffer.from(expectedStates[b]?.get(room) as Uint8Array)
        assert.ok(actual.equals(expected), `batch ${b}: ${room} is not exactly its accepted updates (changed by the batch: ${!actual.equals(Buffer.from(before.get(room) as Uint8Array))}; server ${describeDoc(doc)})`)
      }
      // The other clients carry on: an edit after the batch converges, and the shared documents hold only their edits.
      for (const [room, { a, b: peer, legit }] of pairs) {
        a.doc.getText('t').insert(0, `edit-${edit++};`)
        const serverDoc = (weft.server.loadedRoom(room) as { doc: Y.Doc }).doc
        const state = await converged([a.doc, peer.doc, serverDoc], `${room} to converge after batch ${b}`)
        assert.ok(Buffer.from(state).equals(Buffer.from(canonicalState(legit))), `batch ${b}: ${room} holds something besides its providers' edits`)
      }
    }

    const answered = probes.filter((p): p is { status: number; ms: number } => !(p instanceof Error))
    const slowest = Math.max(...answered.map((p) => p.ms))
    // Latencies are printed, never asserted (speed is measured in bench/); a hang fails getLive's deadline.
    t.diagnostic(`close codes: ${JSON.stringify(Object.fromEntries(codes))}; ${probes.length} live probes, slowest ${slowest.toFixed(1)} ms; ${Date.now() - fileStarted} ms`)
    assert.deepEqual(mismatches.slice(0, 20), [], `${mismatches.length} frames got another outcome than predicted`)
    assert.ok(probes.length >= BATCHES * 2, `live probes ran during the fuzzing (${probes.length})`)
    assert.deepEqual(probes.filter((p) => p instanceof Error).map(String), [], 'every live probe was answered')
    assert.ok(answered.every((p) => p.status === 200), 'every live probe got 200')
    // Every documented outcome was exercised, or the prediction side of the test is vacuous.
    for (const expected of ['1002', '1007', '1009', 'none']) {
      assert.ok([...codes.keys()].some((k) => k.endsWith(` ${expected}`)), `some frame ended with ${expected}`)
    }
    for (const model of models.values()) model.destroy()
  })

  it('hocuspocus: AUTH, CLOSE, AUTH, SYNC step 1 sent back to back reopen the document and are answered in order', async () => {
    // What a provider does when it attaches, detaches and attaches again on a shared socket before
    // the server has finished the first authentication. The frames must be handled in order.
    const client = await RawClient.open(`${weft.url}/`)
    try {
      const room = 'fz-s3'
      client.socket.send(Buffer.concat([encodeHocuspocusClientAuthToken(room, '')]))
      client.socket.send(encodeHocuspocusClientClose(room))
      client.socket.send(encodeHocuspocusClientAuthToken(room, ''))
      client.socket.send(encodeHocuspocusSyncStep1(room, Uint8Array.of(0)))
      await client.frame((f) => startsWith(f, hocuspocusPrefix(room, 0, 1)), 'the sync step 2 answering the reopened document', 3_000)
    } finally {
      client.close()
      await client.waitClosed()
    }
  })

  it('room names with every byte value, raw and percent-encoded: 101 or HTTP 400 JSON, never a crash', async () => {
    const unexpected: string[] = []
    let upgraded = 0
    const paths: Buffer[] = []
    for (let byte = 0; byte < 256; byte++) {
      paths.push(Buffer.from(`/fz-byte-%${byte.toString(16).padStart(2, '0')}`))
      paths.push(Buffer.concat([Buffer.from('/fz-byte-'), Buffer.of(byte)]))
      paths.push(Buffer.concat([Buffer.from('/'), Buffer.of(byte)]))
    }
    let next = 0
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < paths.length) {
          const path = paths[next++] as Buffer
          const { status, contentType, body } = await rawUpgrade(weft.port, path)
          if (status === 101) {
            upgraded++
            continue
          }
          let json: { error?: unknown } | null
          try {
            json = JSON.parse(body) as { error?: unknown }
          } catch {
            json = null
          }
          if (status !== 400 || !contentType.startsWith('application/json') || typeof json?.error !== 'string') {
            unexpected.push(`${JSON.stringify(path.toString('latin1'))} -> ${status} ${contentType} ${JSON.stringify(body.slice(0, 80))}`)
          }
        }
      }),
    )
    assert.ok(upgraded > 100, `ordinary names upgraded (${upgraded})`)
    assert.equal((await getLive(weft.port)).status, 200, 'still live')
    assert.deepEqual(unexpected, [], 'every room name got 101 or a JSON 400')
  })
})
