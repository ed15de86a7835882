/** Bounds of ReplyMemory (--max-sync-reply-bytes[-per-ip]). */
export interface ReplyMemoryLimits {
  maxSyncReplyBytes: number
  maxSyncReplyBytesPerIp: number
}

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
 */
export class ReplyMemory {
  private readonly held = new Map<Uint8Array, HeldReply>()
  private readonly perIp = new Map<string, number>()
  private bytes = 0

  constructor(private readonly limits: ReplyMemoryLimits) {}

  /** Bytes of big sync replies held now. */
  get heldBytes(): number {
    return this.bytes
  }

  /** Whether a new reply of about `bytes` asked for by `ip` may be built now. */
  admits(ip: string, bytes: number): boolean {
    if (this.bytes === 0) return true
    const fromIp = this.perIp.get(ip) ?? 0
    if (fromIp > 0 && fromIp + bytes > this.limits.maxSyncReplyBytesPerIp) return false
    return this.bytes + bytes <= this.limits.maxSyncReplyBytes
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
