/**
 * "Ask the cluster" (issue #13): an instance about to serve a room that Redis does not hold asks
 * every other live instance on `<p>:<db>:ask` whether it has the room stored. Each one that has
 * it publishes its document into the room's stream first and then answers; the asker reads the
 * room again once an answer with content came, or every instance said no, or the deadline passed.
 * Redis having lost the room (restarted empty, flushed, or the retention expired its keys) then
 * never makes a stored room look empty or missing.
 */

export type AskMessage =
  | { kind: 'ask'; id: string; room: string; from: string }
  | { kind: 'answer'; id: string; from: string; had: boolean }

export function encodeAsk(message: AskMessage): string {
  return JSON.stringify(message)
}

/** Null for anything that is not a well-formed ask message (the channel is shared by every instance). */
export function decodeAsk(text: string): AskMessage | null {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return null
  }
  if (typeof value !== 'object' || value === null) return null
  const m = value as Record<string, unknown>
  if (typeof m.id !== 'string' || typeof m.from !== 'string') return null
  if (m.kind === 'ask' && typeof m.room === 'string') return { kind: 'ask', id: m.id, room: m.room, from: m.from }
  if (m.kind === 'answer' && typeof m.had === 'boolean') return { kind: 'answer', id: m.id, from: m.from, had: m.had }
  return null
}

interface PendingAsk {
  /** Instances that answered "not here". */
  declined: Set<string>
  /** How many answers to wait for; null until PUBLISH said how many instances received the ask. */
  expected: number | null
  resolve(found: boolean): void
  timer: NodeJS.Timeout
}

/**
 * The asks of one instance waiting for answers. Whom to wait for is what PUBLISH returns (the
 * instances subscribed to the ask channel), not a registry in Redis: a flushed Redis has lost
 * any registry, and the asks right after a flush are the ones that matter most.
 */
export class PendingAsks {
  private readonly pending = new Map<string, PendingAsk>()

  /**
   * Registers `id` before the ask goes out (answers may come before PUBLISH replies). Resolves
   * true as soon as one instance answers with content; false once every expected instance said
   * no, or after `timeoutMs`.
   */
  wait(id: string, timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.settle(id, false), timeoutMs)
      timer.unref()
      this.pending.set(id, { declined: new Set(), expected: null, resolve, timer })
    })
  }

  /** `count` other instances received the ask. */
  expect(id: string, count: number): void {
    const ask = this.pending.get(id)
    if (ask === undefined) return
    ask.expected = count
    if (ask.declined.size >= count) this.settle(id, false)
  }

  answer(id: string, from: string, had: boolean): void {
    const ask = this.pending.get(id)
    if (ask === undefined) return
    if (had) {
      this.settle(id, true)
      return
    }
    ask.declined.add(from)
    if (ask.expected !== null && ask.declined.size >= ask.expected) this.settle(id, false)
  }

  /** Every ask resolves false (the relay is closing, or the ask could not be sent). */
  clear(id?: string): void {
    for (const key of id === undefined ? [...this.pending.keys()] : [id]) this.settle(key, false)
  }

  private settle(id: string, found: boolean): void {
    const ask = this.pending.get(id)
    if (ask === undefined) return
    this.pending.delete(id)
    clearTimeout(ask.timer)
    ask.resolve(found)
  }
}
