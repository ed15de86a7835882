import { BlockList, isIP, type Socket } from 'node:net'
import type { IncomingMessage } from 'node:http'
import type { HttpErrorCode } from './codes.js'
import { rawError } from './http-response.js'
import { KeyedBuckets, TokenBucket, systemClock, type Clock } from './token-bucket.js'

export interface AdmissionLimits {
  maxConnections: number
  maxConnectionsPerIp: number
  upgradesPerSecond: number
  upgradesPerSecondPerIp: number
}

/** A connection slot, held from the admission check until the socket closes. */
export interface AdmissionTicket {
  /** What the per-address limits count the connection under (ClientAddress.limitKey). */
  readonly ip: string
  /** The client's own address, for hooks and logs (`ip` unless an IPv6 address was grouped). */
  readonly address?: string
  release(): void
}

export type AdmissionResult =
  | { admitted: true; ticket: AdmissionTicket }
  | { admitted: false; error: HttpErrorCode; message: string; result: string }

/**
 * Who gets a connection: a global cap, a per-address cap, the room's cap (decided by the room
 * registry, see RoomRegistry.isFull) and a rate of upgrades.
 * Slots are taken at the check, before the WebSocket handshake, so a burst of upgrades cannot
 * overshoot a limit while handshakes are in flight.
 */
export class Admission {
  private total = 0
  private readonly perIp = new Map<string, number>()
  private readonly upgrades: TokenBucket
  /** Per-address upgrade buckets; idle full ones are dropped so the map follows active addresses only. */
  private readonly upgradesPerIp: KeyedBuckets

  constructor(
    private readonly limits: AdmissionLimits,
    private readonly clock: Clock = systemClock,
  ) {
    this.upgrades = new TokenBucket(limits.upgradesPerSecond, limits.upgradesPerSecond * 2, clock)
    this.upgradesPerIp = new KeyedBuckets(limits.upgradesPerSecondPerIp, limits.upgradesPerSecondPerIp * 2, undefined, clock)
  }

  get connections(): number {
    return this.total
  }

  /** `ip`: the limit key (ClientAddress.limitKey); `address`: the client's own address, which the ticket carries. */
  tryAdmit(ip: string, roomFull: boolean, address = ip): AdmissionResult {
    if (this.total >= this.limits.maxConnections) {
      return { admitted: false, error: 'unavailable', message: 'server is full', result: 'full' }
    }
    if ((this.perIp.get(ip) ?? 0) >= this.limits.maxConnectionsPerIp) {
      return { admitted: false, error: 'too_many_requests', message: 'too many connections from this address', result: 'ip_limit' }
    }
    if (roomFull) {
      return { admitted: false, error: 'unavailable', message: 'room is full', result: 'room_full' }
    }
    if (!this.upgradesPerIp.tryTake(ip)) {
      return { admitted: false, error: 'too_many_requests', message: 'too many connection attempts from this address; retry shortly', result: 'ip_rate' }
    }
    if (!this.upgrades.tryTake()) {
      return { admitted: false, error: 'unavailable', message: 'too many connection attempts; retry shortly', result: 'rate' }
    }
    this.total++
    this.perIp.set(ip, (this.perIp.get(ip) ?? 0) + 1)
    return { admitted: true, ticket: new Ticket(ip, address, this.freeSlot) }
  }

  /** One function for every ticket (a ticket is held per connection: no closure each). */
  private readonly freeSlot = (ip: string): void => {
    this.total--
    const left = (this.perIp.get(ip) ?? 1) - 1
    if (left <= 0) this.perIp.delete(ip)
    else this.perIp.set(ip, left)
  }
}

/** Gives its slot back once, however many owners (the handshake, the connection) release it. */
class Ticket implements AdmissionTicket {
  private released = false

  constructor(
    readonly ip: string,
    readonly address: string,
    private readonly free: (ip: string) => void,
  ) {}

  release(): void {
    if (this.released) return
    this.released = true
    this.free(this.ip)
  }
}

