/**
 * The cluster fault soak (issue #13): three `weft serve` processes, one redis-server and nginx in
 * front (deploy/nginx), rooms with stock y-websocket and Hocuspocus clients editing all the while,
 * HTTP writers and versions being created; faults injected one at a time, in random order:
 * kill -9 and restart, SIGTERM drain and restart, a data directory wiped before the restart,
 * Redis SIGKILL and restart empty, FLUSHALL, CLIENT KILL. After each fault the soak waits until
 * the cluster has recovered (every instance ready, no re-publish under way): the guarantee is
 * "no *single* failure loses or hides an edit", and two overlapping ones are not single.
 *
 * At the end every room must be byte-identical in every client, on every instance and in Redis,
 * every acknowledged edit (HTTP 204, Hocuspocus SyncStatus) and every client edit must be there,
 * and no read of an existing room may have answered 404.
 *
 * Used by test/cluster-soak.test.ts (CI-sized) and `npm run soak -- --minutes N` (test/soak/run.ts).
 */
import { rm } from 'node:fs/promises'
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'
import { WebSocket } from 'ws'
import * as Y from 'yjs'
import type { WebsocketProvider } from 'y-websocket'
import { Redis } from 'ioredis'
import { RedisNamespace } from '../../cluster/keys.js'
import { canonicalState, canonicalUpdate, destroy, provider } from '../harness/clients.js'
import { startNginx, type NginxProcess } from '../harness/nginx.js'
import { mulberry32 } from '../harness/fuzz.js'
import { freePort, startRedis, type RedisProcess } from '../harness/redis.js'
import { spawnWeft, tempDir, type WeftProcess } from '../harness/server.js'
import { metricValue } from '../harness/metrics.js'
import { eventually, until } from '../harness/wait.js'

export type FaultKind = 'kill-9' | 'sigterm-drain' | 'wipe-data' | 'redis-kill-empty' | 'flushall' | 'client-kill'
export const FAULT_KINDS: readonly FaultKind[] = ['kill-9', 'sigterm-drain', 'wipe-data', 'redis-kill-empty', 'flushall', 'client-kill']

export interface SoakOptions {
  /** How long faults are injected (editing goes on all the while). */
  faultMs: number
  rooms: number
  /** Each client edits once per this many ms (jittered). */
  editEveryMs: number
  /** Pause between the recovery from one fault and the next fault. */
  faultGapMs: number
  seed: number
  /** Versions must be on every instance at the end (needs versions stored in LevelDB in cluster mode). */
  requireVersions: boolean
  log(line: string): void
}

export interface SoakResult {
  faults: Record<FaultKind, number>
  edits: { clientMade: number; hocuspocusAcked: number; httpAcked: number; httpRefused: number; found: number; missing: string[] }
  versions: { created: number; foundEverywhere: number; missing: string[] }
  reads: { ok: number; notFound: number; unavailable: number; other: number }
  mismatches: string[]
  seconds: number
}

const HOCUSPOCUS_PATH = '/collab'
const ns = new RedisNamespace()

interface Instance {
  name: string
  port: number
  data: string
  weft: WeftProcess | null
}

interface Client {
  room: string
  kind: 'y-websocket' | 'hocuspocus'
  doc: Y.Doc
  made: string[]
  /** Hocuspocus: edits made but not yet covered by an unsyncedChanges count of 0. */
  unacked: string[]
  acked: number
  /** The last few connection events (close codes, errors), for the report when a client never settles. */
  events: string[]
  y?: WebsocketProvider
  h?: { provider: HocuspocusProvider; socket: HocuspocusProviderWebsocket }
}

const roomName = (i: number): string => `soak-${i}`

