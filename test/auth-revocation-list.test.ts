/**
 * The parts of issue 16 that run on a clock, with a controlled one: the bounded revocation list
 * (expiry, eviction counted, issue times, rooms, untrusted input) and the JWKS cache's cooldown
 * and maximum age (a key set in a file that changes under it).
 */
import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import type { Grant } from '../server/access.js'
import { JwksKeys, JwksUnavailableError } from '../server/jwks.js'
import { parseRevocation, RevocationList } from '../server/revocation.js'
import { tempDir } from './harness/server.js'
import { identityProviderKey } from './harness/tokens.js'

function grant(subject: string | null, issuedAt: number | null): Grant {
  return { access: 'write', subject, rooms: ['*'], expiresAt: null, issuedAt }
}

describe('RevocationList', () => {
  it('refuses credentials of the subject issued at or before the revocation, until it ends', () => {
    let now = 1_000_000
    const list = new RevocationList(10, () => {}, () => now)
    list.add({ subject: 'mallory', room: null, at: now, until: now + 60_000 })
    assert.equal(list.refuses(grant('mallory', now - 5_000), 'any'), true)
    assert.equal(list.refuses(grant('mallory', now), null), true)
    assert.equal(list.refuses(grant('mallory', null), 'any'), true, 'no iat: treated as old')
    assert.equal(list.refuses(grant('mallory', now + 1_000), 'any'), false, 'issued after the revocation')
    assert.equal(list.refuses(grant('alice', now - 5_000), 'any'), false)
    assert.equal(list.refuses(grant(null, null), 'any'), false, 'open-mode grants have no subject')
    now += 60_000
    assert.equal(list.refuses(grant('mallory', 0), 'any'), false, 'ended')
    assert.equal(list.size, 0, 'an ended entry is dropped when it is looked at')
  })

  it('a revocation for one room covers that room only, and HTTP calls about no room are not covered by it', () => {
    const now = 5_000
    const list = new RevocationList(10, () => {}, () => now)
    list.add({ subject: 'bob', room: 'r1', at: now, until: now + 1_000 })
    assert.equal(list.refuses(grant('bob', 0), 'r1'), true)
    assert.equal(list.refuses(grant('bob', 0), 'r2'), false)
    assert.equal(list.refuses(grant('bob', 0), null), false)
  })

  it('holds at most maxEntries: the one ending first is evicted and counted; the same pair takes one slot', () => {
    const now = 0
    let evicted = 0
    const list = new RevocationList(3, () => evicted++, () => now)
    for (const [subject, until] of [['a', 500], ['b', 100], ['c', 900]] as const) list.add({ subject, room: null, at: 0, until })
    list.add({ subject: 'a', room: null, at: 0, until: 600 })
    assert.equal(list.size, 3)
    assert.equal(evicted, 0)
    list.add({ subject: 'd', room: null, at: 0, until: 700 })
    assert.equal(list.size, 3)
    assert.equal(evicted, 1)
    assert.equal(list.refuses(grant('b', 0), null), false, 'b ended first: evicted')
    for (const subject of ['a', 'c', 'd']) assert.equal(list.refuses(grant(subject, 0), null), true, subject)
    list.add({ subject: 'e', room: null, at: 0, until: 0 })
    assert.equal(list.size, 3, 'a revocation that has already ended is not kept')
  })

  it('parseRevocation accepts only well-formed revocations (the Redis channel is input)', () => {
    assert.deepEqual(parseRevocation({ subject: 's', room: null, at: 1, until: 2 }), { subject: 's', room: null, at: 1, until: 2 })
    for (const junk of [null, 'x', [], { subject: '', room: null, at: 1, until: 2 }, { subject: 's', room: 5, at: 1, until: 2 }, { subject: 's', room: null, at: 3, until: 2 }, { subject: 's', room: null, at: 1.5, until: 2 }, { subject: 'x'.repeat(2000), room: null, at: 1, until: 2 }]) {
      assert.equal(parseRevocation(junk), null, JSON.stringify(junk).slice(0, 60))
    }
  })
})

describe('JwksKeys (a key set in a file, a controlled clock)', () => {
  let dir: { path: string; remove(): Promise<void> }
  before(async () => {
    dir = await tempDir('weft-jwks-unit-')
  })
  after(async () => {
    await dir.remove()
  })

  it('loads again for an unknown kid at most once per cooldown, and after the maximum age', async () => {
    const [first, second] = await Promise.all([identityProviderKey('ES256', 'first'), identityProviderKey('EdDSA', 'second')])
    const file = join(dir.path, 'keys.json')
    await writeFile(file, JSON.stringify({ keys: [first.jwk] }))
    let now = 0
    const outcomes: boolean[] = []
    const keys = new JwksKeys({ source: file, refreshCooldownMs: 30_000, maxAgeMs: 600_000, now: () => now, onLoad: (result) => outcomes.push(result.ok) })
    assert.equal(await keys.load(), true)
    const token = { payload: '', signature: '' }
    assert.ok(await keys.resolve({ alg: 'ES256', kid: 'first' }, token))
    await writeFile(file, JSON.stringify({ keys: [first.jwk, second.jwk] }))
    now = 1_000
    // Within the cooldown: refused without a load, however many tries.
    for (let i = 0; i < 5; i++) await assert.rejects(keys.resolve({ alg: 'EdDSA', kid: 'second' }, token))
    assert.equal(keys.loads, 1)
    now = 31_000
    assert.ok(await keys.resolve({ alg: 'EdDSA', kid: 'second' }, token))
    assert.equal(keys.loads, 2)
    await writeFile(file, JSON.stringify({ keys: [second.jwk] }))
    now = 600_000
    assert.ok(await keys.resolve({ alg: 'ES256', kid: 'first' }, token), 'not yet past the maximum age')
    now = 631_001
    await assert.rejects(keys.resolve({ alg: 'ES256', kid: 'first' }, token), 'removed from the set, past the maximum age')
    assert.deepEqual(outcomes, [true, true, true])
  })

  it('a failed load keeps the keys there were; with none loaded, tokens fail with JwksUnavailableError', async () => {
    const key = await identityProviderKey('RS256', 'kept')
    const file = join(dir.path, 'changing.json')
    await writeFile(file, JSON.stringify({ keys: [key.jwk] }))
    let now = 0
    const keys = new JwksKeys({ source: file, refreshCooldownMs: 1_000, maxAgeMs: 10_000, now: () => now })
    await keys.load()
    await writeFile(file, 'not json')
    now = 20_000
    assert.ok(await keys.resolve({ alg: 'RS256', kid: 'kept' }, { payload: '', signature: '' }), 'the cached key still verifies')
    const missing = new JwksKeys({ source: join(dir.path, 'absent.json'), refreshCooldownMs: 1_000, maxAgeMs: 10_000, now: () => now })
    assert.equal(await missing.load(), false)
    await assert.rejects(missing.resolve({ alg: 'RS256', kid: 'kept' }, { payload: '', signature: '' }), JwksUnavailableError)
  })
})
