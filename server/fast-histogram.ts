import type { Metric, Registry } from 'prom-client'

/** One labelled series of a FastHistogram: observing is a bucket search and three additions. */
export class HistogramSeries {
  /** Per bucket (not cumulative), the last one +Inf. */
  readonly counts: Float64Array
  sum = 0
  count = 0

  constructor(
    readonly labels: Readonly<Record<string, string>>,
    private readonly bounds: readonly number[],
  ) {
    this.counts = new Float64Array(bounds.length + 1)
  }

  observe(value: number): void {
    const bounds = this.bounds
    let i = 0
    while (i < bounds.length && value > (bounds[i] as number)) i++
    this.counts[i] = (this.counts[i] as number) + 1
    this.sum += value
    this.count++
  }
}

/**
 * A Prometheus histogram whose series are fixed at creation, for the hot path. A prom-client
 * child's observe() hashes its labels on every call (about 1 µs); this one does not. It renders
 * through the registry like any other metric (prom-client's metric object shape).
 */
export class FastHistogram {
  readonly type = 'histogram'
  readonly aggregator = 'sum'
  private readonly all: HistogramSeries[] = []

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly bounds: readonly number[],
    registry: Registry,
  ) {
    registry.registerMetric(this as unknown as Metric)
  }

  /** The series with `labels`; create every series once and keep it. */
  series(labels: Readonly<Record<string, string>> = {}): HistogramSeries {
    const series = new HistogramSeries(labels, this.bounds)
    this.all.push(series)
    return series
  }

  /** What the registry renders (the shape prom-client's own histograms return). */
  get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: Array<{ labels: Record<string, string | number>; value: number; metricName: string }> }> {
    const values: Array<{ labels: Record<string, string | number>; value: number; metricName: string }> = []
    for (const series of this.all) {
      let cumulative = 0
      for (let i = 0; i <= this.bounds.length; i++) {
        cumulative += series.counts[i] as number
        values.push({ labels: { le: i < this.bounds.length ? (this.bounds[i] as number) : '+Inf', ...series.labels }, value: cumulative, metricName: `${this.name}_bucket` })
      }
      values.push({ labels: { ...series.labels }, value: series.sum, metricName: `${this.name}_sum` })
      values.push({ labels: { ...series.labels }, value: series.count, metricName: `${this.name}_count` })
    }
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values })
  }

  reset(): void {
    for (const series of this.all) {
      series.counts.fill(0)
      series.sum = 0
      series.count = 0
    }
  }
}
