#!/usr/bin/env node
/**
 * The `weft` command. The only module that reads process.argv and process.env.
 */
import { readFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { pino } from 'pino'
import * as Y from 'yjs'
import { DocumentWriter, openStore } from '../persistence/index.js'
import { isValidRoomName, ProtocolError, validateUpdate } from '../protocol/index.js'
import { ConfigError, DEFAULTS, parseSettings } from './config.js'
import { documentToJson } from './document-json.js'
import { createServer } from './server.js'

const USAGE = `usage:
  weft serve [flags]                                   run a server (see README for flags)
  weft version                                         print version, commit and build time
  weft export ROOM [--data DIR] [--format json|update] print one stored document
  weft import ROOM FILE [--data DIR]                   merge a binary Yjs update into a stored document
  weft compact [--data DIR]                            compact every stored document`

/** Exit status for a bad flag or setting (the contract). */
const EXIT_USAGE = 2

class UsageError extends Error {}

interface BuildInfo {
  version: string
  commit: string
  buildTime: string
}

function readBuildInfo(): BuildInfo {
  try {
    const info = JSON.parse(readFileSync(new URL('../build-info.json', import.meta.url), 'utf8')) as Partial<BuildInfo>
    return { version: info.version ?? 'dev', commit: info.commit ?? 'unknown', buildTime: info.buildTime ?? 'unknown' }
  } catch {
    return { version: 'dev', commit: 'unknown', buildTime: 'unknown' }
  }
}

/** Parses `--name value` / `--name=value` pairs of the offline commands; positional arguments are returned in order. */
function parseOfflineArgs(args: readonly string[], allowed: readonly string[]): { positional: string[]; flags: Map<string, string> } {
  const positional: string[] = []
  const flags = new Map<string, string>()
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
    flags.set(name, value)
  }
  return { positional, flags }
}

function dataDir(flags: Map<string, string>): string {
  return flags.get('--data') ?? (process.env.WEFT_DATA || DEFAULTS.data)
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
    process.stdout.write(stored)
    return 0
  }
  const doc = new Y.Doc()
  Y.applyUpdate(doc, stored)
  process.stdout.write(JSON.stringify(documentToJson(doc), null, 2) + '\n')
  return 0
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

async function serveCommand(args: readonly string[]): Promise<number> {
  const settings = parseSettings(args, process.env)
  const server = createServer(settings)
  try {
    await server.listen()
  } catch (err) {
    server.log.fatal({ err }, 'could not start')
    await server.close().catch(() => {})
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
    case 'version': {
      const info = readBuildInfo()
      process.stdout.write(`weft ${info.version} (commit ${info.commit}, built ${info.buildTime})\n`)
      return 0
    }
    case 'export':
      return exportCommand(args)
    case 'import':
      return importCommand(args)
    case 'compact':
      return compactCommand(args)
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE + '\n')
      return 0
    default:
      throw new UsageError(command === undefined ? 'missing command' : `unknown command "${command}"`)
  }
}

main(process.argv.slice(2)).then(
  (status) => process.exit(status),
  (err: unknown) => {
    if (err instanceof ConfigError) {
      process.stderr.write(`weft: ${err.message}\n`)
      process.exit(EXIT_USAGE)
    }
    if (err instanceof UsageError) {
      process.stderr.write(`weft: ${err.message} (weft help lists the commands)\n`)
      process.exit(EXIT_USAGE)
    }
    process.stderr.write(`weft: ${(err as Error).message ?? String(err)}\n`)
    process.exit(1)
  },
)
