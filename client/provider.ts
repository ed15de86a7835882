import * as Y from 'yjs'
import { Awareness, applyAwarenessUpdate, removeAwarenessStates } from 'y-protocols/awareness'
import {
  ProtocolError,
  decodeAwarenessUpdate,
  decodeYMessage,
  encodeAwareness,
  encodeAwarenessUpdate,
  encodeQueryAwareness,
  encodeSyncStep1,
  encodeSyncStep2,
  encodeSyncUpdate,
  SAVED_ACKS_PARAM,
  validateUpdate,
} from '../protocol/index.js'
import { Backoff } from './backoff.js'
import { ABNORMAL_CLOSURE, closeAction } from './close-policy.js'
import { Emitter } from './emitter.js'
import { assertRoomName, roomUrl } from './room-url.js'

export type ProviderStatus = 'connecting' | 'connected' | 'disconnected' | 'stopped'

export interface ProviderCloseEvent {
  code: number
  reason: string
  /** False when the provider stopped (disconnect(), destroy(), or a code that says not to retry). */
  willReconnect: boolean
}

export interface WeftProviderOptions {
  /** Node: pass `ws`'s WebSocket; browsers: the global (the default). */
  WebSocket?: typeof globalThis.WebSocket
  /** Created (and destroyed with the provider) when absent. */
  awareness?: Awareness
  /** Query parameters, e.g. `{ token }`. Also settable later through `provider.params`. */
  params?: Record<string, string>
  /** Connect at once. Default true. */
  connect?: boolean
  /** Reconnect delays, in milliseconds. */
  backoff?: {
    /** First backoff window; it doubles per failure. Default 500. */
    initialMs?: number
    /** Largest backoff window. Default 15 000. */
    maxMs?: number
    /** After 1012 (service restart) the delay is uniform in [0, restartJitterMs). Default 2000. */
    restartJitterMs?: number
  }
  /**
   * A connection on which nothing arrives for this long is closed and replaced. Default 30 000.
   * Halfway through a silence the provider asks for awareness, which the server always answers.
   */
  livenessTimeoutMs?: number
  /**
   * Ask weft for `stored` acknowledgements (`?weft-saved=1`) and keep `saved`. Default true. Other
   * y-websocket servers ignore the parameter and never acknowledge: `saved` then stays false.
   */
  trackSaved?: boolean
}

/** Defaults of every numeric option; units in the names. */
export const PROVIDER_DEFAULTS = Object.freeze({
  backoffInitialMs: 500,
  backoffMaxMs: 15_000,
  restartJitterMs: 2_000,
  livenessTimeoutMs: 30_000,
})

type ProviderEvents = {
  status: [ProviderStatus]
  synced: [boolean]
  close: [ProviderCloseEvent]
  saved: [boolean]
}

/** WebSocket.OPEN; read as a number because `ws` and browsers expose the constant differently. */
const OPEN = 1
/** RFC 6455 §7.4.1: the endpoint hit an unexpected condition (here: a frame it could not handle). */
const INTERNAL_ERROR = 1011

type Socket = InstanceType<typeof globalThis.WebSocket>

/**
 * A y-websocket-protocol provider for weft (and any y-websocket server), on weft's wire codec.
 *
 * Life of a connection: `connecting` (socket opening, or waiting to reconnect) → `connected`
 * (open; `synced` turns true with the server's first sync step 2) → closed, and then, by close
 * code, `connecting` again, `stopped` (the server said not to retry) or `disconnected` (the
 * application called disconnect()). Nothing is queued while disconnected: each connection starts
 * with a state-vector exchange that carries whatever either side missed.
 */
export class WeftProvider {
  readonly doc: Y.Doc
  readonly awareness: Awareness
  readonly room: string
  /** Query parameters of the next connection; replace the token here, then call connect(). */
  params: Record<string, string>

  private readonly serverUrl: string
  private readonly WebSocketImpl: typeof globalThis.WebSocket
  private readonly ownsAwareness: boolean
  private readonly backoff: Backoff
  private readonly restartJitterMs: number
  private readonly livenessTimeoutMs: number
  private readonly events = new Emitter<ProviderEvents>()

  private socket: Socket | null = null
  private statusValue: ProviderStatus = 'disconnected'
  private syncedValue = false
  private shouldConnect = false
  private destroyed = false
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null
  private livenessTimer: ReturnType<typeof setTimeout> | null = null
  private lastReceivedAt = 0
  private probed = false
  /** The last permission-denied reason the server sent, shown when a close carries no reason. */
  private deniedReason = ''

