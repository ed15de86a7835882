/**
 * One load process. The coordinator starts several (pinned to the core the server does not
 * have) and drives them over IPC: connect clients, write at a rate, report counts and latencies.
 * Clients speak the wire protocol directly; only trackers and writers keep a Y.Doc.
 */
import { Agent, get } from 'node:http'
import WebSocket from 'ws'
import * as Y from 'yjs'
import { LightSocket } from './light-socket.js'
import type { ClientSpec, Command, ConnectResult, GroupStats, Reply, StatsResult } from './load-protocol.js'
import { countUpdates, HOCUSPOCUS_PONG, readLive, socketUrl, WireCodec, type Dialect } from './wire.js'

/** Transaction origin of updates that arrived as live broadcasts (not in a sync step 2). */
const LIVE = Symbol('live')
/** Wall-clock milliseconds with sub-millisecond resolution, comparable across processes. */
const wallNow = (): number => performance.timeOrigin + performance.now()
const EMPTY_STATE_VECTOR = Uint8Array.of(0)
/** Loopback source addresses the clients are spread over, so 20,000+ sockets do not run out of ephemeral ports. */
const SOURCE_ADDRESSES = 16
/** A writer stops queueing history while this much is buffered in its socket. */
const WRITER_BUFFER_BYTES = 1 << 20
/** What a light client keeps of a message longer than `wholeBytes`: enough to classify it (a Hocuspocus document name included). */
const PREFIX_BYTES = 4096

interface Counters {
  received: Map<string, number>
  sent: Map<string, number>
  latenciesMs: number[]
}

const counters: Counters = { received: new Map(), sent: new Map(), latenciesMs: [] }
/** Per `ClientSpec.group`: deliveries, update frames and latencies (receivers is filled in by `stats`). */
let groupCounters = new Map<string, GroupStats>()

function groupOf (spec: ClientSpec): GroupStats | null {
  if (spec.group === undefined) return null
  let group = groupCounters.get(spec.group)
  if (group === undefined) {
    group = { receivers: 0, received: 0, frames: 0, latenciesMs: [] }
    groupCounters.set(spec.group, group)
  }
  return group
}
/** Awareness frames every client received, and the trackers' cursor delays (the `cursors` command). */
const cursorCounters = { frames: 0, latenciesMs: [] as number[] }
const clients: Client[] = []
let closedClients = 0
const workerIndex = Number(process.env.BENCH_WORKER_INDEX ?? '0')
/** Whether trackers take latency samples: only the timed writes of `write` carry send times to decode. */
let timing = false

function bump (map: Map<string, number>, key: string, by = 1): void {
  map.set(key, (map.get(key) ?? 0) + by)
}

class Client {
  readonly codec: WireCodec
  readonly doc: Y.Doc | null
  socket: WebSocket | LightSocket | null = null
  synced = false
  closed = false
  startedAt = 0
  syncedAt = 0
  completeAt: number | null = null
  private completeLength = 0

  constructor (readonly spec: ClientSpec, dialect: Dialect) {
    this.codec = new WireCodec(dialect, spec.room)
    this.doc = spec.role === 'tracker' || spec.role === 'writer' ? new Y.Doc() : null
    if (this.doc !== null && spec.role === 'writer') {
      this.doc.on('update', (update: Uint8Array, origin: unknown) => {
        if (origin === LIVE || this.socket === null || this.socket.readyState !== WebSocket.OPEN) return
        this.socket.send(this.codec.update(update))
        bump(counters.sent, this.spec.room)
      })
    }
  }

  logLength (): number {
    return this.doc === null ? 0 : this.doc.getArray('log').length
  }

