/**
 * Where the memory of a loaded room with one connection goes (issue 19, scenario 16).
 *
 *   npm run build && node dist/bench/room-footprint.js [ROOMS] [--hocuspocus] [--empty] [--settle=SECONDS] [--no-snapshot] [--by-retainer]
 *
 * Runs weft in this process (memory store, admission limits lifted) and ROOMS clients (default
 * 2,000) in load processes (bench/load-worker.ts), one room each, speaking y-websocket (or the
 * Hocuspocus framing to weft's Hocuspocus path); with --empty the clients leave again and what is
 * measured is a loaded room without members (unloading put off). Before and after it forces full
 * garbage collections and reads `process.memoryUsage()`; with snapshots (the default) it also
 * takes a V8 heap snapshot each time and prints the difference by object kind (constructor
 * name, closure name, or V8's own category): count and bytes per room plus connection, largest
 * first (--by-retainer: also by the kinds of the objects holding each one, "Map < RoomAwareness < Room").
 */
import { execFileSync } from 'node:child_process'
import { getHeapSnapshot, getHeapSpaceStatistics, setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { createServer } from '../server/index.js'
import type { ClientSpec } from './load-protocol.js'
import { LoadPool } from './load.js'
import type { RunningTarget } from './targets.js'
import type { Dialect } from './wire.js'

setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

/** Clients per load process: each holds one file per socket, and a process may open 20,000. */
const CLIENTS_PER_PROCESS = 5_000

interface KindTotals {
  count: number
  bytes: number
}

interface HeapSnapshotJson {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]]; edge_fields: string[]; edge_types: [string[], ...unknown[]] } }
  nodes: number[]
  edges: number[]
  strings: string[]
}

/** Nodes that are something the program made (an object, a function); the rest is charged to them. */
const OWNER_TYPES = new Set(['object', 'closure', 'regexp'])

/** The label of an object or closure: its constructor or function name; anything else by V8's category. */
function kindOf(type: string, name: string): string {
  if (type === 'object') return name
  if (type === 'closure') return `closure ${name === '' ? '(anonymous)' : name}`
  return `(${type})`
}

/**
 * Object kinds in the heap: each object or closure by its constructor or function name, with the
 * bytes it takes itself plus those of the V8-internal parts it holds (a Map's hash table, a
 * closure's context, an object's out-of-line properties, its strings): a node that is not an
 * object or closure is charged to the first object or closure found retaining it, breadth first
 * through other such nodes. Weak edges are not followed.
 */
