// Documents big enough that their sync replies are big, state vectors made up for them, and the
// sync step 2 in a frame: for tests of how big replies are paced and bounded.
import assert from 'node:assert/strict'
import * as Y from 'yjs'
import type { DocumentWriter } from '../../persistence/index.js'
import { decodeYMessage } from '../../protocol/index.js'
import type { RawClient } from './clients.js'
import { postUpdateStatus } from './http.js'
import { startServer, type InProcessServer } from './server.js'

/** A document of about `mib` MiB of text in 64 KiB inserts by one client, written through the API. */
export async function writeTextDocument(weft: InProcessServer, room: string, mib: number): Promise<Y.Doc> {
  const doc = new Y.Doc()
  const text = doc.getText('t')
  for (let i = 0; i < mib * 16; i++) text.insert(text.length, 'q'.repeat(64 * 1024))
  assert.equal(await postUpdateStatus(weft.http, room, Y.encodeStateAsUpdate(doc)), 204)
  return doc
}

/** A state vector that has `clock` of `doc`'s only client (Yjs's encoding: count, then client and clock). */
export function stateVectorAt(doc: Y.Doc, clock: number): Uint8Array {
  const bytes: number[] = []
  const varUint = (n: number): void => {
    while (n > 0x7f) {
      bytes.push((n & 0x7f) | 0x80)
      n = Math.floor(n / 128)
    }
    bytes.push(n)
  }
  varUint(1)
  varUint(doc.clientID)
  varUint(clock)
  return Uint8Array.from(bytes)
}

/** Which clocks of `doc`'s client an update holds: [from, to). */
export function clockRange(doc: Y.Doc, update: Uint8Array): [number, number] {
  const { from, to } = Y.parseUpdateMeta(update)
  return [from.get(doc.clientID) ?? 0, to.get(doc.clientID) ?? 0]
}

/** The update of a y-websocket sync step 2 frame; null for any other frame. */
export function step2Of(frame: Uint8Array): Uint8Array | null {
  try {
    const message = decodeYMessage(frame)
    return message.kind === 'sync-step-2' ? message.update : null
  } catch {
    return null
  }
}

/** Runs `body` against a fresh in-memory server; its raw clients (pushed to `clients`) and the server go at the end. */
export async function withRawClients(options: Parameters<typeof startServer>[0], body: (weft: InProcessServer, clients: RawClient[]) => Promise<void>): Promise<void> {
  const weft = await startServer({ data: 'memory', ...options })
  const clients: RawClient[] = []
  try {
    await body(weft, clients)
  } finally {
    for (const client of clients) client.socket.terminate()
    await weft.stop()
  }
}

/**
 * Holds back what the server's writer loads (a whole state merged for a big reply, say): each
 * load reads storage when asked, as it would, and hands the result over only once `open` is
 * called. `loads` lists the rooms asked for; `restore` puts the writer back.
 */
export function holdLoads(weft: InProcessServer): { loads: string[]; open(): void; restore(): void } {
  const writer = (weft.server as unknown as { writer: DocumentWriter }).writer
  const load = writer.load.bind(writer)
  const loads: string[] = []
  let open = (): void => {}
  const gate = new Promise<void>((resolve) => (open = resolve))
  writer.load = async (room: string) => {
    loads.push(room)
    const state = await load(room)
    await gate
    return state
  }
  return {
    loads,
    open: () => open(),
    restore() {
      open()
      writer.load = load
    },
  }
}

/** The document a raw reader has built from every frame it received. */
export function docFromFrames(frames: readonly Uint8Array[]): { doc: Y.Doc; updateFrames: number } {
  const doc = new Y.Doc()
  let updateFrames = 0
  for (const frame of frames) {
    const message = decodeYMessage(frame)
    if (message.kind === 'sync-step-2' || message.kind === 'sync-update') {
      Y.applyUpdate(doc, message.update)
      if (message.kind === 'sync-update') updateFrames++
    }
  }
  return { doc, updateFrames }
}
