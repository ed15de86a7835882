// Liveness sampled while an attack runs: the server must keep answering /health/live. Tests assert
// that every probe was answered (and that probes were answered between the attack's phases), never
// how fast: speed is measured in bench/, and a latency bound flakes on a loaded machine.
import { spawn } from 'node:child_process'
import { withDeadline } from './wait.js'

/**
 * How long one /health/live may go unanswered before the probe calls it a hang. Generous on
 * purpose: it fails a server whose event loop is stuck, not one that is merely slow.
 */
export const LIVE_HANG_MS = 15_000

export interface LiveReport {
  /** Probes answered 200 after the first one (which only proves the probe is connected). */
  answered: number
  /** Their latencies in milliseconds, sorted: for a diagnostic line, never for an assertion. */
  latencies: number[]
}

export interface LiveProbe {
  /** Probes answered so far. */
  readonly answered: number
  /**
   * Resolves once a probe sent after this call has been answered: the server's event loop got
   * round to it. Rejects when the probe failed, or after `timeoutMs` (a hang, not a slow answer).
   */
  answer(what: string, timeoutMs?: number): Promise<void>
  /** Stops sampling; throws when a probe was refused, failed, or went unanswered for LIVE_HANG_MS. */
  stop(): Promise<LiveReport>
}

/**
 * The probe runs in a process of its own, so the attack the test process itself generates (its
 * allocations, its writes) does not delay the probe. It GETs /health/live one at a time every
 * `intervalMs` over one kept-alive connection, opened before `probeLive` resolves, so limits on new
 * connections from the same address do not refuse the probe. It prints `ok MS` per answer, and
 * `fail REASON` (then exits) when an answer is not 200 or does not come within `hangMs`.
 */
const PROBE = `
import { Agent, request } from 'node:http'
const [port, intervalMs, hangMs] = process.argv.slice(1).map(Number)
const agent = new Agent({ keepAlive: true, maxSockets: 1 })
let running = true
process.stdin.on('end', () => { running = false })
process.stdin.resume()
const fail = (reason) => {
  process.stdout.write('fail ' + reason + '\\n', () => process.exit(1))
}
const once = () => new Promise((resolve) => {
  const started = performance.now()
  const req = request({ host: '127.0.0.1', port, path: '/health/live', agent }, (res) => {
    res.resume()
    res.on('end', () => {
      if (res.statusCode !== 200) fail('/health/live answered ' + res.statusCode)
      else resolve(performance.now() - started)
    })
  })
  req.setTimeout(hangMs, () => fail('/health/live unanswered for ' + hangMs + ' ms'))
  req.on('error', (err) => fail('/health/live failed: ' + err.message))
  req.end()
})
while (running) {
  const ms = await once()
  process.stdout.write('ok ' + ms.toFixed(2) + '\\n')
  await new Promise((resolve) => setTimeout(resolve, intervalMs))
}
agent.destroy()
process.stdout.write('done\\n')
`

export async function probeLive(port: number, intervalMs = 5): Promise<LiveProbe> {
  const child = spawn(process.execPath, ['--input-type=module', '-e', PROBE, String(port), String(intervalMs), String(LIVE_HANG_MS)], { stdio: ['pipe', 'pipe', 'inherit'] })
  const latencies: number[] = []
  let connected = false
  let failure: string | null = null
  let done = false
  const waiters = new Set<() => void>()
  let pending = ''
  child.stdout.setEncoding('utf8')
  child.stdout.on('data', (chunk: string) => {
    pending += chunk
    let newline: number
    while ((newline = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, newline)
      pending = pending.slice(newline + 1)
      if (line.startsWith('ok ')) {
        // The first answer only shows the probe is connected; it may include the process's warm-up.
        if (connected) latencies.push(Number(line.slice(3)))
        connected = true
      } else if (line.startsWith('fail ')) failure = line.slice(5)
      else if (line === 'done') done = true
    }
    for (const wake of waiters) wake()
  })
  // 'close', not 'exit': the last lines of its output have been read by then.
  let ended = false
  const exited = new Promise<void>((resolve) =>
    child.once('close', () => {
      ended = true
      for (const wake of waiters) wake()
      resolve()
    }),
  )
  // A probe that failed has exited: ending its stdin then must not throw in the test.
  child.stdin.on('error', () => {})

  /** Resolves when `condition` holds after a line from the probe; rejects when the probe failed or ended. */
  const waitFor = (condition: () => boolean, what: string, timeoutMs: number): Promise<void> =>
    withDeadline(
      new Promise<void>((resolve, reject) => {
        const check = (): void => {
          if (failure !== null) reject(new Error(`the liveness probe failed while waiting for ${what}: ${failure}`))
          else if (condition()) resolve()
          else if (ended) reject(new Error(`the liveness probe ended while waiting for ${what}`))
          else return
          waiters.delete(check)
        }
        waiters.add(check)
        check()
      }),
      what,
      timeoutMs,
    )

  await waitFor(() => connected, 'the liveness probe to connect', 10_000)
  return {
    get answered() {
      return latencies.length
    },
    answer(what, timeoutMs = LIVE_HANG_MS) {
      // The probe in flight now may have been sent before this call: wait for the one after it.
      const target = latencies.length + 2
      return waitFor(() => latencies.length >= target, what, timeoutMs)
    },
    async stop() {
      child.stdin.end()
      await withDeadline(exited, 'the liveness probe to finish', LIVE_HANG_MS + 5_000)
      if (failure !== null) throw new Error(`the liveness probe failed: ${failure}`)
      if (!done) throw new Error('the liveness probe ended without finishing')
      return { answered: latencies.length, latencies: [...latencies].sort((a, b) => a - b) }
    },
  }
}

/**
 * Runs `work` with a liveness probe on the server at `port`, then checks the server stayed live:
 * a probe sent after `work` finished is answered, and none failed or hung meanwhile. `work` may
 * await `probe.answer()` between the phases of an attack. The probe is stopped also when `work` throws.
 */
export async function whileLive<T>(port: number, work: (probe: LiveProbe) => Promise<T>): Promise<{ value: T; live: LiveReport }> {
  const probe = await probeLive(port)
  let value: T
  try {
    value = await work(probe)
    await probe.answer('/health/live once the attack was over')
  } catch (err) {
    await probe.stop().catch(() => {})
    throw err
  }
  return { value, live: await probe.stop() }
}

/** The `share` quantile (0.99 for p99) of sorted samples: for diagnostics. */
export function quantile(sorted: readonly number[], share: number): number {
  if (sorted.length === 0) return Number.NaN
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * share))] as number
}

/** One line for t.diagnostic: how many probes were answered and how fast (not asserted). */
export function describeLive(report: LiveReport): string {
  const { latencies } = report
  return `/health/live answered ${report.answered} times; p50 ${quantile(latencies, 0.5).toFixed(1)} ms, p99 ${quantile(latencies, 0.99).toFixed(1)} ms, max ${(latencies.at(-1) ?? NaN).toFixed(1)} ms`
}
