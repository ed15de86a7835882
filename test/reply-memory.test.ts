import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import type { Socket } from 'node:net'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import * as Y from 'yjs'
import type { DocumentWriter } from '../persistence/index.js'
import { decodeHocuspocusMessage, decodeYMessage, encodeAwareness, encodeAwarenessUpdate, encodeHocuspocusClientAuthToken, encodeHocuspocusSyncStep1, encodeSyncStep1 } from '../protocol/index.js'
import { ReplyMemory } from '../server/reply-memory.js'
import { canonicalState, hocuspocusClient, RawClient } from './harness/clients.js'
import { metricValue } from './harness/metrics.js'
import { tempDir, type InProcessServer } from './harness/server.js'
import { makeCertificate } from './harness/tls.js'
import { clockRange, holdLoads, step2Of, stateVectorAt, withRawClients, writeTextDocument } from './harness/sync-replies.js'
import { postUpdateStatus } from './harness/http.js'
import { eventually, until, withDeadline } from './harness/wait.js'
import { WebSocket } from 'ws'

// The memory big sync replies hold: each distinct reply counts once until it is out of every
// socket holding it, bounded server-wide and per address (--max-sync-reply-bytes[-per-ip]); an
// ask whose big reply does not fit waits. A reader that takes none of its big reply for
// --send-timeout-ms is closed with 1013 and the memory given back.

const MiB = 1024 * 1024

/** A raw client of `room` that has the server's sync step 1 and reads nothing more. */
async function stalledReader(weft: InProcessServer, room: string, clients: RawClient[]): Promise<RawClient> {
  const client = await RawClient.open(`${weft.url}/${room}`)
  clients.push(client)
  await client.frame((frame) => decodeYMessage(frame).kind === 'sync-step-1', 'the server’s sync step 1')
  client.socket.pause()
  return client
}

const heldBytes = async (weft: InProcessServer): Promise<number> => (await metricValue(weft.http, 'weft_sync_reply_bytes')) ?? -1

