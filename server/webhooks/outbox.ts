import type { UpdateOrigin } from '../hooks.js'
import type { Logger } from '../logger.js'
import { attemptDelivery } from './delivery.js'
import { changeSubject, newDeliveryId, newEventId, type DocumentChangedData, type WebhookEvent, type WebhookEventType } from './events.js'
import type { OutboxContents, OutboxRecord, OutboxStore, PendingBatch } from './outbox-store.js'

export interface WebhookSettings {
  urls: readonly string[]
  secret: string
  debounceMs: number
  maxWaitMs: number
  maxAgeMs: number
  timeoutMs: number
  retryMinMs: number
  maxEntries: number
  maxBytes: number
}

export interface WebhookOutboxDeps {
  store: OutboxStore
  /** The room's Yjs state vector now; null when it has none (never written, or deleted). */
  stateVector(room: string): Promise<Uint8Array | null>
  log: Logger
}

/** Delivery attempts under way at once, over all rooms and URLs. */
const MAX_CONCURRENT_ATTEMPTS = 16
/** The longest wait between two attempts of one event. */
const RETRY_MAX_MS = 5 * 60_000
/** Subjects named in one document.changed event; more are left out (`subjectsTruncated`). */
const MAX_SUBJECTS_PER_EVENT = 100
/** How long a shutdown waits for deliveries under way; what is left is sent at the next start. */
const CLOSE_WAIT_MS = 1_000

export interface WebhookCounts {
  delivered: number
  failedAttempts: number
  deadLettered: number
  refused: { entries: number; bytes: number }
}

export interface WebhookStats extends WebhookCounts {
  queued: number
  dead: number
  /** Seconds since the oldest queued event was recorded; 0 when none is queued. */
  oldestAgeSeconds: number
}

/** A dead letter as GET /api/webhooks/dead lists it. */
export interface DeadLetter {
  deliveryId: string
  url: string
  room: string
  type: string
  event: WebhookEvent
  createdAt: string
  deadAt: string
  attempts: number
  lastError: string | null
}

/** Events of one room for one URL, sent strictly one after the other. */
interface Lane {
  readonly key: string
  readonly records: OutboxRecord[]
  inflight: boolean
  timer: NodeJS.Timeout | null
}

interface Batch extends PendingBatch {
  timer: NodeJS.Timeout | null
  subjectsTruncated: boolean
  /** The last write of this batch to the store (never rejects: failures are logged). */
  stored: Promise<void>
}

/**
 * The durable webhook outbox (issue 16). Changes of a room are gathered for --webhook-debounce-ms
 * after the last one (at most --webhook-max-wait-ms after the first) into one document.changed
 * event; deletions and versions are events at once. An event is written to the store before
 * anything is sent, and leaves it only once a receiver answered 2xx or it was dead-lettered after
 * --webhook-max-age-seconds of retries (exponential backoff, jitter). Per room and URL the events
 * go strictly in order: the next is not sent before the one before it was delivered or is dead.
 *
 * The outbox does not know rooms or the cluster: it is told (room, origin, time) of each change
 * and records only changes that arrived here from a client or over HTTP, never those from storage
 * or other instances, so a change makes one event cluster-wide.
 */
export class WebhookOutbox {
  private sequence: number
  private readonly lanes = new Map<string, Lane>()
  /** Lanes whose first event may be attempted now, in the order they became ready. */
  private readonly ready = new Set<Lane>()
  private readonly dead = new Map<string, OutboxRecord>()
  private readonly batches = new Map<string, Batch>()
  private inflight = 0
  private heldEntries = 0
  private heldBytes = 0
  /** Store writes that must keep their order (batches, events made from them) go through here. */
  private serial: Promise<unknown> = Promise.resolve()
  private closed = false
  private readonly abort = new AbortController()
  private readonly countsValue: WebhookCounts = { delivered: 0, failedAttempts: 0, deadLettered: 0, refused: { entries: 0, bytes: 0 } }