/**
 * The client's address: the peer's, unless the peer is a trusted proxy, in which case
 * X-Forwarded-For is read from the right, skipping trusted proxies, to the first untrusted hop
 * (the leftmost entries are whatever the client chose to send and prove nothing).
 */
export class ClientAddress {
  private readonly trusted: BlockList | null

  constructor(
    trustedProxies: readonly string[],
    /** --ipv6-prefix-length: the bits of an IPv6 address that name one client for the per-address limits. */
    private readonly ipv6PrefixLength = 64,
  ) {
    if (trustedProxies.length === 0) {
      this.trusted = null
      return
    }
    const list = new BlockList()
    for (const entry of trustedProxies) {
      const [address, prefix] = entry.split('/') as [string, string | undefined]
      const family = isIP(address) === 6 ? 'ipv6' : 'ipv4'
      if (prefix !== undefined) list.addSubnet(address, Number(prefix), family)
      else list.addAddress(address, family)
    }
    this.trusted = list
  }

  /** Checks the list once at start-up, so a typo fails the start rather than every request. */
  static validate(trustedProxies: readonly string[]): string | null {
    for (const entry of trustedProxies) {
      const [address, prefix, extra] = entry.split('/')
      if (extra !== undefined || address === undefined || isIP(address) === 0) return entry
      if (prefix !== undefined) {
        const bits = Number(prefix)
        const max = isIP(address) === 6 ? 128 : 32
        if (!/^\d+$/.test(prefix) || bits > max) return entry
      }
    }
    return null
  }

  /** True when `address` is a trusted proxy (its many clients share its address). */
  isTrusted(address: string): boolean {
    if (this.trusted === null) return false
    const plain = address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address
    const family = isIP(plain)
    if (family === 0) return false
    return this.trusted.check(plain, family === 6 ? 'ipv6' : 'ipv4')
  }

  /** What the per-address limits count `address` under: see limitKey. */
  limitKey(address: string): string {
    return limitKey(address, this.ipv6PrefixLength)
  }

  of(req: IncomingMessage): string {
    const peer = req.socket.remoteAddress ?? 'unknown'
    if (!this.isTrusted(peer)) return peer
    const header = req.headers['x-forwarded-for']
    const value = Array.isArray(header) ? header.join(',') : header
    if (value === undefined) return peer
    const hops = value.split(',').map((s) => s.trim()).filter((s) => s !== '')
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = hops[i] as string
      if (isIP(hop) === 0) return peer
      if (!this.isTrusted(hop)) return hop
    }
    return hops[0] ?? peer
  }
}

/**
 * What the per-address limits count a client address under. One IPv6 client usually holds a whole
 * /64 (a home network, a cloud instance) and may pick any address in it, so counting each address
 * alone would give it 2^64 budgets: an IPv6 address counts as its first `prefixLength` bits, named
 * `2001:db8:1:2::/64`. An IPv4 address (IPv4-mapped ones included) counts alone. Anything else
 * (a Unix socket, 'unknown') is its own key.
 */
export function limitKey(address: string, prefixLength: number): string {
  if (address.startsWith('::ffff:') && isIP(address.slice(7)) === 4) return address.slice(7)
  if (prefixLength >= 128 || isIP(address) !== 6) return address
  const groups = ipv6Groups(address)
  if (groups === null) return address
  const kept: string[] = []
  for (let i = 0; i * 16 < prefixLength; i++) {
    const bits = Math.min(16, prefixLength - i * 16)
    kept.push((((groups[i] as number) >> (16 - bits)) << (16 - bits)).toString(16))
  }
  return `${kept.join(':')}${kept.length < 8 ? '::' : ''}/${prefixLength}`
}

