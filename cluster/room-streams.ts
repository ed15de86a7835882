import type { Redis } from 'ioredis'
import { compareStreamIds, nextStreamId, type RoomKeys } from './keys.js'
import { CHECK_TICK, COMPACT_ROOM, ENSURE_EPOCH, PUBLISH_UPDATE, READ_ROOM, type Script } from './scripts.js'

const SCRIPTS = [PUBLISH_UPDATE, READ_ROOM, COMPACT_ROOM, ENSURE_EPOCH, CHECK_TICK]

/** A read of one room's cluster copy: its snapshot, then the stream entries after `after`. */
export interface StreamRead {
  /** The last entry folded into the snapshot ('' = none). */
  upto: string
  version: string
  /** Snapshot, then stream entries, in order. */
  updates: Uint8Array[]
  /** Entries by other instances (what counts as healed). */
  foreign: number
  lastId: string
}

/** A compaction's write, merged from a StreamRead: carried by the publisher's next publish, or sent alone. */
export interface CompactionWrite {
  /** The version of the snapshot the read found. */
  version: string
  snapshot: Uint8Array
  /** The last entry the snapshot covers. */
  upto: string
}

/** What a publish found: see PUBLISH_UPDATE. */
export interface Published {
  /** The entry's predecessor ('' = none: the stream was empty). */
  prev: string
  /** The data epoch (null: none). */
  epoch: string | null
  /** Whether the compaction the publish carried was written; null when it carried none. */
  folded: boolean | null
  /** The room whole, when this publish made the stream's length a multiple of compactAfterEntries. */
  whole: StreamRead | null
}

/** What one tick read (RoomStreams.tick), in the order it was asked. */
export interface TickRead {
  /** null: Redis has no epoch (it lost its data). */
  epoch: string | null
  lasts: Array<string | null>
  alive: boolean[]
}

/**
 * The Redis side of the rooms' streams: the Lua scripts of scripts.ts, which publish, read and
 * compact a room atomically, and the decoding of their replies. Every command sent is counted in
 * `counters.commands` (the relay's stats).
 */
export class RoomStreams {
  constructor(
    private readonly cmd: Redis,
    private readonly instanceId: string,
    /** Keys of a room expire this long after its last edit; 0 = never. */
    private readonly retentionMs: number,
    /** Publishes return the room whole at every this many stream entries, for a compaction; 0 = never. */
    private readonly compactAfterEntries: number,
    private readonly counters: { commands: number },
  ) {}

  /** Loads every script into Redis's cache, so that a burst of edits after a restart is not a burst of NOSCRIPT fallbacks. */
  loadScripts(): Promise<unknown> {
    const pipeline = this.cmd.pipeline()
    for (const script of SCRIPTS) pipeline.script('LOAD', script.lua)
    this.counters.commands += pipeline.length
    return pipeline.exec()
  }

  /**
   * Appends `update` to the room's stream and publishes it on the room's channel, carrying
   * `compaction`'s write when given (PUBLISH_UPDATE).
   */
  async publish(keys: RoomKeys, epochKey: string, update: Uint8Array, compaction: CompactionWrite | null = null): Promise<Published> {
    const args: Array<string | Uint8Array> = [this.instanceId, update, String(Date.now()), keys.channel, String(this.retentionMs), String(this.compactAfterEntries)]
    if (compaction !== null) args.push(...compactionArgs(compaction))
    const reply = (await this.eval(PUBLISH_UPDATE, [keys.log, keys.last, keys.doc, epochKey], args)) as [Buffer, Buffer, number, Buffer | null, number, RoomReply | null]
    const folded = Number(reply[4])
    return {
      prev: reply[1].toString(),
      epoch: reply[3] === null || reply[3] === undefined ? null : reply[3].toString(),
      folded: folded === -1 ? null : folded === 1,
      whole: reply[5] === null || reply[5] === undefined ? null : this.decodeRead(reply[5], ''),
    }
  }

