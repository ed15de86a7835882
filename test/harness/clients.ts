import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'
import { WebSocket } from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { decodeAwarenessUpdate, decodeHocuspocusMessage, decodeYMessage, encodeHocuspocusClientAuthToken, encodeHocuspocusSyncStep1, encodeSyncStep1, type AwarenessEntry } from '../../protocol/index.js'
import { until, withDeadline } from './wait.js'

/**
 * A stock y-websocket provider in Node: `ws` as its WebSocket, and no BroadcastChannel (two
 * providers in one process would otherwise sync through it and a test would pass without the server).
 */
export function provider(url: string, room: string, doc = new Y.Doc(), options: { connect?: boolean; params?: Record<string, string>; headers?: Record<string, string> } = {}): WebsocketProvider {
  const { headers } = options
  // Node's WebSocket can send headers a browser sends by itself (a session cookie).
  const polyfill = headers === undefined ? WebSocket : class extends WebSocket {
    constructor(address: string, protocols?: string | string[]) {
      super(address, protocols, { headers })
    }
  }
  return new WebsocketProvider(url, room, doc, {
    WebSocketPolyfill: polyfill as unknown as typeof globalThis.WebSocket,
    disableBc: true,
    connect: options.connect ?? true,
    maxBackoffTime: 500,
    params: options.params ?? {},
  })
}

/** A stock Hocuspocus provider on its own socket, attached, for document `name` with `token`. */
export function hocuspocusProvider(url: string, name: string, token: string | null, doc = new Y.Doc()): { provider: HocuspocusProvider; socket: HocuspocusProviderWebsocket; doc: Y.Doc; destroy(): void } {
  const socket = new HocuspocusProviderWebsocket({ url: `${url}/`, WebSocketPolyfill: WebSocket, delay: 100, minDelay: 50, maxDelay: 500 })
  const provider = new HocuspocusProvider({ websocketProvider: socket, name, document: doc, token })
  provider.attach()
  return {
    provider,
    socket,
    doc,
    destroy() {
      provider.destroy()
      socket.destroy()
    },
  }
}

/** A stock Hocuspocus provider in Node on its own socket, attached to document `name`. */
export interface HocuspocusClient {
  provider: HocuspocusProvider
  socket: HocuspocusProviderWebsocket
  synced(timeoutMs?: number): Promise<void>
  destroy(): void
}

export function hocuspocusClient(url: string, name: string, doc = new Y.Doc()): HocuspocusClient {
  const socket = new HocuspocusProviderWebsocket({ url, WebSocketPolyfill: WebSocket, delay: 100, minDelay: 50, maxDelay: 500 })
  const hp = new HocuspocusProvider({ websocketProvider: socket, name, document: doc })
  hp.attach()
  return {
    provider: hp,
    socket,
    synced: (timeoutMs = 10_000) =>
      withDeadline(new Promise<void>((resolve) => (hp.isSynced ? resolve() : hp.on('synced', () => resolve()))), `hocuspocus ${name} to sync`, timeoutMs),
    destroy() {
      hp.destroy()
      socket.destroy()
    },
  }
}

export function synced(p: WebsocketProvider, timeoutMs = 10_000): Promise<void> {
  if (p.synced) return Promise.resolve()
  return withDeadline(
    new Promise<void>((resolve) => {
      const handler = (isSynced: boolean): void => {
        if (isSynced) {
          p.off('sync', handler)
          resolve()
        }
      }
      p.on('sync', handler)
    }),
    `provider of ${p.roomname} to sync`,
    timeoutMs,
  )
}

/** Waits until every doc has the same encoded state (byte-identical after a fresh load) and returns it. */
export async function converged(docs: readonly Y.Doc[], what = 'documents to converge', timeoutMs = 15_000): Promise<Uint8Array> {
  await until(() => {
    const first = canonicalState(docs[0] as Y.Doc)
    return docs.every((doc) => Buffer.from(canonicalState(doc)).equals(Buffer.from(first)))
  }, what, timeoutMs)
  return canonicalState(docs[0] as Y.Doc)
}

/**
 * A doc's state in canonical bytes: the encoded state of a fresh doc that applied it. Two docs with
 * the same content can encode differently (struct splitting depends on history); a fresh load
 * normalises that.
 */
