#!/usr/bin/env node
/**
 * The `weft` command. The only module that reads process.argv and process.env.
 */
import { existsSync, statSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { SignJWT } from 'jose'
import { pino } from 'pino'
import * as Y from 'yjs'
import { DocumentWriter, openStore } from '../persistence/index.js'
import { isValidRoomName, ProtocolError, validateUpdate } from '../protocol/index.js'
import { buildInfo } from './build-info.js'
import { ConfigError, DEFAULTS, MIN_AUTH_SECRET_BYTES, parseSettings, settingsHelp, type WeftOptions } from './config.js'
import { documentToJson } from './document-json.js'
import { createServer } from './server.js'

const USAGE = `weft: real-time backend for collaborative Yjs editors (y-websocket and Hocuspocus clients)

usage:
  weft serve [flags]                                   run a server (weft serve --help lists the flags)
  weft version                                         print version, commit and build time
  weft export ROOM [--data DIR] [--format json|update] print one stored document
  weft import ROOM FILE [--data DIR]                   merge a binary Yjs update into a stored document
  weft compact [--data DIR]                            compact every stored document
  weft token --secret S --room R [--room R2 ...]       print an HS256 access token for development
             [--access read|write|admin] [--ttl 1h] [--sub ID]
             [--issuer ISS] [--audience AUD]               (default: WEFT_AUTH_ISSUER, WEFT_AUTH_AUDIENCE)
  weft --help, weft --version

export, import and compact work on a stopped server's data directory (LevelDB admits one process).`

const SERVE_USAGE = `usage: weft serve [flags]

Each setting is read from its flag, else its environment variable, else the default.
A value that cannot work stops weft with status 2 and one line naming the setting.

`

/** Exit status for a bad flag or setting (the contract). */
const EXIT_USAGE = 2

class UsageError extends Error {}

/** stdout's reader closed before the output was written. */
class ReaderGone extends Error {}

/**
 * Parses `--name value` / `--name=value` pairs of the offline commands; positional arguments are
 * returned in order. `repeatable` flags collect every value (comma-joined would break room names).
 */
function parseOfflineArgs(
  args: readonly string[],
  allowed: readonly string[],
  repeatable: readonly string[] = [],
): { positional: string[]; flags: Map<string, string>; repeated: Map<string, string[]> } {
  const positional: string[] = []
  const flags = new Map<string, string>()
  const repeated = new Map<string, string[]>()
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string
    if (!arg.startsWith('--')) {
      positional.push(arg)
      continue
    }
    const eq = arg.indexOf('=')
    const name = eq === -1 ? arg : arg.slice(0, eq)
    if (!allowed.includes(name)) throw new ConfigError(name, `unknown flag ${name}`)
    const value = eq === -1 ? args[++i] : arg.slice(eq + 1)
    if (value === undefined || value === '') throw new ConfigError(name, `${name} needs a value`)
    if (repeatable.includes(name)) repeated.set(name, [...(repeated.get(name) ?? []), value])
    else if (flags.has(name)) throw new ConfigError(name, `${name} given twice`)
    else flags.set(name, value)
  }
  return { positional, flags, repeated }
}

/**
 * The data directory of an offline command. It must already be one (LevelDB keeps a CURRENT file
 * in every database): opening a mistyped path would create an empty database and report success.
 */
function dataDir(flags: Map<string, string>): string {
  const dir = flags.get('--data') ?? (process.env.WEFT_DATA || DEFAULTS.data)
  const source = flags.has('--data') ? '--data' : process.env.WEFT_DATA ? 'WEFT_DATA (--data)' : '--data (default ./data)'
  if (dir === 'memory') throw new ConfigError('--data', `invalid ${source}: "memory" holds nothing once the server stops; give the server's data directory`)
  let isDirectory: boolean
  try {
    isDirectory = statSync(dir).isDirectory()
  } catch {
    throw new ConfigError('--data', `invalid ${source}: ${dir} does not exist`)
  }
  if (!isDirectory || !existsSync(join(dir, 'CURRENT'))) throw new ConfigError('--data', `invalid ${source}: ${dir} is not a weft data directory (no LevelDB database in it)`)
  return dir
}

