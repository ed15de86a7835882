/**
 * `npm run soak -- --minutes 30 [--rooms 50] [--seed N] [--require-versions]`: the cluster fault
 * soak of test/soak/cluster-soak.ts for as long as asked. Prints the counts; exits 1 when any
 * acknowledged edit is missing, a room differs anywhere, or an existing room answered 404.
 */
import { describeSoak, runSoak } from './cluster-soak.js'

// Every stock provider adds a process 'exit' listener: one per client.
process.setMaxListeners(500)

function flag(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`)
  return i === -1 ? undefined : process.argv[i + 1]
}

const minutes = Number(flag('minutes') ?? '5')
const rooms = Number(flag('rooms') ?? '50')
const seed = flag('seed') !== undefined ? Number(flag('seed')) : Math.floor(Math.random() * 2 ** 31)
if (!(minutes > 0) || !Number.isInteger(rooms) || rooms < 1) {
  console.error('usage: npm run soak -- --minutes N [--rooms N] [--seed N] [--require-versions]')
  process.exitCode = 2
} else {
  const requireVersions = process.argv.includes('--require-versions')
  const result = await runSoak({ faultMs: minutes * 60_000, rooms, editEveryMs: 1000, faultGapMs: 3000, seed, requireVersions, log: (line) => console.log(line) })
  for (const line of describeSoak(result)) console.log(line)
  const failed =
    result.edits.missing.length > 0 || result.mismatches.length > 0 || result.reads.notFound > 0 || (requireVersions && result.versions.missing.length > 0)
  if (failed) {
    console.log(`FAILED (seed ${seed}): missing ${result.edits.missing.slice(0, 20).join(' ')}; ${result.mismatches.slice(0, 20).join('; ')}`)
    process.exitCode = 1
  } else console.log(`ok (seed ${seed})`)
}
