import { mkdir } from 'node:fs/promises'
import { Level } from 'level'

/** One event for one URL, as the outbox keeps it until it is delivered (or while it is dead). */
export interface OutboxRecord {
  /** Storage order: events of a room are sent in this order. */
  seq: number
  /** Weft-Delivery: the receiver's idempotency key; the same on every attempt and on a re-send. */
  deliveryId: string
  url: string
  room: string
  type: string
  /** The signed JSON body, exactly as sent. */
  body: string
  /** Milliseconds since the epoch; retries stop --webhook-max-age-seconds after it. */
  createdAt: number
  attempts: number
  lastError: string | null
  /** When it was dead-lettered; null while queued. */
  deadAt: number | null
}

/** A room's changes not yet made into an event (debounce window), kept so a crash loses none. */
export interface PendingBatch {
  room: string
  firstChangeAt: number
  lastChangeAt: number
  subjects: string[]
}

export interface OutboxContents {
  queued: OutboxRecord[]
  dead: OutboxRecord[]
  batches: PendingBatch[]
  /** The highest sequence number ever given out (0 for a new outbox). */
  sequence: number
}

/**
 * Where the outbox lives: LevelDB in <data>/webhooks, or memory with `--data memory`. Every
 * change is one atomic write, so a crash leaves either the old or the new state.
 */
export interface OutboxStore {
  load(): Promise<OutboxContents>
  /** Adds queued records and the sequence they used; removes the batch they were made from, if any. */
  enqueue(records: readonly OutboxRecord[], sequence: number, fromBatch: string | null): Promise<void>
  putBatch(batch: PendingBatch): Promise<void>
  delivered(record: OutboxRecord): Promise<void>
  /** Moves a queued record to the dead letters. */
  kill(record: OutboxRecord): Promise<void>
  /** Moves dead records back into the queue under their new `seq`. */
  revive(records: ReadonlyArray<{ before: OutboxRecord; after: OutboxRecord }>): Promise<void>
  close(): Promise<void>
}

const QUEUED = 'q!'
const DEAD = 'd!'
const BATCH = 'b!'
const SEQUENCE_KEY = 'm!sequence'

/** Fixed width, so keys sort numerically. */
function seqKey(prefix: string, seq: number): string {
  return prefix + String(seq).padStart(16, '0')
}

type Value = OutboxRecord | PendingBatch | number

export class LevelOutboxStore implements OutboxStore {
  private constructor(private readonly db: Level<string, Value>) {}

  static async open(path: string): Promise<LevelOutboxStore> {
    await mkdir(path, { recursive: true })
    const db = new Level<string, Value>(path, { valueEncoding: 'json' })
    await db.open()
    return new LevelOutboxStore(db)
  }

  async load(): Promise<OutboxContents> {
    const contents: OutboxContents = { queued: [], dead: [], batches: [], sequence: 0 }
    for await (const [key, value] of this.db.iterator()) {
      if (key.startsWith(QUEUED)) contents.queued.push(value as OutboxRecord)
      else if (key.startsWith(DEAD)) contents.dead.push(value as OutboxRecord)
      else if (key.startsWith(BATCH)) contents.batches.push(value as PendingBatch)
      else if (key === SEQUENCE_KEY) contents.sequence = value as number
    }
    return contents
  }

  async enqueue(records: readonly OutboxRecord[], sequence: number, fromBatch: string | null): Promise<void> {
    const batch = this.db.batch()
    for (const record of records) batch.put(seqKey(QUEUED, record.seq), record)
    batch.put(SEQUENCE_KEY, sequence)
    if (fromBatch !== null) batch.del(BATCH + fromBatch)
    await batch.write()
  }

  async putBatch(pending: PendingBatch): Promise<void> {
    await this.db.put(BATCH + pending.room, pending)
  }

  async delivered(record: OutboxRecord): Promise<void> {
    await this.db.del(seqKey(QUEUED, record.seq))
  }

  async kill(record: OutboxRecord): Promise<void> {
    await this.db.batch().del(seqKey(QUEUED, record.seq)).put(seqKey(DEAD, record.seq), record).write()
  }

  async revive(records: ReadonlyArray<{ before: OutboxRecord; after: OutboxRecord }>): Promise<void> {
    const batch = this.db.batch()
    let highest = 0
    for (const { before, after } of records) {
      batch.del(seqKey(DEAD, before.seq))
      batch.put(seqKey(QUEUED, after.seq), after)
      highest = Math.max(highest, after.seq)
    }
    batch.put(SEQUENCE_KEY, highest)
    await batch.write()
  }

  async close(): Promise<void> {
    await this.db.close()
  }
}

/** The outbox of `--data memory`: the same semantics, gone with the process. */
export class MemoryOutboxStore implements OutboxStore {
  private readonly entries = new Map<string, Value>()

  load(): Promise<OutboxContents> {
    const contents: OutboxContents = { queued: [], dead: [], batches: [], sequence: 0 }
    for (const key of [...this.entries.keys()].sort()) {
      const value = structuredClone(this.entries.get(key) as Value)
      if (key.startsWith(QUEUED)) contents.queued.push(value as OutboxRecord)
      else if (key.startsWith(DEAD)) contents.dead.push(value as OutboxRecord)
      else if (key.startsWith(BATCH)) contents.batches.push(value as PendingBatch)
      else if (key === SEQUENCE_KEY) contents.sequence = value as number
    }
    return Promise.resolve(contents)
  }

  enqueue(records: readonly OutboxRecord[], sequence: number, fromBatch: string | null): Promise<void> {
    for (const record of records) this.entries.set(seqKey(QUEUED, record.seq), structuredClone(record))
    this.entries.set(SEQUENCE_KEY, sequence)
    if (fromBatch !== null) this.entries.delete(BATCH + fromBatch)
    return Promise.resolve()
  }

  putBatch(pending: PendingBatch): Promise<void> {
    this.entries.set(BATCH + pending.room, structuredClone(pending))
    return Promise.resolve()
  }

  delivered(record: OutboxRecord): Promise<void> {
    this.entries.delete(seqKey(QUEUED, record.seq))
    return Promise.resolve()
  }

  kill(record: OutboxRecord): Promise<void> {
    this.entries.delete(seqKey(QUEUED, record.seq))
    this.entries.set(seqKey(DEAD, record.seq), structuredClone(record))
    return Promise.resolve()
  }

  revive(records: ReadonlyArray<{ before: OutboxRecord; after: OutboxRecord }>): Promise<void> {
    for (const { before, after } of records) {
      this.entries.delete(seqKey(DEAD, before.seq))
      this.entries.set(seqKey(QUEUED, after.seq), structuredClone(after))
      this.entries.set(SEQUENCE_KEY, Math.max(after.seq, (this.entries.get(SEQUENCE_KEY) as number | undefined) ?? 0))
    }
    return Promise.resolve()
  }

  close(): Promise<void> {
    return Promise.resolve()
  }
}
