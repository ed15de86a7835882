import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import fc from 'fast-check'
import type { WebsocketProvider } from 'y-websocket'
import * as Y from 'yjs'
import { DocumentWriter, openStore } from '../persistence/index.js'
import { canonicalState, canonicalUpdate, converged, destroy, provider, synced } from './harness/clients.js'
import { startServer, tempDir } from './harness/server.js'
import { until } from './harness/wait.js'

/**
 * Replay a failure with the seed (and path) the run printed:
 *   WEFT_PROPERTY_SEED=123 [WEFT_PROPERTY_PATH=4:1] node --test dist/test/convergence-property.test.js
 * WEFT_PROPERTY_SHRINK=1 also shrinks a failure (each shrink step starts a server: slow).
 */
const SEED = process.env.WEFT_PROPERTY_SEED !== undefined ? Number(process.env.WEFT_PROPERTY_SEED) : (Date.now() ^ (Math.random() * 0x100000000)) | 0
const PATH = process.env.WEFT_PROPERTY_PATH
const RUNS = Number(process.env.WEFT_PROPERTY_RUNS ?? 8)
const MAX_CLIENTS = 6
const MAX_OPS = 60
/** The longest pause a client takes before one of its operations: the schedule is part of the generated case. */
const MAX_OP_DELAY_MS = 6

type Op =
  | { kind: 'textInsert'; pos: number; text: string }
  | { kind: 'textDelete'; pos: number; len: number }
  | { kind: 'mapSet'; key: string; value: unknown }
  | { kind: 'mapDelete'; key: string }
  | { kind: 'arrayPush'; values: unknown[] }
  | { kind: 'arrayDelete'; pos: number; len: number }
  | { kind: 'disconnect' }
  | { kind: 'reconnect' }

interface Step {
  client: number
  delayMs: number
  op: Op
}

const key = fc.constantFrom('a', 'b', 'c', 'd', 'e')
const value = fc.oneof(fc.integer(), fc.string({ maxLength: 6 }), fc.boolean(), fc.constant(null), fc.array(fc.integer(), { maxLength: 3 }))
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('textInsert' as const), pos: fc.nat(), text: fc.string({ minLength: 1, maxLength: 8 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('textDelete' as const), pos: fc.nat(), len: fc.integer({ min: 1, max: 5 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('mapSet' as const), key, value }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('mapDelete' as const), key }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('arrayPush' as const), values: fc.array(value, { minLength: 1, maxLength: 3 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('arrayDelete' as const), pos: fc.nat(), len: fc.integer({ min: 1, max: 3 }) }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'disconnect' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'reconnect' as const }) },
)

const scenarioArb = fc.record({
  clients: fc.integer({ min: 3, max: MAX_CLIENTS }),
  steps: fc.array(
    fc.record({ client: fc.nat(MAX_CLIENTS - 1), delayMs: fc.integer({ min: 0, max: MAX_OP_DELAY_MS }), op: opArb }),
    { minLength: 10, maxLength: MAX_OPS },
  ),
})

function pause(ms: number): Promise<void> {
  // 0 still yields, so the clients' operations interleave with each other and with socket events.
  return new Promise((resolve) => (ms === 0 ? setImmediate(resolve) : setTimeout(resolve, ms)))
}

function apply(p: WebsocketProvider, op: Op): void {
  const doc = p.doc
  const text = doc.getText('text')
  const map = doc.getMap('map')
  const array = doc.getArray('array')
  switch (op.kind) {
    case 'textInsert':
      text.insert(op.pos % (text.length + 1), op.text)
      break
    case 'textDelete':
      if (text.length > 0) {
        const pos = op.pos % text.length
        text.delete(pos, Math.min(op.len, text.length - pos))
      }
      break
    case 'mapSet':
      map.set(op.key, op.value)
      break
    case 'mapDelete':
      map.delete(op.key)
      break
    case 'arrayPush':
      array.push(op.values)
      break
    case 'arrayDelete':
      if (array.length > 0) {
        const pos = op.pos % array.length
        array.delete(pos, Math.min(op.len, array.length - pos))
      }
      break
    case 'disconnect':
      if (p.shouldConnect) p.disconnect()
      break
    case 'reconnect':
      if (!p.shouldConnect) p.connect()
      break
  }
}