  // `saved`: every local change is covered by a `stored` acknowledgement. Update frames are
  // counted per connection, as the server counts them; a change made while no socket was open
  // (or whose acknowledgement a closed socket took with it) travels in the next sync step 2.
  private readonly trackSaved: boolean
  private savedValue = false
  /** Update frames (sync step 2 and update) sent on the current connection. */
  private updatesSent = 0
  /** The frame whose acknowledgement covers the newest local change; 0 when none is awaited. */
  private awaitedFrame = 0
  /** True until a sync step 2 carries what the server may lack: at first, and after offline changes. */
  private needsStep2 = true

  constructor(serverUrl: string, room: string, doc: Y.Doc, options: WeftProviderOptions = {}) {
    assertRoomName(room)
    roomUrl(serverUrl, room) // throws now, not on the first connect, for a malformed URL
    const WebSocketImpl = options.WebSocket ?? globalThis.WebSocket
    if (typeof WebSocketImpl !== 'function') throw new TypeError('no WebSocket implementation: pass options.WebSocket (in Node, `ws`\'s WebSocket)')
    const initialMs = options.backoff?.initialMs ?? PROVIDER_DEFAULTS.backoffInitialMs
    const maxMs = options.backoff?.maxMs ?? PROVIDER_DEFAULTS.backoffMaxMs
    const restartJitterMs = options.backoff?.restartJitterMs ?? PROVIDER_DEFAULTS.restartJitterMs
    const livenessTimeoutMs = options.livenessTimeoutMs ?? PROVIDER_DEFAULTS.livenessTimeoutMs
    assertDuration('backoff.initialMs', initialMs, 1)
    assertDuration('backoff.maxMs', maxMs, initialMs)
    assertDuration('backoff.restartJitterMs', restartJitterMs, 0)
    assertDuration('livenessTimeoutMs', livenessTimeoutMs, 2)

    this.serverUrl = serverUrl
    this.room = room
    this.doc = doc
    this.params = { ...options.params }
    this.WebSocketImpl = WebSocketImpl
    this.ownsAwareness = options.awareness === undefined
    this.awareness = options.awareness ?? new Awareness(doc)
    this.backoff = new Backoff(initialMs, maxMs)
    this.restartJitterMs = restartJitterMs
    this.livenessTimeoutMs = livenessTimeoutMs
    this.trackSaved = options.trackSaved ?? true

    doc.on('update', this.onDocUpdate)
    this.awareness.on('update', this.onAwarenessUpdate)
    if (options.connect ?? true) this.connect()
  }

  get status(): ProviderStatus {
    return this.statusValue
  }

  /** True from the server's first sync step 2 on the current connection until it closes. */
  get synced(): boolean {
    return this.syncedValue
  }

  /**
   * True when weft has acknowledged that every local change of this document is in storage
   * (including whatever the doc held when the provider was created, e.g. from y-indexeddb). False
   * from a local change until its acknowledgement, and before the first one; disconnecting does not
   * change it. Needs a weft server and `trackSaved` (the default).
   */
  get saved(): boolean {
    return this.savedValue
  }

  on(event: 'status', fn: (status: ProviderStatus) => void): void
  on(event: 'synced', fn: (synced: boolean) => void): void
  on(event: 'close', fn: (event: ProviderCloseEvent) => void): void
  on(event: 'saved', fn: (saved: boolean) => void): void
  on<E extends keyof ProviderEvents>(event: E, fn: (...args: ProviderEvents[E]) => void): void {
    this.events.on(event, fn)
  }

  off(event: 'status', fn: (status: ProviderStatus) => void): void
  off(event: 'synced', fn: (synced: boolean) => void): void
  off(event: 'close', fn: (event: ProviderCloseEvent) => void): void
  off(event: 'saved', fn: (saved: boolean) => void): void
  off<E extends keyof ProviderEvents>(event: E, fn: (...args: ProviderEvents[E]) => void): void {
    this.events.off(event, fn)
  }

