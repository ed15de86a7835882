import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'
import { WebSocket } from 'ws'
import * as Y from 'yjs'
import { withDeadline } from './wait.js'

/** A stock @hocuspocus/provider (v4) in Node, with its socket and document. */
export interface Hocuspocus {
  provider: HocuspocusProvider
  socket: HocuspocusProviderWebsocket
  doc: Y.Doc
}

/** A Hocuspocus socket in Node; short reconnect delays so a test never waits on the 1 s default. */
export function hocuspocusSocket(url: string): HocuspocusProviderWebsocket {
  return new HocuspocusProviderWebsocket({ url: `${url}/`, WebSocketPolyfill: WebSocket, delay: 100, minDelay: 50, maxDelay: 500 })
}

/** One provider on its own socket (or on `socket`, shared). v4 attaches an explicit socket only on `attach()`. */
export function hocuspocus(url: string, name: string, options: { socket?: HocuspocusProviderWebsocket; token?: string | null } = {}): Hocuspocus {
  const socket = options.socket ?? hocuspocusSocket(url)
  const doc = new Y.Doc()
  const provider = new HocuspocusProvider({ websocketProvider: socket, name, document: doc, token: options.token ?? null })
  provider.attach()
  return { provider, socket, doc }
}

/** Real teardown: the providers (awareness, CLOSE for their documents) and then their sockets. */
export function destroyHocuspocus(...clients: Hocuspocus[]): void {
  const sockets = new Set<HocuspocusProviderWebsocket>()
  for (const client of clients) {
    client.provider.destroy()
    sockets.add(client.socket)
  }
  for (const socket of sockets) socket.destroy()
}

/** Resolves with the first payload of `event` that `match` accepts. */
export function nextEvent<T>(emitter: Pick<HocuspocusProvider | HocuspocusProviderWebsocket, 'on' | 'off'>, event: string, what: string, match: (payload: T) => boolean = () => true, timeoutMs = 10_000): Promise<T> {
  let handler: ((payload: T) => void) | undefined
  return withDeadline(
    new Promise<T>((resolve) => {
      handler = (payload: T) => {
        if (match(payload)) resolve(payload)
      }
      emitter.on(event, handler)
    }),
    what,
    timeoutMs,
  ).finally(() => emitter.off(event, handler))
}

export function hocuspocusSynced(client: Hocuspocus, timeoutMs = 10_000): Promise<void> {
  if (client.provider.isSynced) return Promise.resolve()
  return nextEvent<unknown>(client.provider, 'synced', `hocuspocus provider of ${client.provider.configuration.name} to sync`, () => true, timeoutMs).then(() => {})
}
