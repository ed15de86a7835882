import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import * as Y from 'yjs'
import { MemoryBus, MemoryRelay, type RelayRoomHandlers } from '../cluster/index.js'
import { RedisNamespace, compareStreamIds, epochTag, nextStreamId } from '../cluster/keys.js'
import { decodeRelayMessage, encodeRelayMessage, type RelayMessage } from '../cluster/relay-message.js'
import { missingFrom } from '../crdt/state-diff.js'
import type { AwarenessEntry } from '../protocol/index.js'
import { until } from './harness/wait.js'

/** The decoder hands out views into the message buffer; compare their bytes as plain Uint8Arrays. */
function plain(message: RelayMessage | null): RelayMessage | null {
  if (message?.kind === 'update') return { ...message, update: Uint8Array.from(message.update) }
  if (message?.kind === 'awareness') return { ...message, awareness: Uint8Array.from(message.awareness) }
  return message
}

describe('relay message codec', () => {
  it('encodes to netstring fields after a kind byte (byte vectors)', () => {
    assert.equal(encodeRelayMessage({ kind: 'query', instance: 'i1', ts: 7 }).toString('latin1'), 'Q2:i11:7')
    assert.equal(encodeRelayMessage({ kind: 'gone', instance: 'é', ts: 12 }).toString('latin1'), 'G2:\xc3\xa92:12')
    const awareness = encodeRelayMessage({ kind: 'awareness', instance: 'x', ts: 1, awareness: Uint8Array.of(1, 2) })
    assert.deepEqual([...awareness], [0x41, 0x31, 0x3a, 0x78, 0x31, 0x3a, 0x31, 0x32, 0x3a, 1, 2])
  })

  it('decodes what the publish script builds, and what it encodes itself', () => {
    // 'U' .. ns(prev) .. ns(id) .. ns(instance) .. ns(ts) .. ns(update), as in the Lua script
    const fromLua = Buffer.concat([Buffer.from('U0:3:1-05:inst:2:993:', 'latin1'), Buffer.of(0, 0, 1)])
    assert.deepEqual(plain(decodeRelayMessage(fromLua)), { kind: 'update', prev: '', id: '1-0', instance: 'inst:', ts: 99, update: Uint8Array.of(0, 0, 1) })
    for (const message of [
      { kind: 'update' as const, prev: '1-0', id: '1-1', instance: 'a:b{c}', ts: 5, update: Uint8Array.of(9, 8, 7) },
      { kind: 'awareness' as const, instance: '🚀', ts: 6, awareness: Uint8Array.of() },
      { kind: 'query' as const, instance: '', ts: 0 },
    ]) {
      assert.deepEqual(plain(decodeRelayMessage(encodeRelayMessage(message))), message)
    }
  })

  it('reads the epoch tag an update\'s ts may carry, which an older instance reads as a fraction of a millisecond', () => {
    const tagged = Buffer.concat([Buffer.from('U0:3:1-04:inst13:99.4294967295', 'latin1'), Buffer.from('3:', 'latin1'), Buffer.of(0, 0, 1)])
    assert.deepEqual(plain(decodeRelayMessage(tagged)), { kind: 'update', prev: '', id: '1-0', instance: 'inst', ts: 99, update: Uint8Array.of(0, 0, 1), epochTag: '4294967295' })
    // What the decoder before the tag did with the field: Number(ts).
    assert.ok(Math.abs(Number('99.4294967295') - 99) < 1)
    const message = { kind: 'update' as const, prev: '1-0', id: '1-1', instance: 'a', ts: 5, update: Uint8Array.of(9), epochTag: epochTag('lz1.abc') }
    assert.deepEqual(plain(decodeRelayMessage(encodeRelayMessage(message))), message)
    assert.match(message.epochTag, /^[0-9]{1,10}$/)
    assert.notEqual(epochTag('lz1.abc'), epochTag('lz1.abd'))
    // A tag that is not digits is no tag; the message still counts.
    const odd = decodeRelayMessage(Buffer.from('U0:3:1-01:i4:99.x1:u', 'latin1'))
    assert.equal(odd?.kind === 'update' && odd.ts === 99 && odd.epochTag === undefined, true)
  })

  it('returns null for malformed or unknown messages', () => {
    for (const bad of ['', 'X1:a1:1', 'Q1:a', 'Q1:a1:1extra', 'Q99:a1:1', 'Qx:a1:1', 'U0:0:0:0:', 'Q12345678901:a']) {
      assert.equal(decodeRelayMessage(Buffer.from(bad, 'latin1')), null, JSON.stringify(bad))
    }
  })
})

