import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { Socket } from 'node:net'
import * as Y from 'yjs'
import type { WebsocketProvider } from 'y-websocket'
import { decodeHocuspocusMessage, decodeYMessage, encodeHocuspocusClientAuthToken, encodeHocuspocusSyncStep1, encodeSyncStep1, encodeSyncUpdate } from '../protocol/index.js'
import type { Connection } from '../server/connection.js'
import { destroy, provider, RawClient, synced } from './harness/clients.js'
import { startServer, type InProcessServer } from './harness/server.js'
import { docFromFrames } from './harness/sync-replies.js'
import { destroyHocuspocus, hocuspocus, nextEvent, type Hocuspocus } from './harness/hocuspocus.js'
import { signToken } from './harness/tokens.js'
import { eventually, until, withDeadline } from './harness/wait.js'
import { metricValue } from './harness/metrics.js'

// Issue #4 over real sockets: a reader that stops reading is first fed merged data, then closed
// with 1013, and never slows the rest of its room; an inbound flood pauses the sender's socket
// without losing anything.

/** Per-connection outbound budget of these tests (the soft mark is a quarter of it). */
const BUDGET = 256 * 1024
const GRACE_MS = 500
/** Text inserted by each writer update. */
const UPDATE_BYTES = 1024
/** The writer stops here whatever happens, so a server that never closes the reader fails instead of eating memory. */
const MAX_WRITER_BYTES = 96 * 1024 * 1024
/** Budget of the lagging-reader test: large, so that a reader resuming soon stays within the grace. */
const ROOMY_BUDGET = 2 * 1024 * 1024
/** Inbound flood: messages sent at once, and the per-connection rate (burst twice that). */
const FLOOD_MESSAGES = 5_000
const FLOOD_RATE = 1_000
/** Characters per flood edit: a frame of ~60 bytes. */
const FLOOD_EDIT_CHARS = 40
/** The inbound limits are not the subject of the outbound tests: high enough that the writer is never paused. */
const UNTHROTTLED = { inboundMessagesPerSecond: 1_000_000, inboundBytesPerSecond: 1024 * 1024 * 1024 }

/** One Prometheus sample: `name` with exactly `labels` (e.g. `{code="1013"}`), 0 when absent. */
async function metric(server: InProcessServer, name: string, labels = ''): Promise<number> {
  return (await metricValue(server.http, name, labels)) ?? 0
}

/**
 * The server's open connections. Read through a cast (weft exposes no per-connection API): the
 * queue size of one connection is what the budget is about, and the histogram on /metrics only
 * samples it once per heartbeat.
 */
function connectionsOf(server: InProcessServer): Set<Connection> {
  return new Set((server.server as unknown as { connections: { list(): Connection[] } }).connections.list())
}

/** The TCP socket under a `ws` client: pausing it stops reading, so the server's writes back up. */
function tcpOf(client: RawClient): Socket {
  return (client.socket as unknown as { _socket: Socket })._socket
}

/** Opens a raw reader, syncs it, and returns it with its server-side Connection. */
async function slowReader(server: InProcessServer, room: string): Promise<{ client: RawClient; connection: Connection }> {
  const known = new Set(connectionsOf(server))
  const { client } = await RawClient.joined(`${server.url}/${room}`)
  await client.frame((f) => decodeYMessage(f).kind === 'sync-step-1', 'the server sync step 1')
  const connection = [...connectionsOf(server)].find((c) => !known.has(c))
  assert.ok(connection !== undefined, 'the reader has a server-side connection')
  return { client, connection }
}

/**
 * A provider that appends UPDATE_BYTES of text per update, together with its send time in the
 * `sent` array (readers compute their latency from it), in bursts between event-loop turns.
 */
class BusyWriter {
  writes = 0
  bytes = 0
  private stopped = false
  readonly done: Promise<void>

  constructor(
    private readonly p: WebsocketProvider,
    private readonly keepGoing: () => boolean,
  ) {
    this.done = this.run()
  }

