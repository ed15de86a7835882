import { setTimeout as sleep } from 'node:timers/promises'
import { PendingAsks, decodeAsk, encodeAsk, type AskMessage } from './ask.js'
import type { RelayLogger } from './tuning.js'

/** Asks of one instance in flight at once; more wait for a slot (new room names cost every instance a lookup). */
const MAX_ASKS = 32
/** Asks answered at once; more wait in line (each is a LevelDB read and maybe a publish). */
const MAX_ANSWERS = 8

type Ask = Extract<AskMessage, { kind: 'ask' }>

/** What asking and answering need from the relay. */
export interface AskTransport {
  readonly instanceId: string
  /** Publishes `text` on the ask channel (a counted command); resolves to how many subscribers received it. */
  publish(text: string): Promise<number>
  /** Whether this instance's own subscriber is on the ask channel (then it is among the receivers). */
  subscribed(): boolean
  /** Whether an answer can go out now. */
  canAnswer(): boolean
  isClosed(): boolean
  /** Publishes this instance's copy of `room` into the cluster's stream; false when it has none. */
  publishCopy(room: string): Promise<boolean>
  noteError(err: unknown): void
}

/** How many asks were sent, found their room, and were answered with content (the relay's recovery stats). */
export interface AskCounts {
  asks: number
  found: number
  answered: number
}

/**
 * "Ask the cluster" (ask.ts) from both ends: asks the other instances for a room Redis does not
 * have, and answers theirs, each bounded (MAX_ASKS in flight, MAX_ANSWERS at once, a bounded
 * backlog of asks to answer).
 */
export class ClusterAsks {
  private readonly pending = new PendingAsks()
  private inFlight = 0
  private readonly slots: Array<() => void> = []
  private answering = 0
  private readonly answerQueue: Ask[] = []
  private seq = 0
  /** Until then a "no" to an ask is asked again (the others may still be resubscribing after a Redis restart). */
  graceUntil = 0

  constructor(
    private readonly transport: AskTransport,
    private readonly timeoutMs: number,
    private readonly logger: RelayLogger,
    private readonly counts: AskCounts,
  ) {}

  /**
   * Resolves true once another instance has published `room` into the room's stream; false when
   * none has it (a new room) or none answered within the timeout.
   */
  async ask(room: string): Promise<boolean> {
    // Right after Redis came back (or this instance started) the other instances may not have
    // resubscribed yet: a "no" then is not final, so the ask is repeated until the grace ends.
    for (;;) {
      if (await this.askOnce(room)) return true
      if (this.transport.isClosed() || Date.now() >= this.graceUntil) return false
      await sleep(Math.min(250, Math.max(0, this.graceUntil - Date.now())), undefined, { ref: false })
    }
  }

  /** A message on the ask channel: an answer to one of ours, or an ask to answer. */
  onMessage(text: string): void {
    const message = decodeAsk(text)
    if (message === null || message.from === this.transport.instanceId || this.transport.isClosed()) return
    if (message.kind === 'answer') {
      this.pending.answer(message.id, message.from, message.had)
      return
    }
    // Past this backlog the asker's deadline answers for us; the queue never grows without bound.
    if (this.answerQueue.length >= MAX_ASKS * 8) return
    this.answerQueue.push(message)
    this.pumpAnswers()
  }

  /** Every pending ask resolves false (the relay is closing). */
  clear(): void {
    this.pending.clear()
  }

  private async askOnce(room: string): Promise<boolean> {
    if (this.inFlight >= MAX_ASKS) await new Promise<void>((resolve) => this.slots.push(resolve))
    this.inFlight++
    const id = `${this.transport.instanceId}:${++this.seq}`
    try {
      const answered = this.pending.wait(id, this.timeoutMs)
      const receivers = await this.transport.publish(encodeAsk({ kind: 'ask', id, room, from: this.transport.instanceId }))
      // This instance's own subscriber is among the receivers.
      const others = receivers - (this.transport.subscribed() ? 1 : 0)
      if (others <= 0) {
        this.pending.clear(id)
        return false
      }
      this.counts.asks++
      this.pending.expect(id, others)
      const found = await answered
      if (found) this.counts.found++
      return found
    } catch (err) {
      this.pending.clear(id)
      throw err
    } finally {
      this.inFlight--
      this.slots.shift()?.()
    }
  }

  private pumpAnswers(): void {
    while (this.answering < MAX_ANSWERS && this.answerQueue.length > 0) {
      const ask = this.answerQueue.shift() as Ask
      this.answering++
      void this.answer(ask).finally(() => {
        this.answering--
        this.pumpAnswers()
      })
    }
  }

  /** Publishes this instance's copy of the room (if it has one) before saying so: the asker reads it next. */
  private async answer(ask: Ask): Promise<void> {
    let had = false
    try {
      had = await this.transport.publishCopy(ask.room)
    } catch (err) {
      this.transport.noteError(err)
      this.logger.warn({ room: ask.room, err: err instanceof Error ? err.message : String(err) }, 'answering an ask for a room failed')
    }
    if (had) this.counts.answered++
    if (this.transport.isClosed() || !this.transport.canAnswer()) return
    await this.transport.publish(encodeAsk({ kind: 'answer', id: ask.id, from: this.transport.instanceId, had })).catch((err: unknown) => this.transport.noteError(err))
  }
}