  /** `wholeBytes`: see the `connect` command; only light clients take it. */
  open (port: number, index: number, completeLength: number, wholeBytes?: number): Promise<void> {
    this.completeLength = completeLength
    this.startedAt = performance.now()
    const localAddress = `127.0.0.${1 + ((index + workerIndex * 7) % SOURCE_ADDRESSES)}`
    const url = socketUrl(this.codec.dialect, port, this.spec.room)
    return new Promise<void>((resolve) => {
      const done = (): void => resolve()
      let socket: WebSocket | LightSocket
      if (wholeBytes !== undefined && this.spec.role === 'light') {
        const light = new LightSocket(url, { localAddress, wholeBytes, prefixBytes: PREFIX_BYTES })
        light.on('message', (data, length) => this.onFrame(data, length, done))
        socket = light
      } else {
        const ws = new WebSocket(url, { perMessageDeflate: false, localAddress, maxPayload: 512 * 1024 * 1024 })
        ws.binaryType = 'nodebuffer'
        ws.on('message', (data: Buffer) => this.onFrame(data, data.length, done))
        socket = ws
      }
      this.socket = socket
      socket.on('open', () => {
        const sv = this.doc === null ? EMPTY_STATE_VECTOR : Y.encodeStateVector(this.doc)
        for (const frame of this.codec.hello(sv)) socket.send(frame)
        if (this.codec.dialect === 'relay') this.markSynced(done)
      })
      socket.on('error', () => {
        // The close event that follows does the bookkeeping.
      })
      socket.on('close', () => {
        // Only sockets lost after their handshake; failures to connect are counted as not synced.
        if (!this.closed && this.synced) closedClients++
        this.closed = true
        done()
      })
    })
  }

  private markSynced (done: () => void): void {
    if (this.synced) return
    this.synced = true
    this.syncedAt = performance.now()
    this.checkComplete()
    done()
  }

  /** One sample per cursor of another client that carries a send time. */
  private timeCursors (frame: Buffer): void {
    const now = wallNow()
    for (const state of this.codec.awarenessStates(frame) ?? []) {
      const cursor = (JSON.parse(state) as { cursor?: { t?: number; from?: number } } | null)?.cursor
      if (typeof cursor?.t === 'number' && cursor.from !== this.cursorId) cursorCounters.latenciesMs.push(now - cursor.t)
    }
  }

  /** This client's awareness client ID and clock (the `cursors` command). */
  readonly cursorId = 1 + Math.floor(Math.random() * 0x7ffffff0)
  cursorClock = 0

  private checkComplete (): void {
    if (this.completeAt === null && this.completeLength > 0 && this.logLength() >= this.completeLength) this.completeAt = performance.now()
  }

  /**
   * A live update at a tracker: one latency sample per writer update it carries (a server may
   * merge a burst into one update; each part is timed from its own send).
   */
  private countLive (update: Uint8Array): void {
    const now = wallNow()
    const group = groupOf(this.spec)
    if (!timing) {
      const updates = countUpdates(update)
      bump(counters.received, this.spec.room, updates)
      if (group !== null) {
        group.received += updates
        group.frames++
      }
      return
    }
    const { structs, times } = readLive(update)
    for (const t of times) counters.latenciesMs.push(now - t)
    bump(counters.received, this.spec.room, structs)
    if (group !== null) {
      for (const t of times) group.latenciesMs.push(now - t)
      group.received += structs
      group.frames++
    }
  }

  /** `length`: the message's; longer than `frame` when a light client kept only its first bytes. */
  private onFrame (frame: Buffer, length: number, done: () => void): void {
    const role = this.spec.role
    if (length > frame.length) {
      // Only a light client's, and only a sync reply is that long: a live update of a writer never is.
      const kind = this.codec.kind(frame)
      if (kind === 'step2') this.markSynced(done)
      else if (kind === 'update' && this.synced) bump(counters.received, this.spec.room)
      return
    }
    if (this.codec.isPing(frame)) {
      this.socket?.send(HOCUSPOCUS_PONG)
      return
    }
    if (this.synced && this.codec.isAwareness(frame)) {
      cursorCounters.frames++
      if (role === 'tracker') this.timeCursors(frame)
      return
    }
    if (this.synced && role === 'light') {
      const updates = this.codec.updateCount(frame)
      if (updates > 0) {
        bump(counters.received, this.spec.room, updates)
        const group = groupOf(this.spec)
        if (group !== null) {
          group.received += updates
          group.frames++
        }
      }
      return
    }
    if (this.synced && (role === 'slow' || role === 'writer')) return
    const message = this.codec.decode(frame)
    if (message.kind === 'step2' || message.kind === 'update') {
      if (this.doc !== null && role !== 'writer') Y.applyUpdate(this.doc, message.payload, message.kind === 'update' && this.synced ? LIVE : null)
      else if (this.doc !== null && message.kind === 'step2') Y.applyUpdate(this.doc, message.payload, LIVE)
      if (message.kind === 'update' && this.synced && role !== 'writer') this.countLive(message.payload)
      if (message.kind === 'step2') this.markSynced(done)
      this.checkComplete()
    }
  }
}