  private async run(): Promise<void> {
    const text = this.p.doc.getText('text')
    const sent = this.p.doc.getArray<number>('sent')
    while (!this.stopped && this.keepGoing() && this.bytes < MAX_WRITER_BYTES) {
      // One update per turn of the loop: the room does not batch them, so the queue under test
      // is what merges them for a reader that fell behind.
      const chunk = String(this.writes % 10).repeat(UPDATE_BYTES - 1) + '\n'
      this.p.doc.transact(() => {
        text.insert(text.length, chunk)
        sent.push([performance.now()])
      })
      this.writes++
      this.bytes += UPDATE_BYTES
      await new Promise((resolve) => setImmediate(resolve))
    }
  }

  stop(): Promise<void> {
    this.stopped = true
    return this.done
  }
}

/** Waits until the frames `reader` received build a document with `expected`'s length of text; returns it. */
async function caughtUp(reader: RawClient, expected: string, what: string, timeoutMs: number): Promise<ReturnType<typeof docFromFrames>> {
  let built = docFromFrames([])
  await until(() => {
    built = docFromFrames(reader.frames)
    return built.doc.getText('text').length === expected.length
  }, what, timeoutMs)
  return built
}

/** Records, for a reader provider, how long each writer update took to arrive. */
function latencies(p: WebsocketProvider): number[] {
  const seen: number[] = []
  p.doc.getArray<number>('sent').observe((event) => {
    const now = performance.now()
    for (const item of event.changes.added) for (const sentAt of item.content.getContent() as number[]) seen.push(now - sentAt)
  })
  return seen
}

function summary(ms: number[]): string {
  const sorted = [...ms].sort((a, b) => a - b)
  const at = (q: number): number => Math.round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN)
  return `p50 ${at(0.5)} ms, p99 ${at(0.99)} ms, max ${at(1)} ms over ${ms.length} updates`
}

