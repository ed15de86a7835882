import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import * as Y from 'yjs'
import {
  decodeAwarenessUpdate,
  decodeHocuspocusMessage,
  decodeYMessage,
  encodeAwareness,
  encodeAwarenessUpdate,
  encodeHocuspocusQueryAwareness,
  encodeHocuspocusSyncStep1,
  encodeQueryAwareness,
  encodeSyncStep1,
  type AwarenessEntry,
} from '../protocol/index.js'
import { awarenessEntries, RawClient } from './harness/clients.js'
import { metricValue } from './harness/metrics.js'
import { clockRange, step2Of, stateVectorAt, withRawClients, writeTextDocument } from './harness/sync-replies.js'
import { eventually, until } from './harness/wait.js'

// A message of a few bytes that asks for everything: query-awareness (every presence state of
// the room, up to 8 MiB) and sync step 1 (a whole document for a state vector that knows
// nothing). Sent 500 times a second they once took weft to 7 and 13 GB in 6 s. Now a room's
// awareness answer is encoded once per change and shared, one asker gets one answer a second,
// and a document's repeated sync step 1s on one connection are answered once a second and not
// while the last big reply is on its way, the newest state vector then.

/** A state of `bytes` characters for client `clientId`. */
function entry(clientId: number, bytes: number, clock = 1): AwarenessEntry {
  return { clientId, clock, state: JSON.stringify({ user: { name: 'p'.repeat(bytes) } }) }
}