function send (reply: Reply): void {
  process.send?.(reply)
}

async function connect (command: Extract<Command, { type: 'connect' }>): Promise<ConnectResult> {
  const fresh = command.clients.map((spec) => new Client(spec, command.dialect))
  const base = clients.length
  clients.push(...fresh)
  const started = performance.now()
  const limit = command.concurrency > 0 ? command.concurrency : fresh.length
  let next = 0
  const lane = async (): Promise<void> => {
    while (next < fresh.length) {
      const i = next++
      await (fresh[i] as Client).open(command.port, base + i, command.completeLength ?? 0, command.wholeBytes)
    }
  }
  const lanes = Array.from({ length: Math.min(limit, fresh.length) }, lane)
  const deadline = new Promise<void>((resolve) => setTimeout(resolve, command.timeoutMs).unref())
  await Promise.race([Promise.all(lanes), deadline])
  const trackers = fresh.filter((c) => c.spec.role === 'tracker')
  if (command.completeLength !== undefined && command.completeLength > 0) {
    const until = started + command.timeoutMs
    while (performance.now() < until && trackers.some((c) => c.completeAt === null && !c.closed)) {
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
  }
  const synced = fresh.filter((c) => c.synced && !c.closed)
  const lastSynced = synced.reduce((max, c) => Math.max(max, c.syncedAt), started)
  const first = trackers[0]
  return {
    type: 'connected',
    synced: synced.length,
    failed: fresh.length - synced.length,
    allSyncedMs: lastSynced - started,
    completeMs: trackers.map((c) => (c.completeAt === null ? null : c.completeAt - c.startedAt)),
    logLengths: trackers.map((c) => c.logLength()),
    stateBytes: first?.doc ? Y.encodeStateAsUpdate(first.doc).length : 0,
  }
}

function writers (): Client[] {
  return clients.filter((c) => c.spec.role === 'writer' && c.synced && !c.closed)
}

/**
 * Calls `send(n)` `ratePerSecond` times a second for `durationMs`, checking every `tickMs`, from a
 * random offset within the first period (clients start spread out, as independent users would);
 * resolves with how many it sent, fewer when `stopped` turns true.
 */
function paced (ratePerSecond: number, durationMs: number, tickMs: number, stopped: () => boolean, send: (n: number) => void): Promise<number> {
  const total = Math.floor((ratePerSecond * durationMs) / 1000)
  return new Promise((resolve) => {
    const start = performance.now() + Math.random() * (1000 / ratePerSecond)
    let sent = 0
    const tick = (): void => {
      const due = Math.min(total, Math.floor(((performance.now() - start) * ratePerSecond) / 1000))
      while (sent < due && !stopped()) send(++sent)
      if (sent >= total || stopped()) resolve(sent)
      else setTimeout(tick, tickMs)
    }
    setTimeout(tick, Math.max(0, start - performance.now()))
  })
}

/**
 * Keys of `distinctKeys` writes go round a ring this long: a burst applied in one transaction
 * never sets one twice, and the document stays as small as a one-key document plus this many
 * live entries (a key set anew deletes its previous value in another transaction).
 */
const DISTINCT_KEYS = 1024
let distinctKey = 0

/**
 * Each writer sends `rate` updates a second: a Y.Map key overwritten with the send time (and
 * padding), or with `distinctKeys` a new key each time.
 */
async function write (ratePerSecond: number, durationMs: number, paddingBytes: number, distinctKeys = false): Promise<number> {
  const padding = paddingBytes > 0 ? 'x'.repeat(paddingBytes) : undefined
  const tickMs = Math.max(1, Math.min(10, 1000 / ratePerSecond))
  const sent = await Promise.all(writers().map((writer) => {
    const lat = (writer.doc as Y.Doc).getMap('lat')
    return paced(ratePerSecond, durationMs, tickMs, () => writer.closed, (s) => {
      lat.set(distinctKeys ? `k${++distinctKey % DISTINCT_KEYS}` : 't', padding === undefined ? { s, t: wallNow() } : { s, t: wallNow(), p: padding })
    })
  }))
  return sent.reduce((sum, n) => sum + n, 0)
}

/** Every synced client sends `rate` cursor moves a second: an awareness update whose state carries the send time. */
async function cursors (ratePerSecond: number, durationMs: number): Promise<number> {
  const movers = clients.filter((c) => c.synced && !c.closed)
  const tickMs = Math.max(5, Math.min(50, 1000 / ratePerSecond / 2))
  const sent = await Promise.all(movers.map((client) => paced(ratePerSecond, durationMs, tickMs, () => client.closed || client.socket === null, (at) => {
    client.cursorClock++
    client.socket?.send(client.codec.awareness(client.cursorId, client.cursorClock, JSON.stringify({ cursor: { from: client.cursorId, t: wallNow(), at } })))
  })))
  return sent.reduce((sum, n) => sum + n, 0)
}

/** Short-lived clients: each connects, syncs (or times out after 10 s) and closes. */
async function churn (command: Extract<Command, { type: 'churn' }>): Promise<Reply> {
  let next = 0
  let done = 0
  let failed = 0
  const lane = async (): Promise<void> => {
    while (next < command.cycles) {
      const i = next++
      const client = new Client({ room: command.rooms[i % command.rooms.length] as string, role: 'light' }, command.dialect)
      const timer = setTimeout(() => client.socket?.terminate(), 10_000)
      await client.open(command.port, i, 0)
      clearTimeout(timer)
      if (client.synced && !client.closed) done++
      else failed++
      client.closed = true
      const socket = client.socket
      if (socket !== null && socket.readyState === WebSocket.OPEN) {
        await new Promise<void>((resolve) => {
          socket.once('close', () => resolve())
          socket.close()
        })
      }
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, command.concurrency) }, lane))
  return { type: 'churned', cycles: done, failed }
}