describe('outbound backpressure over real sockets', () => {
  let server: InProcessServer

  before(async () => {
    server = await startServer({ sendQueueBytes: BUDGET, slowConsumerGraceMs: GRACE_MS, ...UNTHROTTLED })
  })
  after(() => server.stop())

  it('a reader that stops reading gets merged updates, then is closed with 1013; its queue stays bounded and the room is not held back', async (t) => {
    const room = 'stalled-reader'
    const writer = provider(server.url, room)
    const fast = [provider(server.url, room), provider(server.url, room)]
    let slow: RawClient | null = null
    try {
      await Promise.all([writer, ...fast].map((p) => synced(p)))
      const fastLatency = fast.map(latencies)
      const fastSockets = fast.map((p) => p.ws)
      const reader = await slowReader(server, room)
      slow = reader.client
      const coalescedBefore = await metric(server, 'weft_coalesced_updates_total')
      tcpOf(slow).pause()

      // The stalled connection's queue only grows when the room broadcasts, so it is sampled right
      // after each update the server applies (the room's own handler, registered first, has run).
      const serverDoc = server.server.loadedRoom(room)?.doc
      assert.ok(serverDoc !== undefined)
      let maxQueued = 0
      let appliedBytes = 0
      let overAt: number | null = null
      let closedAt: number | null = null
      const sample = (update: Uint8Array): void => {
        appliedBytes += update.length
        maxQueued = Math.max(maxQueued, reader.connection.queuedBytes)
        if (overAt === null && reader.connection.queuedBytes > BUDGET) overAt = appliedBytes
        if (closedAt === null && reader.connection.closeCode !== null) closedAt = appliedBytes
      }
      serverDoc.on('update', sample)
      const busy = new BusyWriter(writer, () => reader.connection.closeCode === null)
      await withDeadline(busy.done, 'the writer to stop (it stops when the stalled reader is closed)', 30_000)
      serverDoc.off('update', sample)
      t.diagnostic(`writer sent ${busy.writes} updates (${(busy.bytes / 1048576).toFixed(1)} MiB); stalled queue peaked at ${maxQueued} bytes (budget ${BUDGET})`)
      assert.equal(reader.connection.closeCode, 1013, `the stalled reader was closed with 1013 by the server (writer stopped at ${busy.bytes} bytes)`)

      const coalesced = (await metric(server, 'weft_coalesced_updates_total')) - coalescedBefore
      assert.ok(coalesced > 0, 'updates were merged for the stalled reader before it was closed')
      assert.equal(await metric(server, 'weft_slow_consumer_closes_total'), 1)

      // Bounded: never more than the budget plus what the room applied while the reader was over it
      // (the grace period: the queue merges then, it drops nothing), plus frame overhead.
      assert.ok(overAt !== null && closedAt !== null, 'the stalled queue went over the budget, then the reader was closed')
      const duringGrace = (closedAt ?? 0) - (overAt ?? 0)
      t.diagnostic(`bytes applied while the reader was over the budget: ${duringGrace}`)
      assert.ok(maxQueued <= BUDGET + duringGrace + 16 * 1024, `queue peaked at ${maxQueued} bytes`)
      assert.ok(maxQueued < busy.bytes * 0.75, 'the queue did not grow with everything the writer sent')

      // The reader, reading again, finds the close frame after whatever was already in flight.
      tcpOf(slow).resume()
      assert.equal(await slow.waitClosed(15_000), 1013, `close reason: ${slow.closeReason}`)
      await until(() => !connectionsOf(server).has(reader.connection), 'the server to forget the closed connection')
      assert.equal(await metric(server, 'weft_closes_total', '{code="1013"}'), 1)
      assert.equal(reader.connection.queuedBytes, 0, 'nothing is held for a closed connection')

      // Everyone else received every update and has the writer's document.
      const sent = writer.doc.getArray('sent').length
      for (const [i, p] of fast.entries()) {
        await until(() => p.doc.getArray('sent').length === sent, `fast reader ${i} to receive all ${sent} updates`, 20_000)
        assert.equal(p.doc.getText('text').length, writer.doc.getText('text').length)
        assert.equal(p.doc.getText('text').toString(), writer.doc.getText('text').toString())
        assert.equal(fastLatency[i]?.length, sent, `fast reader ${i} saw each update`)
        t.diagnostic(`fast reader ${i} latency: ${summary(fastLatency[i] ?? [])}`)
      }
      for (const [i, p] of fast.entries()) assert.equal(p.ws, fastSockets[i], `fast reader ${i} kept its socket`)
    } finally {
      slow?.socket.terminate()
      destroy(writer, ...fast)
    }
  })

  /**
   * A writer puts `megabytes` of text into `room` in 1 MiB updates; then a raw joiner that does
   * not read (from before it asks) sends `asks` sync step 1s with an empty state vector, so the
   * replies back up in the server. `run` gets the joiner and its server-side connection.
   */
  async function pausedBigJoiner(room: string, megabytes: number, asks: number, run: (joiner: RawClient, joined: Connection, text: string) => Promise<void>): Promise<void> {
    const writer = provider(server.url, room)
    let joiner: RawClient | null = null
    try {
      await synced(writer)
      const text = writer.doc.getText('text')
      for (let i = 0; i < megabytes; i++) text.insert(text.length, String(i).repeat(1024 * 1024))
      const serverDoc = server.server.loadedRoom(room)?.doc
      assert.ok(serverDoc !== undefined)
      await until(() => serverDoc.getText('text').length === megabytes * 1024 * 1024, 'the server to hold the document', 30_000)
      const closesBefore = await metric(server, 'weft_slow_consumer_closes_total')
      const known = new Set(connectionsOf(server))
      joiner = await RawClient.open(`${server.url}/${room}`)
      tcpOf(joiner).pause()
      for (let i = 0; i < asks; i++) joiner.send(encodeSyncStep1(Y.encodeStateVector(new Y.Doc())))
      let connection: Connection | undefined
      await until(() => (connection = [...connectionsOf(server)].find((c) => !known.has(c))) !== undefined, 'the joiner\'s server-side connection')
      await run(joiner, connection as Connection, text.toString())
      assert.equal(await metric(server, 'weft_slow_consumer_closes_total'), closesBefore)
      assert.equal(joiner.closeCode, null)
    } finally {
      joiner?.socket.terminate()
      destroy(writer)
    }
  }

  it('a joiner whose first sync is far over the budget is no slow consumer: paused past the grace period, it still receives the whole document', async () => {
    // 8 MiB of text: more than loopback's socket buffers hold, 32 times the budget.
    await pausedBigJoiner('big-first-sync', 8, 1, async (joiner, joined, text) => {
      await until(() => joined.queuedBytes > BUDGET, 'the sync reply to back up over the budget in the server')
      // The condition under test is time itself: past the grace period a slow consumer is closed.
      await new Promise((resolve) => setTimeout(resolve, GRACE_MS * 3))
      assert.ok(joined.queuedBytes > BUDGET, 'the reply is still waiting for the paused reader')
      assert.equal(joined.closeCode, null, 'the joiner was not closed as a slow consumer')
      tcpOf(joiner).resume()
      const frame = await joiner.frame((f) => decodeYMessage(f).kind === 'sync-step-2', 'the whole document', 30_000)
      assert.equal(docFromFrames([frame]).doc.getText('text').toString(), text)
    })
  })

  it('a big sync reply that must wait behind another in the server is no slow consumer either: a Hocuspocus socket opening two big documents gets both whole', async () => {
    // The second document's reply waits in weft's queue behind the first, which the paused
    // reader does not take. (A y-websocket joiner that asks twice no longer makes a second reply
    // while the first is on its way: reply-floods.test.ts.)
    const megabytes = 4
    const rooms = ['big-second-a', 'big-second-b']
    const writers = rooms.map((room) => provider(server.url, room))
    let joiner: RawClient | null = null
    try {
      await Promise.all(writers.map((writer) => synced(writer)))
      for (const writer of writers) {
        const text = writer.doc.getText('text')
        for (let i = 0; i < megabytes; i++) text.insert(text.length, String(i).repeat(1024 * 1024))
      }
      for (const room of rooms) {
        const serverDoc = server.server.loadedRoom(room)?.doc
        assert.ok(serverDoc !== undefined)
        await until(() => serverDoc.getText('text').length === megabytes * 1024 * 1024, `the server to hold ${room}`, 30_000)
      }
      const closesBefore = await metric(server, 'weft_slow_consumer_closes_total')
      const known = new Set(connectionsOf(server))
      const socket = await RawClient.open(`${server.url}/`)
      joiner = socket
      tcpOf(socket).pause()
      for (const room of rooms) {
        socket.send(encodeHocuspocusClientAuthToken(room, 'open-mode', 'raw-test'))
        socket.send(encodeHocuspocusSyncStep1(room, Y.encodeStateVector(new Y.Doc())))
      }
      let joined: Connection | undefined
      await until(() => (joined = [...connectionsOf(server)].find((c) => !known.has(c))) !== undefined, 'the joiner\'s server-side connection')
      const connection = joined as Connection
      await until(() => connection.heldBytes >= megabytes * 1024 * 1024, 'the second reply to wait in the server\'s queue')
      // The condition under test is time itself: past the grace period a slow consumer is closed.
      await new Promise((resolve) => setTimeout(resolve, GRACE_MS * 3))
      assert.ok(connection.heldBytes >= megabytes * 1024 * 1024, 'the second reply is still held for the paused reader')
      assert.equal(connection.closeCode, null, 'the joiner was not closed as a slow consumer')
      tcpOf(socket).resume()
      const replies = (): Array<{ document: string; update: Uint8Array }> =>
        socket.frames.flatMap((frame) => {
          try {
            const message = decodeHocuspocusMessage(frame)
            return message.kind === 'sync-step-2' ? [{ document: message.document, update: message.update }] : []
          } catch {
            return []
          }
        })
      await until(() => replies().length === 2, 'both replies', 30_000)
      assert.deepEqual(replies().map((reply) => reply.document).sort(), rooms)
      for (const reply of replies()) {
        const doc = new Y.Doc()
        Y.applyUpdate(doc, reply.update)
        assert.equal(doc.getText('text').toString(), writers[rooms.indexOf(reply.document)]?.doc.getText('text').toString())
      }
      assert.equal(await metric(server, 'weft_slow_consumer_closes_total'), closesBefore)
      assert.equal(socket.closeCode, null)
    } finally {
      joiner?.socket.terminate()
      destroy(...writers)
    }
  })

  it('a reader that is slow but resumes before the grace period catches up from merged updates to the exact document', async (t) => {
    const roomy = await startServer({ sendQueueBytes: ROOMY_BUDGET, slowConsumerGraceMs: GRACE_MS, ...UNTHROTTLED })
    const room = 'lagging-reader'
    const writer = provider(roomy.url, room)
    let lagging: RawClient | null = null
    let busy: BusyWriter | null = null
    try {
      await synced(writer)
      const reader = await slowReader(roomy, room)
      lagging = reader.client
      const coalescedBefore = await metric(roomy, 'weft_coalesced_updates_total')
      tcpOf(lagging).pause()
      let maxQueued = 0
      busy = new BusyWriter(writer, () => {
        maxQueued = Math.max(maxQueued, reader.connection.queuedBytes)
        return true
      })
      // Paused until the server holds and merges for this reader, i.e. it is past the soft mark.
      await until(() => reader.connection.queuedBytes > ROOMY_BUDGET / 4, 'the lagging reader to pass the soft mark', 20_000)
      await until(() => reader.connection.heldBytes > 0, 'updates to be held for the lagging reader', 20_000)
      tcpOf(lagging).resume()
      const resumedAt = busy.writes
      await until(() => busy !== null && busy.writes >= resumedAt + 256, 'the writer to go on after the reader resumed', 20_000)
      await busy.stop()
      const coalesced = (await metric(roomy, 'weft_coalesced_updates_total')) - coalescedBefore
      t.diagnostic(`writer sent ${busy.writes} updates; lagging queue peaked at ${maxQueued} bytes (budget ${ROOMY_BUDGET}); ${coalesced} updates merged`)

      const expected = writer.doc.getText('text').toString()
      const built = await caughtUp(lagging, expected, 'the lagging reader to catch up', 20_000)
      assert.equal(built.doc.getText('text').toString(), expected)
      assert.equal(built.doc.getArray('sent').length, busy.writes)
      assert.ok(coalesced > 0, 'updates were merged for the lagging reader')
      assert.ok(built.updateFrames < busy.writes, `the reader got ${built.updateFrames} update frames for ${busy.writes} updates: some were merged`)
      assert.equal(lagging.closeCode, null, 'the lagging reader was not closed')
      assert.equal(reader.connection.state, 'open')
      assert.equal(await metric(roomy, 'weft_slow_consumer_closes_total'), 0)
    } finally {
      await busy?.stop()
      lagging?.socket.terminate()
      destroy(writer)
      await roomy.stop()
    }
  })
})

