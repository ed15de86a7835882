// Liveness latency sampled while an attack runs: a stall of the server's event loop shows as a slow /health/live.
import { spawn } from 'node:child_process'
import { withDeadline } from './wait.js'

export interface LiveProbe {
  /** Stops sampling and returns the latencies in milliseconds, sorted. */
  stop(): Promise<number[]>
}

/**
 * The probe runs in a process of its own, so the attack the test process itself generates (its
 * allocations, its writes) is not measured as the server's latency. It GETs /health/live one at a
 * time every `intervalMs` over one kept-alive connection, opened before `probeLive` resolves, so
 * limits on new connections from the same address do not refuse the probe.
 */
const PROBE = `
import { Agent, request } from 'node:http'
const [port, intervalMs] = process.argv.slice(1).map(Number)
const agent = new Agent({ keepAlive: true, maxSockets: 1 })
const samples = []
let running = true
process.stdin.on('end', () => { running = false })
process.stdin.resume()
const once = () => new Promise((resolve, reject) => {
  const started = performance.now()
  const req = request({ host: '127.0.0.1', port, path: '/health/live', agent }, (res) => {
    res.resume()
    res.on('end', () => resolve(performance.now() - started))
  })
  req.on('error', reject)
  req.end()
})
let first = true
while (running) {
  const ms = await once()
  if (first) process.stdout.write('ready\\n')
  else samples.push(ms)
  first = false
  await new Promise((resolve) => setTimeout(resolve, intervalMs))
}
agent.destroy()
process.stdout.write(JSON.stringify(samples) + '\\n')
`

export async function probeLive(port: number, intervalMs = 5): Promise<LiveProbe> {
  const child = spawn(process.execPath, ['--input-type=module', '-e', PROBE, String(port), String(intervalMs)], { stdio: ['pipe', 'pipe', 'inherit'] })
  let out = ''
  child.stdout.setEncoding('utf8')
  child.stdout.on('data', (chunk: string) => (out += chunk))
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  await withDeadline(
    new Promise<void>((resolve, reject) => {
      const check = (): void => {
        if (out.startsWith('ready\n')) resolve()
      }
      child.stdout.on('data', check)
      void exited.then(() => reject(new Error('the liveness probe ended before its first answer')))
    }),
    'the liveness probe to connect',
  )
  return {
    async stop() {
      child.stdin.end()
      await withDeadline(exited, 'the liveness probe to finish')
      const line = out.split('\n')[1] ?? ''
      if (!line.startsWith('[')) throw new Error('the liveness probe failed: the server stopped answering /health/live')
      return (JSON.parse(line) as number[]).sort((a, b) => a - b)
    },
  }
}

/** The `share` quantile (0.99 for p99) of sorted samples. */
export function quantile(sorted: readonly number[], share: number): number {
  if (sorted.length === 0) return Number.NaN
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * share))] as number
}
