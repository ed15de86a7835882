/**
 * Loaded into every server of scenarios 13 and 14 with `node --import` (weft and the peers
 * alike): a `perf_hooks.monitorEventLoopDelay` histogram at prom-client's default resolution
 * (10 ms, what weft's `weft_nodejs_eventloop_lag_*` gauges use). On SIGUSR2 it writes the
 * delay since the last signal (p50, p99, max in ms, samples) to `loopProbeFile(pid)` and resets.
 */
import { writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { monitorEventLoopDelay } from 'node:perf_hooks'

export const LOOP_PROBE_RESOLUTION_MS = 10

export function loopProbeFile (pid: number): string {
  return join(tmpdir(), `weft-bench-loop-${pid}.json`)
}

export interface LoopDelay {
  p50Ms: number
  p99Ms: number
  maxMs: number
  samples: number
}

// Only in the server it was loaded into (`--import`), not in the coordinator importing the helpers.
if (process.argv.some((arg) => arg.endsWith('loop-probe.js')) || process.execArgv.some((arg) => arg.endsWith('loop-probe.js'))) {
  const histogram = monitorEventLoopDelay({ resolution: LOOP_PROBE_RESOLUTION_MS })
  histogram.enable()
  process.on('SIGUSR2', () => {
    const delay: LoopDelay = {
      p50Ms: histogram.percentile(50) / 1e6,
      p99Ms: histogram.percentile(99) / 1e6,
      maxMs: histogram.max / 1e6,
      samples: histogram.count,
    }
    writeFileSync(loopProbeFile(process.pid), JSON.stringify(delay))
    histogram.reset()
  })
}