describe('a send queue whose soft mark is under the socket\'s high-water mark', () => {
  it('sends what it held as soon as the reader reads, though no \'drain\' comes: not at the next heartbeat', async (t) => {
    // 16 KiB: the soft mark (4 KiB) is under the stream's high-water mark (16 KiB on Node 20, 64 KiB
    // from 22), so the socket's writes never return false and Node emits no 'drain' for them.
    // Heartbeats (which flush too) and the grace period are far beyond the test's deadlines.
    const small = await startServer({ sendQueueBytes: 16 * 1024, slowConsumerGraceMs: 300_000, heartbeatIntervalMs: 300_000, ...UNTHROTTLED })
    const room = 'no-drain'
    const writer = provider(small.url, room)
    let lagging: RawClient | null = null
    let busy: BusyWriter | null = null
    try {
      await synced(writer)
      const reader = await slowReader(small, room)
      lagging = reader.client
      tcpOf(lagging).pause()
      // Small updates, one a turn, until the server holds some for the paused reader: the loopback
      // buffers fill, then the socket's stream takes frames up to the soft mark and no further.
      busy = new BusyWriter(writer, () => reader.connection.heldBytes === 0)
      await withDeadline(busy.done, 'the server to hold updates for the paused reader', 60_000)
      assert.ok(reader.connection.heldBytes > 0, 'updates were held for the paused reader')
      const text = writer.doc.getText('text')
      await until(() => (small.server.loadedRoom(room)?.doc.getText('text').length ?? 0) === text.length, 'the server to apply every edit')
      const expected = text.toString()
      const resumedAt = Date.now()
      tcpOf(lagging).resume()
      const built = await caughtUp(lagging, expected, 'the reader to get what was held, with no write, drain or heartbeat to send it', 10_000)
      t.diagnostic(`caught up ${Date.now() - resumedAt} ms after resuming (${expected.length} characters)`)
      assert.equal(built.doc.getText('text').toString(), expected)
      assert.equal(reader.connection.heldBytes, 0)
      assert.equal(reader.connection.state, 'open')
    } finally {
      await busy?.stop()
      lagging?.socket.terminate()
      destroy(writer)
      await small.stop()
    }
  })
})