describe('floods of messages that ask for everything', () => {
  it('y-websocket query-awareness: 50 at once get one answer, 49 are counted; every newcomer and answer has the states as they are now', async () => {
    await withRawClients({}, async (weft, clients) => {
      const owner = await RawClient.open(`${weft.url}/presence-flood`)
      clients.push(owner)
      owner.send(encodeAwareness(encodeAwarenessUpdate([entry(101, 20_000), entry(102, 20_000)])))
      // The owner hears its states back once their broadcast is out: none is on its way to the asker.
      await owner.frame((frame) => (awarenessEntries(frame)?.length ?? 0) === 2, 'the owner’s echo')

      const asker = await RawClient.open(`${weft.url}/presence-flood`)
      clients.push(asker)
      await asker.frame((frame) => (awarenessEntries(frame)?.length ?? 0) === 2, 'the newcomer’s states')
      const seen = asker.frames.length
      for (let i = 0; i < 50; i++) asker.send(encodeQueryAwareness())
      const refused = async (): Promise<number> => (await metricValue(weft.http, 'weft_awareness_refused_total', '{reason="query-repeated"}')) ?? 0
      await eventually(async () => (await refused()) >= 49, 'the queries to be handled')
      const answers = (): Uint8Array[] => asker.frames.slice(seen).filter((frame) => awarenessEntries(frame) !== null)
      await until(() => answers().length === 1, 'the one answer')
      assert.equal(await refused(), 49, 'every other query was refused and counted')
      assert.deepEqual(awarenessEntries(answers()[0] as Uint8Array)?.map((e) => e.clientId).sort(), [101, 102])

      // A change: the next newcomer and the next answer have it (the shared encoding was dropped).
      owner.send(encodeAwareness(encodeAwarenessUpdate([entry(101, 10, 2)])))
      await until(() => asker.frames.slice(seen).some((frame) => awarenessEntries(frame)?.some((e) => e.clientId === 101 && e.clock === 2) === true), 'the change to reach the asker')
      const late = await RawClient.open(`${weft.url}/presence-flood`)
      clients.push(late)
      const welcome = await late.frame((frame) => awarenessEntries(frame) !== null, 'the late newcomer’s states')
      const states = new Map((awarenessEntries(welcome) ?? []).map((e) => [e.clientId, e]))
      assert.equal(states.get(101)?.clock, 2, 'the newcomer gets the state after the change')
      assert.equal(states.get(102)?.clock, 1)
    })
  })

  it('y-websocket sync step 1: 200 made-up state vectors from a client that does not read make one reply, then one for the newest once it reads; nothing else', async () => {
    await withRawClients({}, async (weft, clients) => {
      const doc = await writeTextDocument(weft, 'sync-flood', 8)
      const total = Y.getState(doc.store, doc.clientID)
      const flooder = await RawClient.open(`${weft.url}/sync-flood`)
      clients.push(flooder)
      await flooder.frame((frame) => decodeYMessage(frame).kind === 'sync-step-1', 'the server’s sync step 1')
      // Stop reading: the first (8 MiB) reply stays on its way.
      flooder.socket.pause()
      const asks = Array.from({ length: 200 }, (_, i) => stateVectorAt(doc, Math.floor((i * total) / 400)))
      for (const stateVector of asks) flooder.send(encodeSyncStep1(stateVector))
      await eventually(async () => ((await metricValue(weft.http, 'weft_sync_asks_deferred_total')) ?? 0) >= 199, 'the asks to be handled')
      assert.equal(await metricValue(weft.http, 'weft_sync_asks_deferred_total'), 199, 'every ask after the first waits')

      flooder.socket.resume()
      const replies = (): Uint8Array[] => flooder.frames.map(step2Of).filter((update): update is Uint8Array => update !== null)
      await until(() => replies().length === 2, 'the reply to the newest ask', 20_000)
      assert.deepEqual(clockRange(doc, replies()[0] as Uint8Array), [0, total], 'the first ask is answered as it came')
      assert.deepEqual(clockRange(doc, replies()[1] as Uint8Array), [Math.floor((199 * total) / 400), total], 'the waiting ones are answered once, for the newest')
      // One more ask: its reply comes next, so nothing else came in between.
      flooder.send(encodeSyncStep1(Y.encodeStateVector(doc)))
      await until(() => replies().length === 3, 'the reply to the last ask', 20_000)
      assert.deepEqual(clockRange(doc, replies()[2] as Uint8Array), [0, 0], 'nothing is missing')
      assert.equal(await metricValue(weft.http, 'weft_sync_asks_deferred_total'), 200)
    })
  })

  it('Hocuspocus: repeated SyncStep1 and QueryAwareness for one document are answered once a second, the newest state vector at the end', async () => {
    await withRawClients({}, async (weft, clients) => {
      const doc = await writeTextDocument(weft, 'hp-flood', 1)
      const total = Y.getState(doc.store, doc.clientID)
      const client = await RawClient.hocuspocusJoined(weft.url, 'hp-flood', 'open-mode')
      clients.push(client)
      const seen = client.frames.length
      const asks = Array.from({ length: 20 }, (_, i) => stateVectorAt(doc, Math.floor((i * total) / 40)))
      for (const stateVector of asks) client.send(encodeHocuspocusSyncStep1('hp-flood', stateVector))
      for (let i = 0; i < 20; i++) client.send(encodeHocuspocusQueryAwareness('hp-flood'))
      const decoded = (): ReturnType<typeof decodeHocuspocusMessage>[] =>
        client.frames.slice(seen).flatMap((frame) => {
          try {
            return [decodeHocuspocusMessage(frame)]
          } catch {
            return []
          }
        })
      const replies = (): Uint8Array[] => decoded().flatMap((m) => (m.kind === 'sync-step-2' ? [m.update] : []))
      const awarenessAnswers = (): number => decoded().filter((m) => m.kind === 'awareness' && decodeAwarenessUpdate(m.update).length === 0).length
      // The join's own step 1 was answered already: every one of these is a repeat.
      await until(() => replies().length === 1, 'the reply to the newest SyncStep1', 20_000)
      assert.deepEqual(clockRange(doc, replies()[0] as Uint8Array), [Math.floor((19 * total) / 40), total])
      assert.equal(await metricValue(weft.http, 'weft_sync_asks_deferred_total'), 20)
      await until(() => awarenessAnswers() === 1, 'the one QueryAwareness answer')
      assert.equal(await metricValue(weft.http, 'weft_awareness_refused_total', '{reason="query-repeated"}'), 19)
    })
  })
})