function roomArgument(value: string | undefined): string {
  if (value === undefined) throw new UsageError('missing ROOM')
  if (!isValidRoomName(value)) throw new ConfigError('ROOM', `invalid ROOM: room names are 1 to 512 bytes of UTF-8 without control characters`)
  return value
}

async function withWriter<T>(data: string, work: (writer: DocumentWriter) => Promise<T>): Promise<T> {
  let store
  try {
    store = await openStore(data)
  } catch (err) {
    throw new Error(`cannot open the data directory ${data}: ${(err as Error).message} (is a server running on it?)`, { cause: err })
  }
  // stdout carries the command's output (an exported document); logs go to stderr.
  const writer = new DocumentWriter(store, { persistWindowMs: 0, logger: pino({ level: 'warn' }, pino.destination(2)) })
  try {
    return await work(writer)
  } finally {
    await writer.close()
  }
}

async function exportCommand(args: readonly string[]): Promise<number> {
  const { positional, flags } = parseOfflineArgs(args, ['--data', '--format'])
  const room = roomArgument(positional[0])
  if (positional.length > 1) throw new UsageError(`unexpected argument ${positional[1]}`)
  const format = flags.get('--format') ?? 'json'
  if (format !== 'json' && format !== 'update') throw new ConfigError('--format', `invalid --format: "${format}" is not json or update`)
  const stored = await withWriter(dataDir(flags), (writer) => writer.load(room))
  if (stored === null) {
    process.stderr.write(`weft: room "${room}" is not stored\n`)
    return 1
  }
  if (format === 'update') {
    await writeOut(stored)
    return 0
  }
  const doc = new Y.Doc()
  Y.applyUpdate(doc, stored)
  await writeOut(JSON.stringify(documentToJson(doc), null, 2) + '\n')
  return 0
}

/**
 * Resolves once `data` has left the process. Into a pipe, stdout writes are asynchronous past
 * the pipe's buffer (64 KiB on Linux): exiting right after write() would cut the output there.
 */
function writeOut(data: string | Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => {
    process.stdout.write(data, (err) => {
      if (!err) resolve()
      // The reader went away (`weft export R | head -c 10`): like other Unix tools, stop quietly.
      else if ((err as NodeJS.ErrnoException).code === 'EPIPE') reject(new ReaderGone())
      else reject(new Error(`cannot write the output: ${err.message}`))
    })
  })
}

/** Waits for what is queued on stdout and stderr (see writeOut); a closed reader ends the wait too. */
function flushed(stream: NodeJS.WriteStream): Promise<void> {
  return new Promise((resolve) => {
    if (stream.destroyed || !stream.writable) resolve()
    else stream.write('', () => resolve())
  })
}

async function importCommand(args: readonly string[]): Promise<number> {
  const { positional, flags } = parseOfflineArgs(args, ['--data'])
  const room = roomArgument(positional[0])
  const file = positional[1]
  if (file === undefined) throw new UsageError('missing FILE')
  let update: Uint8Array
  try {
    update = new Uint8Array(await readFile(file))
  } catch (err) {
    throw new ConfigError('FILE', `invalid FILE: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`, { cause: err })
  }
  try {
    validateUpdate(update)
  } catch (err) {
    if (err instanceof ProtocolError) throw new ConfigError('FILE', `invalid FILE: ${file} is not a Yjs update (${err.message})`)
    throw err
  }
  await withWriter(dataDir(flags), (writer) => writer.write(room, update))
  process.stderr.write(`weft: merged ${update.length} bytes into "${room}"\n`)
  return 0
}

