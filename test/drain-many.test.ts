import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { WebsocketProvider } from 'y-websocket'
import { destroy, provider, RawClient, synced } from './harness/clients.js'
import { spawnWeft, tempDir, type WeftProcess } from './harness/server.js'
import { until, withDeadline } from './harness/wait.js'
import { drainSteps, watchDrain } from './harness/drain-progress.js'
import { metricValue } from './harness/metrics.js'

// Issue #4, drain at scale: thousands of connections are closed with 1012 spread over the window
// (not all at once: they would all reconnect at the same instant), nothing applied is lost, and a
// second signal cuts a long drain short without losing edits. test/drain.test.ts covers the same
// with a few dozen clients; this file is about the spread and the cost of many.

const CONNECTIONS = 2_000
const ROOMS = 50
/** Rooms with a writer and an observer provider, besides the raw connections. */
const EDITED_ROOMS = 5
const DRAIN_SECONDS = 4
/**
 * The drain of the last two tests: closes spread over its first half, 60 s, so a process that slept
 * through that schedule instead of cutting it short misses EXIT_DEADLINE_MS by half a minute.
 */
const LONG_DRAIN_SECONDS = 120
/**
 * How long the process may take to exit once nothing should hold it: generous, it fails a process
 * that hangs or sleeps through its drain schedule, not a slow one (speed is for bench/).
 */
const EXIT_DEADLINE_MS = 30_000
/** The drain closed its connections in at least this many steps (an all-at-once close is one). */
const MIN_DRAIN_STEPS = 5
/** Only the drain's flush can store the edits: the persist window is longer than the test. */
const LONG_PERSIST_WINDOW_MS = 60_000
const OPEN_BATCH = 200

function killChild(proc: WeftProcess | null): void {
  if (proc !== null && proc.child.exitCode === null && proc.child.signalCode === null) proc.kill('SIGKILL')
}

function spawnMany(data: string, drainSeconds: number): Promise<WeftProcess> {
  return spawnWeft([
    '--data', data,
    '--drain-seconds', String(drainSeconds),
    '--max-connections-per-ip', '5000',
    '--upgrades-per-second-per-ip', '100000',
    // 2,000 upgrades in a few seconds: over the default 1,000/s (burst 2,000) with the providers.
    '--upgrades-per-second', '10000',
    '--persist-window-ms', String(LONG_PERSIST_WINDOW_MS),
    '--log-level', 'info',
  ])
}

async function openRaw(url: string): Promise<RawClient[]> {
  const raws: RawClient[] = []
  for (let i = 0; i < CONNECTIONS; i += OPEN_BATCH) {
    const batch = Array.from({ length: Math.min(OPEN_BATCH, CONNECTIONS - i) }, (_, j) => RawClient.open(`${url}/many-${(i + j) % ROOMS}`))
    raws.push(...(await Promise.all(batch)))
  }
  return raws
}

/** A room with a provider appending every 20 ms and one that only observes. */
interface EditedRoom {
  name: string
  writer: WebsocketProvider
  observer: WebsocketProvider
  timer: NodeJS.Timeout
  /** The observer's text when it was disconnected: what the server had applied and relayed by then. */
  observedAtClose: string | null
}

async function editRooms(url: string): Promise<EditedRoom[]> {
  const rooms: EditedRoom[] = []
  for (let r = 0; r < EDITED_ROOMS; r++) {
    const name = `many-${r}`
    const writer = provider(url, name)
    const observer = provider(url, name)
    await Promise.all([synced(writer), synced(observer)])
    let n = 0
    const timer = setInterval(() => {
      if (writer.wsconnected) writer.doc.getText('text').insert(writer.doc.getText('text').length, `${n++};`)
    }, 20)
    const room: EditedRoom = { name, writer, observer, timer, observedAtClose: null }
    observer.once('connection-close', () => (room.observedAtClose = observer.doc.getText('text').toString()))
    rooms.push(room)
  }
  // Some edits have gone through the server before the signal.
  for (const room of rooms) await until(() => room.observer.doc.getText('text').length > 20, `edits to reach the observer of ${room.name}`)
  return rooms
}

function stopEditing(rooms: readonly EditedRoom[]): void {
  for (const room of rooms) {
    clearInterval(room.timer)
    destroy(room.writer, room.observer)
  }
}

