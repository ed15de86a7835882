/** Messages between the coordinator (bench/run.ts) and a load process (bench/load-worker.ts) over IPC. */
import type { Dialect } from './wire.js'

/**
 * - `light`: counts update frames, keeps no document (most clients);
 * - `tracker`: keeps a real Y.Doc and times each update from the writer's send to its receipt;
 * - `writer`: keeps a Y.Doc and sends updates when told to;
 * - `slow`: syncs, then stops reading its socket when told to.
 */
export type Role = 'light' | 'tracker' | 'writer' | 'slow'

export interface ClientSpec {
  room: string
  role: Role
  /**
   * Receivers with a group (e.g. the instance of a cluster they are connected to) are also counted
   * per group in `StatsResult.groups`: deliveries, update frames and the trackers' latencies.
   */
  group?: string
}

export type Command =
  | {
      type: 'connect'
      port: number
      dialect: Dialect
      clients: ClientSpec[]
      /** Handshakes in flight at once; 0 = all at once. */
      concurrency: number
      /** Give up on clients not synced by then. */
      timeoutMs: number
      /** Trackers: also wait until their Y.Array `log` holds this many entries (cold load). */
      completeLength?: number
      /**
       * Light clients gather messages up to this many bytes and count longer ones without keeping
       * them (bench/light-socket.ts): for joiners of a big document, whose load process would
       * otherwise spend its core gathering replies. Unset: every client uses `ws`.
       */
      wholeBytes?: number
    }
  /**
   * Writers set a Y.Map key to their send time `ratePerSecond` times a second. By default one key
   * is overwritten; with `distinctKeys` each update sets another key (of a ring of 1024), so that a server applying a
   * merged burst in one transaction (a cluster instance receiving a relayed burst) cannot garbage-
   * collect the overwritten sets before it broadcasts them: each stays a struct with its send time.
   */
  | { type: 'write'; ratePerSecond: number; durationMs: number; paddingBytes: number; distinctKeys?: boolean }
  /**
   * Every client (whatever its role) moves its cursor `ratePerSecond` times a second for
   * `durationMs`: an awareness update of its own client ID whose state carries the send time.
   * Trackers time every cursor they receive; the others count awareness frames.
   */
  | { type: 'cursors'; ratePerSecond: number; durationMs: number }
  /** Writers: push `count` single-entry updates to the Y.Array `log` as fast as the socket drains. */
  | { type: 'history'; count: number }
  /** Writers: insert `totalBytes` of text into the Y.Text `body` in `chunkBytes` updates. */
  | { type: 'bulk-text'; totalBytes: number; chunkBytes: number }
  /** Trackers: resolve when every tracker's `log` has `length` entries, or at the deadline. */
  | { type: 'await-length'; length: number; timeoutMs: number }
  | { type: 'pause-slow' }
  /** Slow clients read again; after `waitMs`, how many of them the server had closed. */
  | { type: 'resume-slow'; waitMs: number }
  /** `cycles` short-lived clients, `concurrency` at a time: each connects to the next of `rooms`, syncs and closes. */
  | { type: 'churn'; port: number; dialect: Dialect; rooms: string[]; cycles: number; concurrency: number }
  | { type: 'reset' }
  | { type: 'stats' }
  /** `concurrency` keep-alive HTTP clients GET `path` back to back for `durationMs`. */
  | { type: 'http-load'; port: number; path: string; concurrency: number; durationMs: number }
  | { type: 'close' }

export interface ConnectResult {
  type: 'connected'
  synced: number
  failed: number
  /** Milliseconds from the first socket opened to the last client synced. */
  allSyncedMs: number
  /** Trackers with `completeLength`: ms from connect start until complete (null: not by the deadline). */
  completeMs: (number | null)[]
  /** Trackers: entries of `log` seen when connect finished. */
  logLengths: number[]
  /** Trackers: Y.encodeStateAsUpdate of their document, bytes (the first tracker). */
  stateBytes: number
}

export interface StatsResult {
  type: 'stats'
  /** Per room: update frames received by light clients and trackers since the last reset. */
  received: Record<string, number>
  /** Per room: clients that count deliveries (light and tracker). */
  receivers: Record<string, number>
  /** Per room: updates sent by writers since the last reset. */
  sent: Record<string, number>
  latenciesMs: number[]
  /** Awareness frames received by every client since the last reset. */
  awarenessFrames: number
  /** Trackers: milliseconds from a cursor's send to its receipt, one sample per entry. */
  cursorLatenciesMs: number[]
  /** Clients whose socket closed (by the server or by error) after their handshake. */
  closed: number
  /** Per `ClientSpec.group` of the receivers (light and tracker), since the last reset. */
  groups: Record<string, GroupStats>
}

export interface GroupStats {
  /** Receivers (light and tracker) in the group. */
  receivers: number
  /** Writer updates they received (structs, as `received`). */
  received: number
  /** Update frames they received: per receiver, the broadcasts its server made. */
  frames: number
  /** Trackers of the group: one sample per writer update. */
  latenciesMs: number[]
}

export type Reply =
  | ConnectResult
  | StatsResult
  /** `stateBytes`: Y.encodeStateAsUpdate of the (first) writer's document after writing. */
  | { type: 'written'; sent: number; stateBytes?: number }
  | { type: 'length-reached'; lengths: number[]; ms: number }
  | { type: 'slow-closed'; closed: number; total: number }
  /** `cycles`: clients that synced and closed; `failed`: the others. */
  | { type: 'churned'; cycles: number; failed: number }
  /** `requests`: 200 responses read to the end; `errors`: other statuses and failures. */
  | { type: 'http-loaded'; requests: number; errors: number; bytes: number; elapsedMs: number; latenciesMs: number[]; statuses: Record<string, number> }
  | { type: 'ok' }
  | { type: 'error'; message: string }