async function compactCommand(args: readonly string[]): Promise<number> {
  const { positional, flags } = parseOfflineArgs(args, ['--data'])
  if (positional.length > 0) throw new UsageError(`unexpected argument ${positional[0]}`)
  const count = await withWriter(dataDir(flags), async (writer) => {
    const rooms = await writer.listRooms()
    for (const { room } of rooms) await writer.compact(room)
    return rooms.length
  })
  process.stderr.write(`weft: compacted ${count} rooms\n`)
  return 0
}

const TTL_UNITS: Readonly<Record<string, number>> = { s: 1, m: 60, h: 3600, d: 86_400 }

/** `90`, `90s`, `15m`, `1h`, `7d` → seconds. */
function parseTtl(raw: string): number {
  const match = /^(\d+)([smhd]?)$/.exec(raw)
  const seconds = match === null ? NaN : Number(match[1]) * (TTL_UNITS[match[2] || 's'] as number)
  if (!Number.isSafeInteger(seconds) || seconds <= 0) throw new ConfigError('--ttl', `invalid --ttl: "${raw}" is not a duration like 90s, 15m, 1h or 7d`)
  return seconds
}

/** Prints an HS256 access token with the claims server/access.ts checks: sub, exp, rooms, access. */
async function tokenCommand(args: readonly string[]): Promise<number> {
  const { positional, flags, repeated } = parseOfflineArgs(args, ['--secret', '--room', '--access', '--ttl', '--sub', '--issuer', '--audience'], ['--room'])
  if (positional.length > 0) throw new UsageError(`unexpected argument ${positional[0]}`)
  const secret = flags.get('--secret') ?? process.env.WEFT_AUTH_SECRET
  if (secret === undefined || secret === '') throw new ConfigError('--secret', 'missing --secret (the server\'s --auth-secret; or set WEFT_AUTH_SECRET)')
  if (Buffer.byteLength(secret) < MIN_AUTH_SECRET_BYTES) {
    throw new ConfigError('--secret', `invalid --secret: the server refuses HS256 secrets shorter than ${MIN_AUTH_SECRET_BYTES} bytes`)
  }
  const rooms = repeated.get('--room') ?? []
  if (rooms.length === 0) throw new ConfigError('--room', 'missing --room (a room name, or a prefix ending in *; repeat --room for more)')
  for (const room of rooms) {
    const name = room.endsWith('*') ? room.slice(0, -1) : room
    if (name !== '' && !isValidRoomName(name)) throw new ConfigError('--room', `invalid --room: "${room}" is not a room name or prefix`)
  }
  const access = flags.get('--access') ?? 'write'
  if (access !== 'read' && access !== 'write' && access !== 'admin') throw new ConfigError('--access', `invalid --access: "${access}" is not read, write or admin`)
  const ttl = parseTtl(flags.get('--ttl') ?? '1h')
  const now = Math.floor(Date.now() / 1000)
  const jwt = new SignJWT({ rooms, access })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(flags.get('--sub') ?? 'dev')
    .setIssuedAt(now)
    .setExpirationTime(now + ttl)
  // A server with --auth-issuer / --auth-audience requires them on HS256 tokens too.
  const issuer = flags.get('--issuer') ?? process.env.WEFT_AUTH_ISSUER
  const audience = flags.get('--audience') ?? process.env.WEFT_AUTH_AUDIENCE
  if (issuer !== undefined && issuer !== '') jwt.setIssuer(issuer)
  if (audience !== undefined && audience !== '') jwt.setAudience(audience)
  const token = await jwt.sign(new TextEncoder().encode(secret))
  await writeOut(token + '\n')
  return 0
}

