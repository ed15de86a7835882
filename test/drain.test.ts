import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { WebsocketProvider } from 'y-websocket'
import { converged, destroy, provider, RawClient, synced } from './harness/clients.js'
import { runCli, spawnWeft, tempDir, type WeftProcess } from './harness/server.js'
import { until, withDeadline } from './harness/wait.js'
import { drainSteps, watchDrain } from './harness/drain-progress.js'
import { refusedUpgrade } from './harness/http.js'

/** `--drain-seconds` of the graceful drain test. */
const DRAIN_SECONDS = 2
/**
 * `--drain-seconds` of the second-signal test: long, so an exit by EXIT_DEADLINE_MS is the second
 * signal cutting the drain short, not the drain ending (its closes alone are spread over 60 s).
 */
const LONG_DRAIN_SECONDS = 120
/**
 * How long the process may take to exit once nothing should hold it: generous, it fails a process
 * that hangs or sleeps through its drain, not a slow one (speed is for bench/).
 */
const EXIT_DEADLINE_MS = 30_000
/** The drain closed its clients in at least this many steps (an all-at-once close is one). */
const MIN_DRAIN_STEPS = 5
/**
 * Persist window of these tests: longer than the tests, so only the shutdown's flush can store the
 * edits (with the default 100 ms they would be stored anyway).
 */
const LONG_PERSIST_WINDOW_MS = 60_000
const RAW_CLIENTS = 50

function killChild(proc: WeftProcess | null): void {
  if (proc !== null && proc.child.exitCode === null && proc.child.signalCode === null) proc.kill('SIGKILL')
}

async function exportText(data: string, room: string): Promise<Record<string, unknown>> {
  const { status, stdout, stderr } = await runCli(['export', room, '--data', data])
  assert.equal(status, 0, stderr)
  return JSON.parse(stdout.toString()) as Record<string, unknown>
}

