// The progress of a weft process's drain, read from its own metrics while it runs.
import { sampleIn, scrapeMetrics } from './metrics.js'

export interface DrainProgress {
  /** weft_drain_total_connections once the drain had begun: the connections it had to close. */
  total: number
  /** Every value of weft_drain_closed_connections read during the drain, in order, without repeats. */
  closed: number[]
}

/**
 * Reads the drain's own progress on /metrics until the process stops answering. Each answer is one
 * moment of the server's event loop, between two batches of closes: the distinct counts of closed
 * connections are the steps of its schedule, whatever the wall clock did in between.
 */
export function watchDrain(base: string): { stop(): Promise<DrainProgress> } {
  const progress: DrainProgress = { total: 0, closed: [] }
  let stopped = false
  const watching = (async () => {
    while (!stopped) {
      let text: string
      try {
        text = await scrapeMetrics(base)
      } catch {
        return // the process is gone
      }
      const total = sampleIn(text, 'weft_drain_total_connections') ?? 0
      const closed = sampleIn(text, 'weft_drain_closed_connections') ?? 0
      if (total === 0) continue // not draining yet
      progress.total = total
      if (progress.closed.at(-1) !== closed) progress.closed.push(closed)
      if (closed >= total) return
    }
  })()
  return {
    async stop() {
      stopped = true
      await watching
      return progress
    },
  }
}

/** How many steps the readings show the connections were closed in (an all-at-once close is one). */
export function drainSteps(progress: DrainProgress): number {
  return progress.closed.filter((closed) => closed > 0 && closed < progress.total).length + 1
}
