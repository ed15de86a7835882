import { setTimeout as sleep } from 'node:timers/promises'
import type { LocalVersionStore, VersionInfo, VersionLimits, VersionPageRequest, VersionRecord, VersionStore } from './store.js'

/** What the cluster's copy (cluster/shared-state.ts, RedisSharedState) offers beyond a VersionStore. */
export interface SharedVersionStore extends VersionStore {
  /** Which of `ids` the shared copy holds, reading descriptions only. */
  hasVersions(room: string, ids: readonly string[]): Promise<boolean[]>
  deleteVersion(room: string, id: string): Promise<void>
  /** Tells the other instances that `room` now holds version `id` in the shared copy (best effort). */
  announceVersion(room: string, id: string): Promise<void>
  /** Every room the shared copy holds versions of; reads key names only. */
  listVersionRooms(): Promise<string[]>
}

export interface ReplicaLogger {
  info(obj: object, msg: string): void
  warn(obj: object, msg: string): void
}

export interface ReplicatedVersionsOptions {
  /** This instance's LevelDB (or memory) store: the durable copy of the versions it created. */
  local: LocalVersionStore
  /** The cluster's copy in Redis: every instance's versions, which every instance serves. */
  shared: SharedVersionStore
  /** Pace of `republish`: value bytes sent to Redis per second, so a re-publication never floods it. */
  republishBytesPerSecond: number
  logger: ReplicaLogger
  /** Counted per version re-published. */
  onRepublished?(bytes: number): void
  /** Counted per version copied from Redis into the local store. */
  onCopied?(bytes: number): void
  /**
   * How the pace waits: `ms`, or less once `signal` aborts (close). Default an unref'd timer; a
   * test passes its own to count the waits instead of timing them.
   */
  wait?(ms: number, signal: AbortSignal): Promise<void>
}

export interface RepublishResult {
  /** Versions found missing in the shared copy and sent again. */
  versions: number
  bytes: number
}

/**
 * Versions with `--redis`: every version is stored twice, in the LevelDB of the instance that
 * created it (durable: survives a Redis restart without persistence) and in Redis (where every
 * instance finds it). A version is acknowledged once both hold it. Redis is written first because
 * the room's limits are checked there, across the cluster, in the same step as the write.
 *
 * When Redis loses its data, each instance puts back what its LevelDB holds and Redis lacks, at a
 * bounded rate (`republish`); meanwhile listings and reads also look at the local copy, so an
 * instance always serves its own versions. Loss is told by Redis's data epoch (`syncEpoch`): the
 * local store remembers the epoch it last published into, so an instance that was down while
 * Redis lost its data re-publishes when it starts, and one whose re-publication was cut short
 * tries again at its next connection.
 *
 * Every instance also keeps a local copy of every other instance's versions, so no version
 * depends on one disk: a new version is announced (RedisSharedState.announceVersion) and the
 * others copy it from Redis (`noteVersion`); at every connection to Redis an instance copies what
 * Redis holds and its LevelDB lacks (`catchUp`), which covers announcements missed while it was
 * away and a data directory that was wiped. Copies go one at a time, at the re-publication's pace.
 */
export class ReplicatedVersions implements VersionStore {
  private republishing: Promise<RepublishResult> | null = null
  private republishAgain = false
  /** The newest Redis epoch heard of (`syncEpoch`); written to the local store after a full round into it. */
  private epoch: string | null = null
  private closed = false
  /** Aborted by close: ends a pace's wait at once. */
  private readonly closing = new AbortController()
  /** Versions announced by other instances, not yet copied; past COPY_QUEUE the next catch-up finds them instead. */
  private readonly announced: Array<{ room: string; id: string }> = []
  private catchUpNeeded = false
  private copying: Promise<RepublishResult> | null = null
  /** The room a copy is being made of, and whether it was deleted meanwhile (then the copy is removed again). */
  private copyingRoom: string | null = null
  private copyRoomDeleted = false

  constructor(private readonly options: ReplicatedVersionsOptions) {}

  async putVersion(room: string, version: VersionRecord, limits?: VersionLimits): Promise<void> {
    const { local, shared } = this.options
    await shared.putVersion(room, version, limits)
    try {
      await local.putVersion(room, version)
    } catch (err) {
      // Not acknowledged, so not kept anywhere: a version the client was told failed must not
      // appear later. If this also fails, the version stays in Redis only (as before weft kept
      // local copies) and counts against the room's limits.
      await shared.deleteVersion(room, version.id).catch(() => undefined)
      throw err
    }
    await shared.announceVersion(room, version.id).catch(() => undefined)
  }