/** The one stderr line of a server that could not start: what failed and which setting to look at. */
function startFailure(err: unknown, settings: Readonly<WeftOptions>): string {
  const { code, message } = err as NodeJS.ErrnoException
  const where = `${settings.host}:${settings.port}`
  switch (code) {
    case 'EADDRINUSE':
      return `cannot listen on ${where}: the port is in use (--port)`
    case 'EACCES':
      if ((err as { syscall?: string }).syscall === 'listen') return `cannot listen on ${where}: permission denied (ports below 1024 need privileges; --port)`
      break
    case 'EADDRNOTAVAIL':
    case 'ENOTFOUND':
      return `cannot listen on ${where}: no such address on this machine (--host)`
  }
  const cause = (err as Error).cause as NodeJS.ErrnoException | undefined
  const detail = cause?.message ?? message ?? String(err)
  if (settings.data !== 'memory' && /open|lock|database|EACCES|EROFS|ENOTDIR|ENOENT/i.test(`${message} ${code ?? ''}`)) {
    return `cannot open the data directory ${settings.data}: ${detail.split('\n')[0]} (--data)`
  }
  return `could not start: ${String(message ?? err).split('\n')[0]}`
}

async function serveCommand(args: readonly string[]): Promise<number> {
  if (args.includes('--help') || args.includes('-h')) {
    await writeOut(SERVE_USAGE + settingsHelp() + '\n')
    return 0
  }
  const settings = parseSettings(args, process.env)
  // The parts an embedding application would hand in, built from the flags: the store of --data.
  let store
  try {
    store = await openStore(settings.data)
  } catch (err) {
    process.stderr.write(`weft: ${startFailure(err, settings)}\n`)
    return 1
  }
  const server = createServer({ ...settings, store })
  try {
    await server.listen()
  } catch (err) {
    // stdout carries JSON logs (maybe silenced); the reason a start failed goes to stderr as one line.
    server.log.fatal({ err }, 'could not start')
    await server.close().catch(() => {})
    process.stderr.write(`weft: ${startFailure(err, settings)}\n`)
    return 1
  }
  return new Promise<number>((resolve) => {
    let signals = 0
    const onSignal = (signal: NodeJS.Signals): void => {
      signals++
      if (signals === 1) {
        server.log.info({ signal }, 'signal received: draining')
        server.drain().then(
          ({ unsaved }) => resolve(unsaved.length === 0 ? 0 : 1),
          (err: unknown) => {
            server.log.fatal({ err }, 'drain failed')
            resolve(1)
          },
        )
      } else {
        // A second signal means "now": close (which flushes with a short deadline) and leave.
        server.log.warn({ signal }, 'second signal: stopping at once')
        const hard = setTimeout(() => resolve(1), 2_000)
        hard.unref()
        void server.close().then(({ unsaved }) => resolve(unsaved.length === 0 ? 0 : 1), () => resolve(1))
      }
    }
    process.on('SIGTERM', onSignal)
    process.on('SIGINT', onSignal)
  })
}

async function main(argv: readonly string[]): Promise<number> {
  const [command, ...args] = argv
  switch (command) {
    case 'serve':
      return serveCommand(args)
    case 'version':
    case '--version':
    case '-v': {
      const info = buildInfo()
      await writeOut(`weft ${info.version} (commit ${info.commit}, built ${info.buildTime})\n`)
      return 0
    }
    case 'token':
      return tokenCommand(args)
    case 'export':
      return exportCommand(args)
    case 'import':
      return importCommand(args)
    case 'compact':
      return compactCommand(args)
    case 'help':
    case '--help':
    case '-h':
      await writeOut(USAGE + '\n')
      return 0
    default:
      throw new UsageError(command === undefined ? 'missing command' : `unknown command "${command}"`)
  }
}

function failure(err: unknown): number {
  if (err instanceof ReaderGone) return 1
  if (err instanceof ConfigError) {
    process.stderr.write(`weft: ${err.message}\n`)
    return EXIT_USAGE
  }
  if (err instanceof UsageError) {
    process.stderr.write(`weft: ${err.message} (weft help lists the commands)\n`)
    return EXIT_USAGE
  }
  process.stderr.write(`weft: ${(err as Error).message ?? String(err)}\n`)
  return 1
}

// A reader that goes away is reported to writeOut's callback; the stream's own error event must not crash.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code !== 'EPIPE') throw err
})

main(process.argv.slice(2))
  .then((status) => status, failure)
  .then(async (status) => {
    await Promise.all([flushed(process.stdout), flushed(process.stderr)])
    process.exit(status)
  })