export function canonicalState(doc: Y.Doc): Uint8Array {
  const fresh = new Y.Doc()
  Y.applyUpdate(fresh, Y.encodeStateAsUpdate(doc))
  const bytes = Y.encodeStateAsUpdate(fresh)
  fresh.destroy()
  return bytes
}

export function canonicalUpdate(update: Uint8Array): Uint8Array {
  const doc = new Y.Doc()
  Y.applyUpdate(doc, update)
  return canonicalState(doc)
}

function isStep2(frame: Uint8Array): boolean {
  try {
    return decodeYMessage(frame).kind === 'sync-step-2'
  } catch {
    return false
  }
}

/** A new client's update that types `text` into text 't': a small, valid document. */
export function textUpdate(text: string): Uint8Array {
  const doc = new Y.Doc()
  doc.getText('t').insert(0, text)
  return Y.encodeStateAsUpdate(doc)
}

/** A raw WebSocket that records every frame and its close, for byte-level tests. */
export class RawClient {
  readonly frames: Uint8Array[] = []
  closeCode: number | null = null
  closeReason = ''
  readonly opened: Promise<void>
  readonly closed: Promise<number>

  constructor(readonly socket: WebSocket) {
    socket.binaryType = 'nodebuffer'
    socket.on('message', (data: Buffer) => this.frames.push(new Uint8Array(data)))
    this.opened = new Promise((resolve, reject) => {
      socket.once('open', () => resolve())
      socket.once('error', reject)
      socket.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused with HTTP ${res.statusCode}`)))
    })
    this.closed = new Promise((resolve) => {
      socket.once('close', (code: number, reason: Buffer) => {
        this.closeCode = code
        this.closeReason = reason.toString()
        resolve(code)
      })
    })
    this.opened.catch(() => {})
  }

  static async open(url: string, headers: Record<string, string> = {}): Promise<RawClient> {
    const client = new RawClient(new WebSocket(url, { headers }))
    await withDeadline(client.opened, `raw client to open ${url}`)
    return client
  }

  /**
   * Opens a raw client that has done the y-websocket handshake on an empty doc; returns it with
   * the server's sync step 2 (its update is the whole document).
   */
  static async joined(url: string): Promise<{ client: RawClient; step2: Uint8Array }> {
    const client = await RawClient.open(url)
    client.send(encodeSyncStep1(Y.encodeStateVector(new Y.Doc())))
    const frame = await client.frame((f) => isStep2(f), 'the server sync step 2')
    const message = decodeYMessage(frame)
    if (message.kind !== 'sync-step-2') throw new Error('not a sync step 2')
    return { client, step2: message.update }
  }

  /**
   * Opens a raw Hocuspocus client that has authenticated with `token` for `room` and received the
   * server's sync step 2 for it.
   */
  static async hocuspocusJoined(url: string, room: string, token: string): Promise<RawClient> {
    const client = await RawClient.open(`${url}/`)
    client.send(encodeHocuspocusClientAuthToken(room, token, 'raw-test'))
    client.send(encodeHocuspocusSyncStep1(room, Y.encodeStateVector(new Y.Doc())))
    await client.frame((frame) => {
      try {
        return decodeHocuspocusMessage(frame).kind === 'sync-step-2'
      } catch {
        return false
      }
    }, 'the server sync step 2')
    return client
  }

  send(frame: Uint8Array): void {
    this.socket.send(frame)
  }

  /** Waits for a frame matching `match` (from the start of the record) and returns it. */
  async frame(match: (frame: Uint8Array) => boolean, what: string, timeoutMs = 10_000): Promise<Uint8Array> {
    let found: Uint8Array | undefined
    await until(() => (found = this.frames.find(match)) !== undefined, what, timeoutMs)
    return found as Uint8Array
  }

  waitClosed(timeoutMs = 10_000): Promise<number> {
    return withDeadline(this.closed, 'socket to close', timeoutMs)
  }

  close(): void {
    this.socket.close()
  }
}

/** Destroys a provider and its awareness (whose interval would otherwise keep the process alive). */
export function destroy(...providers: WebsocketProvider[]): void {
  for (const p of providers) {
    p.destroy()
    p.awareness.destroy()
  }
}

/** The awareness entries of a y-websocket frame, or null when it is another message (or malformed). */
export function awarenessEntries(frame: Uint8Array): AwarenessEntry[] | null {
  try {
    const message = decodeYMessage(frame)
    return message.kind === 'awareness' ? decodeAwarenessUpdate(message.update) : null
  } catch {
    return null
  }
}
