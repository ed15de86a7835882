/**
 * Every process the benchmark starts: registered by pid, ended by pid (also on Ctrl-C and on
 * failure), and measured through /proc.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process'
import { existsSync, readFileSync, rmSync } from 'node:fs'
import { createServer, connect } from 'node:net'

/** The server gets this core; load processes get the other one. */
export const SERVER_CPU = '0'
export const LOAD_CPU = '1'

const children = new Set<ChildProcess>()

/** Starts `node args...` pinned to one core; the pid is node's own (taskset execs it). */
export function spawnPinned (cpu: string, args: string[], options: SpawnOptions): ChildProcess {
  const child = spawn('taskset', ['-c', cpu, process.execPath, ...args], options)
  children.add(child)
  child.once('exit', () => children.delete(child))
  return child
}

/** Starts any program pinned to one core (redis-server for the cluster scenario); registered like the rest. */
export function spawnCommandPinned (cpu: string, file: string, args: string[], options: SpawnOptions): ChildProcess {
  const child = spawn('taskset', ['-c', cpu, file, ...args], options)
  children.add(child)
  child.once('exit', () => children.delete(child))
  return child
}

export function exited (child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode)
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)))
}

/** SIGTERM, then SIGKILL after `graceMs`. Resolves with whether it left on its own. */
export async function stopProcess (child: ChildProcess, graceMs = 5_000, hurryAfterMs: number | null = null): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return true
  const pid = child.pid
  process.kill(pid, 'SIGTERM')
  // A second SIGTERM tells a draining server (weft) to stop at once instead of spreading closes.
  const hurry = hurryAfterMs === null
    ? undefined
    : setTimeout(() => { try { process.kill(pid, 'SIGTERM') } catch { /* gone */ } }, hurryAfterMs)
  let timer: NodeJS.Timeout | undefined
  const graceful = await Promise.race([
    exited(child).then(() => true),
    new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), graceMs) }),
  ])
  clearTimeout(timer)
  clearTimeout(hurry)
  if (!graceful && child.pid !== undefined && child.exitCode === null) {
    try { process.kill(child.pid, 'SIGKILL') } catch { /* already gone */ }
    await exited(child)
  }
  return graceful
}

/** Kills, by pid, every process still running that this benchmark started. */
export function killAll (): void {
  for (const child of children) {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      try { process.kill(child.pid, 'SIGKILL') } catch { /* already gone */ }
    }
  }
}

export function freePort (): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      const port = typeof address === 'object' && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })
}

/** Resolves once a TCP connection to the port succeeds (every target answers HTTP there). */
export async function waitForPort (port: number, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`server exited with status ${child.exitCode} before listening`)
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1')
      socket.once('connect', () => { socket.destroy(); resolve(true) })
      socket.once('error', () => resolve(false))
    })
    if (ok) return
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  throw new Error(`server did not listen on ${port} within ${timeoutMs} ms`)
}

const CLOCK_TICKS_PER_SECOND = 100

/** User + system CPU seconds of a process (/proc/PID/stat utime + stime). */
export function cpuSeconds (pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the command name, which is in parentheses and may contain spaces.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND
  } catch {
    return Number.NaN
  }
}

function statusKb (pid: number, key: 'VmRSS' | 'VmHWM'): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8')
    const match = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)
    return match ? Number(match[1]) : Number.NaN
  } catch {
    return Number.NaN
  }
}

export const rssMb = (pid: number): number => statusKb(pid, 'VmRSS') / 1024
export const peakRssMb = (pid: number): number => statusKb(pid, 'VmHWM') / 1024

/** Samples VmRSS every `intervalMs` until stopped; keeps the series and the maximum. */
export class RssSampler {
  readonly series: { t: number; mb: number }[] = []
  max = 0
  private readonly timer: NodeJS.Timeout
  private readonly started = Date.now()

  constructor (private readonly pid: number, intervalMs: number) {
    this.timer = setInterval(() => this.sample(), intervalMs)
    this.sample()
  }

  private sample (): void {
    const mb = rssMb(this.pid)
    if (Number.isNaN(mb)) return
    this.series.push({ t: (Date.now() - this.started) / 1000, mb })
    this.max = Math.max(this.max, mb)
  }

  stop (): void {
    clearInterval(this.timer)
    this.sample()
  }
}


/**
 * Asks a probe loaded into server `pid` (bench/memory-probe.ts, bench/loop-probe.ts) for a
 * reading: SIGUSR2, then the JSON it writes to `file`. Null when the process is gone or no
 * whole answer arrived within `timeoutMs`.
 */
export async function askProbe<T> (pid: number, file: string, timeoutMs: number): Promise<T | null> {
  rmSync(file, { force: true })
  try {
    process.kill(pid, 'SIGUSR2')
  } catch {
    return null
  }
  const until = performance.now() + timeoutMs
  while (performance.now() < until) {
    await new Promise((resolve) => setTimeout(resolve, 20))
    if (!existsSync(file)) continue
    try {
      const reading = JSON.parse(readFileSync(file, 'utf8')) as T
      rmSync(file, { force: true })
      return reading
    } catch {
      // Read while being written: read again.
    }
  }
  return null
}