  private constructor(
    private readonly settings: Readonly<WebhookSettings>,
    private readonly deps: WebhookOutboxDeps,
    contents: OutboxContents,
  ) {
    this.sequence = contents.sequence
    for (const record of [...contents.queued].sort((a, b) => a.seq - b.seq)) {
      this.hold(record)
      this.addToLane(record)
    }
    for (const record of [...contents.dead].sort((a, b) => a.seq - b.seq)) {
      this.hold(record)
      this.dead.set(record.deliveryId, record)
    }
    // Changes whose event was not made yet when the process stopped: made after the usual wait.
    for (const pending of contents.batches) {
      const batch: Batch = { ...pending, timer: null, subjectsTruncated: false, stored: Promise.resolve() }
      this.batches.set(batch.room, batch)
      this.schedule(batch)
    }
    if (contents.queued.length + contents.batches.length > 0) {
      deps.log.info({ queued: contents.queued.length, batches: contents.batches.length, dead: contents.dead.length }, 'webhook outbox restored')
    }
    this.pump()
  }

  /** Opens the outbox on what `store` holds and starts delivering it. */
  static async open(settings: Readonly<WebhookSettings>, deps: WebhookOutboxDeps): Promise<WebhookOutbox> {
    return new WebhookOutbox(settings, deps, await deps.store.load())
  }

  /**
   * A change applied to `room` at `at` (ms since the epoch). Changes from storage or the cluster
   * are not recorded. Resolves when the change is in the store (acknowledgements wait for it).
   */
  recordChange(room: string, origin: UpdateOrigin, at: number): Promise<void> {
    const subject = changeSubject(origin)
    if (subject === undefined || this.closed) return Promise.resolve()
    let batch = this.batches.get(room)
    let changed = false
    if (batch === undefined) {
      batch = { room, firstChangeAt: at, lastChangeAt: at, subjects: [], timer: null, subjectsTruncated: false, stored: Promise.resolve() }
      this.batches.set(room, batch)
      changed = true
    }
    batch.lastChangeAt = Math.max(batch.lastChangeAt, at)
    if (subject !== null && !batch.subjects.includes(subject)) {
      if (batch.subjects.length < MAX_SUBJECTS_PER_EVENT) {
        batch.subjects.push(subject)
        changed = true
      } else batch.subjectsTruncated = true
    }
    this.schedule(batch)
    // Written when it opens and when it names someone new: a crash loses no change, at most the
    // time of the last ones.
    if (changed) {
      const snapshot: PendingBatch = { room, firstChangeAt: batch.firstChangeAt, lastChangeAt: batch.lastChangeAt, subjects: [...batch.subjects] }
      batch.stored = this.inSerial(() => this.deps.store.putBatch(snapshot)).catch((err: unknown) => this.deps.log.error({ room, err }, 'webhook outbox: a change could not be stored'))
    }
    return batch.stored
  }

  /** Makes the room's gathered changes into an event now (before a deletion or a version, so order holds). */
  flushRoom(room: string): Promise<void> {
    const batch = this.batches.get(room)
    if (batch === undefined) return this.inSerial(() => undefined)
    if (batch.timer !== null) clearTimeout(batch.timer)
    this.batches.delete(room)
    return this.inSerial(async () => {
      let stateVector: Uint8Array | null = null
      try {
        stateVector = await this.deps.stateVector(room)
      } catch (err) {
        this.deps.log.warn({ room, err }, 'webhook outbox: the state vector could not be read')
      }
      const data: DocumentChangedData & { subjectsTruncated?: true } = {
        room,
        stateVector: stateVector === null ? null : Buffer.from(stateVector).toString('base64'),
        firstChangeAt: new Date(batch.firstChangeAt).toISOString(),
        lastChangeAt: new Date(batch.lastChangeAt).toISOString(),
        subjects: batch.subjects,
        ...(batch.subjectsTruncated ? { subjectsTruncated: true as const } : {}),
      }
      await this.enqueue('document.changed', room, data, room)
    })
  }

  recordDeleted(room: string, subject: string | null): Promise<void> {
    void this.flushRoom(room)
    return this.inSerial(() => this.enqueue('document.deleted', room, { room, subject }, null))
  }

  recordVersion(room: string, version: { id: string; name: string; createdAt: number }, subject: string | null): Promise<void> {
    void this.flushRoom(room)
    const data = { room, version: { id: version.id, name: version.name, createdAt: new Date(version.createdAt).toISOString() }, subject }
    return this.inSerial(() => this.enqueue('version.created', room, data, null))
  }

