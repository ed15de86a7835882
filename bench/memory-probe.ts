/**
 * Loaded into a server under test with `node --expose-gc --import <this file>`
 * (`MEMORY_PROBE_FLAGS`; scenarios 12 and 16): on SIGUSR2 it runs full garbage collections, then
 * writes the process's memory figures to `memoryProbeFile(pid)`, so every target is measured the
 * same way, after a collection, whatever it exposes itself. Nothing else: no timers, no
 * listeners but the one signal. The coordinator imports this module for `readMemoryProbe`.
 */
import { writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { getHeapSpaceStatistics } from 'node:v8'
import { askProbe } from './processes.js'

const THIS_FILE = fileURLToPath(import.meta.url)

/** Node flags that load the probe into a server (any target: they are all Node). */
export const MEMORY_PROBE_FLAGS: readonly string[] = ['--expose-gc', '--import', THIS_FILE]

export interface MemoryReading {
  rss: number
  heapUsed: number
  external: number
  youngResident: number
  collected: boolean
}

/**
 * Where the probe of process `pid` writes: JSON `{ rss, heapUsed, external, youngResident, at }`
 * (bytes, ms); `youngResident` is the resident size of V8's young generation (new space).
 */
export function memoryProbeFile(pid: number): string {
  return join(tmpdir(), `weft-bench-memory-${pid}.json`)
}

/** Asks the probe in process `pid` for full collections and its memory figures afterwards (bytes). */
export async function readMemoryProbe (pid: number, what: string): Promise<MemoryReading> {
  const reading = await askProbe<MemoryReading>(pid, memoryProbeFile(pid), 30_000)
  if (reading === null) throw new Error(`${what}: the memory probe did not answer`)
  return reading
}

// Only in the server it was loaded into (`--import`), not in the coordinator reading it.
if (process.execArgv.includes(THIS_FILE)) process.on('SIGUSR2', () => {
  const gc = (globalThis as { gc?: () => void }).gc
  for (let i = 0; i < 3; i++) gc?.()
  const { rss, heapUsed, external } = process.memoryUsage()
  const youngResident = getHeapSpaceStatistics().find((space) => space.space_name === 'new_space')?.physical_space_size ?? 0
  writeFileSync(memoryProbeFile(process.pid), JSON.stringify({ rss, heapUsed, external, youngResident, at: Date.now(), collected: gc !== undefined }))
})
