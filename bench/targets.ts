/**
 * The servers under test, each started the way its users start it, on loopback, pinned to the
 * server core: weft's own CLI, @y/websocket-server's bin (LevelDB through its YPERSISTENCE
 * variable), @hocuspocus/server through its Server API, and the raw `ws` relay.
 */
import type { ChildProcess } from 'node:child_process'
import { realpathSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { freePort, SERVER_CPU, spawnPinned, stopProcess, waitForPort } from './processes.js'
import type { Dialect } from './wire.js'

export type TargetName = 'weft' | 'y-websocket-server' | 'hocuspocus' | 'ws-relay'
export const TARGETS: readonly TargetName[] = ['weft', 'y-websocket-server', 'hocuspocus', 'ws-relay']

/** The repository root (this file runs from dist/bench/). */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const here = (file: string): string => fileURLToPath(new URL(file, import.meta.url))

export const DIALECT: Record<TargetName, Dialect> = {
  weft: 'ywebsocket',
  'y-websocket-server': 'ywebsocket',
  hocuspocus: 'hocuspocus',
  'ws-relay': 'relay',
}

/** Targets that keep documents: the relay has no document, so join and cold-load scenarios skip it. */
export const STATEFUL: Record<TargetName, boolean> = { weft: true, 'y-websocket-server': true, hocuspocus: true, 'ws-relay': false }

export interface RunningTarget {
  name: TargetName
  dialect: Dialect
  port: number
  pid: number
  child: ChildProcess
  /** Lines the server printed on stderr (kept for error reports). */
  stderr: string[]
  /**
   * SIGTERM, SIGKILL after `graceMs`; true when it exited on its own. `hurryAfterMs`: send a
   * second SIGTERM then (teardown between scenarios, where the drain is not what is measured).
   */
  stop (graceMs?: number, hurryAfterMs?: number | null): Promise<boolean>
}

export interface StartOptions {
  /** A LevelDB directory, or null to keep documents in memory. */
  dataDir: string | null
  /** Extra `node` flags for the server (e.g. --cpu-prof). */
  nodeFlags?: string[]
  port?: number
  /** Run weft with its default inbound and upgrade rate limits (by default they are lifted). */
  keepWeftLimits?: boolean
  /** weft and hocuspocus: relay through this Redis (`redis://127.0.0.1:P`). */
  redisUrl?: string
  /** weft: `--instance-id`; hocuspocus: the Redis extension's identifier. */
  instanceId?: string
  /** ws-relay: microseconds of busy work per forwarded message (relay-server.ts `--work-us`; 0: none). */
  relayWorkUs?: number
  /** ws-relay: answer sync step 1 in `room` with the document state in `file` (relay-server.ts). */
  syncReply?: { room: string; file: string }
}

function command (name: TargetName, port: number, dataDir: string | null, keepWeftLimits: boolean, options: StartOptions): { args: string[]; env: NodeJS.ProcessEnv } {
  const cluster = (options.redisUrl === undefined ? [] : ['--redis', options.redisUrl])
    .concat(options.instanceId === undefined ? [] : ['--instance-id', options.instanceId])
  switch (name) {
    case 'weft':
      return {
        args: [
          `${ROOT}dist/server/cli.js`, 'serve', '--host', '127.0.0.1', '--port', String(port),
          '--data', dataDir ?? 'memory', '--log-level', 'warn',
          // All load comes from one machine and the idle scenario opens ~20,000 sockets: lift the admission limits.
          '--max-connections', '100000', '--max-connections-per-ip', '100000',
          ...cluster,
        ],
        // The peers have no inbound rate limits; weft's (per-connection messages and bytes per second,
        // upgrades per second) would make the saturation and idle scenarios measure a policy, not the
        // server. Set through the environment, which an older weft without these settings ignores.
        env: keepWeftLimits ? {} : {
          WEFT_INBOUND_MESSAGES_PER_SECOND: '10000000',
          WEFT_INBOUND_BYTES_PER_SECOND: '10000000000',
          WEFT_UPGRADES_PER_SECOND: '1000000',
          // Every load socket comes from 127.0.0.x: the per-IP upgrade limit (default 100/s) too.
          WEFT_UPGRADES_PER_SECOND_PER_IP: '1000000',
          // ...and its HTTP API requests (default 200/s): scenario 9 reads documents in a loop.
          WEFT_HTTP_REQUESTS_PER_SECOND_PER_IP: '1000000',
          // ...and the per-address room quota (500) and loaded-room cap: scenario 16 opens 10,000 rooms.
          WEFT_MAX_ROOMS_PER_IP: '1000000',
          WEFT_MAX_LOADED_ROOMS: '1000000',
        },
      }
    case 'y-websocket-server':
      return {
        args: [realpathSync(`${ROOT}node_modules/.bin/y-websocket-server`)],
        env: { HOST: '127.0.0.1', PORT: String(port), ...(dataDir === null ? {} : { YPERSISTENCE: dataDir }) },
      }
    case 'hocuspocus':
      return { args: [here('./peers/hocuspocus-server.js'), '--port', String(port), '--data', dataDir ?? 'memory', ...cluster], env: {} }
    case 'ws-relay':
      return {
        args: [
          here('./relay-server.js'), '--port', String(port),
          ...(options.syncReply === undefined ? [] : ['--sync-reply', `${options.syncReply.room}=${options.syncReply.file}`]),
          ...(options.relayWorkUs === undefined || options.relayWorkUs === 0 ? [] : ['--work-us', String(options.relayWorkUs)]),
        ],
        env: {},
      }
  }
}

export async function startTarget (name: TargetName, options: StartOptions): Promise<RunningTarget> {
  const port = options.port ?? await freePort()
  const { args, env } = command(name, port, options.dataDir, options.keepWeftLimits ?? false, options)
  const child = spawnPinned(SERVER_CPU, [...(options.nodeFlags ?? []), ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  const stderr: string[] = []
  child.stderr?.setEncoding('utf8')
  child.stderr?.on('data', (chunk: string) => {
    stderr.push(chunk)
    if (stderr.length > 50) stderr.shift()
  })
  if (child.pid === undefined) throw new Error(`could not start ${name}`)
  try {
    await waitForPort(port, child, 20_000)
  } catch (err) {
    await stopProcess(child, 1_000)
    throw new Error(`${name}: ${(err as Error).message}\n${stderr.join('')}`, { cause: err })
  }
  const pid = child.pid
  return { name, dialect: DIALECT[name], port, pid, child, stderr, stop: (graceMs = 5_000, hurryAfterMs = null) => stopProcess(child, graceMs, hurryAfterMs) }
}