  private schedule(batch: Batch): void {
    if (batch.timer !== null) clearTimeout(batch.timer)
    const { debounceMs, maxWaitMs } = this.settings
    const delay = Math.max(0, Math.min(debounceMs, batch.firstChangeAt + maxWaitMs - Date.now()))
    batch.timer = setTimeout(() => {
      batch.timer = null
      if (this.batches.get(batch.room) === batch) void this.flushRoom(batch.room)
    }, delay)
    batch.timer.unref()
  }

  private inSerial<T>(work: () => T | Promise<T>): Promise<T> {
    const run = this.serial.then(work)
    this.serial = run.catch(() => {})
    return run
  }

  /** One event, one record per URL, written before it can be sent; refused (and counted) past the bounds. */
  private async enqueue(type: WebhookEventType, room: string, data: WebhookEvent['data'], fromBatch: string | null): Promise<void> {
    const { urls, maxEntries, maxBytes } = this.settings
    const first = this.sequence + 1
    const event: WebhookEvent = { id: newEventId(), type, time: new Date().toISOString(), sequence: first, data }
    const body = JSON.stringify(event)
    const bytes = Buffer.byteLength(body) * urls.length
    const refusal = this.heldEntries + urls.length > maxEntries ? 'entries' : this.heldBytes + bytes > maxBytes ? 'bytes' : null
    if (refusal !== null) {
      this.countsValue.refused[refusal]++
      this.deps.log.error({ room, type, held: this.heldEntries, heldBytes: this.heldBytes }, `webhook outbox full (--webhook-max-${refusal}); event refused`)
      if (fromBatch !== null) await this.deps.store.enqueue([], this.sequence, fromBatch)
      return
    }
    const createdAt = Date.now()
    const records: OutboxRecord[] = urls.map((url) => ({
      seq: ++this.sequence,
      deliveryId: newDeliveryId(),
      url,
      room,
      type,
      body,
      createdAt,
      attempts: 0,
      lastError: null,
      deadAt: null,
    }))
    try {
      await this.deps.store.enqueue(records, this.sequence, fromBatch)
    } catch (err) {
      // Still sent from memory; only a crash before delivery would lose it.
      this.deps.log.error({ room, type, err }, 'webhook outbox: an event could not be stored')
    }
    for (const record of records) {
      this.hold(record)
      this.addToLane(record)
    }
    this.pump()
  }

  private hold(record: OutboxRecord): void {
    this.heldEntries++
    this.heldBytes += Buffer.byteLength(record.body)
  }

  private release(record: OutboxRecord): void {
    this.heldEntries--
    this.heldBytes -= Buffer.byteLength(record.body)
  }

  private addToLane(record: OutboxRecord): void {
    const key = `${record.url}\n${record.room}`
    let lane = this.lanes.get(key)
    if (lane === undefined) {
      lane = { key, records: [], inflight: false, timer: null }
      this.lanes.set(key, lane)
    }
    lane.records.push(record)
    if (lane.records.length === 1 && !lane.inflight && lane.timer === null) this.ready.add(lane)
  }

  private pump(): void {
    if (this.closed) return
    for (const lane of this.ready) {
      if (this.inflight >= MAX_CONCURRENT_ATTEMPTS) return
      this.ready.delete(lane)
      void this.attempt(lane)
    }
  }

  private async attempt(lane: Lane): Promise<void> {
    const record = lane.records[0] as OutboxRecord
    lane.inflight = true
    this.inflight++
    const result = await attemptDelivery(
      { url: record.url, deliveryId: record.deliveryId, type: record.type, body: record.body, secret: this.settings.secret, timeoutMs: this.settings.timeoutMs },
      this.abort.signal,
    )
    lane.inflight = false
    this.inflight--
    if (this.closed) return
    const { store, log } = this.deps
    if (result.ok) {
      this.countsValue.delivered++
      lane.records.shift()
      this.release(record)
      store.delivered(record).catch((err: unknown) => log.warn({ err }, 'webhook outbox: a delivered event could not be removed (it is sent again after a restart)'))
      this.next(lane)
    } else {
      this.countsValue.failedAttempts++
      record.attempts++
      record.lastError = result.error
      const now = Date.now()
      const deadline = record.createdAt + this.settings.maxAgeMs
      if (now >= deadline) {
        lane.records.shift()
        record.deadAt = now
        this.dead.set(record.deliveryId, record)
        this.countsValue.deadLettered++
        log.warn({ room: record.room, url: record.url, deliveryId: record.deliveryId, attempts: record.attempts, error: result.error }, 'webhook event dead-lettered')
        store.kill(record).catch((err: unknown) => log.error({ err }, 'webhook outbox: a dead letter could not be stored'))
        this.next(lane)
      } else {
        log.debug({ room: record.room, url: record.url, attempts: record.attempts, error: result.error }, 'webhook attempt failed')
        const delay = Math.min(this.backoffMs(record.attempts), deadline - now)
        lane.timer = setTimeout(() => {
          lane.timer = null
          this.ready.add(lane)
          this.pump()
        }, delay)
        lane.timer.unref()
      }
    }
    this.pump()
  }

