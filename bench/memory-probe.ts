/**
 * Loaded into a server under test with `node --expose-gc --import <this file>` (scenario 16,
 * rooms): on SIGUSR2 it runs full garbage collections, then writes the process's memory figures
 * to `memoryProbeFile(pid)`, so every target is measured the same way, after a collection,
 * whatever it exposes itself. Nothing else: no timers, no listeners but the one signal.
 */
import { writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { getHeapSpaceStatistics } from 'node:v8'

/**
 * Where the probe of process `pid` writes: JSON `{ rss, heapUsed, external, youngResident, at }`
 * (bytes, ms); `youngResident` is the resident size of V8's young generation (new space).
 */
export function memoryProbeFile(pid: number): string {
  return join(tmpdir(), `weft-bench-memory-${pid}.json`)
}

process.on('SIGUSR2', () => {
  const gc = (globalThis as { gc?: () => void }).gc
  for (let i = 0; i < 3; i++) gc?.()
  const { rss, heapUsed, external } = process.memoryUsage()
  const youngResident = getHeapSpaceStatistics().find((space) => space.space_name === 'new_space')?.physical_space_size ?? 0
  writeFileSync(memoryProbeFile(process.pid), JSON.stringify({ rss, heapUsed, external, youngResident, at: Date.now(), collected: gc !== undefined }))
})
