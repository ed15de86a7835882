import type { ServerResponse } from 'node:http'
import type { ResponseBudget } from './admission.js'
import { sendError, type Headers } from './http-response.js'
import type { ReplyGate, ReplyWaiter } from './reply-gate.js'

/** What bounds the HTTP API's answers (see `sendAnswer`). */
export interface AnswerLimits {
  /** Bytes on their way to clients, server-wide and per address (--max-response-bytes-in-flight[-per-ip]). */
  budget: ResponseBudget
  /** Big answers take turns with big sync replies (--sync-replies-at-once); null: no turns. */
  gate: ReplyGate | null
  /** Past this many bytes an answer is big: the sync replies' rule, a quarter of --send-queue-bytes. */
  bigBytes: number
  /** An answer its client reads none of for this long is given up and the connection cut (--send-timeout-ms). */
  sendTimeoutMs: number
  /** An answer refused or given up, by reason (weft_http_refusals_total). */
  onRefused(reason: string): void
}

/**
 * Sends an API answer with a body. Its bytes count against the answer budget until its client has
 * taken them; over the budget the request gets 503 (429 for one address) instead. A big answer
 * (a whole document, say) waits for a turn of the reply gate like a joiner's sync reply, so a
 * crowd of services reading a 20 MB document does not copy 20 MB per socket into the kernel in
 * the same turns of the event loop. A client that reads none of its answer for the send timeout
 * has its connection cut. HEAD requests get the headers only and hold nothing.
 */
export function sendAnswer(res: ServerResponse, ip: string, limits: AnswerLimits, status: number, headers: Headers, body: Uint8Array | string): void {
  const bytes = typeof body === 'string' ? Buffer.byteLength(body) : body.length
  const head = { ...headers, 'content-length': bytes }
  if (res.req.method === 'HEAD') {
    res.writeHead(status, head)
    res.end()
    return
  }
  const refusal = limits.budget.reserve(ip, bytes)
  if (refusal !== null) {
    limits.onRefused(refusal.reason)
    sendError(res, refusal.error, refusal.message)
    return
  }
  new Answer(res, ip, limits, status, head, body, bytes).start()
}

/** One answer from its reservation to the end of its connection's use of it. */
class Answer implements ReplyWaiter {
  private waiting = false
  private hasTurn = false
  private turnTimer: NodeJS.Timeout | null = null

  constructor(
    private readonly res: ServerResponse,
    private readonly ip: string,
    private readonly limits: AnswerLimits,
    private readonly status: number,
    private readonly headers: Headers,
    private body: Uint8Array | string | null,
    private readonly bytes: number,
  ) {}

  start(): void {
    // 'close' comes once: after the last byte left, or when the connection went (also while waiting).
    this.res.once('close', () => this.closed())
    const { gate } = this.limits
    if (gate !== null && this.bytes > this.limits.bigBytes && !this.enter(gate)) {
      this.waiting = true
      return
    }
    this.write()
  }

  /** The gate has a turn free. */
  replyTurn(): void {
    const { gate } = this.limits
    if (!this.waiting || gate === null || !this.enter(gate)) return
    this.waiting = false
    this.write()
  }

  private enter(gate: ReplyGate): boolean {
    if (!gate.tryEnter(this)) return false
    this.hasTurn = true
    this.turnTimer = setTimeout(() => this.endTurn(), gate.turnMs)
    this.turnTimer.unref()
    return true
  }

  private write(): void {
    const { res } = this
    if (res.destroyed || this.body === null) return
    // Reset by every chunk the client takes: only a client that reads nothing runs it out.
    res.setTimeout(this.limits.sendTimeoutMs, () => {
      this.limits.onRefused('send_timeout')
      res.destroy()
    })
    res.writeHead(this.status, this.headers)
    res.end(this.body, () => this.endTurn())
    this.body = null
  }

  private endTurn(): void {
    if (!this.hasTurn) return
    this.hasTurn = false
    if (this.turnTimer !== null) clearTimeout(this.turnTimer)
    this.turnTimer = null
    this.limits.gate?.leave()
  }

  private closed(): void {
    if (this.waiting) this.limits.gate?.forget(this)
    this.waiting = false
    this.body = null
    this.endTurn()
    this.limits.budget.release(this.ip, this.bytes)
  }
}