function drained (socket: { readyState: number, bufferedAmount: number } | null, below = WRITER_BUFFER_BYTES): Promise<void> {
  return new Promise((resolve) => {
    const poll = (): void => {
      if (socket === null || socket.readyState !== WebSocket.OPEN || socket.bufferedAmount < below) resolve()
      else setTimeout(poll, 2)
    }
    poll()
  })
}

async function history (count: number): Promise<Reply> {
  let sentAll = 0
  for (const writer of writers()) {
    const log = (writer.doc as Y.Doc).getArray<number>('log')
    for (let i = 0; i < count; i++) {
      log.push([i])
      if (i % 256 === 255) await drained(writer.socket)
    }
    // The last update counts as sent once the kernel has all of it.
    await drained(writer.socket, 1)
    sentAll += count
  }
  const first = writers()[0]
  return { type: 'written', sent: sentAll, stateBytes: first === undefined ? 0 : Y.encodeStateAsUpdate(first.doc as Y.Doc).length }
}

async function bulkText (totalBytes: number, chunkBytes: number): Promise<number> {
  let updates = 0
  for (const writer of writers()) {
    const body = (writer.doc as Y.Doc).getText('body')
    const alphabet = 'abcdefghijklmnopqrstuvwxyz '
    for (let written = 0; written < totalBytes; written += chunkBytes) {
      let chunk = ''
      for (let i = 0; i < chunkBytes; i++) chunk += alphabet[(i * 7 + written) % alphabet.length]
      body.insert(body.length, chunk)
      updates++
      await drained(writer.socket)
    }
  }
  return updates
}