describe('graceful drain', () => {
  it('SIGTERM: readiness 503 at once, upgrades refused with Retry-After, clients closed with 1012 over the window, edits stored, exit 0', async (t) => {
    const dir = await tempDir()
    const providers: WebsocketProvider[] = []
    const raws: RawClient[] = []
    let proc: WeftProcess | null = null
    try {
      proc = await spawnWeft(['--data', dir.path, '--drain-seconds', String(DRAIN_SECONDS), '--persist-window-ms', String(LONG_PERSIST_WINDOW_MS)])
      const a = provider(proc.url, 'drained')
      const b = provider(proc.url, 'drained')
      providers.push(a, b)
      await Promise.all([synced(a), synced(b)])
      for (let i = 0; i < RAW_CLIENTS; i++) raws.push(await RawClient.open(`${proc.url}/drain-raw-${i % 5}`))
      const ready = await fetch(`${proc.http}/health/ready`)
      assert.equal(ready.status, 200)

      const closedAt: number[] = []
      for (const raw of raws) void raw.closed.then(() => closedAt.push(performance.now()))
      a.doc.getText('text').insert(0, 'written just before SIGTERM')
      a.doc.getMap('map').set('last', true)
      await converged([a.doc, b.doc], 'b to see the edits (the server applied them)')
      const expected = { text: a.doc.getText('text').toString(), map: a.doc.getMap('map').toJSON() }

      const watch = watchDrain(proc.http)
      const signalledAt = performance.now()
      proc.kill('SIGTERM')
      const logs = proc.logs
      await until(() => logs.some((entry) => entry.msg === 'signal received: draining'), 'the drain to begin')
      const notReady = await fetch(`${proc.http}/health/ready`)
      assert.equal(notReady.status, 503)
      const refused = await refusedUpgrade(`${proc.url}/drained`)
      assert.equal(refused.status, 503)
      assert.ok(refused.retryAfter !== undefined && Number(refused.retryAfter) > 0, `Retry-After: ${refused.retryAfter}`)

      const codes = await Promise.all(raws.map((raw) => raw.waitClosed(DRAIN_SECONDS * 1000 + EXIT_DEADLINE_MS)))
      assert.deepEqual(new Set(codes), new Set([1012]))
      const status = await withDeadline(proc.exited, 'weft to exit', EXIT_DEADLINE_MS)
      const exitMs = performance.now() - signalledAt
      const progress = await watch.stop()
      const spreadMs = Math.max(...closedAt) - Math.min(...closedAt)
      // Wall-clock figures are printed, never asserted.
      t.diagnostic(`closes spread over ${Math.round(spreadMs)} ms; exited ${Math.round(exitMs)} ms after SIGTERM; drain progress ${progress.closed.join(' ')} of ${progress.total}`)
      assert.equal(status, 0)
      // Spread over the window, from the server's own count: an all-at-once close is one step.
      assert.ok(progress.total >= RAW_CLIENTS, `the drain had ${progress.total} connections to close`)
      assert.ok(drainSteps(progress) >= MIN_DRAIN_STEPS, `the drain closed its ${progress.total} connections in ${drainSteps(progress)} step(s) seen (${progress.closed.join(' ')})`)
      destroy(...providers.splice(0))

      const stored = await exportText(dir.path, 'drained')
      assert.equal(stored.text, expected.text)
      assert.deepEqual(stored.map, expected.map)
    } finally {
      destroy(...providers)
      for (const raw of raws) raw.socket.terminate()
      killChild(proc)
      if (proc !== null) await withDeadline(proc.exited, 'weft to exit', 10_000).catch(() => {})
      await dir.remove()
    }
  })

  it('a second SIGTERM during a long drain stops at once, and the edits are still stored', async (t) => {
    const dir = await tempDir()
    const providers: WebsocketProvider[] = []
    const raws: RawClient[] = []
    let proc: WeftProcess | null = null
    try {
      proc = await spawnWeft(['--data', dir.path, '--drain-seconds', String(LONG_DRAIN_SECONDS), '--persist-window-ms', String(LONG_PERSIST_WINDOW_MS)])
      const a = provider(proc.url, 'impatient')
      const b = provider(proc.url, 'impatient')
      providers.push(a, b)
      await Promise.all([synced(a), synced(b)])
      // Enough clients that the drain is still closing them when the second signal comes.
      for (let i = 0; i < RAW_CLIENTS; i++) raws.push(await RawClient.open(`${proc.url}/impatient-raw-${i % 5}`))
      a.doc.getText('text').insert(0, 'before the first signal')
      await converged([a.doc, b.doc], 'b to see the first edit')

      proc.kill('SIGTERM')
      const logs = proc.logs
      await until(() => logs.some((entry) => entry.msg === 'signal received: draining'), 'the drain to begin')
      // Both clients are most likely still connected (the drain closes clients over 60 s); a edit made
      // now, seen applied by b, must be stored as well.
      const applied = ['before the first signal']
      if (a.wsconnected && b.wsconnected) {
        a.doc.getText('text').insert(a.doc.getText('text').length, ', during the drain')
        const seen = await until(() => b.doc.getText('text').toString().includes('during the drain'), 'b to see the edit made during the drain', 2_000).then(
          () => true,
          () => false,
        )
        if (seen) applied.push(', during the drain')
      }
      t.diagnostic(`edits applied before the second SIGTERM: ${applied.length}`)
      const second = performance.now()
      proc.kill('SIGTERM')
      // Most of the 60 s schedule is still ahead: only a process that cut it short exits by then.
      const status = await withDeadline(proc.exited, 'weft to exit after the second SIGTERM', EXIT_DEADLINE_MS)
      const exitMs = performance.now() - second
      t.diagnostic(`exited with ${status} ${Math.round(exitMs)} ms after the second SIGTERM`)
      destroy(...providers.splice(0))

      const stored = await exportText(dir.path, 'impatient')
      assert.equal(stored.text, applied.join(''), 'edits applied before the second SIGTERM were lost')
      assert.equal(status, 0)
    } finally {
      destroy(...providers)
      for (const raw of raws) raw.socket.terminate()
      killChild(proc)
      if (proc !== null) await withDeadline(proc.exited, 'weft to exit', 10_000).catch(() => {})
      await dir.remove()
    }
  })
})
