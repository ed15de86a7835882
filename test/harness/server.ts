import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { pino } from 'pino'
import { createServer, type CreateServerOptions, type WeftServer } from '../../server/index.js'
import { withDeadline } from './wait.js'

/** dist/server/cli.js, next to the compiled tests. */
export const CLI = fileURLToPath(new URL('../../server/cli.js', import.meta.url))

export async function tempDir(prefix = 'weft-test-'): Promise<{ path: string; remove(): Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix))
  return { path, remove: () => rm(path, { recursive: true, force: true }) }
}

export interface InProcessServer {
  server: WeftServer
  port: number
  /** ws://127.0.0.1:PORT */
  url: string
  http: string
  data: string
  /** Real shutdown: drain/close of the server, then removal of the temp dir (unless keepData). */
  stop(): Promise<void>
}

/** Starts a weft server in this process on a free loopback port with LevelDB in a temp dir. */
export async function startServer(options: CreateServerOptions & { keepData?: boolean } = {}): Promise<InProcessServer> {
  const { keepData = false, ...rest } = options
  const dir = rest.data === undefined ? await tempDir() : null
  const data = rest.data ?? (dir as { path: string }).path
  const server = createServer({ host: '127.0.0.1', port: 0, drainSeconds: 2, logger: pino({ level: process.env.WEFT_TEST_LOG ?? 'silent' }), ...rest, data })
  const { port } = await server.listen()
  return {
    server,
    port,
    url: `ws://127.0.0.1:${port}`,
    http: `http://127.0.0.1:${port}`,
    data,
    async stop() {
      await server.close()
      if (dir !== null && !keepData) await dir.remove()
    },
  }
}

export interface WeftProcess {
  child: ChildProcess
  port: number
  url: string
  http: string
  /** Every JSON log line the process printed so far. */
  logs: Array<Record<string, unknown>>
  stderr(): string
  /** Resolves with the exit code (or signal name) when the process ends. */
  exited: Promise<number | string>
  kill(signal?: NodeJS.Signals): void
}

/**
 * Runs `weft serve` as a child process (so a test can SIGTERM or kill -9 it); resolves once it is listening.
 * `where` runs another copy of the CLI (`cli`, e.g. an assembled image's) from another folder (`cwd`).
 */
export async function spawnWeft(args: string[], env: Record<string, string> = {}, timeoutMs = 15_000, where: { cli?: string; cwd?: string } = {}): Promise<WeftProcess> {
  const child = spawn(process.execPath, [where.cli ?? CLI, 'serve', '--host', '127.0.0.1', '--port', '0', ...args], {
    env: { ...process.env, ...env },
    ...(where.cwd === undefined ? {} : { cwd: where.cwd }),
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const logs: Array<Record<string, unknown>> = []
  let stderr = ''
  let buffered = ''
  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown'))
  })
  const listening = new Promise<number>((resolve, reject) => {
    child.stdout?.setEncoding('utf8')
    child.stdout?.on('data', (chunk: string) => {
      buffered += chunk
      let newline: number
      while ((newline = buffered.indexOf('\n')) !== -1) {
        const line = buffered.slice(0, newline)
        buffered = buffered.slice(newline + 1)
        try {
          const entry = JSON.parse(line) as Record<string, unknown>
          logs.push(entry)
          if (entry.msg === 'listening') resolve(entry.port as number)
        } catch {
          logs.push({ raw: line })
        }
      }
    })
    child.stderr?.setEncoding('utf8')
    child.stderr?.on('data', (chunk: string) => {
      stderr += chunk
    })
    void exited.then((code) => reject(new Error(`weft exited (${code}) before listening: ${stderr}`)))
  })
  const port = await withDeadline(listening, 'weft to listen', timeoutMs)
  return {
    child,
    port,
    url: `ws://127.0.0.1:${port}`,
    http: `http://127.0.0.1:${port}`,
    logs,
    stderr: () => stderr,
    exited,
    kill(signal: NodeJS.Signals = 'SIGTERM') {
      child.kill(signal)
    },
  }
}

/**
 * Runs the weft CLI to completion within `timeoutMs`; kills it when it overruns (a bad setting that
 * is accepted would otherwise leave a server running). Returns status, stdout (a Buffer) and stderr.
 */
export async function runCli(args: string[], env: Record<string, string> = {}, timeoutMs = 30_000): Promise<{ status: number | null; stdout: Buffer; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  const out: Buffer[] = []
  let err = ''
  child.stdout.on('data', (chunk: Buffer) => out.push(chunk))
  child.stderr.setEncoding('utf8')
  child.stderr.on('data', (chunk: string) => {
    err += chunk
  })
  const closed = new Promise<number | null>((resolve) => child.once('close', (status) => resolve(status)))
  try {
    const status = await withDeadline(closed, `weft ${args.join(' ')}`, timeoutMs)
    return { status, stdout: Buffer.concat(out), stderr: err }
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  }
}