/** The eight 16-bit groups of a valid IPv6 address (a zone and an embedded IPv4 tail allowed); null if it is not one. */
function ipv6Groups(address: string): number[] | null {
  const zone = address.indexOf('%')
  let text = zone < 0 ? address : address.slice(0, zone)
  const tail = text.slice(text.lastIndexOf(':') + 1)
  if (isIP(tail) === 4) {
    const [a, b, c, d] = tail.split('.').map(Number) as [number, number, number, number]
    text = `${text.slice(0, text.length - tail.length)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`
  }
  const halves = text.split('::')
  if (halves.length > 2) return null
  const parse = (half: string): number[] => (half === '' ? [] : half.split(':').map((group) => parseInt(group, 16)))
  const head = parse(halves[0] as string)
  const rest = halves.length === 2 ? parse(halves[1] as string) : []
  const groups = halves.length === 2 ? [...head, ...new Array<number>(8 - head.length - rest.length).fill(0), ...rest] : head
  return groups.length === 8 && groups.every((group) => Number.isInteger(group) && group >= 0 && group <= 0xffff) ? groups : null
}

export interface RoomQuotaLimits {
  maxRoomsPerIp: number
  maxLoadedRooms: number
}

/** Why a room was refused to a client; `error` is the HTTP answer, `reason` the Hocuspocus denial text. */
export interface RoomRefusal {
  limit: 'per_ip' | 'loaded'
  error: HttpErrorCode
  reason: string
}

const TOO_MANY_ROOMS: RoomRefusal = Object.freeze({ limit: 'per_ip', error: 'too_many_rooms', reason: 'too many rooms from this address' })
const TOO_MANY_LOADED: RoomRefusal = Object.freeze({ limit: 'loaded', error: 'unavailable', reason: 'too many rooms loaded; retry later' })

/**
 * Rooms attributed to each address: every room one of its sockets, Hocuspocus documents or HTTP
 * requests holds, counted once however many hold it. An empty room costs memory on its own, so
 * the count of distinct rooms is what one address must not grow without bound (issue 12, finding 8).
 */
export class RoomQuota {
  private readonly byIp = new Map<string, Map<string, number>>()

  constructor(private readonly limits: RoomQuotaLimits) {}

  /**
   * Claims `room` for `ip`; null when granted (then `release` it once), else why not. `loaded`
   * says whether the room is in memory already and `loadedRooms` how many are: only a claim that
   * would load one more is held to --max-loaded-rooms.
   */
  claim(ip: string, room: string, loaded: boolean, loadedRooms: number): RoomRefusal | null {
    let rooms = this.byIp.get(ip)
    const holders = rooms?.get(room) ?? 0
    if (holders === 0) {
      if ((rooms?.size ?? 0) >= this.limits.maxRoomsPerIp) return TOO_MANY_ROOMS
      if (!loaded && loadedRooms >= this.limits.maxLoadedRooms) return TOO_MANY_LOADED
    }
    if (rooms === undefined) {
      rooms = new Map()
      this.byIp.set(ip, rooms)
    }
    rooms.set(room, holders + 1)
    return null
  }

  release(ip: string, room: string): void {
    const rooms = this.byIp.get(ip)
    const holders = rooms?.get(room)
    if (rooms === undefined || holders === undefined) return
    if (holders > 1) rooms.set(room, holders - 1)
    else {
      rooms.delete(room)
      if (rooms.size === 0) this.byIp.delete(ip)
    }
  }

  /** Distinct rooms `ip` holds now. */
  roomsOf(ip: string): number {
    return this.byIp.get(ip)?.size ?? 0
  }
}

export interface BodyLimits {
  maxConcurrentBodies: number
  maxConcurrentBodiesPerIp: number
  maxBodyBytesInFlight: number
}

export type BodyRefusal = { error: HttpErrorCode; message: string; reason: string }

/**
 * HTTP request bodies being read: how many at once, server-wide and per address, and how many
 * bytes they hold. A body that declares its length reserves it up front, so forty slow 16 MiB
 * uploads cannot each pass the check before any of their bytes arrive.
 */
export class BodyBudget {
  private bodies = 0
  private bytes = 0
  private readonly perIp = new Map<string, number>()

