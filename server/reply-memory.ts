/** Bounds of ReplyMemory (--max-sync-reply-bytes[-per-ip]). */
export interface ReplyMemoryLimits {
  maxSyncReplyBytes: number
  maxSyncReplyBytesPerIp: number
}

/** An ask that found no memory for its reply and waits (see ReplyMemory.admits). */
interface Waiter {
  /** The predicted size of its reply. */
  bytes: number
  /** When it last asked (it asks again every 100 ms while it waits); ms. */
  askedAt: number
}

/** A waiter that has not asked for this long has stopped asking for now (its connection holds it back): it keeps no one waiting. */
const WAITER_STALE_MS = 300

interface HeldReply {
  /** Connections holding the buffer (it is shared by every joiner with the same state vector). */
  holders: number
  /** The address whose ask built it: its bytes count there until the last holder lets go. */
  ip: string
}

/**
 * The memory big sync replies hold, server-wide and per address: each distinct reply buffer from
 * when a connection takes it until the last connection holding it has it out of its socket (or
 * closes). A buffer shared by a crowd of joiners counts once. A big reply is built only while
 * this admits its predicted size; otherwise its ask waits (see SyncAsks) and is answered when
 * memory is given back. One reply alone is always admitted, so a document bigger than the bound
 * can still be joined.
 *
 * Without it, every connection could hold one reply of its own: two hundred connections of one
 * address, each asking with a state vector of its own for a 20 MB document and reading nothing,
 * held 4 GB, for as long as they stayed connected.
 *
 * Waiting asks get memory in turn by address: the address that waited longest goes first, then
 * goes to the back of the line if it has more asks waiting. An address with many connections
 * asking again and again therefore cannot take every reply memory frees while another address's
 * one ask keeps waiting. An address whose waiting ask would not fit (its own bound) does not keep
 * the next one waiting.
 */
export class ReplyMemory {
  private readonly held = new Map<Uint8Array, HeldReply>()
  private readonly perIp = new Map<string, number>()
  private bytes = 0
  /** Waiting asks by address; the addresses in turn order (a Map keeps insertion order). */
  private readonly waiting = new Map<string, Map<object, Waiter>>()
  private readonly waiterIp = new Map<object, string>()

  constructor(
    private readonly limits: ReplyMemoryLimits,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Bytes of big sync replies held now. */
  get heldBytes(): number {
    return this.bytes
  }

  /** Asks waiting for memory now. */
  get waitingAsks(): number {
    return this.waiterIp.size
  }

  /**
   * Whether a new reply of about `bytes` asked for by `ip` may be built now. With `waiter` (one
   * token per asking connection and document), a refused ask waits in line until it is admitted
   * or `forget` is called, and an ask of another address that waited longer and fits goes first.
   */
  admits(ip: string, bytes: number, waiter?: object): boolean {
    const admitted = this.fits(ip, bytes) && (waiter === undefined || this.hasTurn(ip))
    if (waiter === undefined) return admitted
    if (admitted) {
      this.forget(waiter)
      // Served: the address goes to the back of the line with whatever else it has waiting.
      const rest = this.waiting.get(ip)
      if (rest !== undefined) {
        this.waiting.delete(ip)
        this.waiting.set(ip, rest)
      }
      return true
    }
    this.wait(waiter, ip, bytes)
    return false
  }

  /** `waiter` no longer waits (its ask was answered otherwise, or its connection or document closed). */
  forget(waiter: object): void {
    const ip = this.waiterIp.get(waiter)
    if (ip === undefined) return
    this.waiterIp.delete(waiter)
    const ofIp = this.waiting.get(ip)
    ofIp?.delete(waiter)
    if (ofIp?.size === 0) this.waiting.delete(ip)
  }

  private fits(ip: string, bytes: number): boolean {
    if (this.bytes === 0) return true
    const fromIp = this.perIp.get(ip) ?? 0
    if (fromIp > 0 && fromIp + bytes > this.limits.maxSyncReplyBytesPerIp) return false
    return this.bytes + bytes <= this.limits.maxSyncReplyBytes
  }

  /** No other address ahead of `ip` in line has a live waiting ask that would fit now. */
  private hasTurn(ip: string): boolean {
    const since = this.now() - WAITER_STALE_MS
    for (const [other, waiters] of this.waiting) {
      if (other === ip) return true
      for (const waiter of waiters.values()) if (waiter.askedAt >= since && this.fits(other, waiter.bytes)) return false
    }
    return true
  }

  private wait(waiter: object, ip: string, bytes: number): void {
    const known = this.waiterIp.get(waiter)
    if (known !== undefined && known !== ip) this.forget(waiter)
    let ofIp = this.waiting.get(ip)
    if (ofIp === undefined) {
      ofIp = new Map()
      this.waiting.set(ip, ofIp)
    }
    ofIp.set(waiter, { bytes, askedAt: this.now() })
    this.waiterIp.set(waiter, ip)
  }

  /** A connection of `ip` holds `reply` (call release once for each hold). */
  hold(reply: Uint8Array, ip: string): void {
    const entry = this.held.get(reply)
    if (entry !== undefined) {
      entry.holders++
      return
    }
    this.held.set(reply, { holders: 1, ip })
    this.bytes += reply.length
    this.perIp.set(ip, (this.perIp.get(ip) ?? 0) + reply.length)
  }

  release(reply: Uint8Array): void {
    const entry = this.held.get(reply)
    if (entry === undefined) return
    if (--entry.holders > 0) return
    this.held.delete(reply)
    this.bytes -= reply.length
    const left = (this.perIp.get(entry.ip) ?? 0) - reply.length
    if (left <= 0) this.perIp.delete(entry.ip)
    else this.perIp.set(entry.ip, left)
  }
}