/** What a fresh process on the same data directory serves for each edited room. */
async function storedTexts(data: string, rooms: readonly EditedRoom[]): Promise<Map<string, string>> {
  const proc = await spawnWeft(['--data', data])
  const readers: WebsocketProvider[] = []
  try {
    const texts = new Map<string, string>()
    for (const room of rooms) {
      const reader = provider(proc.url, room.name)
      readers.push(reader)
      await synced(reader)
      texts.set(room.name, reader.doc.getText('text').toString())
    }
    return texts
  } finally {
    destroy(...readers)
    // Stopped once the server has seen the readers go (see the last test: a drain sleeps through
    // its schedule even when every connection is already gone).
    await waitNoConnections(proc)
    proc.kill('SIGTERM')
    await withDeadline(proc.exited, 'the reading process to exit', 10_000).catch(() => killChild(proc))
  }
}

async function waitNoConnections(proc: WeftProcess): Promise<void> {
  const deadline = Date.now() + 5_000
  while (Date.now() < deadline) {
    if ((await metricValue(proc.http, 'weft_connections')) === 0) return
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

/** Every edit the server relayed before the drain is stored, and nothing the writer did not make. */
function assertNothingLost(stored: Map<string, string>, rooms: readonly EditedRoom[]): void {
  for (const room of rooms) {
    const text = stored.get(room.name) ?? ''
    const observed = room.observedAtClose
    assert.ok(observed !== null && observed.length > 0, `the observer of ${room.name} saw edits`)
    assert.ok(text.startsWith(observed), `${room.name}: stored ${text.length} chars, but the observer had seen ${observed.length} (stored "${text.slice(-20)}", seen "${observed.slice(-20)}")`)
    assert.ok(room.writer.doc.getText('text').toString().startsWith(text), `${room.name}: stored text the writer never wrote`)
  }
}

describe(`drain with ${CONNECTIONS} connections`, () => {
  it('SIGTERM: every connection closed with 1012, spread over the window in steps; readiness 503; nothing lost; exit 0', async (t) => {
    const dir = await tempDir()
    let proc: WeftProcess | null = null
    let raws: RawClient[] = []
    let rooms: EditedRoom[] = []
    try {
      proc = await spawnMany(dir.path, DRAIN_SECONDS)
      const openedAt = performance.now()
      raws = await openRaw(proc.url)
      rooms = await editRooms(proc.url)
      t.diagnostic(`${CONNECTIONS} connections and ${EDITED_ROOMS * 2} providers ready in ${Math.round(performance.now() - openedAt)} ms`)
      const closedAt: number[] = []
      const codes = new Map<number, number>()
      for (const raw of raws) {
        void raw.closed.then((code) => {
          closedAt.push(performance.now())
          codes.set(code, (codes.get(code) ?? 0) + 1)
        })
      }

      const watch = watchDrain(proc.http)
      const signalledAt = performance.now()
      proc.kill('SIGTERM')
      const logs = proc.logs
      await until(() => logs.some((entry) => entry.msg === 'signal received: draining'), 'the drain to begin')
      const ready = await fetch(`${proc.http}/health/ready`)
      assert.equal(ready.status, 503, '/health/ready during the drain')

      await until(() => closedAt.length === CONNECTIONS, `all ${CONNECTIONS} connections to close`, DRAIN_SECONDS * 1000 + EXIT_DEADLINE_MS)
      const status = await withDeadline(proc.exited, 'weft to exit', EXIT_DEADLINE_MS)
      const exitMs = performance.now() - signalledAt
      const progress = await watch.stop()
      assert.deepEqual([...codes.entries()], [[1012, CONNECTIONS]], 'close codes (code, count)')
      assert.equal(status, 0)

      // Wall-clock figures are printed, never asserted: on a loaded machine they say more about the
      // machine than about the drain.
      const sorted = closedAt.map((at) => at - signalledAt).sort((a, b) => a - b)
      t.diagnostic(
        `closes from ${Math.round(sorted[0] as number)} to ${Math.round(sorted[sorted.length - 1] as number)} ms after SIGTERM; exit after ${Math.round(exitMs)} ms; ` +
          `drain progress read ${progress.closed.length} times: ${progress.closed.join(' ')} of ${progress.total}`,
      )
      // The spread, from the server's own count: had it closed everyone at once (every client
      // reconnecting in the same instant), no reading could fall between 0 and the total.
      assert.ok(progress.total >= CONNECTIONS, `the drain had ${progress.total} connections to close`)
      const steps = drainSteps(progress)
      assert.ok(steps >= MIN_DRAIN_STEPS, `the drain closed its ${progress.total} connections in ${steps} step(s) seen (${progress.closed.join(' ')})`)

      stopEditing(rooms)
      const restartedAt = performance.now()
      assertNothingLost(await storedTexts(dir.path, rooms), rooms)
      t.diagnostic(`restart and check took ${Math.round(performance.now() - restartedAt)} ms`)
    } finally {
      stopEditing(rooms)
      for (const raw of raws) raw.socket.terminate()
      killChild(proc)
      if (proc !== null) await withDeadline(proc.exited, 'weft to exit', 10_000).catch(() => {})
      await dir.remove()
    }
  })

  it('a second SIGTERM during a long drain closes the rest at once and exits with 0 long before the schedule would end, edits stored', async (t) => {
    const dir = await tempDir()
    let proc: WeftProcess | null = null
    let raws: RawClient[] = []
    let rooms: EditedRoom[] = []
    try {
      proc = await spawnMany(dir.path, LONG_DRAIN_SECONDS)
      const openedAt = performance.now()
      raws = await openRaw(proc.url)
      rooms = await editRooms(proc.url)
      t.diagnostic(`${CONNECTIONS} connections and ${EDITED_ROOMS * 2} providers ready in ${Math.round(performance.now() - openedAt)} ms`)
      let closed = 0
      const codes = new Map<number, number>()
      for (const raw of raws) {
        void raw.closed.then((code) => {
          closed++
          codes.set(code, (codes.get(code) ?? 0) + 1)
        })
      }

      proc.kill('SIGTERM')
      // The drain is under way: some connections are closed, most are not (it spreads them over 60 s).
      await until(() => closed >= 20, 'the drain to close its first connections', EXIT_DEADLINE_MS)
      assert.ok(closed < CONNECTIONS / 2, `${closed} already closed`)
      const second = performance.now()
      proc.kill('SIGTERM')
      // Half a minute of the schedule is still ahead: only a process that cut it short exits by then.
      const status = await withDeadline(proc.exited, 'weft to exit after the second SIGTERM', EXIT_DEADLINE_MS)
      const exitMs = performance.now() - second
      await until(() => closed === CONNECTIONS, 'every client to see its connection end', EXIT_DEADLINE_MS)
      t.diagnostic(`exit ${status} ${Math.round(exitMs)} ms after the second SIGTERM; close codes ${JSON.stringify([...codes.entries()])}`)
      assert.equal(status, 0)

      stopEditing(rooms)
      const restartedAt = performance.now()
      assertNothingLost(await storedTexts(dir.path, rooms), rooms)
      t.diagnostic(`restart and check took ${Math.round(performance.now() - restartedAt)} ms`)
    } finally {
      stopEditing(rooms)
      for (const raw of raws) raw.socket.terminate()
      killChild(proc)
      if (proc !== null) await withDeadline(proc.exited, 'weft to exit', 10_000).catch(() => {})
      await dir.remove()
    }
  })

  it('a drain whose clients have all left ends early instead of sleeping through its schedule', async (t) => {
    const dir = await tempDir()
    let proc: WeftProcess | null = null
    const raws: RawClient[] = []
    try {
      proc = await spawnMany(dir.path, LONG_DRAIN_SECONDS)
      for (let i = 0; i < 50; i++) raws.push(await RawClient.open(`${proc.url}/leaving-${i % 5}`))
      const signalledAt = performance.now()
      proc.kill('SIGTERM')
      const logs = proc.logs
      await until(() => logs.some((entry) => entry.msg === 'signal received: draining'), 'the drain to begin')
      // Every client leaves on its own as soon as the drain has begun.
      for (const raw of raws) raw.close()
      await Promise.all(raws.map((raw) => raw.waitClosed()))
      // Its schedule would go on for a minute: only a drain that ended early exits by the deadline.
      const status = await withDeadline(proc.exited, 'weft to exit with no connection left', EXIT_DEADLINE_MS)
      const exitMs = performance.now() - signalledAt
      t.diagnostic(`exit ${status} ${Math.round(exitMs)} ms after SIGTERM with every client gone at once (window ${LONG_DRAIN_SECONDS} s)`)
      assert.equal(status, 0)
    } finally {
      for (const raw of raws) raw.socket.terminate()
      killChild(proc)
      if (proc !== null) await withDeadline(proc.exited, 'weft to exit', 30_000).catch(() => {})
      await dir.remove()
    }
  })
})