  constructor(private readonly limits: BodyLimits) {}

  get inFlightBytes(): number {
    return this.bytes
  }

  /** Starts a body of `declared` bytes (0 when unknown); null when admitted (then `end` it once). */
  start(ip: string, declared: number): BodyRefusal | null {
    if (this.bodies >= this.limits.maxConcurrentBodies) return { error: 'unavailable', message: 'too many request bodies in progress; retry shortly', reason: 'bodies' }
    if ((this.perIp.get(ip) ?? 0) >= this.limits.maxConcurrentBodiesPerIp) {
      return { error: 'too_many_requests', message: 'too many request bodies in progress from this address', reason: 'bodies_per_ip' }
    }
    if (!this.fits(declared)) return { error: 'unavailable', message: 'too many body bytes in progress; retry shortly', reason: 'body_bytes' }
    this.bodies++
    this.bytes += declared
    this.perIp.set(ip, (this.perIp.get(ip) ?? 0) + 1)
    return null
  }

  /** True when `more` bytes fit in the server-wide budget. */
  fits(more: number): boolean {
    return this.bytes + more <= this.limits.maxBodyBytesInFlight
  }

  /** Bytes that arrived beyond what the body declared (chunked bodies). */
  grow(more: number): void {
    this.bytes += more
  }

  end(ip: string, held: number): void {
    this.bodies--
    this.bytes -= held
    const left = (this.perIp.get(ip) ?? 1) - 1
    if (left <= 0) this.perIp.delete(ip)
    else this.perIp.set(ip, left)
  }
}

export interface ResponseLimits {
  maxResponseBytesInFlight: number
  maxResponseBytesInFlightPerIp: number
}

/**
 * HTTP API answers on their way to clients: the bytes weft holds for them, server-wide and per
 * address, from the moment an answer is built until its client has taken it (or the connection
 * is gone). A client that asks for a big document and never reads would otherwise hold a copy of
 * it for as long as it keeps the connection open: thirty such requests for a 12 MB document
 * held 340 MB (binary) and 740 MB (JSON). One answer alone is always admitted, so a document
 * bigger than a bound can still be read.
 */
export class ResponseBudget {
  private bytes = 0
  private readonly perIp = new Map<string, number>()

  constructor(private readonly limits: ResponseLimits) {}

  get inFlightBytes(): number {
    return this.bytes
  }

  /** Reserves `size` bytes for an answer to `ip`; null when admitted (then `release` them once). */
  reserve(ip: string, size: number): BodyRefusal | null {
    const fromIp = this.perIp.get(ip) ?? 0
    if (fromIp > 0 && fromIp + size > this.limits.maxResponseBytesInFlightPerIp) {
      return { error: 'too_many_requests', message: 'too many answer bytes on their way to this address; read them first', reason: 'response_bytes_per_ip' }
    }
    if (this.bytes > 0 && this.bytes + size > this.limits.maxResponseBytesInFlight) {
      return { error: 'unavailable', message: 'too many answer bytes on their way to clients; retry shortly', reason: 'response_bytes' }
    }
    this.bytes += size
    this.perIp.set(ip, fromIp + size)
    return null
  }

  release(ip: string, size: number): void {
    this.bytes -= size
    const left = (this.perIp.get(ip) ?? size) - size
    if (left <= 0) this.perIp.delete(ip)
    else this.perIp.set(ip, left)
  }
}

export interface PendingConnectionLimits {
  headersTimeoutMs: number
  maxPendingConnections: number
  maxPendingConnectionsPerIp: number
}

/**
 * TCP connections that have not finished sending a request head. Node's own headersTimeout only
 * starts once a request's first byte arrives, so a connection that sends nothing, or a byte now
 * and then, would be held for ever; here each one gets --headers-timeout-ms from its accept, and
 * their number is capped in total and per address (issue 12, finding 11).
 */