/** Runs one case; returns the converged state. */
async function runScenario(scenario: { clients: number; steps: Step[] }, room: string): Promise<Uint8Array> {
  const dir = await tempDir('weft-property-')
  const providers: WebsocketProvider[] = []
  const weft = await startServer({ data: dir.path })
  let stopped = false
  try {
    for (let i = 0; i < scenario.clients; i++) providers.push(provider(weft.url, room))
    await Promise.all(providers.map((p) => synced(p)))
    // Each client runs its own operations, in order, concurrently with the others.
    await Promise.all(
      providers.map(async (p, index) => {
        for (const step of scenario.steps) {
          if (step.client % scenario.clients !== index) continue
          await pause(step.delayMs)
          apply(p, step.op)
        }
      }),
    )
    for (const p of providers) if (!p.shouldConnect) p.connect()
    await Promise.all(providers.map((p) => synced(p)))
    const clientDocs = providers.map((p) => p.doc)
    const state = await converged(clientDocs, 'every client to converge')
    await until(() => {
      const doc = weft.server.loadedRoom(room)?.doc
      return doc !== undefined && Buffer.from(canonicalState(doc)).equals(Buffer.from(state))
    }, 'the server document to equal the clients’')
    // Converged at one instant; no client changes after that, so the state must still hold for all.
    for (const doc of clientDocs) assert.deepEqual(canonicalState(doc), state)

    destroy(...providers.splice(0))
    await weft.stop()
    stopped = true
    const store = await openStore(dir.path)
    const writer = new DocumentWriter(store, { persistWindowMs: 0 })
    try {
      const stored = await writer.load(room)
      assert.ok(stored !== null, 'the room was not stored')
      assert.deepEqual(canonicalUpdate(stored), state, 'the stored document differs from the clients’')
    } finally {
      await writer.close()
    }
    return state
  } finally {
    destroy(...providers)
    if (!stopped) await weft.stop()
    await dir.remove()
  }
}

describe('convergence (property)', () => {
  it('clients, server and storage converge to byte-identical state under random concurrent edits', async (t) => {
    t.diagnostic(`fast-check seed ${SEED}${PATH !== undefined ? ` path ${PATH}` : ''} (replay: WEFT_PROPERTY_SEED=${SEED})`)
    let run = 0
    await fc.assert(
      fc.asyncProperty(scenarioArb, async (scenario) => {
        run++
        await runScenario(scenario, `property-${run}`)
      }),
      {
        seed: SEED,
        ...(PATH !== undefined ? { path: PATH } : {}),
        numRuns: RUNS,
        endOnFailure: process.env.WEFT_PROPERTY_SHRINK !== '1',
      },
    )
    assert.equal(run, RUNS)
  })

  it('edits made while disconnected reach everyone, the server and storage after the reconnect', async () => {
    const state = await runScenario(
      {
        clients: 3,
        steps: [
          { client: 0, delayMs: 0, op: { kind: 'disconnect' } },
          { client: 0, delayMs: 0, op: { kind: 'textInsert', pos: 0, text: 'offline ' } },
          { client: 0, delayMs: 0, op: { kind: 'mapSet', key: 'a', value: 'offline' } },
          { client: 1, delayMs: 0, op: { kind: 'textInsert', pos: 0, text: 'online' } },
          { client: 2, delayMs: 0, op: { kind: 'mapSet', key: 'a', value: 'online' } },
          { client: 2, delayMs: 0, op: { kind: 'arrayPush', values: [1, 2] } },
        ],
      },
      'offline-edits',
    )
    const doc = new Y.Doc()
    Y.applyUpdate(doc, state)
    const text = doc.getText('text').toString()
    assert.ok(text.includes('offline ') && text.includes('online'), text)
    assert.deepEqual(doc.getArray('array').toJSON(), [1, 2])
    assert.ok(['offline', 'online'].includes(doc.getMap('map').get('a') as string))
  })
})
