import { SlotRing } from './slot-ring.js'

/** Buckets of weft_delivery_seconds (seconds), around the 200 ms SLO target. */
export const DELIVERY_BUCKETS: readonly number[] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10]
/** Buckets of weft_persist_seconds: the write window (--persist-window-ms, 100 ms by default) plus the append. */
export const PERSIST_BUCKETS: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5, 5, 10, 30]

/**
 * Close codes that count as a disconnect for the SLO: the network dropped (1006), weft failed
 * (1011), restarted (1012) or shed a slow reader (1013). Closes a client asked for (1000, 1001,
 * 1005) and refusals of bad input or credentials are not disconnects of a working client.
 */
export const DISCONNECT_CODES: ReadonlySet<number> = new Set([1006, 1011, 1012, 1013])

/** The SLO targets of issue 17. */
export const SLO_TARGETS = Object.freeze({ connectionSuccess: 0.999, deliveryP99Seconds: 0.2, disconnectsPerHour: 0.05 })

interface Slot {
  delivery: Float64Array
  persist: Float64Array
  upgrades: number
  accepted: number
  disconnects: number
  closes: Map<number, number>
  /** Open connections when the slot was last sampled (-1 before). */
  connections: number
}

export interface SloFigures {
  /** Seconds the figures cover (up to 300; less right after start). */
  windowSeconds: number
  deliveryP99Seconds: number | null
  persistP99Seconds: number | null
  deliverySamples: number
  /** accepted / all upgrade attempts; null without attempts. */
  connectionSuccess: number | null
  upgrades: number
  /** Disconnects per open connection per hour (0.05 = 5 %/h); null without connections. */
  disconnectsPerHour: number | null
  disconnects: number
  closesByCode: Record<string, number>
  /** Per 5 s slot, oldest first: how long ago it started, delivery p99 (null without samples) and open connections. */
  series: Array<{ secondsAgo: number; deliveryP99Seconds: number | null; connections: number | null }>
}

const SLOT_MS = 5_000
const SLOT_COUNT = 60

function bucketIndex(bounds: readonly number[], value: number): number {
  let i = 0
  while (i < bounds.length && value > (bounds[i] as number)) i++
  return i
}

/** The q-quantile of bucket counts the way Prometheus' histogram_quantile estimates it (linear within a bucket). */
export function bucketQuantile(bounds: readonly number[], counts: ArrayLike<number>, q: number): number | null {
  let total = 0
  for (let i = 0; i < counts.length; i++) total += counts[i] as number
  if (total === 0) return null
  const rank = q * total
  let seen = 0
  for (let i = 0; i < counts.length; i++) {
    const count = counts[i] as number
    if (seen + count >= rank && count > 0) {
      if (i >= bounds.length) return bounds[bounds.length - 1] as number
      const lower = i === 0 ? 0 : (bounds[i - 1] as number)
      const upper = bounds[i] as number
      return lower + ((upper - lower) * (rank - seen)) / count
    }
    seen += count
  }
  return bounds[bounds.length - 1] as number
}

/**
 * The last five minutes of what the SLO table needs, in 5-second slots, for the status page.
 * Fed next to the Prometheus metrics (an array increment per sample); the Prometheus histograms
 * are cumulative since start, which cannot answer "p99 of the last 5 minutes" without a server.
 */
export class SloWindow {
  private readonly ring = new SlotRing<Slot>(
    SLOT_MS,
    SLOT_COUNT,
    () => ({ delivery: new Float64Array(DELIVERY_BUCKETS.length + 1), persist: new Float64Array(PERSIST_BUCKETS.length + 1), upgrades: 0, accepted: 0, disconnects: 0, closes: new Map(), connections: -1 }),
    (slot) => {
      slot.delivery.fill(0)
      slot.persist.fill(0)
      slot.upgrades = 0
      slot.accepted = 0
      slot.disconnects = 0
      slot.closes.clear()
      slot.connections = -1
    },
  )

  private readonly startedAt: number

  constructor(private readonly clock: () => number = () => performance.now()) {
    this.startedAt = clock()
  }

  delivery(seconds: number, now = this.clock()): void {
    const slot = this.ring.current(now)
    const i = bucketIndex(DELIVERY_BUCKETS, seconds)
    slot.delivery[i] = (slot.delivery[i] as number) + 1
  }

  persist(seconds: number, now = this.clock()): void {
    const slot = this.ring.current(now)
    const i = bucketIndex(PERSIST_BUCKETS, seconds)
    slot.persist[i] = (slot.persist[i] as number) + 1
  }

  upgrade(accepted: boolean, now = this.clock()): void {
    const slot = this.ring.current(now)
    slot.upgrades++
    if (accepted) slot.accepted++
  }

  close(code: number, now = this.clock()): void {
    const slot = this.ring.current(now)
    slot.closes.set(code, (slot.closes.get(code) ?? 0) + 1)
    if (DISCONNECT_CODES.has(code)) slot.disconnects++
  }

  /** Records the open connections now (the status page's sampler calls this every few seconds). */
  connections(count: number, now = this.clock()): void {
    this.ring.current(now).connections = count
  }

  figures(now = this.clock()): SloFigures {
    const slots = this.ring.window(now)
    const delivery = new Float64Array(DELIVERY_BUCKETS.length + 1)
    const persist = new Float64Array(PERSIST_BUCKETS.length + 1)
    let upgrades = 0
    let accepted = 0
    let disconnects = 0
    let connectionSum = 0
    let connectionSamples = 0
    const closesByCode: Record<string, number> = {}
    const series: SloFigures['series'] = []
    for (const { slot, startMs } of slots) {
      for (let i = 0; i < delivery.length; i++) delivery[i] = (delivery[i] as number) + (slot.delivery[i] as number)
      for (let i = 0; i < persist.length; i++) persist[i] = (persist[i] as number) + (slot.persist[i] as number)
      upgrades += slot.upgrades
      accepted += slot.accepted
      disconnects += slot.disconnects
      for (const [code, count] of slot.closes) closesByCode[code] = (closesByCode[code] ?? 0) + count
      if (slot.connections >= 0) {
        connectionSum += slot.connections
        connectionSamples++
      }
      series.push({ secondsAgo: Math.round((now - startMs) / 1000), deliveryP99Seconds: bucketQuantile(DELIVERY_BUCKETS, slot.delivery, 0.99), connections: slot.connections >= 0 ? slot.connections : null })
    }
    const windowSeconds = Math.max(1, Math.min(SLOT_MS * SLOT_COUNT, now - this.startedAt) / 1000)
    const meanConnections = connectionSamples === 0 ? 0 : connectionSum / connectionSamples
    let deliverySamples = 0
    for (const count of delivery) deliverySamples += count
    return {
      windowSeconds: Math.round(windowSeconds),
      deliveryP99Seconds: bucketQuantile(DELIVERY_BUCKETS, delivery, 0.99),
      persistP99Seconds: bucketQuantile(PERSIST_BUCKETS, persist, 0.99),
      deliverySamples,
      connectionSuccess: upgrades === 0 ? null : accepted / upgrades,
      upgrades,
      disconnectsPerHour: meanConnections === 0 && disconnects === 0 ? null : (disconnects / Math.max(1, meanConnections)) * (3600 / windowSeconds),
      disconnects,
      closesByCode,
      series,
    }
  }
}