/**
 * The writer puts 8 MiB of text into `room` (more than loopback's socket buffers hold, so a reader
 * that stops reading keeps its reply unsent); resolves once the server holds it all.
 */
async function writeBigDocument(server: InProcessServer, writer: WebsocketProvider, room: string): Promise<Y.Text> {
  await synced(writer)
  const text = writer.doc.getText('text')
  for (let i = 0; i < 8; i++) text.insert(text.length, String(i).repeat(1024 * 1024))
  const serverDoc = server.server.loadedRoom(room)?.doc
  assert.ok(serverDoc !== undefined)
  await until(() => serverDoc.getText('text').length === 8 * 1024 * 1024, 'the server to hold the document', 30_000)
  return text
}

/** A raw joiner of `url` that never reads asks for the whole document: its reply takes a turn and stays in the server. */
async function stallTheTurn(server: InProcessServer, url: string): Promise<RawClient> {
  const known = new Set(connectionsOf(server))
  const stalled = await RawClient.open(url)
  tcpOf(stalled).pause()
  stalled.send(encodeSyncStep1(Y.encodeStateVector(new Y.Doc())))
  let connection: Connection | undefined
  await until(() => (connection = [...connectionsOf(server)].find((c) => !known.has(c))) !== undefined && connection.queuedBytes > BUDGET, 'the stalled joiner to hold its reply')
  return stalled
}