async function heapKinds(byRetainer = false): Promise<Map<string, KindTotals>> {
  fullGc()
  const chunks: Buffer[] = []
  for await (const chunk of getHeapSnapshot()) chunks.push(chunk as Buffer)
  const snapshot = JSON.parse(Buffer.concat(chunks).toString('utf8')) as HeapSnapshotJson
  const { meta } = snapshot.snapshot
  const width = meta.node_fields.length
  const typeAt = meta.node_fields.indexOf('type')
  const nameAt = meta.node_fields.indexOf('name')
  const sizeAt = meta.node_fields.indexOf('self_size')
  const edgeCountAt = meta.node_fields.indexOf('edge_count')
  const edgeWidth = meta.edge_fields.length
  const edgeTypeAt = meta.edge_fields.indexOf('type')
  const edgeToAt = meta.edge_fields.indexOf('to_node')
  const weak = meta.edge_types[0].indexOf('weak')
  const types = meta.node_types[0]
  const { nodes, edges, strings } = snapshot
  const count = nodes.length / width
  // owner[n]: the object or closure node n is charged to (itself for those; -1: none found).
  const owner = new Int32Array(count).fill(-1)
  let frontier: number[] = []
  for (let n = 0; n < count; n++) {
    if (!OWNER_TYPES.has(types[nodes[n * width + typeAt] as number] as string)) continue
    owner[n] = n
    frontier.push(n)
  }
  const firstEdge = new Int32Array(count + 1)
  for (let n = 0; n < count; n++) firstEdge[n + 1] = (firstEdge[n] as number) + (nodes[n * width + edgeCountAt] as number)
  while (frontier.length > 0) {
    const next: number[] = []
    for (const n of frontier) {
      for (let e = firstEdge[n] as number; e < (firstEdge[n + 1] as number); e++) {
        if (edges[e * edgeWidth + edgeTypeAt] === weak) continue
        const child = (edges[e * edgeWidth + edgeToAt] as number) / width
        if (owner[child] !== -1) continue
        owner[child] = owner[n] as number
        next.push(child)
      }
    }
    frontier = next
  }
  // With byRetainer: every object or closure also names the kinds of the first object or closure
  // found holding it (in node order) and of the one holding that, e.g. "Map < RoomAwareness < Room".
  const retainer = new Int32Array(byRetainer ? count : 0).fill(-1)
  if (byRetainer) {
    for (let n = 0; n < count; n++) {
      const from = owner[n] as number
      if (from === -1) continue
      for (let e = firstEdge[n] as number; e < (firstEdge[n + 1] as number); e++) {
        if (edges[e * edgeWidth + edgeTypeAt] === weak) continue
        const child = (edges[e * edgeWidth + edgeToAt] as number) / width
        if (owner[child] === child && retainer[child] === -1 && from !== child) retainer[child] = from
      }
    }
  }
  const label = (n: number): string => kindOf(types[nodes[n * width + typeAt] as number] as string, strings[nodes[n * width + nameAt] as number] as string)
  const kinds = new Map<string, KindTotals>()
  for (let n = 0; n < count; n++) {
    const by = owner[n] as number
    const at = by === -1 ? n : by
    const held = byRetainer && by !== -1 ? (retainer[by] as number) : -1
    const grand = held === -1 ? -1 : (retainer[held] as number)
    const kind = held === -1 ? label(at) : `${label(at)} < ${label(held)}${grand === -1 ? '' : ` < ${label(grand)}`}`
    const bytes = nodes[n * width + sizeAt] as number
    const totals = kinds.get(kind)
    const objects = by === n ? 1 : 0
    if (totals === undefined) kinds.set(kind, { count: objects, bytes })
    else {
      totals.count += objects
      totals.bytes += bytes
    }
  }
  return kinds
}

function fullGc(): void {
  for (let i = 0; i < 3; i++) gc()
}

/** Resident set size from /proc, bytes (process.memoryUsage().rss reads the same). */
function memory(): { rss: number; heapUsed: number; external: number; arrayBuffers: number; spaces: Map<string, number> } {
  fullGc()
  const { rss, heapUsed, external, arrayBuffers } = process.memoryUsage()
  const spaces = new Map(getHeapSpaceStatistics().map((space) => [space.space_name, space.physical_space_size]))
  return { rss, heapUsed, external, arrayBuffers, spaces }
}

const kb = (bytes: number, per: number): string => (bytes / 1024 / per).toFixed(2)