export class PendingConnections {
  private readonly pending = new Map<Socket, { ip: string; at: number }>()
  private readonly perIp = new Map<string, number>()
  private timer: NodeJS.Timeout | null = null
  /**
   * One 'close' listener for every pending socket (the socket is `this`), taken off in done(): a
   * listener per socket left on for the connection's whole life cost ~250 bytes each.
   */
  private readonly onPendingClose: (this: Socket) => void

  constructor(
    private readonly limits: PendingConnectionLimits,
    /** Addresses the per-address cap does not apply to (trusted proxies carry many clients). */
    private readonly exempt: (ip: string) => boolean,
    private readonly onRefused: (reason: string) => void,
    /** What the cap counts an address under (ClientAddress.limitKey). */
    private readonly keyOf: (address: string) => string = (address) => address,
  ) {
    const done = (socket: Socket): void => this.done(socket)
    this.onPendingClose = function (this: Socket) {
      done(this)
    }
  }

  get size(): number {
    return this.pending.size
  }

  accept(socket: Socket): void {
    const address = socket.remoteAddress ?? 'unknown'
    if (this.pending.size >= this.limits.maxPendingConnections) {
      this.refuse(socket, 'unavailable', 'too many connections waiting to send a request', 'pending_connections')
      return
    }
    const ip = this.keyOf(address)
    const fromIp = this.perIp.get(ip) ?? 0
    if (fromIp >= this.limits.maxPendingConnectionsPerIp && !this.exempt(address)) {
      this.refuse(socket, 'too_many_requests', 'too many connections from this address waiting to send a request', 'pending_connections_per_ip')
      return
    }
    this.pending.set(socket, { ip, at: Date.now() })
    this.perIp.set(ip, fromIp + 1)
    socket.once('close', this.onPendingClose)
    if (this.timer === null) {
      this.timer = setInterval(() => this.sweep(), Math.max(50, Math.min(1_000, Math.floor(this.limits.headersTimeoutMs / 4))))
      this.timer.unref()
    }
  }

  /** The connection sent a whole request head (a request or an upgrade): no longer pending. */
  done(socket: Socket): void {
    const entry = this.pending.get(socket)
    if (entry === undefined) return
    this.pending.delete(socket)
    socket.removeListener('close', this.onPendingClose)
    const left = (this.perIp.get(entry.ip) ?? 1) - 1
    if (left <= 0) this.perIp.delete(entry.ip)
    else this.perIp.set(entry.ip, left)
    if (this.pending.size === 0 && this.timer !== null) {
      clearInterval(this.timer)
      this.timer = null
    }
  }

  private sweep(): void {
    const oldest = Date.now() - this.limits.headersTimeoutMs
    // Insertion order is accept order: the first young entry ends the sweep.
    for (const [socket, { at }] of this.pending) {
      if (at > oldest) break
      this.done(socket)
      this.refuse(socket, 'request_timeout', 'the request head did not arrive in time', 'headers_timeout')
    }
  }

  private refuse(socket: Socket, code: HttpErrorCode, message: string, reason: string): void {
    this.onRefused(reason)
    socket.on('error', destroyQuietly)
    // The answer is a few bytes; the socket goes once they are written, whether or not the peer reads.
    socket.end(rawError(code, message), () => socket.destroy())
    setTimeout(() => socket.destroy(), 1_000).unref()
  }

  close(): void {
    if (this.timer !== null) clearInterval(this.timer)
    this.timer = null
  }
}

function destroyQuietly(this: Socket): void {
  this.destroy()
}

/** A connection's admission slot together with its room claim: both given back once, on its first release. */
export class ClaimedTicket implements AdmissionTicket {
  private released = false

  constructor(
    private readonly slot: AdmissionTicket,
    private readonly quota: RoomQuota,
    private readonly room: string,
  ) {}

  get ip(): string {
    return this.slot.ip
  }

  get address(): string | undefined {
    return this.slot.address
  }

  release(): void {
    if (this.released) return
    this.released = true
    this.slot.release()
    this.quota.release(this.slot.ip, this.room)
  }
}