async function awaitLength (length: number, timeoutMs: number): Promise<Reply> {
  const started = performance.now()
  const trackers = clients.filter((c) => c.spec.role === 'tracker')
  while (performance.now() - started < timeoutMs && trackers.some((c) => c.logLength() < length && !c.closed)) {
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
  return { type: 'length-reached', lengths: trackers.map((c) => c.logLength()), ms: performance.now() - started }
}

/**
 * `concurrency` keep-alive HTTP clients, each sending its next GET as soon as the previous
 * response has been read to the end, until `durationMs` has passed.
 */
async function httpLoad (command: Extract<Command, { type: 'http-load' }>): Promise<Reply> {
  const agent = new Agent({ keepAlive: true, maxSockets: command.concurrency })
  const latenciesMs: number[] = []
  const statuses: Record<string, number> = {}
  let requests = 0
  let errors = 0
  let bytes = 0
  const started = performance.now()
  const end = started + command.durationMs
  const one = (): Promise<void> => new Promise<void>((resolve) => {
    const sent = performance.now()
    const req = get({ host: '127.0.0.1', port: command.port, path: command.path, agent }, (res) => {
      res.on('data', (chunk: Buffer) => { bytes += chunk.length })
      res.on('end', () => {
        const status = String(res.statusCode ?? 0)
        statuses[status] = (statuses[status] ?? 0) + 1
        if (res.statusCode === 200) {
          requests++
          latenciesMs.push(performance.now() - sent)
        } else {
          errors++
        }
        resolve()
      })
      res.on('error', () => { errors++; resolve() })
    })
    req.on('error', () => { errors++; resolve() })
  })
  const lane = async (): Promise<void> => {
    while (performance.now() < end) await one()
  }
  await Promise.all(Array.from({ length: command.concurrency }, lane))
  const elapsedMs = performance.now() - started
  agent.destroy()
  return { type: 'http-loaded', requests, errors, bytes, elapsedMs, latenciesMs, statuses }
}

function stats (): StatsResult {
  const receivers: Record<string, number> = {}
  const groups: Record<string, GroupStats> = {}
  for (const c of clients) {
    if (c.spec.role === 'light' || c.spec.role === 'tracker') {
      receivers[c.spec.room] = (receivers[c.spec.room] ?? 0) + 1
      const counted = groupOf(c.spec)
      if (counted !== null && c.spec.group !== undefined) {
        groups[c.spec.group] ??= { ...counted, receivers: 0 }
        ;(groups[c.spec.group] as GroupStats).receivers++
      }
    }
  }
  return {
    type: 'stats',
    received: Object.fromEntries(counters.received),
    receivers,
    sent: Object.fromEntries(counters.sent),
    latenciesMs: counters.latenciesMs,
    awarenessFrames: cursorCounters.frames,
    cursorLatenciesMs: cursorCounters.latenciesMs,
    closed: closedClients,
    groups,
  }
}

async function handle (command: Command): Promise<Reply> {
  switch (command.type) {
    case 'connect':
      return connect(command)
    case 'write':
      timing = true
      return { type: 'written', sent: await write(command.ratePerSecond, command.durationMs, command.paddingBytes, command.distinctKeys) }
    case 'cursors':
      return { type: 'written', sent: await cursors(command.ratePerSecond, command.durationMs) }
    case 'churn':
      return churn(command)
    case 'history':
      return history(command.count)
    case 'bulk-text':
      return { type: 'written', sent: await bulkText(command.totalBytes, command.chunkBytes) }
    case 'await-length':
      return awaitLength(command.length, command.timeoutMs)
    case 'pause-slow':
      for (const c of clients) if (c.spec.role === 'slow') c.socket?.pause()
      return { type: 'ok' }
    case 'resume-slow': {
      const slow = clients.filter((c) => c.spec.role === 'slow')
      for (const c of slow) c.socket?.resume()
      await new Promise((resolve) => setTimeout(resolve, command.waitMs))
      return { type: 'slow-closed', closed: slow.filter((c) => c.closed).length, total: slow.length }
    }
    case 'reset':
      counters.received.clear()
      counters.sent.clear()
      counters.latenciesMs = []
      cursorCounters.frames = 0
      cursorCounters.latenciesMs = []
      groupCounters = new Map()
      return { type: 'ok' }
    case 'stats':
      return stats()
    case 'http-load':
      return httpLoad(command)
    case 'close':
      for (const c of clients) c.socket?.terminate()
      setTimeout(() => process.exit(0), 50)
      return { type: 'ok' }
  }
}

process.on('message', (command: Command) => {
  handle(command).then(send, (err: unknown) => send({ type: 'error', message: (err as Error).message ?? String(err) }))
})
// The coordinator owns this process: if it goes, so do we.
process.on('disconnect', () => process.exit(0))