  /** The shared listing merged with the local one (which covers the time between a Redis data loss and the re-publication). */
  async listVersions(room: string, page: VersionPageRequest = {}): Promise<VersionInfo[]> {
    const [shared, local] = await Promise.all([this.options.shared.listVersions(room, page), this.options.local.listVersions(room, page)])
    if (local.length === 0) return shared
    const byId = new Map<string, VersionInfo>()
    for (const info of [...shared, ...local]) if (!byId.has(info.id)) byId.set(info.id, info)
    const merged = [...byId.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    return page.limit === undefined ? merged : merged.slice(0, page.limit)
  }

  /** From Redis; from the local copy when Redis lacks it or is down. */
  async getVersion(room: string, id: string): Promise<VersionRecord | null> {
    let failure: unknown = null
    try {
      const version = await this.options.shared.getVersion(room, id)
      if (version !== null) return version
    } catch (err) {
      failure = err
    }
    const version = await this.options.local.getVersion(room, id)
    if (version === null && failure !== null) throw failure
    return version
  }

  async deleteVersions(room: string): Promise<void> {
    await this.options.shared.deleteVersions(room)
    await this.options.local.deleteVersions(room)
  }

  /** Deletes only this instance's copy: what an instance does when it hears that a room was deleted elsewhere. */
  async deleteLocalVersions(room: string): Promise<void> {
    if (room === this.copyingRoom) this.copyRoomDeleted = true
    await this.options.local.deleteVersions(room)
  }

  /**
   * Called with Redis's data epoch at every connection and whenever it changes
   * (RedisSharedState.onEpoch): re-publishes unless the local store was last published in full
   * into this very epoch.
   */
  async syncEpoch(epoch: string): Promise<RepublishResult | null> {
    this.epoch = epoch
    // After the re-publication, so the copies do not race it over the same versions.
    if (this.closed || (await this.options.local.readPublishedEpoch()) === epoch) {
      void this.catchUp()
      return null
    }
    return this.republish().finally(() => void this.catchUp())
  }

  /**
   * Puts back into Redis every version the local store holds and Redis lacks (checked by
   * description, a page of ids at a time; only missing values are sent), at most
   * `republishBytesPerSecond`. `syncEpoch` calls it when Redis lost its data; the cluster's own
   * epoch-change path (cluster/redis-relay.ts) may call it too. A call while one runs makes that
   * one go round once more and shares its result. Never refused by the limits: these versions
   * were accepted before.
   */
  republish(): Promise<RepublishResult> {
    if (this.republishing !== null) {
      this.republishAgain = true
      return this.republishing
    }
    const run = this.republishLoop().finally(() => {
      this.republishing = null
    })
    this.republishing = run
    return run
  }

  /** Another instance stored version `id` of `room`: copy it into the local store unless it is there. */
  noteVersion(room: string, id: string): void {
    if (this.closed) return
    if (this.announced.length < COPY_QUEUE) this.announced.push({ room, id })
    else this.catchUpNeeded = true
    void this.startCopying()
  }

  /** Copies from Redis every version the local store lacks (after the announced ones); never rejects. */
  catchUp(): Promise<RepublishResult> {
    this.catchUpNeeded = true
    return this.startCopying()
  }

  /** Stops a re-publication or copy in progress at its next step. */
  close(): void {
    this.closed = true
    this.closing.abort()
  }

  private startCopying(): Promise<RepublishResult> {
    if (this.copying !== null || this.closed) return this.copying ?? Promise.resolve({ versions: 0, bytes: 0 })
    const run = this.copyLoop().finally(() => {
      this.copying = null
      if (!this.closed && (this.announced.length > 0 || this.catchUpNeeded)) void this.startCopying()
    })
    this.copying = run
    return run
  }

  private async copyLoop(): Promise<RepublishResult> {
    const total: RepublishResult = { versions: 0, bytes: 0 }
    while (!this.closed) {
      const next = this.announced.shift()
      if (next !== undefined) {
        await this.copyMissing(next.room, [next.id], total).catch((err: unknown) => this.options.logger.warn({ room: next.room, err }, 'copying a version from redis failed; the next catch-up retries'))
        continue
      }
      if (!this.catchUpNeeded) break
      this.catchUpNeeded = false
      const started = Date.now()
      const before = { ...total }
      try {
        for (const room of await this.options.shared.listVersionRooms()) {
          let after: string | undefined
          while (!this.closed) {
            const page = await this.options.shared.listVersions(room, { after, limit: REPUBLISH_PAGE })
            if (page.length === 0) break
            after = page[page.length - 1]?.id
            await this.copyMissing(room, page.map((info) => info.id), total)
          }
        }
      } catch (err) {
        // Redis went away or the local store failed: the next connection to Redis catches up again.
        this.options.logger.warn({ err }, 'copying versions from redis failed; retried at the next connection')
      }
      if (total.versions > before.versions) {
        this.options.logger.info({ versions: total.versions - before.versions, bytes: total.bytes - before.bytes, ms: Date.now() - started }, 'versions copied from redis')
      }
    }
    return total
  }

  private async copyMissing(room: string, ids: readonly string[], total: RepublishResult): Promise<void> {
    const { local, shared } = this.options
    this.copyingRoom = room
    this.copyRoomDeleted = false
    try {
      // Descriptions only; a room's count of versions is bounded (--max-versions-per-room).
      const held = new Set((await local.listVersions(room)).map((info) => info.id))
      for (const id of ids) {
        if (held.has(id) || this.closed) continue
        const version = await shared.getVersion(room, id)
        if (version === null || this.copyRoomDeleted) continue // deleted meanwhile
        await local.putVersion(room, version)
        if (this.copyRoomDeleted) {
          // The room's deletion ran while this copy was on its way: do not resurrect it.
          await local.deleteVersions(room)
          return
        }
        total.versions++
        total.bytes += version.update.byteLength
        this.options.onCopied?.(version.update.byteLength)
        await this.pace(version.update.byteLength)
      }
    } finally {
      this.copyingRoom = null
    }
  }

  private async republishLoop(): Promise<RepublishResult> {
    const total: RepublishResult = { versions: 0, bytes: 0 }
    do {
      this.republishAgain = false
      // Captured before the round: a loss during the round makes it go round again instead.
      const epoch = this.epoch
      const started = Date.now()
      const before = { ...total }
      for (const room of await this.options.local.listVersionRooms()) {
        if (this.closed) return total
        await this.republishRoom(room, total)
      }
      if (total.versions > before.versions) {
        this.options.logger.info({ versions: total.versions - before.versions, bytes: total.bytes - before.bytes, ms: Date.now() - started }, 'versions re-published to redis')
      }
      if (epoch !== null && !this.closed && !this.republishAgain) await this.options.local.writePublishedEpoch(epoch)
    } while (this.republishAgain && !this.closed)
    return total
  }

  private async republishRoom(room: string, total: RepublishResult): Promise<void> {
    const { local, shared } = this.options
    let after: string | undefined
    for (;;) {
      const page = await local.listVersions(room, { after, limit: REPUBLISH_PAGE })
      if (page.length === 0) return
      after = page[page.length - 1]?.id
      const present = await shared.hasVersions(room, page.map((info) => info.id))
      for (const [i, info] of page.entries()) {
        if (present[i] === true || this.closed) continue
        const version = await local.getVersion(room, info.id)
        if (version === null) continue // deleted meanwhile
        await shared.putVersion(room, version)
        // Instances that joined after Redis lost its data copy it too.
        await shared.announceVersion(room, version.id).catch(() => undefined)
        total.versions++
        total.bytes += version.update.byteLength
        this.options.onRepublished?.(version.update.byteLength)
        await this.pace(version.update.byteLength)
      }
    }
  }

  /** Waits as long as sending `bytes` takes at the configured rate. */
  private pace(bytes: number): Promise<void> {
    const ms = (bytes * 1000) / this.options.republishBytesPerSecond
    if (ms < 1 || this.closed) return Promise.resolve()
    return (this.options.wait ?? waitUnlessAborted)(ms, this.closing.signal)
  }
}

/** Resolves after `ms`, or at once when `signal` aborts; the timer does not keep the process alive. */
async function waitUnlessAborted(ms: number, signal: AbortSignal): Promise<void> {
  try {
    await sleep(ms, undefined, { signal, ref: false })
  } catch (err) {
    if (!signal.aborted) throw err
  }
}

/** Descriptions read (and ids checked in Redis) per step of a re-publication. */
const REPUBLISH_PAGE = 100
/** Announced versions waiting to be copied; more only set off a catch-up (a few dozen bytes each). */
const COPY_QUEUE = 10_000
