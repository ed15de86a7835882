/**
 * --compression (issue 19, item 8): bytes on the wire and server CPU, with and without it, beside
 * ws's own per-socket permessage-deflate (the relay with --deflate forwarding the same frames).
 *
 *   npm run bench:compression          (about 40 s; BENCH_COMPRESSION_CLIENTS, default 100)
 *
 * Two workloads per target, each server fresh and alone on core 0, the clients in this process:
 * - `5mb`: one writer sends a 5 MB document (Y.Text of prose) as one update to 10 readers in its
 *   room; for weft also 10 joiners then sync it from the server (the relay has no document).
 * - `typing`: a room of N clients, 5 of them typing one character every 50 ms for 5 s.
 * Readers offer permessage-deflate (ws's client default); writers do not, so what the server
 * inflates is not part of the figures. Bytes are what the readers' TCP sockets read.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { WebSocket } from 'ws'
import * as Y from 'yjs'
import { encodeSyncStep1, encodeSyncUpdate } from '../protocol/index.js'
import { cpuSeconds, freePort, SERVER_CPU, spawnPinned, stopProcess, waitForPort } from './processes.js'
import { ROOT } from './targets.js'

type Target = 'weft' | 'weft --compression' | 'ws-relay' | 'ws-relay --deflate'
const TARGETS: readonly Target[] = ['weft', 'weft --compression', 'ws-relay', 'ws-relay --deflate']
const CLIENTS = Number(process.env.BENCH_COMPRESSION_CLIENTS ?? 100)
const READERS = 10
const TYPISTS = 5

async function start(target: Target): Promise<{ port: number; pid: number; stop(): Promise<unknown> }> {
  const port = await freePort()
  const args = target.startsWith('weft')
    ? [`${ROOT}dist/server/cli.js`, 'serve', '--host', '127.0.0.1', '--port', String(port), '--data', 'memory', '--log-level', 'warn', ...(target === 'weft' ? [] : ['--compression'])]
    : [`${ROOT}dist/bench/relay-server.js`, '--port', String(port), ...(target === 'ws-relay' ? [] : ['--deflate'])]
  const child = spawnPinned(SERVER_CPU, args, {
    cwd: ROOT,
    stdio: 'ignore',
    env: { ...process.env, WEFT_INBOUND_MESSAGES_PER_SECOND: '10000000', WEFT_INBOUND_BYTES_PER_SECOND: '10000000000', WEFT_UPGRADES_PER_SECOND_PER_IP: '1000000', WEFT_UPGRADES_PER_SECOND: '1000000' },
  })
  await waitForPort(port, child, 20_000)
  return { port, pid: child.pid as number, stop: () => stopProcess(child, 3_000, 500) }
}

/** A client of the room; counts the bytes its socket read and the messages it got. */
class Client {
  readonly socket: WebSocket
  messages = 0
  largest = 0
  constructor(port: number, room: string, deflate: boolean) {
    this.socket = new WebSocket(`ws://127.0.0.1:${port}/${room}`, { perMessageDeflate: deflate })
    this.socket.on('message', (data: Buffer) => {
      this.messages++
      this.largest = Math.max(this.largest, data.length)
    })
    this.socket.on('error', () => {})
  }
  async opened(): Promise<void> {
    if (this.socket.readyState !== WebSocket.OPEN) await new Promise((resolve) => this.socket.once('open', resolve))
    this.socket.send(encodeSyncStep1(Y.encodeStateVector(new Y.Doc())))
  }
  /** Bytes read from the TCP socket so far (bench only: ws keeps its socket in `_socket`). */
  get bytesRead(): number {
    return (this.socket as unknown as { _socket?: { bytesRead: number } })._socket?.bytesRead ?? 0
  }
  close(): void {
    this.socket.terminate()
  }
}

async function until(condition: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > deadline) return false
    await sleep(10)
  }
  return true
}

function prose(bytes: number): string {
  const words = ['the', 'document', 'sync', 'of', 'a', 'room', 'and', 'its', 'editors', 'writes', 'text', 'which', 'weft', 'keeps', 'in', 'order', 'for', 'every', 'reader', 'today']
  let seed = 1
  const parts: string[] = []
  let length = 0
  while (length < bytes) {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff
    const word = words[seed % words.length] as string
    parts.push(word)
    length += word.length + 1
  }
  return parts.join(' ')
}