  async read(keys: RoomKeys, after: string): Promise<StreamRead> {
    return this.decodeRead((await this.eval(READ_ROOM, [keys.doc, keys.log], [after])) as RoomReply, after)
  }

  /** Writes a compaction alone (COMPACT_ROOM); true when it was applied. */
  async compact(keys: RoomKeys, compaction: CompactionWrite): Promise<boolean> {
    const applied = await this.eval(COMPACT_ROOM, [keys.doc, keys.log], [...compactionArgs(compaction), String(this.retentionMs)])
    return Number(applied) === 1
  }

  /** The cluster's epoch: `candidate` when Redis had none (it lost its data, or is new). */
  async ensureEpoch(epochKey: string, candidate: string): Promise<string> {
    const reply = await this.eval(ENSURE_EPOCH, [epochKey], [candidate])
    return (reply as Buffer).toString()
  }

  /**
   * One tick of the relay's timer (scripts.ts CHECK_TICK): refreshes this instance's heartbeat and
   * reads the epoch, `last` of each of `rooms` and whether each of `remotes`' heartbeats is alive.
   */
  async tick(heartbeat: { key: string; ttlMs: number }, epochKey: string, rooms: readonly RoomKeys[], remotes: readonly string[]): Promise<TickRead> {
    const keys = [heartbeat.key, epochKey, ...rooms.map((room) => room.last), ...remotes]
    const reply = (await this.eval(CHECK_TICK, keys, [String(Date.now()), String(heartbeat.ttlMs), String(rooms.length)])) as [Buffer | null, Array<Buffer | null>, number[]]
    const [epoch, lasts, beats] = reply
    return {
      epoch: epoch === null ? null : epoch.toString(),
      lasts: lasts.map((last) => (last === null ? null : last.toString())),
      alive: beats.map((beat) => Number(beat) === 1),
    }
  }

  private decodeRead(reply: RoomReply, after: string): StreamRead {
    const [upto, version, snapshot, entries] = reply
    const updates: Uint8Array[] = snapshot === null || snapshot === undefined ? [] : [snapshot]
    let foreign = 0
    let lastId = after
    if (upto.length > 0 && compareStreamIds(upto.toString(), lastId) > 0) lastId = upto.toString()
    for (const [id, fields] of entries) {
      let instance = ''
      for (let i = 0; i + 1 < fields.length; i += 2) {
        const field = (fields[i] as Buffer).toString()
        if (field === 'u') updates.push(fields[i + 1] as Buffer)
        else if (field === 'i') instance = (fields[i + 1] as Buffer).toString('utf8')
      }
      if (instance !== this.instanceId) foreign++
      lastId = id.toString()
    }
    return { upto: upto.toString(), version: version.toString(), updates, foreign, lastId }
  }

  private async eval(script: Script, keys: string[], args: Array<string | Uint8Array>): Promise<unknown> {
    const argv = args.map((arg) => (typeof arg === 'string' ? arg : Buffer.from(arg.buffer, arg.byteOffset, arg.byteLength)))
    this.counters.commands++
    try {
      return await this.cmd.callBuffer('evalsha', script.sha, keys.length, ...keys, ...argv)
    } catch (err) {
      // The script cache is empty after Redis restarted: send the script itself once.
      if (!(err instanceof Error ? err.message : String(err)).startsWith('NOSCRIPT')) throw err
      this.counters.commands++
      return await this.cmd.callBuffer('eval', script.lua, keys.length, ...keys, ...argv)
    }
  }
}

/** A room as READ_ROOM (and PUBLISH_UPDATE's READ_WHOLE) return it. */
type RoomReply = [Buffer, Buffer, Buffer | null, Array<[Buffer, Buffer[]]>]

/** A compaction's arguments to FOLD: expected version, snapshot, upto, minid. */
function compactionArgs(compaction: CompactionWrite): Array<string | Uint8Array> {
  return [compaction.version, compaction.snapshot, compaction.upto, nextStreamId(compaction.upto)]
}
