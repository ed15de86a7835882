import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { createConnection, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { withDeadline } from './wait.js'

/** A real redis-server process on a free loopback port, with no persistence, in a temp dir. */
export interface RedisProcess {
  port: number
  url: string
  /** SIGTERM, waits for the exit; the temp dir stays for `restart()`. Idempotent. */
  stop(): Promise<void>
  /** SIGKILL, waits for the exit. */
  kill(): Promise<void>
  /** Starts it again on the same port, empty (stops it first if it still runs). */
  restart(): Promise<void>
  /** Stops it and removes its temp dir: the teardown. Idempotent. */
  dispose(): Promise<void>
  /** Sends one command (RESP) on a fresh connection and resolves with the raw reply text. */
  command(...args: string[]): Promise<string>
}

/** Redis and nginx cannot take port 0: ask the kernel for a free port, release it, and give that to them. */
export async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  await new Promise<void>((resolve) => server.close(() => resolve()))
  if (address === null || typeof address === 'string') throw new Error('no port')
  return address.port
}

function encode(args: string[]): string {
  return `*${args.length}\r\n${args.map((arg) => `$${Buffer.byteLength(arg)}\r\n${arg}\r\n`).join('')}`
}

/** One RESP command on a fresh socket; resolves with the reply as text once a complete reply arrived (simple cases only). */
function send(port: number, args: string[], timeoutMs = 2000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ port, host: '127.0.0.1' })
    let reply = ''
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error(`redis on ${port} did not answer ${args[0]}`))
    }, timeoutMs)
    socket.on('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
    socket.on('connect', () => socket.write(encode(args)))
    socket.on('data', (chunk) => {
      reply += chunk.toString('utf8')
      if (complete(reply)) {
        clearTimeout(timer)
        socket.end()
        resolve(reply)
      }
    })
  })
}

function complete(reply: string): boolean {
  if (!reply.endsWith('\r\n')) return false
  if (reply[0] !== '$') return true
  const head = reply.indexOf('\r\n')
  const length = Number(reply.slice(1, head))
  return length < 0 || Buffer.byteLength(reply) >= head + 2 + length + 2
}

export async function startRedis(): Promise<RedisProcess> {
  const dir = await mkdtemp(join(tmpdir(), 'weft-redis-'))
  const port = await freePort()
  let child: ChildProcess | null = null
  let exited: Promise<void> = Promise.resolve()

  const launch = async (): Promise<void> => {
    const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], {
      stdio: ['ignore', 'ignore', 'pipe'],
    })
    child = proc
    exited = new Promise((resolve) => proc.once('exit', () => resolve()))
    const deadline = Date.now() + 5000
    while (true) {
      if (proc.exitCode !== null) throw new Error(`redis-server exited with ${proc.exitCode} on port ${port}`)
      try {
        if ((await send(port, ['PING'], 500)).startsWith('+PONG')) return
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`redis-server on port ${port} did not answer PING within 5 s`)
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  }

  const signal = async (name: NodeJS.Signals): Promise<void> => {
    const proc = child
    if (proc === null) return
    child = null
    if (proc.exitCode === null && proc.signalCode === null) proc.kill(name)
    await exited
  }

  await launch()
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    stop: () => signal('SIGTERM'),
    kill: () => signal('SIGKILL'),
    async restart() {
      await signal('SIGTERM')
      await launch()
    },
    async dispose() {
      await signal('SIGTERM')
      await rm(dir, { recursive: true, force: true })
    },
    command: (...args: string[]) => send(port, args),
  }
}

/** One command as MONITOR printed it: who sent it (`ip:port`, or `lua` inside a script), its name (lower case) and first argument. */
export interface MonitoredCommand {
  seconds: number
  client: string
  command: string
  key: string | null
  /** The name and every argument as sent (MONITOR's escapes undone). */
  args: string[]
}

/** The quoted words of a MONITOR line, with redis-server's escapes (sdscatrepr) undone. */
function monitoredArgs(line: string): string[] {
  const words: string[] = []
  for (const match of line.slice(line.indexOf(']') + 1).matchAll(/"((?:[^"\\]|\\.)*)"/g)) {
    words.push(
      (match[1] as string).replace(/\\(x[0-9a-f]{2}|.)/g, (_all, escape: string) => {
        if (escape.startsWith('x') && escape.length === 3) return String.fromCharCode(parseInt(escape.slice(1), 16))
        return ({ n: '\n', r: '\r', t: '\t', a: '\x07', b: '\b' } as Record<string, string>)[escape] ?? escape
      }),
    )
  }
  return words
}

export interface RedisMonitor {
  /** Every command seen so far, in Redis's order. */
  readonly seen: MonitoredCommand[]
  stop(): void
}

/** MONITOR on a connection of its own (redis-server prints each command it runs, scripts' inner ones as `lua`). */
export async function monitorRedis(port: number): Promise<RedisMonitor> {
  const seen: MonitoredCommand[] = []
  const socket = createConnection({ port, host: '127.0.0.1' })
  let rest = ''
  let started: () => void = () => {}
  const ok = new Promise<void>((resolve) => (started = resolve))
  socket.setEncoding('utf8')
  socket.on('data', (chunk: string) => {
    const lines = (rest + chunk).split('\r\n')
    rest = lines.pop() ?? ''
    for (const line of lines) {
      if (line === '+OK') started()
      // +1700000000.123456 [0 127.0.0.1:54321] "evalsha" "sha" ...
      const match = /^\+(\d+\.\d+) \[\d+ ([^\]]+)\] "([^"]*)"(?: "([^"]*)")?/.exec(line)
      if (match === null) continue
      seen.push({ seconds: Number(match[1]), client: match[2] as string, command: (match[3] as string).toLowerCase(), key: match[4] ?? null, args: monitoredArgs(line) })
    }
  })
  socket.on('error', () => undefined)
  socket.on('connect', () => socket.write(encode(['MONITOR'])))
  await withDeadline(ok, `MONITOR on redis ${port}`, 5000).catch((err: unknown) => {
    socket.destroy()
    throw err
  })
  return { seen, stop: () => void socket.destroy() }
}

/** `ip:port` → CLIENT SETNAME of every connection that has a name. */
export async function clientNames(redis: RedisProcess): Promise<Map<string, string>> {
  const names = new Map<string, string>()
  for (const line of (await redis.command('CLIENT', 'LIST')).split('\n')) {
    const addr = /(?:^|\s)addr=(\S+)/.exec(line)?.[1]
    const name = /(?:^|\s)name=(\S+)/.exec(line)?.[1]
    if (addr !== undefined && name !== undefined) names.set(addr, name)
  }
  return names
}
