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

/** Whose turn it is is worked out again after this long even when nothing changed (waiters go stale or ask again). */
const TURN_FRESH_MS = 50

/** The first address in line with a live waiting ask that fits, and the addresses ahead of it (none of theirs fit). */
interface Turn {
  holder: string | null
  ahead: Set<string>
  /** `ReplyMemory.changes` and the time it was worked out at. */
  changes: number
  at: number
}

/**
 * What a reply being built off the event loop will take (Room.syncReplyOffLoop), held from when
 * its ask is admitted until the reply itself is held: asks admitted meanwhile see it.
 */
export class ReplyReservation {
  constructor(readonly length: number) {}
}

/** A reply buffer, or the reservation of one being built. */
type Held = Uint8Array | ReplyReservation

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
  private readonly held = new Map<Held, HeldReply>()
  private readonly perIp = new Map<string, number>()
  private bytes = 0
  /** Waiting asks by address; the addresses in turn order (a Map keeps insertion order). */
  private readonly waiting = new Map<string, Map<object, Waiter>>()
  private readonly waiterIp = new Map<object, string>()
  /** Counts changes of the memory held and of the line; a worked-out turn holds while it stays. */
  private changes = 0
  private turn: Turn | null = null

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
        this.changes++
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
    this.changes++
  }

  private fits(ip: string, bytes: number): boolean {
    if (this.bytes === 0) return true
    const fromIp = this.perIp.get(ip) ?? 0
    if (fromIp > 0 && fromIp + bytes > this.limits.maxSyncReplyBytesPerIp) return false
    return this.bytes + bytes <= this.limits.maxSyncReplyBytes
  }

  /**
   * No other address ahead of `ip` in line has a live waiting ask that would fit now. Every waiting
   * ask looks again every 100 ms, so the turn is worked out once per change (or TURN_FRESH_MS),
   * not once per look: with thousands waiting, a look is not a walk through all of them.
   */
  private hasTurn(ip: string): boolean {
    const now = this.now()
    let turn = this.turn
    if (turn === null || turn.changes !== this.changes || now - turn.at >= TURN_FRESH_MS) turn = this.turn = this.findTurn(now)
    return turn.holder === null || turn.holder === ip || turn.ahead.has(ip)
  }

  private findTurn(now: number): Turn {
    const since = now - WAITER_STALE_MS
    const ahead = new Set<string>()
    for (const [ip, waiters] of this.waiting) {
      for (const waiter of waiters.values()) if (waiter.askedAt >= since && this.fits(ip, waiter.bytes)) return { holder: ip, ahead, changes: this.changes, at: now }
      ahead.add(ip)
    }
    return { holder: null, ahead, changes: this.changes, at: now }
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
  hold(reply: Held, ip: string): void {
    const entry = this.held.get(reply)
    if (entry !== undefined) {
      entry.holders++
      return
    }
    this.held.set(reply, { holders: 1, ip })
    this.changes++
    this.bytes += reply.length
    this.perIp.set(ip, (this.perIp.get(ip) ?? 0) + reply.length)
  }

  release(reply: Held): void {
    const entry = this.held.get(reply)
    if (entry === undefined) return
    if (--entry.holders > 0) return
    this.held.delete(reply)
    this.changes++
    this.bytes -= reply.length
    const left = (this.perIp.get(entry.ip) ?? 0) - reply.length
    if (left <= 0) this.perIp.delete(entry.ip)
    else this.perIp.set(entry.ip, left)
  }
}