async function main(): Promise<void> {
  const args = process.argv.slice(2)
  const rooms = Number(args.find((a) => /^\d+$/.test(a)) ?? 2_000)
  const dialect: Dialect = args.includes('--hocuspocus') ? 'hocuspocus' : 'ywebsocket'
  const snapshots = !args.includes('--no-snapshot')
  const byRetainer = args.includes('--by-retainer')
  const empty = args.includes('--empty')
  const settleMs = 1000 * Number(args.find((a) => a.startsWith('--settle='))?.slice('--settle='.length) ?? 3)
  const weft = createServer({
    host: '127.0.0.1',
    port: 0,
    data: 'memory',
    logLevel: 'warn',
    maxConnections: 100_000,
    maxConnectionsPerIp: 100_000,
    maxRoomsPerIp: 1_000_000,
    maxLoadedRooms: 1_000_000,
    upgradesPerSecond: 1_000_000,
    upgradesPerSecondPerIp: 1_000_000,
    ...(empty ? { roomUnloadDelayMs: 3_600_000 } : {}),
  })
  const { port } = await weft.listen()
  // Only `port` and `dialect` of a target are read by the load processes.
  const target = { name: 'weft', dialect, port, pid: process.pid } as unknown as RunningTarget
  let pool = new LoadPool(Math.max(1, Math.ceil(rooms / CLIENTS_PER_PROCESS)))
  try {
    // A first room and client, so code paths are compiled and lazily created singletons exist.
    await pool.connect(target, [{ room: 'warm-up', role: 'light' }], { concurrency: 0, timeoutMs: 10_000 })
    const before = memory()
    const kindsBefore = snapshots ? await heapKinds(byRetainer) : null
    const specs: ClientSpec[] = Array.from({ length: rooms }, (_, i) => ({ room: `footprint-${i}`, role: 'light' }))
    const connected = await pool.connect(target, specs, { concurrency: 200, timeoutMs: 120_000 })
    if (connected.synced < rooms) throw new Error(`only ${connected.synced} of ${rooms} clients synced`)
    if (empty) {
      // The load processes end and their sockets with them; the rooms stay loaded, empty.
      await pool.close()
      pool = new LoadPool(1)
    }
    // Let the server settle: sync replies written, short-lived caches expired (2 s), timers fired;
    // with --settle=SECONDS longer, so V8's memory reducer gives back the young generation the
    // burst grew (after about 8 s without allocation) and RSS counts the rooms, not the burst.
    await new Promise((resolve) => setTimeout(resolve, settleMs))
    const after = memory()
    process.stdout.write(`${rooms} rooms, one ${dialect} client each (${connected.synced} synced)${empty ? ', then gone: the rooms stay loaded without members' : ''}\n`)
    process.stdout.write(`per room${empty ? '' : ' plus connection'}: heap ${kb(after.heapUsed - before.heapUsed, rooms)} KB, RSS ${kb(after.rss - before.rss, rooms)} KB, external ${kb(after.external - before.external, rooms)} KB (array buffers ${kb(after.arrayBuffers - before.arrayBuffers, rooms)} KB)\n`)
    const spaces = [...after.spaces].filter(([, bytes]) => bytes > 0).map(([space, bytes]) => `${space} ${((bytes - (before.spaces.get(space) ?? 0)) / 1024 / rooms).toFixed(2)}`)
    process.stdout.write(`V8 heap spaces, resident KB per room: ${spaces.join(', ')}\n`)
    if (kindsBefore !== null) {
      const kindsAfter = await heapKinds(byRetainer)
      const rows: Array<[string, number, number]> = []
      let total = 0
      for (const [kind, totals] of kindsAfter) {
        const was = kindsBefore.get(kind) ?? { count: 0, bytes: 0 }
        const bytes = totals.bytes - was.bytes
        total += bytes
        rows.push([kind, (totals.count - was.count) / rooms, bytes / rooms])
      }
      rows.sort((a, b) => b[2] - a[2])
      process.stdout.write(`heap snapshot difference: ${kb(total, rooms)} KB per room${empty ? '' : ' plus connection'}; largest kinds (objects and bytes per room; an object with the parts only it holds):\n`)
      for (const [kind, count, bytes] of rows.slice(0, 40)) {
        if (Math.abs(bytes) < 8) break
        process.stdout.write(`  ${bytes.toFixed(0).padStart(6)} B  ${count.toFixed(2).padStart(6)}  ${kind}\n`)
      }
    }
  } finally {
    await pool.close()
    await weft.close()
  }
}

// The load processes go on the other core when there is one, as in `npm run bench`.
try {
  execFileSync('taskset', ['-p', '-c', '0', String(process.pid)], { stdio: 'ignore' })
} catch {
  // No taskset: run unpinned.
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`room-footprint: ${(err as Error).stack ?? String(err)}\n`)
    process.exit(1)
  },
)