describe('reply memory', () => {
  it('counts a shared reply once, admits one reply alone past the bound, and bounds each address', () => {
    const memory = new ReplyMemory({ maxSyncReplyBytes: 10, maxSyncReplyBytesPerIp: 6 })
    assert.ok(memory.admits('a', 50), 'nothing held: one reply alone always goes')
    const big = new Uint8Array(8)
    memory.hold(big, 'a')
    memory.hold(big, 'b')
    assert.equal(memory.heldBytes, 8, 'two holders of one buffer')
    assert.ok(!memory.admits('c', 3), 'past the server-wide bound')
    assert.ok(memory.admits('c', 2))
    assert.ok(!memory.admits('a', 1), 'a is past its own bound')
    memory.release(big)
    assert.equal(memory.heldBytes, 8, 'still held by the other')
    memory.release(big)
    assert.equal(memory.heldBytes, 0)
    assert.ok(memory.admits('a', 6))
  })

  it('waiting asks get memory in turn by address: one address asking again and again does not keep another\'s one ask waiting', () => {
    let now = 0
    const memory = new ReplyMemory({ maxSyncReplyBytes: 10, maxSyncReplyBytesPerIp: 10 }, () => now)
    const held = new Uint8Array(10)
    memory.hold(held, 'x')
    // Everything is taken: a's three connections ask first, then b's one. Map order is the order
    // in which they look again below: a's first, as their timers may well fire.
    const waiters = new Map<object, string>([[{}, 'a'], [{}, 'a'], [{}, 'a'], [{}, 'b']])
    for (const [waiter, ip] of waiters) assert.equal(memory.admits(ip, 6, waiter), false)
    assert.equal(memory.waitingAsks, 4)
    const order: string[] = []
    /** Memory is given back; the waiting asks look again until one is admitted, which then holds it. */
    const freeOnce = (): void => {
      memory.release(held)
      now += 100
      for (const [waiter, ip] of waiters) {
        if (!memory.admits(ip, 6, waiter)) continue
        order.push(ip)
        waiters.delete(waiter)
        break
      }
      memory.hold(held, 'x')
    }
    freeOnce()
    freeOnce()
    assert.deepEqual(order, ['a', 'b'], 'a waited longest, then b, though a\'s asks look first')
    freeOnce()
    assert.deepEqual(order, ['a', 'b', 'a'])
    assert.equal(memory.waitingAsks, 1)
    // A waiter that stopped asking (its connection still sends an older reply) keeps no one waiting.
    const quiet = {}
    assert.equal(memory.admits('c', 6, quiet), false)
    now += 1000
    memory.release(held)
    assert.ok(memory.admits('d', 6, {}), 'c and a stopped asking: d goes')
    memory.forget(quiet)
    for (const waiter of waiters.keys()) memory.forget(waiter)
    assert.equal(memory.waitingAsks, 0)
  })

  it('a big reply that does not fit waits until a held one is out; a reply already built (same state vector) goes at once', async () => {
    await withRawClients({ maxSyncReplyBytes: 12 * MiB, sendTimeoutMs: 60_000 }, async (weft, clients) => {
      const doc = await writeTextDocument(weft, 'memory', 8)
      const total = Y.getState(doc.store, doc.clientID)
      const first = await stalledReader(weft, 'memory', clients)
      first.send(encodeSyncStep1(stateVectorAt(doc, 1)))
      await eventually(async () => (await heldBytes(weft)) > 7 * MiB, 'the first reply to be held')
      const held = await heldBytes(weft)

      const second = await RawClient.open(`${weft.url}/memory`)
      clients.push(second)
      second.send(encodeSyncStep1(stateVectorAt(doc, 2)))
      await eventually(async () => (await metricValue(weft.http, 'weft_sync_asks_deferred_total')) === 1, 'the second ask to wait')

      // The same state vector as the first: its reply is built already and shared.
      const same = await RawClient.open(`${weft.url}/memory`)
      clients.push(same)
      same.send(encodeSyncStep1(stateVectorAt(doc, 1)))
      const shared = step2Of(await same.frame((frame) => step2Of(frame) !== null, 'the shared reply', 20_000)) as Uint8Array
      assert.deepEqual(clockRange(doc, shared), [1, total])
      assert.equal(await heldBytes(weft), held, 'the shared reply is counted once')
      assert.equal(second.frames.filter((frame) => step2Of(frame) !== null).length, 0, 'the second reply was not built while memory was taken')

      first.socket.resume()
      const reply = step2Of(await second.frame((frame) => step2Of(frame) !== null, 'the second reply, once the first is out', 20_000)) as Uint8Array
      assert.deepEqual(clockRange(doc, reply), [2, total])
      await eventually(async () => (await heldBytes(weft)) === 0, 'every reply out and given back')
      assert.equal(await metricValue(weft.http, 'weft_sync_asks_deferred_total'), 1)
    })
  })

  it('asks waiting for memory take turns by address: one ask of another address goes before the rest of an address with many', async () => {
    await withRawClients({ maxSyncReplyBytes: 12 * MiB, sendTimeoutMs: 60_000, trustedProxies: ['127.0.0.1'] }, async (weft, clients) => {
      const doc = await writeTextDocument(weft, 'turns', 8)
      const open = async (address: string): Promise<RawClient> => {
        const client = await RawClient.open(`${weft.url}/turns`, { 'x-forwarded-for': address })
        clients.push(client)
        await client.frame((frame) => decodeYMessage(frame).kind === 'sync-step-1', 'the server’s sync step 1')
        return client
      }
      const first = await open('10.0.0.1')
      first.socket.pause()
      first.send(encodeSyncStep1(stateVectorAt(doc, 1)))
      await eventually(async () => (await heldBytes(weft)) > 7 * MiB, 'the first reply to be held')
      // Four more asks of the same address, then one of another, each with a state vector of its own.
      const waiting: Array<[string, RawClient]> = []
      for (const [i, address] of ['10.0.0.1', '10.0.0.1', '10.0.0.1', '10.0.0.1', '10.0.0.2'].entries()) {
        const client = await open(address)
        client.send(encodeSyncStep1(stateVectorAt(doc, 2 + i)))
        await eventually(async () => (await metricValue(weft.http, 'weft_sync_asks_deferred_total')) === i + 1, `ask ${i + 2} to wait`)
        waiting.push([address === '10.0.0.1' ? `a${i + 2}` : 'b', client])
      }
      const arrivals: string[] = []
      const replies = waiting.map(([name, client]) => client.frame((frame) => step2Of(frame) !== null, `the reply of ${name}`, 60_000).then(() => arrivals.push(name)))
      first.socket.resume()
      await Promise.all(replies)
      // One of a's goes first (a has waited longest), then b's, then a's others.
      assert.equal(arrivals.indexOf('b'), 1, `order of the replies: ${arrivals.join(', ')}`)
      await eventually(async () => (await heldBytes(weft)) === 0, 'every reply out and given back')
    })
  })

  it('a big reply still being merged off the event loop counts as held: another document\'s ask waits meanwhile', async () => {
    await withRawClients({ maxSyncReplyBytes: 12 * MiB, sendTimeoutMs: 60_000 }, async (weft, clients) => {
      const first = await writeTextDocument(weft, 'merging-first', 8)
      const second = await writeTextDocument(weft, 'merging-second', 8)
      // The merge of the first document's state is held until the test lets it go.
      const { loads, open, restore } = holdLoads(weft)
      try {
        const a = await stalledReader(weft, 'merging-first', clients)
        const b = await stalledReader(weft, 'merging-second', clients)
        const empty = Y.encodeStateVector(new Y.Doc())
        a.send(encodeSyncStep1(empty))
        await until(() => loads.length === 1, 'the first document’s merge to start')
        b.send(encodeSyncStep1(empty))
        await eventually(async () => (await metricValue(weft.http, 'weft_sync_asks_deferred_total')) === 1, 'the second document’s ask to wait')
        assert.deepEqual(loads, ['merging-first'], 'no merge for the second document yet')
        const reserved = await heldBytes(weft)
        assert.ok(reserved > 7 * MiB && reserved < 9 * MiB, `the merge's reply counted (${reserved} bytes)`)
        open()
        a.socket.resume()
        b.socket.resume()
        const replies = await Promise.all([a, b].map((client) => client.frame((frame) => step2Of(frame) !== null, 'a reply', 30_000)))
        assert.deepEqual(clockRange(first, step2Of(replies[0] as Uint8Array) as Uint8Array), [0, Y.getState(first.store, first.clientID)])
        assert.deepEqual(clockRange(second, step2Of(replies[1] as Uint8Array) as Uint8Array), [0, Y.getState(second.store, second.clientID)])
        await eventually(async () => (await heldBytes(weft)) === 0, 'both replies out and given back')
      } finally {
        restore()
      }
    })
  })

  it('a stock Hocuspocus provider whose ask waits for reply memory is not synced until its reply came', async () => {
    await withRawClients({ maxSyncReplyBytes: 12 * MiB, sendTimeoutMs: 60_000 }, async (weft, clients) => {
      await writeTextDocument(weft, 'full-first', 8)
      const second = await writeTextDocument(weft, 'full-second', 8)
      const reader = await stalledReader(weft, 'full-first', clients)
      reader.send(encodeSyncStep1(Y.encodeStateVector(new Y.Doc())))
      await eventually(async () => (await heldBytes(weft)) > 7 * MiB, 'the first reply held')
      const hocuspocus = hocuspocusClient(weft.url, 'full-second')
      try {
        await eventually(async () => (await metricValue(weft.http, 'weft_sync_asks_deferred_total')) === 1, 'the provider’s ask to wait')
        await eventually(async () => ((await metricValue(weft.http, 'weft_messages_total', '{direction="in",protocol="hocuspocus",type="sync_step2"}')) ?? 0) >= 1, 'the provider’s step 2')
        await (weft.server as unknown as { writer: DocumentWriter }).writer.flush('full-second')
        // Anything sent to the provider from now on comes after an acknowledgement sent until now.
        const other = await RawClient.open(`${weft.url}/full-second`)
        clients.push(other)
        other.send(encodeAwareness(encodeAwarenessUpdate([{ clientId: 4242, clock: 1, state: '{"probe":true}' }])))
        const provider = hocuspocus.provider
        await until(() => provider.awareness?.getStates().has(4242) === true, 'a later message to reach the provider')
        assert.equal(provider.isSynced, false, 'not synced while its reply waits')
        reader.socket.resume()
        await hocuspocus.synced(30_000)
        assert.deepEqual(canonicalState(provider.document), canonicalState(second))
      } finally {
        hocuspocus.destroy()
      }
    })
  })

  it('Hocuspocus: a second big document on a socket that reads nothing waits for the first reply to be out, then comes', async () => {
    await withRawClients({ maxSyncReplyBytes: 12 * MiB, sendTimeoutMs: 60_000 }, async (weft, clients) => {
      const first = await writeTextDocument(weft, 'hp-first', 8)
      const second = await writeTextDocument(weft, 'hp-second', 8)
      const client = await RawClient.open(`${weft.url}/`)
      clients.push(client)
      client.socket.pause()
      const empty = Y.encodeStateVector(new Y.Doc())
      for (const room of ['hp-first', 'hp-second']) {
        client.send(encodeHocuspocusClientAuthToken(room, 'open-mode', 'raw-test'))
        client.send(encodeHocuspocusSyncStep1(room, empty))
      }
      await eventually(async () => (await metricValue(weft.http, 'weft_sync_asks_deferred_total')) === 1, 'the second document’s ask to wait')
      const held = await heldBytes(weft)
      assert.ok(held > 7 * MiB && held < 9 * MiB, `one reply held, not two (${held} bytes)`)

      client.socket.resume()
      const replies = new Map<string, Uint8Array>()
      await eventually(async () => {
        for (const frame of client.frames) {
          try {
            const message = decodeHocuspocusMessage(frame)
            if (message.kind === 'sync-step-2') replies.set(message.document, message.update)
          } catch {
            // not a document frame
          }
        }
        return replies.size === 2
      }, 'both replies', 20_000)
      assert.deepEqual(clockRange(first, replies.get('hp-first') as Uint8Array), [0, Y.getState(first.store, first.clientID)])
      assert.deepEqual(clockRange(second, replies.get('hp-second') as Uint8Array), [0, Y.getState(second.store, second.clientID)])
      await eventually(async () => (await heldBytes(weft)) === 0, 'both replies out and given back')
    })
  })

  it('with a small --send-queue-bytes a reply the socket takes at once is given back, and the next ask of its connection is answered', async () => {
    // A quarter of 8 KiB makes a reply of a few KiB big, yet the socket takes it without a 'drain'.
    await withRawClients({ sendQueueBytes: 8 * 1024, repeatAnswerIntervalMs: 0 }, async (weft, clients) => {
      const doc = new Y.Doc()
      doc.getText('t').insert(0, 's'.repeat(6 * 1024))
      assert.equal(await postUpdateStatus(weft.http, 'small-queue', Y.encodeStateAsUpdate(doc)), 204)
      const { client, step2 } = await RawClient.joined(`${weft.url}/small-queue`)
      clients.push(client)
      assert.ok(step2.length > 2 * 1024, `the reply (${step2.length} bytes) is big for this queue`)
      await eventually(async () => (await heldBytes(weft)) === 0, 'the reply to be given back')
      client.send(encodeSyncStep1(Y.encodeStateVector(doc)))
      await until(() => client.frames.filter((frame) => step2Of(frame) !== null).length === 2, 'the answer to the next ask')
    })
  })

  it('a reader that takes none of its big reply for --send-timeout-ms is closed with 1013 and its reply given back', async () => {
    await withRawClients({ sendTimeoutMs: 1_500 }, async (weft, clients) => {
      const doc = await writeTextDocument(weft, 'stall', 8)
      const reader = await stalledReader(weft, 'stall', clients)
      reader.send(encodeSyncStep1(stateVectorAt(doc, 1)))
      await eventually(async () => (await heldBytes(weft)) > 7 * MiB, 'the reply to be held')
      await eventually(async () => (await metricValue(weft.http, 'weft_slow_consumer_closes_total')) === 1, 'the stalled reader to be closed', 15_000)
      // The close frame waits behind the reply; the socket is cut 5 s after the close.
      await eventually(async () => (await heldBytes(weft)) === 0, 'the reply to be given back', 15_000)
      // A reader that reads is not cut: the same reply, read at once, arrives whole.
      const { client, step2 } = await RawClient.joined(`${weft.url}/stall`)
      clients.push(client)
      assert.deepEqual(clockRange(doc, step2), [0, Y.getState(doc.store, doc.clientID)])
    })
  })

  for (const secure of [false, true]) {
    it(`a reader that reads slowly, ${secure ? 'over wss' : 'over ws'}, for longer than --send-timeout-ms is not cut: it gets the whole reply`, async () => {
      const dir = await tempDir('weft-slow-reader-')
      try {
        const tls = secure ? makeCertificate(dir.path) : null
        // Written through plain HTTP into LevelDB first: the TLS server below answers https only.
        const data = join(dir.path, 'data')
        let doc = new Y.Doc()
        await withRawClients({ data }, async (weft) => {
          doc = await writeTextDocument(weft, 'slow-reader', 14)
        })
        await withRawClients({ data, sendTimeoutMs: 3_000, ...(tls === null ? {} : { tlsCert: tls.cert, tlsKey: tls.key }) }, async (weft, clients) => {
          const url = `${secure ? 'wss' : 'ws'}://127.0.0.1:${weft.port}/slow-reader`
          const client = new RawClient(new WebSocket(url, tls === null ? {} : { ca: readFileSync(tls.cert) }))
          clients.push(client)
          await withDeadline(client.opened, 'the client to open')
          // Takes about 512 KiB, then stops for 300 ms: the 14 MiB reply takes about 9 s. The
          // kernel's buffers take the first 6 MiB or so; the rest leaves weft over 5 s, in steps
          // of about 2 MiB (Linux wakes a writer once half its send buffer is free).
          const raw = (client.socket as unknown as { _socket: Socket })._socket
          let taken = 0
          raw.on('data', (chunk: Buffer) => {
            taken += chunk.length
            if (taken < 512 * 1024) return
            taken = 0
            client.socket.pause()
            setTimeout(() => client.socket.resume(), 300).unref()
          })
          const started = performance.now()
          client.send(encodeSyncStep1(Y.encodeStateVector(new Y.Doc())))
          const reply = step2Of(await client.frame((frame) => step2Of(frame) !== null, 'the whole reply', 60_000)) as Uint8Array
          assert.ok(performance.now() - started > 3_000, 'the reply took longer than the send timeout')
          assert.deepEqual(clockRange(doc, reply), [0, Y.getState(doc.store, doc.clientID)])
          // Still connected: one more ask is answered (a connection being closed reads nothing more).
          client.send(encodeSyncStep1(Y.encodeStateVector(doc)))
          const replies = (): number => client.frames.filter((frame) => step2Of(frame) !== null).length
          await until(() => replies() === 2 || client.closeCode !== null, 'the answer to one more ask, or a close')
          assert.equal(client.closeCode, null, 'still connected')
          // Over plain HTTP only: the TLS server answers https alone.
          if (!secure) assert.equal((await metricValue(weft.http, 'weft_slow_consumer_closes_total')) ?? 0, 0)
        })
      } finally {
        await dir.remove()
      }
    })
  }
})