  /**
   * Resolves when synced; rejects after `timeoutMs` (if given), when the provider stops or is
   * disconnected or destroyed before syncing.
   */
  whenSynced(timeoutMs?: number): Promise<void> {
    if (this.syncedValue) return Promise.resolve()
    if (this.destroyed) return Promise.reject(new Error('provider destroyed'))
    if (this.statusValue === 'stopped') return Promise.reject(new Error('provider stopped'))
    return new Promise<void>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined
      const settle = (error?: Error): void => {
        clearTimeout(timer)
        this.events.off('synced', onSynced)
        this.events.off('status', onStatus)
        if (error === undefined) resolve()
        else reject(error)
      }
      const onSynced = (synced: boolean): void => {
        if (synced) settle()
      }
      const onStatus = (status: ProviderStatus): void => {
        if (status === 'stopped' || status === 'disconnected') settle(new Error(`provider ${status} before syncing`))
      }
      this.events.on('synced', onSynced)
      this.events.on('status', onStatus)
      if (timeoutMs !== undefined) timer = setTimeout(() => settle(new Error(`not synced within ${timeoutMs} ms`)), timeoutMs)
    })
  }

  /** Connects (again), e.g. after disconnect() or after a stop for new credentials. No-op once destroyed. */
  connect(): void {
    if (this.destroyed) return
    this.shouldConnect = true
    if (this.socket !== null || this.reconnectTimer !== null) return
    this.openSocket()
  }

  /** Closes the connection with 1000 and does not reconnect until connect(). */
  disconnect(): void {
    this.shouldConnect = false
    this.clearReconnectTimer()
    const socket = this.socket
    if (socket !== null) {
      this.abandon(socket, 1000, 1000, 'disconnected by the client')
    } else {
      this.setStatus('disconnected')
    }
  }

  /** Disconnects, removes every listener and timer; the process can exit afterwards. Idempotent. */
  destroy(): void {
    if (this.destroyed) return
    this.disconnect()
    this.destroyed = true
    this.doc.off('update', this.onDocUpdate)
    this.awareness.off('update', this.onAwarenessUpdate)
    // Our Awareness runs a 3 s interval that would keep the process alive; one passed in is the caller's.
    if (this.ownsAwareness) this.awareness.destroy()
    this.events.clear()
  }

  private openSocket(): void {
    this.setStatus('connecting')
    let socket: Socket
    try {
      const params = this.trackSaved ? { ...this.params, [SAVED_ACKS_PARAM]: '1' } : this.params
      socket = new this.WebSocketImpl(roomUrl(this.serverUrl, this.room, params))
    } catch (err) {
      this.afterClose(ABNORMAL_CLOSURE, `could not open a WebSocket: ${(err as Error).message}`)
      return
    }
    this.socket = socket
    socket.binaryType = 'arraybuffer'
    socket.onopen = () => {
      if (this.socket === socket) this.onOpen(socket)
    }
    socket.onmessage = (event: MessageEvent) => {
      if (this.socket === socket) this.onMessage(socket, event.data)
    }
    socket.onclose = (event: { code: number; reason: string }) => {
      if (this.socket !== socket) return
      this.detach(socket)
      this.afterClose(event.code, event.reason)
    }
    // An error is always followed by close, which decides what happens next.
    socket.onerror = () => {}
    this.startLiveness()
  }

  private onOpen(socket: Socket): void {
    this.lastReceivedAt = Date.now()
    this.probed = false
    this.deniedReason = ''
    this.updatesSent = 0
    this.setStatus('connected')
    socket.send(encodeSyncStep1(Y.encodeStateVector(this.doc)))
    if (this.awareness.getLocalState() !== null) socket.send(this.localAwarenessFrame())
  }

  private onMessage(socket: Socket, data: unknown): void {
    this.lastReceivedAt = Date.now()
    this.probed = false
    try {
      if (!(data instanceof ArrayBuffer)) throw new ProtocolError(1002, 'expected a binary frame')
      this.handleFrame(socket, new Uint8Array(data))
    } catch (err) {
      if (err instanceof ProtocolError) this.abandon(socket, err.closeCode, err.closeCode, err.message.slice(0, 120))
      else this.abandon(socket, INTERNAL_ERROR, INTERNAL_ERROR, `could not handle a message: ${String((err as Error)?.message ?? err).slice(0, 90)}`)
    }
  }

  private handleFrame(socket: Socket, frame: Uint8Array): void {
    const message = decodeYMessage(frame)
    switch (message.kind) {
      case 'sync-step-1': {
        let update: Uint8Array
        try {
          update = Y.encodeStateAsUpdate(this.doc, message.stateVector)
        } catch (err) {
          throw new ProtocolError(1007, `malformed state vector: ${(err as Error).message}`)
        }
        socket.send(encodeSyncStep2(update))
        this.updatesSent++
        if (this.needsStep2) {
          this.needsStep2 = false
          this.awaitedFrame = this.updatesSent
        }
        break
      }
      case 'sync-step-2':
        this.applyUpdate(message.update)
        if (!this.syncedValue) {
          this.backoff.reset()
          this.setSynced(true)
        }
        break
      case 'sync-update':
        this.applyUpdate(message.update)
        break
      case 'awareness':
        // Checked first: applyAwarenessUpdate could throw halfway through and leave states half-applied.
        decodeAwarenessUpdate(message.update)
        applyAwarenessUpdate(this.awareness, message.update, this)
        break
      case 'query-awareness':
        // Only our own state: the server keeps the others' and refuses client IDs we did not introduce.
        socket.send(this.localAwarenessFrame())
        break
      case 'auth-denied':
        // The server refused an update and keeps the connection (e.g. the document size limit).
        this.deniedReason = message.reason
        break
      case 'weft-stored':
        if (this.awaitedFrame !== 0 && message.count >= this.awaitedFrame) {
          this.awaitedFrame = 0
          if (!this.needsStep2) this.setSaved(true)
        }
        break
    }
  }

  private applyUpdate(update: Uint8Array): void {
    // Yjs can hang on crafted updates (yjs#479, yjs#498) and applies structs before it fails on
    // the delete set; a full structural check first keeps a bad server from breaking the doc.
    validateUpdate(update)
    try {
      Y.applyUpdate(this.doc, update, this)
    } catch (err) {
      throw new ProtocolError(1007, `update rejected by Yjs: ${(err as Error).message}`)
    }
  }

  private readonly onDocUpdate = (update: Uint8Array, origin: unknown): void => {
    if (origin === this) return
    this.setSaved(false)
    if (this.send(encodeSyncUpdate(update))) {
      this.updatesSent++
      this.awaitedFrame = this.updatesSent
    } else {
      this.needsStep2 = true
    }
  }

  private readonly onAwarenessUpdate = (changes: { added: number[]; updated: number[]; removed: number[] }): void => {
    // Our own client only, whatever the origin: when a remote update removes our state,
    // y-protocols raises our clock and reports us as updated, and the server must hear it.
    const self = this.awareness.clientID
    if (changes.added.includes(self) || changes.updated.includes(self) || changes.removed.includes(self)) {
      this.send(this.localAwarenessFrame())
    }
  }

  private localAwarenessFrame(): Uint8Array {
    const clientId = this.awareness.clientID
    const clock = this.awareness.meta.get(clientId)?.clock ?? 0
    return encodeAwareness(encodeAwarenessUpdate([{ clientId, clock, state: JSON.stringify(this.awareness.getLocalState()) }]))
  }

  /** True when the frame went out. */
  private send(frame: Uint8Array): boolean {
    const socket = this.socket
    // Nothing is queued while closed: the next connection's sync exchange carries the state.
    if (socket === null || socket.readyState !== OPEN) return false
    socket.send(frame)
    return true
  }

  /**
   * Gives up on `socket` now rather than waiting for its close handshake: after a protocol error,
   * a liveness timeout or disconnect() the outcome no longer depends on the peer.
   */
  private abandon(socket: Socket, sendCode: number | undefined, reportCode: number, reason: string): void {
    this.detach(socket)
    closeQuietly(socket, sendCode, reason)
    this.afterClose(reportCode, reason)
  }

  private detach(socket: Socket): void {
    socket.onopen = null
    socket.onmessage = null
    socket.onclose = null
    // Keep a no-op error handler: `ws` throws an 'error' event that has no listener.
    socket.onerror = () => {}
    if (this.socket === socket) this.socket = null
    this.stopLiveness()
  }

  private afterClose(code: number, reason: string): void {
    this.setSynced(false)
    // An acknowledgement still awaited will never come on this socket; the next step 2 carries the change.
    if (this.awaitedFrame !== 0) this.needsStep2 = true
    this.awaitedFrame = 0
    this.updatesSent = 0
    // Other clients' states are resent by the server on the next connection; until then they are unknown.
    const self = this.awareness.clientID
    const others = [...this.awareness.getStates().keys()].filter((id) => id !== self)
    if (others.length > 0) removeAwarenessStates(this.awareness, others, this)
    // Forget their clocks too: y-protocols ignores a state whose clock is not above the last one
    // seen, and the server resends each state with the clock it already had.
    for (const id of [...this.awareness.meta.keys()]) if (id !== self) this.awareness.meta.delete(id)

    const shownReason = reason === '' ? this.deniedReason : reason
    const action = closeAction(code)
    if (!this.shouldConnect) {
      this.setStatus('disconnected')
      this.events.emit('close', { code, reason: shownReason, willReconnect: false })
      return
    }
    if (action === 'stop') {
      this.shouldConnect = false
      this.setStatus('stopped')
      this.events.emit('close', { code, reason: shownReason, willReconnect: false })
      return
    }
    const delayMs = action === 'restart' ? Math.floor(Math.random() * this.restartJitterMs) : this.backoff.next()
    this.setStatus('connecting')
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null
      if (this.shouldConnect && this.socket === null) this.openSocket()
    }, delayMs)
    this.events.emit('close', { code, reason: shownReason, willReconnect: true })
  }

  /**
   * One timer per connection, re-armed from the time of the last frame rather than reset on every
   * frame. Halfway through a silence it sends query-awareness, which the server always answers,
   * so an idle room with no awareness state is not mistaken for a dead connection.
   */
  private startLiveness(): void {
    this.lastReceivedAt = Date.now()
    this.probed = false
    this.armLiveness(this.livenessTimeoutMs / 2)
  }

  private armLiveness(delayMs: number): void {
    this.livenessTimer = setTimeout(this.checkLiveness, Math.max(1, delayMs))
  }

  private readonly checkLiveness = (): void => {
    this.livenessTimer = null
    const socket = this.socket
    if (socket === null) return
    const silentMs = Date.now() - this.lastReceivedAt
    if (silentMs >= this.livenessTimeoutMs) {
      // Dead peers do not answer a close handshake; `ws` would hold the socket for its 30 s close
      // timeout, so drop the TCP connection where the implementation allows it.
      const reason = `nothing received for ${silentMs} ms`
      this.detach(socket)
      const terminate = (socket as { terminate?: () => void }).terminate
      if (typeof terminate === 'function') terminate.call(socket)
      else closeQuietly(socket, 1000, reason)
      this.afterClose(ABNORMAL_CLOSURE, reason)
      return
    }
    const halfMs = this.livenessTimeoutMs / 2
    if (silentMs >= halfMs && !this.probed && socket.readyState === OPEN) {
      this.probed = true
      socket.send(encodeQueryAwareness())
    }
    const nextCheckAt = this.lastReceivedAt + (silentMs >= halfMs ? this.livenessTimeoutMs : halfMs)
    this.armLiveness(nextCheckAt - Date.now())
  }

  private stopLiveness(): void {
    if (this.livenessTimer !== null) clearTimeout(this.livenessTimer)
    this.livenessTimer = null
  }

  private clearReconnectTimer(): void {
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer)
    this.reconnectTimer = null
  }

  private setStatus(status: ProviderStatus): void {
    if (this.statusValue === status) return
    this.statusValue = status
    this.events.emit('status', status)
  }

  private setSaved(saved: boolean): void {
    if (this.savedValue === saved || !this.trackSaved) return
    this.savedValue = saved
    this.events.emit('saved', saved)
  }

  private setSynced(synced: boolean): void {
    if (this.syncedValue === synced) return
    this.syncedValue = synced
    this.events.emit('synced', synced)
  }
}

/**
 * Closes `socket` with `code` where the implementation allows it. Browsers accept only 1000 and
 * 3000–4999 from scripts (and reasons up to 123 bytes), so there a protocol error goes out as 1000
 * with its reason; `ws` sends the code itself. The socket is never left open.
 */
function closeQuietly(socket: Socket, code: number | undefined, reason: string): void {
  const attempts: Array<() => void> = [() => socket.close(code, reason), () => socket.close(1000, reason), () => socket.close()]
  for (const attempt of attempts) {
    try {
      attempt()
      return
    } catch {
      // Refused code or reason: try the next, plainer close.
    }
  }
}

function assertDuration(name: string, value: number, min: number): void {
  if (!Number.isFinite(value) || value < min) throw new RangeError(`${name} must be a number of milliseconds >= ${min}, got ${value}`)
}