export async function runSoak(options: SoakOptions): Promise<SoakResult> {
  const started = Date.now()
  const random = mulberry32(options.seed)
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T
  const log = options.log
  const redis: RedisProcess = await startRedis()
  const instances: Instance[] = []
  const clients: Client[] = []
  const timers: NodeJS.Timeout[] = []
  let nginx: NginxProcess | null = null
  let stopping = false
  const faults = Object.fromEntries(FAULT_KINDS.map((k) => [k, 0])) as Record<FaultKind, number>
  const httpAcked = new Map<string, string[]>()
  let httpRefused = 0
  const versionsCreated: Array<{ room: string; id: string }> = []
  const reads = { ok: 0, notFound: 0, unavailable: 0, other: 0 }
  const rooms = Array.from({ length: options.rooms }, (_, i) => roomName(i))

  const note = (client: Client, what: string): void => {
    client.events.push(`+${((Date.now() - started) / 1000).toFixed(1)} s ${what}`)
    if (client.events.length > 6) client.events.shift()
  }
  const launch = async (instance: Instance): Promise<void> => {
    instance.weft = await spawnWeft([
      '--port', String(instance.port), '--redis', redis.url, '--instance-id', instance.name, '--data', instance.data,
      '--hocuspocus-path', HOCUSPOCUS_PATH, '--drain-seconds', '2', '--trusted-proxies', '127.0.0.1', '--log-level', 'info',
      '--max-connections-per-ip', '10000', '--upgrades-per-second-per-ip', '10000', '--inbound-messages-per-second', '10000',
    ])
  }
  const ready = async (instance: Instance): Promise<boolean> => {
    try {
      const res = await fetch(`http://127.0.0.1:${instance.port}/health/ready`)
      const body = (await res.json()) as { redis?: string; republish?: unknown }
      return res.status === 200 && body.redis === 'up' && body.republish === undefined
    } catch {
      return false
    }
  }
  /** Where to look when clients do not come back: nginx's logs, each instance's counts and last log lines. */
  const reportCluster = async (): Promise<void> => {
    if (nginx !== null) {
      log(`soak: nginx errors (last 15): ${nginx.stderr().trim().split('\n').slice(-15).join(' | ')}`)
      log(`soak: nginx access (last 15): ${(await nginx.accessLog()).slice(-15).join(' | ')}`)
    }
    for (const instance of instances) {
      const base = `http://127.0.0.1:${instance.port}`
      const metrics = await fetch(`${base}/metrics`).then((r) => r.text(), (e: unknown) => `unreachable: ${String(e)}`)
      const wanted = metrics.split('\n').filter((l) => /^weft_(connections|upgrades_total|closes_total|rooms_loaded|cluster_redis)/.test(l))
      log(`soak: ${instance.name} (${instance.port}): ${wanted.join('; ')}`)
      log(`soak: ${instance.name} last log lines: ${JSON.stringify(instance.weft?.logs.slice(-12))}`)
    }
  }
  const recovered = (): Promise<void> => eventually(async () => (await Promise.all(instances.map(ready))).every(Boolean), 'every instance ready, on Redis, not re-publishing', 60_000, 100)
  const losses = async (instance: Instance): Promise<number> => (await metricValue(`http://127.0.0.1:${instance.port}`, 'weft_cluster_redis_data_losses_total')) ?? 0
  /** After Redis lost its data: every instance has noticed it (and `recovered` then waits for its re-publish). */
  const noticed = async (before: number[]): Promise<void> =>
    eventually(async () => (await Promise.all(instances.map(losses))).every((n, i) => n > (before[i] as number)), 'every instance to notice the loss of Redis data', 30_000, 100)

  try {
    for (let i = 1; i <= 3; i++) {
      const instance: Instance = { name: `weft-${i}`, port: await freePort(), data: (await tempDir(`weft-soak-${i}-`)).path, weft: null }
      instances.push(instance)
      await launch(instance)
    }
    nginx = await startNginx({ upstreams: instances.map((i) => `127.0.0.1:${i.port}`), hocuspocusPath: HOCUSPOCUS_PATH })
    const lb = nginx
    await recovered()
    log(`soak: seed ${options.seed}, ${options.rooms} rooms, instances on ${instances.map((i) => i.port).join(', ')}, nginx on ${lb.port}`)

    // One client of each protocol per room, through nginx.
    for (const room of rooms) {
      const y: Client = { room, kind: 'y-websocket', doc: new Y.Doc(), made: [], unacked: [], acked: 0, events: [] }
      y.y = provider(lb.url, room, y.doc)
      y.y.on('connection-close', (event) => note(y, `close ${event?.code ?? 'local'}`))
      y.y.on('connection-error', () => note(y, 'error'))
      y.y.on('sync', (synced) => note(y, `sync ${synced}`))
      const h: Client = { room, kind: 'hocuspocus', doc: new Y.Doc(), made: [], unacked: [], acked: 0, events: [] }
      const socket = new HocuspocusProviderWebsocket({ url: `${lb.url}${HOCUSPOCUS_PATH}/${room}`, WebSocketPolyfill: WebSocket, delay: 100, minDelay: 50, maxDelay: 1000 })
      const hp = new HocuspocusProvider({ websocketProvider: socket, name: room, document: h.doc })
      hp.attach()
      socket.on('status', ({ status }: { status: string }) => note(h, status))
      socket.on('disconnect', ({ event }: { event?: { code?: number } }) => note(h, `close ${event?.code ?? 'local'}`))
      hp.on('synced', ({ state }: { state: boolean }) => note(h, `synced ${state}`))
      hp.on('unsyncedChanges', ({ number }: { number: number }) => {
        if (number !== 0) return
        h.acked += h.unacked.length
        h.unacked = []
      })
      h.h = { provider: hp, socket }
      clients.push(y, h)
    }
    const edit = (client: Client): void => {
      const id = `${client.kind[0]}:${client.room}:${client.made.length}`
      client.doc.getArray<string>('log').push([id])
      client.made.push(id)
      if (client.kind === 'hocuspocus') client.unacked.push(id)
    }
    for (const client of clients) {
      timers.push(setInterval(() => {
        if (!stopping && random() < 0.9) edit(client)
      }, options.editEveryMs))
    }
    // HTTP writers: each update adds one id; 204 means stored.
    let httpSeq = 0
    const httpWrite = async (): Promise<void> => {
      const room = pick(rooms)
      const id = `http:${room}:${httpSeq++}`
      const doc = new Y.Doc()
      doc.getArray<string>('log').push([id])
      try {
        const res = await fetch(`${lb.http}/api/rooms/${room}/updates`, { method: 'POST', body: Y.encodeStateAsUpdate(doc), headers: { 'content-type': 'application/octet-stream' } })
        await res.arrayBuffer()
        if (res.status === 204) httpAcked.set(room, [...(httpAcked.get(room) ?? []), id])
        else httpRefused++
      } catch {
        httpRefused++
      }
    }
    const httpRead = async (): Promise<void> => {
      const room = pick(rooms.filter((r) => httpAcked.has(r)))
      if (room === undefined) return
      try {
        const res = await fetch(`${lb.http}/api/rooms/${room}`)
        await res.arrayBuffer()
        if (res.status === 200) reads.ok++
        else if (res.status === 404) {
          reads.notFound++
          log(`soak: 404 for ${room}, which exists`)
          const lines = (await lb.accessLog()).filter((line) => line.includes(`/api/rooms/${room} `))
          log(`soak: nginx: ${lines.slice(-3).join(' | ')}`)
          for (const instance of instances) log(`soak: ${instance.name} (${instance.port}): ${JSON.stringify(instance.weft?.logs.slice(-5))}`)
        } else if (res.status === 503 || res.status === 502) reads.unavailable++
        else reads.other++
      } catch {
        reads.unavailable++
      }
    }
    const createVersion = async (): Promise<void> => {
      const room = pick(rooms.filter((r) => httpAcked.has(r)))
      if (room === undefined) return
      try {
        const res = await fetch(`${lb.http}/api/rooms/${room}/versions`, { method: 'POST', body: JSON.stringify({ name: `v${versionsCreated.length}` }), headers: { 'content-type': 'application/json' } })
        if (res.status === 200 || res.status === 201) versionsCreated.push({ room, id: ((await res.json()) as { id: string }).id })
        else await res.arrayBuffer()
      } catch {
        // not created: not counted
      }
    }
    timers.push(setInterval(() => void (stopping ? undefined : httpWrite()), 100))
    timers.push(setInterval(() => void (stopping ? undefined : httpRead()), 150))
    timers.push(setInterval(() => void (stopping ? undefined : createVersion()), 1000))

    // Every room exists (an acknowledged HTTP write) before the faults begin.
    for (const room of rooms) {
      const doc = new Y.Doc()
      const id = `http:${room}:seed`
      doc.getArray<string>('log').push([id])
      const res = await fetch(`${lb.http}/api/rooms/${room}/updates`, { method: 'POST', body: Y.encodeStateAsUpdate(doc), headers: { 'content-type': 'application/octet-stream' } })
      if (res.status !== 204) throw new Error(`seeding ${room}: HTTP ${res.status}`)
      httpAcked.set(room, [...(httpAcked.get(room) ?? []), id])
    }

    // Faults: every kind once in random order, then random kinds until the time is up.
    const order = [...FAULT_KINDS].sort(() => random() - 0.5)
    const faultsUntil = Date.now() + options.faultMs
    while (Date.now() < faultsUntil || order.length > 0) {
      await new Promise((resolve) => setTimeout(resolve, options.faultGapMs * (0.5 + random())))
      const kind = order.shift() ?? pick(FAULT_KINDS)
      const instance = pick(instances)
      const at = Date.now()
      switch (kind) {
        case 'kill-9':
        case 'wipe-data': {
          const weft = instance.weft as WeftProcess
          weft.kill('SIGKILL')
          await weft.exited
          if (kind === 'wipe-data') await rm(instance.data, { recursive: true, force: true })
          await launch(instance)
          break
        }
        case 'sigterm-drain': {
          const weft = instance.weft as WeftProcess
          weft.kill('SIGTERM')
          await weft.exited
          await launch(instance)
          break
        }
        case 'redis-kill-empty': {
          const before = await Promise.all(instances.map(losses))
          await redis.kill()
          await redis.restart()
          await noticed(before)
          break
        }
        case 'flushall': {
          const before = await Promise.all(instances.map(losses))
          await redis.command('FLUSHALL')
          await noticed(before)
          break
        }
        case 'client-kill':
          await redis.command('CLIENT', 'KILL', 'TYPE', 'normal')
          await redis.command('CLIENT', 'KILL', 'TYPE', 'pubsub')
          break
      }
      faults[kind]++
      await recovered()
      log(`soak: ${kind}${kind.startsWith('redis') || kind === 'flushall' || kind === 'client-kill' ? '' : ` of ${instance.name}`} at +${Math.round((at - started) / 1000)} s; recovered in ${Date.now() - at} ms`)
    }

    // The end: stop writing, let every client reconnect and sync, then compare everything.
    stopping = true
    for (const timer of timers) clearInterval(timer)
    await recovered()
    const settled = (c: Client): boolean => (c.y !== undefined ? c.y.wsconnected && c.y.synced : c.h?.provider.isSynced === true && c.h.provider.unsyncedChanges === 0)
    await until(() => clients.every(settled), 'every client connected and synced', 60_000).catch(async (err: unknown) => {
      // Which clients, and in what state: a bare timeout says nothing about where to look.
      const stuck = clients.filter((c) => !settled(c)).map((c) => c.y !== undefined
        ? `${c.kind} ${c.room} (connecting ${c.y.wsconnecting}, connected ${c.y.wsconnected}, synced ${c.y.synced}; ${c.events.join(', ')})`
        : `${c.kind} ${c.room} (status ${c.h?.socket.status}, synced ${c.h?.provider.isSynced}, unsynced changes ${c.h?.provider.unsyncedChanges}; ${c.events.join(', ')})`)
      for (const line of stuck) log(`soak: not settled: ${line}`)
      await reportCluster()
      throw new Error(`${(err as Error).message}; ${stuck.length} of ${clients.length} not settled (the log above has each one and the cluster's state)`, { cause: err })
    })
    const mismatches: string[] = []
    const missing: string[] = []
    let found = 0
    const redisClient = new Redis(redis.url)
    try {
      for (const room of rooms) {
        const inRoom = clients.filter((c) => c.room === room)
        try {
          await until(() => {
            const first = Buffer.from(canonicalState(inRoom[0]?.doc as Y.Doc))
            return inRoom.every((c) => first.equals(Buffer.from(canonicalState(c.doc))))
          }, `${room}'s clients to converge`, 30_000)
        } catch {
          mismatches.push(`${room}: clients differ`)
        }
        const state = Buffer.from(canonicalState(inRoom[0]?.doc as Y.Doc))
        for (const instance of instances) {
          // Directly on each instance, not through nginx.
          await eventually(async () => {
            const res = await fetch(`http://127.0.0.1:${instance.port}/api/rooms/${room}?format=update`)
            return res.status === 200 && Buffer.from(canonicalUpdate(new Uint8Array(await res.arrayBuffer()))).equals(state)
          }, `${instance.name} to serve ${room} like the clients`, 15_000).catch(() => mismatches.push(`${room}: ${instance.name} differs`))
        }
        const keys = ns.room(room)
        await eventually(async () => {
          const snapshot = await redisClient.hgetBuffer(keys.doc, 'u')
          const entries = await redisClient.xrangeBuffer(keys.log, '-', '+')
          const updates: Uint8Array[] = snapshot === null ? [] : [snapshot]
          for (const [, fields] of entries) for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i]?.toString() === 'u') updates.push(fields[i + 1] as Buffer)
          return updates.length > 0 && Buffer.from(canonicalUpdate(Y.mergeUpdates(updates))).equals(state)
        }, `Redis to hold ${room} like the clients`, 15_000).catch(() => mismatches.push(`${room}: Redis differs`))
        const ids = new Set((inRoom[0]?.doc as Y.Doc).getArray<string>('log').toArray())
        const expected = [...inRoom.flatMap((c) => c.made), ...(httpAcked.get(room) ?? [])]
        for (const id of expected) {
          if (ids.has(id)) found++
          else missing.push(id)
        }
      }
    } finally {
      redisClient.disconnect()
    }
    const versionsMissing: string[] = []
    let versionsEverywhere = 0
    for (const { room, id } of versionsCreated) {
      let everywhere = true
      for (const instance of instances) {
        const res = await fetch(`http://127.0.0.1:${instance.port}/api/rooms/${room}/versions/${id}`).catch(() => null)
        if (res?.status !== 200) everywhere = false
        await res?.arrayBuffer()
      }
      if (everywhere) versionsEverywhere++
      else versionsMissing.push(`${room}/${id}`)
    }
    return {
      faults,
      edits: {
        clientMade: clients.reduce((n, c) => n + c.made.length, 0),
        hocuspocusAcked: clients.reduce((n, c) => n + c.acked, 0),
        httpAcked: [...httpAcked.values()].reduce((n, ids) => n + ids.length, 0),
        httpRefused,
        found,
        missing,
      },
      versions: { created: versionsCreated.length, foundEverywhere: versionsEverywhere, missing: versionsMissing },
      reads,
      mismatches,
      seconds: Math.round((Date.now() - started) / 1000),
    }
  } finally {
    stopping = true
    for (const timer of timers) clearInterval(timer)
    for (const client of clients) {
      if (client.y !== undefined) destroy(client.y)
      client.h?.provider.destroy()
      client.h?.socket.destroy()
    }
    await nginx?.stop()
    for (const instance of instances) {
      instance.weft?.kill('SIGKILL')
      await instance.weft?.exited
      await rm(instance.data, { recursive: true, force: true })
    }
    await redis.dispose()
  }
}

/** One line per count, for the log and the README. */
export function describeSoak(result: SoakResult): string[] {
  const faults = FAULT_KINDS.map((k) => `${k} ${result.faults[k]}`).join(', ')
  const total = FAULT_KINDS.reduce((n, k) => n + result.faults[k], 0)
  return [
    `faults injected: ${total} (${faults})`,
    `edits: ${result.edits.clientMade} made by clients (${result.edits.hocuspocusAcked} acknowledged by SyncStatus), ${result.edits.httpAcked} acknowledged by HTTP 204 (${result.edits.httpRefused} refused or failed, not counted); found ${result.edits.found}, missing ${result.edits.missing.length}`,
    `versions: ${result.versions.created} created, ${result.versions.foundEverywhere} on every instance`,
    `reads of existing rooms: ${result.reads.ok} ok, ${result.reads.notFound} 404, ${result.reads.unavailable} 502/503 during faults, ${result.reads.other} other`,
    `rooms differing between clients, instances and Redis: ${result.mismatches.length}`,
    `took ${result.seconds} s`,
  ]
}