interface Row {
  target: Target
  workload: string
  /** Bytes all readers' sockets read. */
  bytes: number
  serverCpuMs: number
  delivered: string
}

async function fiveMb(target: Target, rows: Row[]): Promise<void> {
  const server = await start(target)
  try {
    const doc = new Y.Doc()
    doc.getText('t').insert(0, prose(5 * 1024 * 1024))
    const update = encodeSyncUpdate(Y.encodeStateAsUpdate(doc))
    const writer = new Client(server.port, 'big', false)
    const readers = Array.from({ length: READERS }, () => new Client(server.port, 'big', true))
    await Promise.all([writer, ...readers].map((c) => c.opened()))
    await sleep(200)
    const bytes0 = readers.reduce((n, r) => n + r.bytesRead, 0)
    const cpu0 = cpuSeconds(server.pid)
    writer.socket.send(update)
    const ok = await until(() => readers.every((r) => r.largest >= update.length - 64), 30_000)
    rows.push({ target, workload: `5 MB update to ${READERS} readers`, bytes: readers.reduce((n, r) => n + r.bytesRead, 0) - bytes0, serverCpuMs: (cpuSeconds(server.pid) - cpu0) * 1000, delivered: ok ? 'all' : 'timeout' })
    if (target.startsWith('weft')) {
      const cpu1 = cpuSeconds(server.pid)
      const joiners = Array.from({ length: READERS }, () => new Client(server.port, 'big', true))
      await Promise.all(joiners.map((c) => c.opened()))
      const joined = await until(() => joiners.every((r) => r.largest >= update.length - 64), 30_000)
      rows.push({ target, workload: `${READERS} joiners sync 5 MB`, bytes: joiners.reduce((n, r) => n + r.bytesRead, 0), serverCpuMs: (cpuSeconds(server.pid) - cpu1) * 1000, delivered: joined ? 'all' : 'timeout' })
      for (const c of joiners) c.close()
    }
    for (const c of [writer, ...readers]) c.close()
  } finally {
    await server.stop()
  }
}

async function typing(target: Target, rows: Row[]): Promise<void> {
  const server = await start(target)
  try {
    const typists = Array.from({ length: TYPISTS }, () => ({ client: new Client(server.port, 'typing', false), doc: new Y.Doc() }))
    const readers = Array.from({ length: CLIENTS - TYPISTS }, () => new Client(server.port, 'typing', true))
    await Promise.all([...typists.map((t) => t.client), ...readers].map((c) => c.opened()))
    for (const t of typists) t.doc.on('update', (u: Uint8Array) => t.client.socket.send(encodeSyncUpdate(u)))
    await sleep(300)
    const bytes0 = readers.reduce((n, r) => n + r.bytesRead, 0)
    const messages0 = readers.reduce((n, r) => n + r.messages, 0)
    const cpu0 = cpuSeconds(server.pid)
    const started = Date.now()
    let sent = 0
    while (Date.now() - started < 5_000) {
      for (const t of typists) {
        const text = t.doc.getText('t')
        text.insert(text.length, 'abcdefghij'[sent % 10] as string)
        sent++
      }
      await sleep(50)
    }
    const expected = sent * readers.length
    await until(() => readers.reduce((n, r) => n + r.messages, 0) - messages0 >= expected, 3_000)
    const got = readers.reduce((n, r) => n + r.messages, 0) - messages0
    rows.push({ target, workload: `typing, ${CLIENTS} clients, ${TYPISTS} typists, 5 s`, bytes: readers.reduce((n, r) => n + r.bytesRead, 0) - bytes0, serverCpuMs: (cpuSeconds(server.pid) - cpu0) * 1000, delivered: `${got}/${expected} frames` })
    for (const c of [...typists.map((t) => t.client), ...readers]) c.close()
  } finally {
    await server.stop()
  }
}

const rows: Row[] = []
for (const target of TARGETS) await fiveMb(target, rows)
for (const target of TARGETS) await typing(target, rows)
const lines = ['| workload | target | bytes read by readers | server CPU ms | delivered |', '|---|---|---|---|---|']
for (const row of rows.sort((a, b) => a.workload.localeCompare(b.workload))) {
  lines.push(`| ${row.workload} | ${row.target} | ${row.bytes.toLocaleString('en')} | ${Math.round(row.serverCpuMs)} | ${row.delivered} |`)
}
process.stdout.write(lines.join('\n') + '\n')
