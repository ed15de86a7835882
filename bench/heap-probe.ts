/**
 * Loaded into a server under test with `node --expose-gc --import .../heap-probe.js` (any
 * target: weft or a peer). On SIGUSR2 it runs full garbage collections and writes the heap still
 * in use to `$BENCH_HEAP_PROBE_DIR/PID.heap`: the live heap, which says whether memory leaks.
 * Heap "used" read at a random moment includes whatever garbage the next collection would free,
 * so under load it swings by more than a leak would show.
 */
import { renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

const dir = process.env.BENCH_HEAP_PROBE_DIR
const gc = (globalThis as { gc?: () => void }).gc

if (dir !== undefined && gc !== undefined) {
  process.on('SIGUSR2', () => {
    // Two passes: the first can leave objects that only its finalizers released.
    gc()
    gc()
    const file = join(dir, `${process.pid}.heap`)
    // Written whole, then renamed: the reader never sees half a number.
    writeFileSync(`${file}.tmp`, `${process.memoryUsage().heapUsed}\n`)
    renameSync(`${file}.tmp`, file)
  })
}
