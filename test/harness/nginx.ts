import { spawn, type ChildProcess } from 'node:child_process'
import { closeSync, existsSync, openSync } from 'node:fs'
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { createConnection } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { freePort } from './redis.js'
import { withDeadline } from './wait.js'

/** A real nginx in front of weft instances, run from deploy/nginx/ in a temp prefix directory. */
export interface NginxProcess {
  port: number
  /** ws://127.0.0.1:PORT */
  url: string
  http: string
  /** Access log lines so far (deploy/nginx/nginx.conf logs to stdout: `... upstream=HOST:PORT ...`). */
  accessLog(): Promise<string[]>
  stderr(): string
  /** The rendered conf.d/weft.conf, for assertions on what really ran. */
  config: string
  /** Graceful stop (SIGQUIT), then SIGTERM and SIGKILL if it lingers; removes the temp dir. Idempotent. */
  stop(): Promise<void>
}

export interface NginxOptions {
  /** host:port of each weft instance. */
  upstreams: string[]
  /** Appended to each `server` line; default: what the deployment files use. */
  serverParameters?: string
  /** The instances' --hocuspocus-path (WEFT_HOCUSPOCUS_PATH of the template); default `/`. */
  hocuspocusPath?: string
}

/** The repository root, found from dist/test/harness (where the compiled harness runs). */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir)
    if (parent === dir) throw new Error('no package.json above the harness')
    dir = parent
  }
  return dir
}

export const NGINX_DIR = join(repoRoot(), 'deploy', 'nginx')

/** Debian installs nginx in /usr/sbin, which is not on every PATH. */
function nginxBinary(): string {
  for (const candidate of ['/usr/sbin/nginx', '/usr/local/sbin/nginx', '/usr/local/nginx/sbin/nginx']) {
    if (existsSync(candidate)) return candidate
  }
  return 'nginx'
}

/**
 * What the nginx image's envsubst step does: replaces `${NAME}` for the given names only, and
 * fails when a `${...}` is left, so a renamed variable cannot start nginx with a hole in it.
 */
export function renderTemplate(template: string, values: Record<string, string>): string {
  const rendered = template.replace(/\$\{([A-Z_][A-Z0-9_]*)\}/g, (whole, name: string) => values[name] ?? whole)
  const left = /\$\{[A-Z_][A-Z0-9_]*\}/.exec(rendered)
  if (left !== null) throw new Error(`template variable ${left[0]} has no value`)
  return rendered
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ port, host: '127.0.0.1' })
    socket.once('connect', () => {
      socket.destroy()
      resolve(true)
    })
    socket.once('error', () => resolve(false))
  })
}

/**
 * Starts `nginx -p <tmp> -c <tmp>/nginx.conf` with deploy/nginx/nginx.conf and the rendered
 * deploy/nginx/weft.conf.template, in the foreground with a master process; resolves once it
 * accepts connections on a free loopback port.
 */
export async function startNginx(options: NginxOptions): Promise<NginxProcess> {
  const dir = await mkdtemp(join(tmpdir(), 'weft-nginx-'))
  const port = await freePort()
  const parameters = options.serverParameters ?? 'max_fails=0'
  const upstreams = options.upstreams.map((address) => `server ${address} ${parameters};`).join('\n    ')
  const template = await readFile(join(NGINX_DIR, 'weft.conf.template'), 'utf8')
  // The tests listen on loopback only; the deployment listens on every address.
  const config = renderTemplate(template, { WEFT_UPSTREAMS: upstreams, LISTEN_PORT: `127.0.0.1:${port}`, WEFT_HOCUSPOCUS_PATH: options.hocuspocusPath ?? '/' })
  await mkdir(join(dir, 'conf.d'))
  await writeFile(join(dir, 'conf.d', 'weft.conf'), config)
  await copyFile(join(NGINX_DIR, 'nginx.conf'), join(dir, 'nginx.conf'))
  // As root without `user`, workers run as nobody and could not enter the 0700 temp dir.
  const runAsRoot = process.getuid?.() === 0 ? ' user root;' : ''
  // stdout is a file, not a pipe: Node's pipes are socket pairs, and nginx cannot open()
  // /dev/stdout (the access log) when it is a socket.
  const accessLogPath = join(dir, 'stdout.log')
  const stdout = openSync(accessLogPath, 'a')
  const child: ChildProcess = spawn(
    nginxBinary(),
    ['-p', `${dir}/`, '-c', join(dir, 'nginx.conf'), '-e', 'stderr', '-g', `daemon off; master_process on;${runAsRoot}`],
    { stdio: ['ignore', stdout, 'pipe'] },
  )
  closeSync(stdout)
  let stderr = ''
  child.stderr?.setEncoding('utf8')
  child.stderr?.on('data', (chunk: string) => {
    stderr += chunk
  })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  let stopping: Promise<void> | null = null
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGQUIT')
        const graceful = await withDeadline(exited, 'nginx to quit', 3000).then(() => true, () => false)
        if (!graceful) {
          child.kill('SIGTERM')
          const fast = await withDeadline(exited, 'nginx to stop', 2000).then(() => true, () => false)
          if (!fast) {
            child.kill('SIGKILL')
            await exited
          }
        }
      }
      await rm(dir, { recursive: true, force: true })
    })()
    return stopping
  }
  try {
    const deadline = Date.now() + 10_000
    while (!(await canConnect(port))) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`nginx exited (${child.exitCode ?? child.signalCode}): ${stderr}`)
      if (Date.now() > deadline) throw new Error(`nginx did not accept connections on ${port} within 10 s: ${stderr}`)
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  } catch (err) {
    await stop()
    throw err
  }
  return {
    port,
    url: `ws://127.0.0.1:${port}`,
    http: `http://127.0.0.1:${port}`,
    accessLog: async () => (await readFile(accessLogPath, 'utf8').catch(() => '')).split('\n').filter((line) => line !== ''),
    stderr: () => stderr,
    config,
    stop,
  }
}