describe('big sync replies take turns (--sync-replies-at-once)', () => {
  it('one reply at a time: the others wait in order, and a joiner that stops reading gives up its turn', async () => {
    // Replies over a quarter of the budget are big; one turn server-wide.
    const turns = await startServer({ sendQueueBytes: BUDGET, slowConsumerGraceMs: GRACE_MS, syncRepliesAtOnce: 1, ...UNTHROTTLED })
    const room = 'turns'
    const writer = provider(turns.url, room)
    const joiners: WebsocketProvider[] = []
    let stalled: RawClient | null = null
    let waiting: RawClient | null = null
    try {
      const text = await writeBigDocument(turns, writer, room)
      const document = text.toString()
      const waitsBefore = await metric(turns, 'weft_sync_reply_waits_total')
      // The stalled joiner takes the only turn and never drains its socket.
      stalled = await stallTheTurn(turns, `${turns.url}/${room}`)
      // A raw joiner asks while the turn is taken; an edit made after it asked must reach it after its reply.
      waiting = await RawClient.open(`${turns.url}/${room}`)
      waiting.send(encodeSyncStep1(Y.encodeStateVector(new Y.Doc())))
      await eventually(async () => (await metric(turns, 'weft_sync_reply_waits_total')) > waitsBefore, 'the second reply to wait for a turn', 10_000, 20)
      text.insert(0, 'after-ask:')
      for (let i = 0; i < 3; i++) joiners.push(provider(turns.url, room))
      // Every waiter gets its reply although the stalled joiner never reads: its turn ends.
      await Promise.all(joiners.map((p) => synced(p, 30_000)))
      for (const p of joiners) assert.equal(p.doc.getText('text').toString(), `after-ask:${document}`)
      await until(() => docFromFrames(waiting?.frames ?? []).doc.getText('text').length === document.length + 10, 'the raw waiter to have the document and the edit', 30_000)
      const kinds = waiting.frames.map((f) => decodeYMessage(f).kind).filter((kind) => kind === 'sync-step-2' || kind === 'sync-update')
      assert.equal(kinds[0], 'sync-step-2', `the reply came first, the edit after it (${kinds.join(', ')})`)
      assert.ok((await metric(turns, 'weft_sync_reply_waits_total')) - waitsBefore >= 2, 'the joiners after the stalled one waited for turns')
      assert.equal(stalled.closeCode, null, 'the stalled joiner is not closed for its reply')
      tcpOf(stalled).resume()
      const reply = await stalled.frame((f) => decodeYMessage(f).kind === 'sync-step-2', 'the stalled joiner\'s whole reply', 30_000)
      assert.equal(docFromFrames([reply]).doc.getText('text').toString(), document)
    } finally {
      stalled?.socket.terminate()
      waiting?.socket.terminate()
      destroy(writer, ...joiners)
      await turns.stop()
    }
  })
})

