import type { RoomKeys } from './keys.js'
import type { RelayMessage } from './relay-message.js'
import type { RelayRoomHandlers } from './relay.js'
import type { CompactionWrite } from './room-streams.js'
import { StreamChain } from './stream-chain.js'

/**
 * Where a room held by this instance stands against the cluster's copy of it.
 *
 *   joining   ─ cluster copy read, local difference published ────────▶ following
 *   joining   ─ Redis unreachable, or marked stale while joining ─────▶ stale
 *   following ─ held updates over budget, or Redis lost its data ─────▶ stale
 *   stale     ─ full sync: cluster copy applied, difference published ▶ following
 *   joining | following | stale ─ leaveRoom, close ──────────────────▶ left
 *
 * - joining: subscribed and reading the cluster copy; channel messages are buffered, not applied.
 * - following: relayed messages are applied, and gaps in the stream chain healed.
 * - stale: as following, but the cluster copy may lack local edits: the next reconcile reads it
 *   whole and publishes what the local document has beyond it.
 * - left: not held any more; work still in flight for the room drops its result.
 */
export type RelayRoomState =
  | { readonly kind: 'joining'; readonly buffered: RelayMessage[]; readonly stale: boolean }
  | { readonly kind: 'following' }
  | { readonly kind: 'stale' }
  | { readonly kind: 'left' }

/** One room held by the Redis relay: its keys, its handlers, its state, and its stream chain. */
export class RelayRoom {
  private current: RelayRoomState = { kind: 'joining', buffered: [], stale: false }
  readonly chain = new StreamChain()
  /** Remote instances whose awareness this room holds. */
  readonly remoteInstances = new Set<string>()
  /**
   * Background reads run one at a time per room. They are jobs, not states: a stale room heals
   * gaps too, and a stream compaction runs whatever the state.
   */
  readonly jobs = { healing: false, compacting: false }
  /**
   * A compaction merged and not yet written: the next publish of this instance carries it
   * (RedisRelay.sendUpdate), or it is sent alone when the room stays quiet (RedisRelay.compact).
   */
  compaction: CompactionWrite | null = null
  /**
   * When this instance's two latest messages on the room's channel were sent (ms, the later one
   * second; 0 = none), counted once Redis accepted them: each is a sign of life to every instance
   * that holds the room (RedisRelay.beatCovered).
   */
  private readonly sentAtMs = [0, 0]

  constructor(
    readonly name: string,
    readonly keys: RoomKeys,
    readonly handlers: RelayRoomHandlers,
  ) {}

  get state(): RelayRoomState {
    return this.current
  }

  /** Joined and still held: relayed messages are applied. */
  get isActive(): boolean {
    return this.current.kind === 'following' || this.current.kind === 'stale'
  }

  /** The cluster copy may lack local edits (a join that could not read it counts too). */
  get isStale(): boolean {
    return this.current.kind === 'stale' || (this.current.kind === 'joining' && this.current.stale)
  }

  get hasLeft(): boolean {
    return this.current.kind === 'left'
  }

  /** Messages buffered while joining, oldest first; none in the other states. */
  get buffered(): readonly RelayMessage[] {
    return this.current.kind === 'joining' ? this.current.buffered : []
  }

  /** Keeps a channel message for the end of the join; false when the room is not joining. */
  buffer(message: RelayMessage): boolean {
    if (this.current.kind !== 'joining') return false
    this.current.buffered.push(message)
    return true
  }

  /** joining → following, or stale when it was marked so; the buffer is dropped. */
  activate(): void {
    if (this.current.kind !== 'joining') return
    this.current = this.current.stale ? { kind: 'stale' } : { kind: 'following' }
  }

  /** following → stale; a joining room becomes stale when it activates. */
  markStale(): void {
    if (this.current.kind === 'joining') this.current = { ...this.current, stale: true }
    else if (this.current.kind === 'following') this.current = { kind: 'stale' }
  }

  /** stale → following, once a full sync published the local difference. */
  synced(): void {
    if (this.current.kind === 'stale') this.current = { kind: 'following' }
  }

  /** A message of this instance, sent at `atMs`, reached the channel. */
  noteSent(atMs: number): void {
    const [older, newer] = this.sentAtMs as [number, number]
    if (atMs > newer) this.sentAtMs.splice(0, 2, newer, atMs)
    else if (atMs > older) this.sentAtMs[0] = atMs
  }

  /** Whether two messages of this instance reached the channel at `sinceMs` or later. */
  sentTwiceSince(sinceMs: number): boolean {
    return (this.sentAtMs[0] as number) >= sinceMs && (this.sentAtMs[0] as number) > 0
  }

  /** The compaction waiting to be written, which the caller now writes; null when none waits. */
  takeCompaction(): CompactionWrite | null {
    const compaction = this.compaction
    this.compaction = null
    return compaction
  }

  leave(): void {
    this.current = { kind: 'left' }
    this.compaction = null
  }
}
