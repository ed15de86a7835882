/**
 * Issue #13: the fault soak, CI-sized (test/soak/cluster-soak.ts; `npm run soak -- --minutes 30`
 * runs it longer). Three weft processes, redis-server and nginx; 50 rooms with a y-websocket and
 * a Hocuspocus client each, HTTP writers and versions; every fault kind at least once.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { describeSoak, runSoak, FAULT_KINDS } from './soak/cluster-soak.js'

process.setMaxListeners(200)

const SEED = process.env.WEFT_TEST_SEED !== undefined ? Number(process.env.WEFT_TEST_SEED) : Math.floor(Math.random() * 2 ** 31)

describe(`cluster fault soak (seed ${SEED})`, () => {
  it('loses no acknowledged edit, hides no room, and ends byte-identical everywhere', { timeout: 180_000 }, async () => {
    const result = await runSoak({ faultMs: 45_000, rooms: 50, editEveryMs: 1000, faultGapMs: 2000, seed: SEED, requireVersions: true, log: (line) => console.log(line) })
    for (const line of describeSoak(result)) console.log(line)
    for (const kind of FAULT_KINDS) assert.ok(result.faults[kind] >= 1, `${kind} injected`)
    assert.deepEqual(result.edits.missing, [], 'every edit made or acknowledged is in the final documents')
    assert.deepEqual(result.mismatches, [], 'every room is the same in every client, on every instance and in Redis')
    assert.equal(result.reads.notFound, 0, 'no 404 for a room that exists')
    assert.ok(result.edits.hocuspocusAcked > 0 && result.edits.httpAcked > 0, 'edits were acknowledged on both paths')
  })
})