describe('a Hocuspocus retry after a denial (server with an auth secret)', () => {
  it('gets the whole document as a sync reply: it waits for a turn like any other, and arrives', async () => {
    const secret = 'reply-turns-test-secret-0123456789abcdef'
    const room = 'turns-retry'
    const turns = await startServer({ authSecret: secret, sendQueueBytes: BUDGET, slowConsumerGraceMs: GRACE_MS, syncRepliesAtOnce: 1, ...UNTHROTTLED })
    const good = await signToken({ rooms: [room], access: 'write' }, { secret, subject: 'u1' })
    const writer = provider(turns.url, room, new Y.Doc(), { params: { token: good } })
    let stalled: RawClient | null = null
    let hp: Hocuspocus | null = null
    try {
      const text = await writeBigDocument(turns, writer, room)
      // Denied first: the step 1 the provider sends on open is dropped with the denial.
      const client = hocuspocus(turns.url, room, { token: await signToken({ rooms: ['elsewhere'], access: 'write' }, { secret, subject: 'u1' }) })
      hp = client
      await nextEvent(client.provider, 'authenticationFailed', 'the denial')
      // A y-websocket joiner that never reads takes the only turn.
      stalled = await stallTheTurn(turns, `${turns.url}/${room}?token=${good}`)
      const waitsBefore = await metric(turns, 'weft_sync_reply_waits_total')
      client.provider.configuration.token = good
      const resynced = nextEvent<unknown>(client.provider, 'synced', 'synced after the retry', () => true, 30_000)
      await client.provider.sendToken()
      await eventually(async () => (await metric(turns, 'weft_sync_reply_waits_total')) > waitsBefore, 'the retry\'s reply to wait for a turn', 10_000, 20)
      await resynced
      assert.equal(client.doc.getText('text').toString(), text.toString())
    } finally {
      stalled?.socket.terminate()
      if (hp !== null) destroyHocuspocus(hp)
      destroy(writer)
      await turns.stop()
    }
  })
})