describe('key layout and stream ids', () => {
  it('puts every room in its own hash tag, whatever the name holds', () => {
    const ns = new RedisNamespace()
    assert.deepEqual(ns.room('{a}:b c'), {
      log: 'weft:{e2F9OmIgYw}:log', doc: 'weft:{e2F9OmIgYw}:doc', last: 'weft:{e2F9OmIgYw}:last', channel: 'weft:0:{e2F9OmIgYw}:ch',
    })
    assert.notEqual(ns.room('a').log, ns.room('a ').log)
  })

  it('names keys by prefix and channels by prefix and DB number (pub/sub ignores DB numbers)', () => {
    const staging = new RedisNamespace('weft', 7)
    const prod = new RedisNamespace('weft', 6)
    const other = new RedisNamespace('other', 7)
    assert.equal(staging.room('r').log, prod.room('r').log, 'keys live in the DB, which already separates them')
    assert.notEqual(staging.room('r').channel, prod.room('r').channel)
    assert.notEqual(staging.room('r').channel, other.room('r').channel)
    assert.notEqual(staging.room('r').log, other.room('r').log)
    assert.equal(other.instance('a'), 'other:instance:a')
    assert.equal(other.epochKey, 'other:epoch')
    for (const bad of ['', 'a b', 'a*', '{x}', 'x'.repeat(65)]) assert.throws(() => new RedisNamespace(bad), RangeError, JSON.stringify(bad))
  })

  it('orders stream ids numerically and finds the next one', () => {
    assert.equal(compareStreamIds('', '0-0'), -1)
    assert.equal(compareStreamIds('9-0', '10-0'), -1)
    assert.equal(compareStreamIds('10-2', '10-10'), -1)
    assert.equal(compareStreamIds('10-2', '10-2'), 0)
    assert.equal(nextStreamId('1700000000000-41'), '1700000000000-42')
  })
})

describe('missingFrom', () => {
  it('finds structs and deletions the cluster lacks, and nothing when it has them', () => {
    const doc = new Y.Doc()
    doc.getText('t').insert(0, 'hello')
    const cluster = Y.encodeStateAsUpdate(doc)
    assert.equal(missingFrom(cluster, cluster), null)
    assert.equal(missingFrom(new Uint8Array([0, 0]), null), null)
    doc.getText('t').delete(0, 2)
    const afterDelete = Y.encodeStateAsUpdate(doc)
    assert.notEqual(missingFrom(afterDelete, cluster), null, 'a deletion the cluster lacks')
    assert.equal(missingFrom(afterDelete, afterDelete), null, 'a delete set the cluster has')
    doc.getText('t').insert(0, 'x')
    const missing = missingFrom(Y.encodeStateAsUpdate(doc), afterDelete) as Uint8Array
    const copy = new Y.Doc()
    Y.applyUpdate(copy, afterDelete)
    Y.applyUpdate(copy, missing)
    assert.equal(copy.getText('t').toString(), 'xllo')
  })
})

describe('MemoryRelay', () => {
  function member(relay: MemoryRelay, room: string): { doc: Y.Doc; seen: Map<string, AwarenessEntry[]>; local: AwarenessEntry[]; handlers: RelayRoomHandlers } {
    const doc = new Y.Doc()
    const seen = new Map<string, AwarenessEntry[]>()
    const local: AwarenessEntry[] = []
    const handlers: RelayRoomHandlers = {
      onUpdate: (update) => Y.applyUpdate(doc, update, relay),
      onAwareness: (entries, instance) => seen.set(instance, [...entries]),
      onInstanceGone: (instance) => seen.delete(instance),
      localAwareness: () => local,
      localState: () => Y.encodeStateAsUpdate(doc),
    }
    doc.on('update', (update: Uint8Array, origin: unknown) => {
      if (origin !== relay) relay.publishUpdate(room, update)
    })
    return { doc, seen, local, handlers }
  }

  it('relays updates and awareness between instances on one bus, and goodbyes on close', async () => {
    const bus = new MemoryBus()
    const a = new MemoryRelay(bus, 'a')
    const b = new MemoryRelay(bus, 'b')
    const ma = member(a, 'r')
    const mb = member(b, 'r')
    // Loaded from local storage: not an edit, so not published by the update listener.
    ma.doc.transact(() => ma.doc.getText('t').insert(0, 'local before join'), a)
    const fromCluster = await a.joinRoom('r', Y.encodeStateAsUpdate(ma.doc), ma.handlers)
    assert.equal(fromCluster, null)
    const state = await b.joinRoom('r', null, mb.handlers)
    Y.applyUpdate(mb.doc, state as Uint8Array, b)
    assert.equal(mb.doc.getText('t').toString(), 'local before join')
    mb.doc.getText('t').insert(0, '> ')
    await until(() => ma.doc.getText('t').toString() === '> local before join', 'update relayed')
    a.publishAwareness('r', [{ clientId: 1, clock: 1, state: '{"u":1}' }])
    await until(() => mb.seen.has('a'), 'awareness relayed')
    await a.close()
    await a.close()
    await until(() => !mb.seen.has('a'), 'goodbye relayed')
    assert.deepEqual(b.stats(), { published: 1, received: 1, healed: 0, commands: 0, checks: 0, compacted: 0, heldBytes: 0 })
  })
})
