import { BlockList, isIP } from 'node:net'
import type { IncomingMessage } from 'node:http'
import type { HttpErrorCode } from './codes.js'
import { TokenBucket, systemClock, type Clock } from './token-bucket.js'

export interface AdmissionLimits {
  maxConnections: number
  maxConnectionsPerIp: number
  maxRoomConnections: number
  upgradesPerSecond: number
  upgradesPerSecondPerIp: number
}

/** A connection slot, held from the admission check until the socket closes. */
export interface AdmissionTicket {
  readonly ip: string
  release(): void
}

export type AdmissionResult =
  | { admitted: true; ticket: AdmissionTicket }
  | { admitted: false; error: HttpErrorCode; message: string; result: string }

/**
 * Who gets a connection: a global cap, a per-address cap, a per-room cap and a rate of upgrades.
 * Slots are taken at the check, before the WebSocket handshake, so a burst of upgrades cannot
 * overshoot a limit while handshakes are in flight.
 */
export class Admission {
  private total = 0
  private readonly perIp = new Map<string, number>()
  private readonly upgrades: TokenBucket
  /** Per-address upgrade buckets; idle full ones are dropped so the map follows active addresses only. */
  private readonly upgradesPerIp = new Map<string, TokenBucket>()

  constructor(
    private readonly limits: AdmissionLimits,
    private readonly clock: Clock = systemClock,
  ) {
    this.upgrades = new TokenBucket(limits.upgradesPerSecond, limits.upgradesPerSecond * 2, clock)
  }

  private ipBucket(ip: string): TokenBucket {
    let bucket = this.upgradesPerIp.get(ip)
    if (bucket === undefined) {
      if (this.upgradesPerIp.size > 10_000) {
        for (const [key, b] of this.upgradesPerIp) if (b.waitFor(b.capacity) === 0) this.upgradesPerIp.delete(key)
      }
      const rate = this.limits.upgradesPerSecondPerIp
      bucket = new TokenBucket(rate, rate * 2, this.clock)
      this.upgradesPerIp.set(ip, bucket)
    }
    return bucket
  }

  get connections(): number {
    return this.total
  }

  tryAdmit(ip: string, roomConnections: number): AdmissionResult {
    if (this.total >= this.limits.maxConnections) {
      return { admitted: false, error: 'unavailable', message: 'server is full', result: 'full' }
    }
    if ((this.perIp.get(ip) ?? 0) >= this.limits.maxConnectionsPerIp) {
      return { admitted: false, error: 'too_many_requests', message: 'too many connections from this address', result: 'ip_limit' }
    }
    if (roomConnections >= this.limits.maxRoomConnections) {
      return { admitted: false, error: 'unavailable', message: 'room is full', result: 'room_full' }
    }
    if (!this.ipBucket(ip).tryTake()) {
      return { admitted: false, error: 'too_many_requests', message: 'too many connection attempts from this address; retry shortly', result: 'ip_rate' }
    }
    if (!this.upgrades.tryTake()) {
      return { admitted: false, error: 'unavailable', message: 'too many connection attempts; retry shortly', result: 'rate' }
    }
    this.total++
    this.perIp.set(ip, (this.perIp.get(ip) ?? 0) + 1)
    return { admitted: true, ticket: new Ticket(ip, this.freeSlot) }
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

  constructor(trustedProxies: readonly string[]) {
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

  private isTrusted(address: string): boolean {
    if (this.trusted === null) return false
    const plain = address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address
    const family = isIP(plain)
    if (family === 0) return false
    return this.trusted.check(plain, family === 6 ? 'ipv6' : 'ipv4')
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