describe('inbound rate limit over real sockets', () => {
  let server: InProcessServer

  before(async () => {
    server = await startServer({ inboundMessagesPerSecond: FLOOD_RATE })
  })
  after(() => server.stop())

  it(`a flood of ${FLOOD_MESSAGES} tiny updates pauses the sender's socket, and every edit arrives`, async (t) => {
    const room = 'flood'
    const observer = provider(server.url, room)
    let flooder: RawClient | null = null
    try {
      await synced(observer)
      // Each edit its own small update, made beforehand so the loop below only writes. (Not one
      // character each: a 64 KiB socket read would then hold ~3,800 frames, all handled before the
      // pause can take effect; see the diagnostic below.)
      const source = new Y.Doc()
      const updates: Uint8Array[] = []
      source.on('update', (u: Uint8Array) => updates.push(encodeSyncUpdate(u)))
      const text = source.getText('text')
      for (let i = 0; i < FLOOD_MESSAGES; i++) text.insert(text.length, String.fromCharCode(97 + (i % 26)).repeat(FLOOD_EDIT_CHARS))
      assert.equal(updates.length, FLOOD_MESSAGES)

      flooder = await RawClient.open(`${server.url}/${room}`)
      await flooder.frame((f) => decodeYMessage(f).kind === 'sync-step-1', 'the server sync step 1')
      const serverDoc = server.server.loadedRoom(room)?.doc
      assert.ok(serverDoc !== undefined)
      const startedAt = performance.now()
      for (const u of updates) flooder.send(u)

      // While the flood is throttled, the socket is counted as paused and the server has applied
      // only part of what was sent (all of it is already written to the socket).
      let appliedWhilePaused = -1
      let pausedSeen = 0
      await until(() => {
        if (connectionsPaused(server) > 0) {
          appliedWhilePaused = serverDoc.getText('text').length / FLOOD_EDIT_CHARS
          pausedSeen++
        }
        return pausedSeen > 0
      }, 'the flooding socket to be paused', 10_000)
      const pausedMetric = await metric(server, 'weft_paused_sockets')
      t.diagnostic(`paused after ${Math.round(performance.now() - startedAt)} ms with ${appliedWhilePaused} of ${FLOOD_MESSAGES} edits applied (burst ${2 * FLOOD_RATE}); weft_paused_sockets ${pausedMetric}`)
      assert.equal(pausedMetric, 1, 'weft_paused_sockets counts the flooding socket')
      assert.ok(appliedWhilePaused < FLOOD_MESSAGES * 0.8, `${appliedWhilePaused} of ${FLOOD_MESSAGES} edits were applied when the socket was paused`)

      await until(() => observer.doc.getText('text').length === FLOOD_MESSAGES * FLOOD_EDIT_CHARS, `the observer to receive all ${FLOOD_MESSAGES} edits`, 30_000)
      const tookMs = performance.now() - startedAt
      t.diagnostic(`all ${FLOOD_MESSAGES} edits applied after ${Math.round(tookMs)} ms (at ${FLOOD_RATE}/s with a burst of ${2 * FLOOD_RATE}: ~${Math.round(((FLOOD_MESSAGES - 2 * FLOOD_RATE) / FLOOD_RATE) * 1000)} ms expected)`)
      assert.equal(observer.doc.getText('text').toString(), source.getText('text').toString())
      assert.equal(serverDoc.getText('text').toString(), source.getText('text').toString())
      assert.equal(flooder.closeCode, null, 'the flooding client was throttled, not closed')
      await until(() => connectionsPaused(server) === 0, 'the socket to be resumed after the flood', 10_000)
      assert.equal(await metric(server, 'weft_paused_sockets'), 0)
    } finally {
      flooder?.socket.terminate()
      destroy(observer)
    }
  })
})

function connectionsPaused(server: InProcessServer): number {
  let paused = 0
  for (const connection of connectionsOf(server)) if (connection.paused) paused++
  return paused
}