  /** Exponential from --webhook-retry-min-ms, capped; "equal jitter" keeps at least half the step. */
  private backoffMs(attempts: number): number {
    const step = Math.min(RETRY_MAX_MS, this.settings.retryMinMs * 2 ** Math.min(attempts - 1, 30))
    return step / 2 + Math.random() * (step / 2)
  }

  private next(lane: Lane): void {
    if (lane.records.length === 0) this.lanes.delete(lane.key)
    else this.ready.add(lane)
  }

  /** Dead letters of the rooms `include` accepts, oldest first, at most `limit`; `total` counts all it accepts. */
  deadLetters(limit: number, include: (room: string) => boolean = () => true): { deadLetters: DeadLetter[]; total: number } {
    const matching = [...this.dead.values()].filter((record) => include(record.room)).sort((a, b) => a.seq - b.seq)
    return {
      total: matching.length,
      deadLetters: matching.slice(0, limit).map((record) => ({
        deliveryId: record.deliveryId,
        url: record.url,
        room: record.room,
        type: record.type,
        event: JSON.parse(record.body) as WebhookEvent,
        createdAt: new Date(record.createdAt).toISOString(),
        deadAt: new Date(record.deadAt ?? record.createdAt).toISOString(),
        attempts: record.attempts,
        lastError: record.lastError,
      })),
    }
  }

  /**
   * Queues dead letters again (all, or those with the given delivery ids, of rooms `include` accepts) with their delivery id
   * and body unchanged, a fresh max age, behind what their room has queued. Returns how many.
   */
  retryDead(deliveryIds: readonly string[] | null, include: (room: string) => boolean = () => true): Promise<number> {
    return this.inSerial(async () => {
      const listed = deliveryIds === null ? [...this.dead.values()] : deliveryIds.map((id) => this.dead.get(id)).filter((r): r is OutboxRecord => r !== undefined)
      const chosen = listed.filter((record) => include(record.room)).sort((a, b) => a.seq - b.seq)
      const now = Date.now()
      const pairs = chosen.map((before) => ({ before, after: { ...before, seq: ++this.sequence, createdAt: now, attempts: 0, lastError: null, deadAt: null } }))
      if (pairs.length === 0) return 0
      await this.deps.store.revive(pairs)
      for (const { before, after } of pairs) {
        this.dead.delete(before.deliveryId)
        this.addToLane(after)
      }
      this.pump()
      return pairs.length
    })
  }

  stats(): WebhookStats {
    let oldest = Infinity
    for (const lane of this.lanes.values()) oldest = Math.min(oldest, (lane.records[0] as OutboxRecord).createdAt)
    return {
      ...this.countsValue,
      refused: { ...this.countsValue.refused },
      queued: this.heldEntries - this.dead.size,
      dead: this.dead.size,
      oldestAgeSeconds: oldest === Infinity ? 0 : Math.max(0, (Date.now() - oldest) / 1000),
    }
  }

  /**
   * Shutdown: gathered changes become events (stored), deliveries under way get a moment to end,
   * then everything stops; what is left is sent when the instance starts again on the same data.
   */
  async close(deadline = Date.now() + CLOSE_WAIT_MS): Promise<void> {
    if (this.closed) return
    for (const room of [...this.batches.keys()]) void this.flushRoom(room)
    await this.serial
    const until = Math.min(deadline, Date.now() + CLOSE_WAIT_MS)
    while (this.inflight > 0 && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 20))
    this.closed = true
    this.abort.abort()
    for (const lane of this.lanes.values()) if (lane.timer !== null) clearTimeout(lane.timer)
    await this.deps.store.close()
  }
}
