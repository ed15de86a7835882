import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads'
import * as Y from 'yjs'
import * as awarenessProtocol from 'y-protocols/awareness'
import {
  decodeAwarenessUpdate,
  decodeHocuspocusMessage,
  decodeYMessage,
  encodeAwareness,
  encodeAwarenessUpdate,
  encodeHocuspocusAwareness,
  encodeHocuspocusClientAuthToken,
  encodeHocuspocusClientBroadcastStateless,
  encodeHocuspocusClientClose,
  encodeHocuspocusClientPong,
  encodeHocuspocusQueryAwareness,
  encodeHocuspocusStateless,
  encodeHocuspocusSyncStep1,
  encodeHocuspocusSyncStep2,
  encodeHocuspocusSyncUpdate,
  encodePermissionDenied,
  encodeQueryAwareness,
  encodeSyncStep1,
  encodeSyncStep2,
  encodeSyncUpdate,
  isValidRoomName,
  MAX_ROOM_NAME_BYTES,
  ProtocolError,
  roomFromPath,
  validateStateVector,
  validateUpdate,
  type AwarenessEntry,
  type HocuspocusMessage,
  type YMessage,
} from '../protocol/index.js'
import { concat, envNumber, randomBytes, rngFor as seededRng, varUint, type Rng } from './harness/fuzz.js'

// Randomized fuzzing of every decoder, in both directions, with a fixed seed.
//
// The invariants, per call: it returns, or it throws ProtocolError with close code 1002 or 1007;
// never another exception, never a hang. What a validator accepts must be safe to hand on: an
// update validateUpdate accepts applies to a fresh Y.Doc, a state vector validateStateVector
// accepts works in Y.encodeStateAsUpdate, an awareness update decodeAwarenessUpdate accepts goes
// through y-protocols' applyAwarenessUpdate. And a decoder given a view into a larger buffer
// decides exactly as it does on a copy (ws hands out views into pooled memory).
//
// The work runs in a worker thread, so a decoder that loops forever (yjs#479, yjs#498) is caught:
// the main thread gives every batch a deadline, terminates the worker when it passes, and reads
// the number of the case it was stuck on from shared memory.
//
// Replay: WEFT_FUZZ_SEED (a number) and WEFT_FUZZ_CASES (default 120000) override the run. Every
// case is built from (seed, index) alone, so one failing case can be rebuilt without the others.
// A failing case is written to test/fuzz-corpus/ as found-*.json; the corpus is replayed first on
// every run. Commit those files: they are the regression suite.

export type Target =
  | 'decodeYMessage'
  | 'decodeAwarenessUpdate'
  | 'decodeHocuspocusMessage'
  | 'validateUpdate'
  | 'validateStateVector'
  | 'roomFromPath'
  /** decodeYMessage, then the payload check the server runs for that kind. */
  | 'ywebsocket-frame'
  /** decodeHocuspocusMessage, then the payload check the server runs for that kind. */
  | 'hocuspocus-frame'

const BYTE_TARGETS: readonly Target[] = [
  'decodeYMessage',
  'decodeAwarenessUpdate',
  'decodeHocuspocusMessage',
  'validateUpdate',
  'validateStateVector',
  'ywebsocket-frame',
  'hocuspocus-frame',
]

/** One replayable case: bytes for the byte decoders, text for roomFromPath. */
export interface FuzzCase {
  target: Target
  bytes?: Uint8Array
  text?: string
  /** For corpus entries: what must happen, beyond the general invariants. */
  expect?: 'reject' | 'accept' | 'no-crash'
  closeCode?: 1002 | 1007
}

export interface CorpusEntry {
  what: string
  target: Target
  /** The input: hex, optionally followed by `repeatHex` × `repeatCount` and `suffixHex` (for large inputs). */
  hex?: string
  repeatHex?: string
  repeatCount?: number
  suffixHex?: string
  /** roomFromPath's input. */
  text?: string
  expect: 'reject' | 'accept' | 'no-crash'
  closeCode?: 1002 | 1007
  found?: { seed: number; index: number; error: string }
}

interface Failure {
  index: number
  target: Target
  hex?: string
  text?: string
  error: string
}

const DEFAULT_SEED = 0x5eed_0007
const DEFAULT_CASES = 120_000
const ROUND_TRIPS = 12_000
const BATCH = 4_000
/** A batch of 4,000 cases takes well under a second; ten is a hang, not a slow machine. */
const BATCH_DEADLINE_MS = 10_000

// ---------------------------------------------------------------------------------------------
// Deterministic randomness

const rngFor = (seed: number, index: number): Rng => seededRng(seed, index, 0x9e3779b9)

// ---------------------------------------------------------------------------------------------
// Bytes

export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex')
}

function fromHex(hex: string): Uint8Array {
  return new Uint8Array(Buffer.from(hex, 'hex'))
}




/** Long varuints, including the 9- and 10-byte forms past 2^53 and 2^64 that lib0 would round. */
const HUGE_VARUINTS: readonly Uint8Array[] = [
  varUint(0x7fffffff),
  varUint(0xffffffff),
  varUint(2 ** 40),
  varUint(Number.MAX_SAFE_INTEGER),
  Uint8Array.of(0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10), // 2^53
  Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01),
  Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01),
  Uint8Array.of(0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00),
]

/** One to three mutations of a valid input: the shapes a broken or hostile peer produces. */
function mutate(rng: Rng, input: Uint8Array): Uint8Array {
  let bytes: Uint8Array = Uint8Array.from(input)
  const rounds = 1 + rng.int(3)
  for (let r = 0; r < rounds; r++) {
    const at = bytes.length === 0 ? 0 : rng.int(bytes.length)
    switch (rng.int(11)) {
      case 0: // bit flips
        if (bytes.length > 0) for (let k = 1 + rng.int(3); k > 0; k--) bytes[rng.int(bytes.length)]! ^= 1 << rng.int(8)
        break
      case 1: // a random byte
        if (bytes.length > 0) bytes[at] = rng.int(256)
        break
      case 2: // truncation
        bytes = bytes.subarray(0, at)
        break
      case 3: // a range deleted
        bytes = concat(bytes.subarray(0, at), bytes.subarray(Math.min(bytes.length, at + 1 + rng.int(8))))
        break
      case 4: // random bytes inserted
        bytes = concat(bytes.subarray(0, at), randomBytes(rng, 1 + rng.int(6)), bytes.subarray(at))
        break
      case 5: // a range duplicated
        bytes = concat(bytes.subarray(0, at + 1), bytes.subarray(at, Math.min(bytes.length, at + 1 + rng.int(16))), bytes.subarray(at + 1))
        break
      case 6: // an inflated length or count field: one byte replaced by a huge varuint
        bytes = concat(bytes.subarray(0, at), rng.pick(HUGE_VARUINTS), bytes.subarray(at + 1))
        break
      case 7: // a huge varuint inserted
        bytes = concat(bytes.subarray(0, at), rng.pick(HUGE_VARUINTS), bytes.subarray(at))
        break
      case 8: // a zero-length field
        if (bytes.length > 0) bytes[at] = 0
        break
      case 9: // a small length off by a few
        if (bytes.length > 0) bytes[at] = (bytes[at]! + rng.pick([1, 2, 127, 255])) & 0xff
        break
      default: // trailing garbage
        bytes = concat(bytes, randomBytes(rng, 1 + rng.int(4)))
    }
  }
  return bytes
}

// ---------------------------------------------------------------------------------------------
// Valid inputs to mutate, built once per worker from the seed

interface Pool {
  updates: Uint8Array[]
  stateVectors: Uint8Array[]
  awareness: Uint8Array[]
  yFrames: Uint8Array[]
  hocuspocusFrames: Uint8Array[]
  /** A document with content, for encodeStateAsUpdate against accepted state vectors. */
  doc: Y.Doc
}

const WORDS = ['', 'a', 'héllo', '😀', 'x'.repeat(40), 'key', 'null', '{"a":1}', '\u0000', 'ä\u200bz']

function anyValue(rng: Rng, depth = 0): unknown {
  switch (rng.int(depth > 2 ? 6 : 8)) {
    case 0: return rng.int(1000) - 500
    case 1: return rng.next() * 1e6
    case 2: return rng.pick(WORDS)
    case 3: return rng.chance(0.5)
    case 4: return null
    case 5: return randomBytes(rng, rng.int(5))
    case 6: return Array.from({ length: rng.int(4) }, () => anyValue(rng, depth + 1))
    default: return Object.fromEntries(Array.from({ length: rng.int(4) }, (_, i) => [`k${i}`, anyValue(rng, depth + 1)]))
  }
}

function buildPool(seed: number): Pool {
  const rng = rngFor(seed, -1)
  const updates: Uint8Array[] = []
  const stateVectors: Uint8Array[] = []
  const docs: Y.Doc[] = []
  for (let d = 0; d < 24; d++) {
    const doc = new Y.Doc({ guid: `fuzz-${d}` })
    doc.clientID = 1 + rng.int(2 ** 31)
    doc.on('update', (update: Uint8Array) => updates.push(update))
    const text = doc.getText('text')
    const map = doc.getMap('map')
    const array = doc.getArray<unknown>('array')
    const xml = doc.getXmlFragment('xml')
    for (let op = 0; op < 12; op++) {
      doc.transact(() => {
        switch (rng.int(9)) {
          case 0: text.insert(rng.int(text.length + 1), rng.pick(WORDS) + 'abc'); break
          case 1: if (text.length > 0) text.delete(rng.int(text.length), 1 + rng.int(Math.min(3, text.length))); break
          case 2: text.format(0, Math.max(0, text.length), { bold: rng.chance(0.5) }); break
          case 3: map.set(`k${rng.int(6)}`, anyValue(rng)); break
          case 4: map.delete(`k${rng.int(6)}`); break
          case 5: array.insert(rng.int(array.length + 1), [anyValue(rng), anyValue(rng)]); break
          case 6: map.set('nested', new Y.Map([['n', rng.int(9)]])); break
          case 7: {
            const element = new Y.XmlElement('p')
            element.insert(0, [new Y.XmlText('hi')])
            xml.insert(0, [element])
            break
          }
          default: map.set('sub', new Y.Doc({ guid: `sub-${d}-${op}` }))
        }
      })
    }
    // A second client editing the same doc, so updates carry origins from other clients.
    const peer = new Y.Doc()
    peer.clientID = 1 + rng.int(2 ** 31)
    Y.applyUpdate(peer, Y.encodeStateAsUpdate(doc))
    peer.getText('text').insert(0, 'peer')
    peer.getArray('array').delete(0, Math.min(1, peer.getArray('array').length))
    Y.applyUpdate(doc, Y.encodeStateAsUpdate(peer, Y.encodeStateVector(doc)))
    updates.push(Y.encodeStateAsUpdate(doc))
    stateVectors.push(Y.encodeStateVector(doc), Y.encodeStateVector(peer))
    peer.destroy()
    docs.push(doc)
  }
  updates.push(Uint8Array.of(0, 0))
  stateVectors.push(Uint8Array.of(0))

  const awareness: Uint8Array[] = []
  for (let i = 0; i < 40; i++) {
    const entries: AwarenessEntry[] = Array.from({ length: 1 + rng.int(3) }, () => ({
      clientId: rng.int(2 ** 32),
      clock: rng.int(100),
      state: rng.chance(0.2) ? 'null' : JSON.stringify({ user: { name: rng.pick(WORDS), color: '#ff0000' }, cursor: anyValue(rng) }),
    }))
    awareness.push(encodeAwarenessUpdate(entries))
  }

  const yFrames: Uint8Array[] = [encodeQueryAwareness(), encodePermissionDenied('no')]
  const hocuspocusFrames: Uint8Array[] = [encodeHocuspocusClientPong(), encodeHocuspocusClientClose('doc')]
  for (let i = 0; i < 60; i++) {
    const update = rng.pick(updates)
    const sv = rng.pick(stateVectors)
    const aw = rng.pick(awareness)
    const name = rng.pick(['doc', 'room/ä', 'x\u0000session', ''])
    yFrames.push(encodeSyncStep1(sv), encodeSyncStep2(update), encodeSyncUpdate(update), encodeAwareness(aw))
    hocuspocusFrames.push(
      encodeHocuspocusSyncStep1(name, sv),
      encodeHocuspocusSyncStep2(name, update),
      encodeHocuspocusSyncUpdate(name, update),
      encodeHocuspocusAwareness(name, aw),
      encodeHocuspocusQueryAwareness(name),
      encodeHocuspocusStateless(name, rng.pick(WORDS)),
      encodeHocuspocusClientBroadcastStateless(name, rng.pick(WORDS)),
      encodeHocuspocusClientAuthToken(name, 'eyJhbGciOi.x.y', rng.chance(0.5) ? '4.8.0' : undefined),
    )
  }
  const doc = docs[0] as Y.Doc
  return { updates, stateVectors, awareness, yFrames, hocuspocusFrames, doc }
}

// ---------------------------------------------------------------------------------------------
// Case generation

const BASE64_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'

function byteInput(rng: Rng, target: Target, pool: Pool): Uint8Array {
  const strategy = rng.int(10)
  if (strategy === 0) return randomBytes(rng, rng.int(rng.chance(0.9) ? 24 : 600))
  if (strategy === 1) return new Uint8Array(0)
  if (strategy === 2 && (target === 'validateUpdate' || target === 'ywebsocket-frame')) {
    // The yjs#479 shape: some word read as base64, like Buffer.from('garbagedoc', 'base64').
    const word = Array.from({ length: 4 + rng.int(16) }, () => rng.pick([...BASE64_ALPHABET])).join('')
    const update = new Uint8Array(Buffer.from(word, 'base64'))
    return target === 'validateUpdate' ? update : encodeSyncUpdate(update)
  }
  const base = (() => {
    switch (target) {
      case 'validateUpdate': return rng.pick(pool.updates)
      case 'validateStateVector': return rng.pick(pool.stateVectors)
      case 'decodeAwarenessUpdate': return rng.pick(pool.awareness)
      case 'decodeHocuspocusMessage':
      case 'hocuspocus-frame': return rng.pick(pool.hocuspocusFrames)
      default: return rng.pick(pool.yFrames)
    }
  })()
  // Some valid inputs go through unchanged: the accepted side of each invariant needs cases too.
  return strategy === 3 ? base : mutate(rng, base)
}

const PATH_PIECES = ['a', 'room', '/', '%', '%2', '%2F', '%25', '%00', '%7F', '%C2%80', '%C3%A9', '%ED%A0%80', '%F0%9F%98%80', '%FF', '..', '?', '#', ' ', 'é', '😀', '\ud800', '\udc00', '\u0000', '\u009f', '\u200b']

function roomPath(rng: Rng): string {
  switch (rng.int(4)) {
    case 0: // every byte value, percent-encoded
      return '/' + Array.from(randomBytes(rng, 1 + rng.int(6)), (b) => `%${b.toString(16).padStart(2, '0')}`).join('')
    case 1: // random UTF-16 code units, lone surrogates included
      return (rng.chance(0.9) ? '/' : '') + String.fromCharCode(...Array.from({ length: 1 + rng.int(8) }, () => rng.int(0x10000)))
    case 2: // names around the 512-byte bound
      return '/' + rng.pick(['a', 'é', '😀', '%61']).repeat(rng.pick([128, 170, 171, 256, 511, 512, 513]))
    default:
      return (rng.chance(0.95) ? '/' : '') + Array.from({ length: rng.int(8) }, () => rng.pick(PATH_PIECES)).join('')
  }
}

function generateCase(seed: number, index: number, pool: Pool): FuzzCase {
  const rng = rngFor(seed, index)
  const target = index % 8 === 7 ? 'roomFromPath' : (BYTE_TARGETS[index % 8] as Target)
  if (target === 'roomFromPath') return { target, text: roomPath(rng) }
  return { target, bytes: byteInput(rng, target, pool) }
}

// ---------------------------------------------------------------------------------------------
// Running one case

type Outcome = { ok: true; value: string } | { ok: false; code: number; message: string }

function outcomeOf(run: () => unknown): Outcome {
  try {
    return { ok: true, value: JSON.stringify(run(), (_k, v: unknown) => (v instanceof Uint8Array ? toHex(v) : v)) ?? 'undefined' }
  } catch (err) {
    if (err instanceof ProtocolError) return { ok: false, code: err.closeCode, message: err.message }
    throw err
  }
}

/** The server's y-websocket path: framing, then the payload check for that kind. */
function yWebsocketFrame(frame: Uint8Array): YMessage {
  const message = decodeYMessage(frame)
  if (message.kind === 'sync-step-1') validateStateVector(message.stateVector)
  if (message.kind === 'sync-step-2' || message.kind === 'sync-update') validateUpdate(message.update)
  if (message.kind === 'awareness') decodeAwarenessUpdate(message.update)
  return message
}

function hocuspocusFrame(frame: Uint8Array): HocuspocusMessage {
  const message = decodeHocuspocusMessage(frame)
  if (message.kind === 'sync-step-1') validateStateVector(message.stateVector)
  if (message.kind === 'sync-step-2' || message.kind === 'sync-update') validateUpdate(message.update)
  if (message.kind === 'awareness') decodeAwarenessUpdate(message.update)
  return message
}

function decoderOf(target: Target): (bytes: Uint8Array) => unknown {
  switch (target) {
    case 'decodeYMessage': return decodeYMessage
    case 'decodeAwarenessUpdate': return (bytes) => decodeAwarenessUpdate(bytes)
    case 'decodeHocuspocusMessage': return decodeHocuspocusMessage
    case 'validateUpdate': return (bytes) => validateUpdate(bytes)
    case 'validateStateVector': return validateStateVector
    case 'ywebsocket-frame': return yWebsocketFrame
    case 'hocuspocus-frame': return hocuspocusFrame
    case 'roomFromPath': throw new Error('roomFromPath takes text')
  }
}

/** Throws (a plain Error naming the broken invariant) when the case breaks one. */
function check(fuzzCase: FuzzCase, pool: Pool, awareness: awarenessProtocol.Awareness, viewCheck: boolean): void {
  const { target } = fuzzCase
  if (target === 'roomFromPath') {
    const text = fuzzCase.text ?? ''
    let room: string | null
    try {
      room = roomFromPath(text)
    } catch (err) {
      throw new Error(`roomFromPath threw ${String(err)}`, { cause: err })
    }
    if (room !== null) {
      if (!isValidRoomName(room)) throw new Error(`roomFromPath returned an invalid name ${JSON.stringify(room)}`)
      if (Buffer.byteLength(room) > MAX_ROOM_NAME_BYTES) throw new Error('roomFromPath returned a name over 512 bytes')
      if ([...room].some((ch) => ch.charCodeAt(0) <= 0x1f || (ch.charCodeAt(0) >= 0x7f && ch.charCodeAt(0) <= 0x9f))) throw new Error('roomFromPath returned a name with a control character')
      if (Buffer.from(room).toString() !== room) throw new Error('roomFromPath returned a name that is not well-formed UTF-16')
    }
    expectOutcome(fuzzCase, room === null ? { ok: false, code: 0, message: 'null' } : { ok: true, value: room })
    return
  }
  const bytes = fuzzCase.bytes ?? new Uint8Array(0)
  const decode = decoderOf(target)
  let outcome: Outcome
  try {
    outcome = outcomeOf(() => decode(bytes))
  } catch (err) {
    throw new Error(`${target} threw ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}, not a ProtocolError`, { cause: err })
  }
  if (!outcome.ok && outcome.code !== 1002 && outcome.code !== 1007) throw new Error(`${target} used close code ${outcome.code}`)
  expectOutcome(fuzzCase, outcome)

  if (viewCheck) {
    // The same bytes inside a larger buffer, surrounded by bytes that would extend any field.
    const padded = new Uint8Array(bytes.length + 64).fill(0x81)
    padded.set(bytes, 32)
    const viewed = outcomeOf(() => decode(padded.subarray(32, 32 + bytes.length)))
    if (JSON.stringify(viewed) !== JSON.stringify(outcome)) throw new Error(`${target} decides differently on a view into a larger buffer`)
  }
  if (!outcome.ok) return

  // What the validators accept must be safe for what the server does with it next.
  if (target === 'validateUpdate') {
    const doc = new Y.Doc()
    try {
      Y.applyUpdate(doc, bytes)
    } catch (err) {
      throw new Error(`validateUpdate accepted an update that Y.applyUpdate throws on: ${(err as Error).message}`, { cause: err })
    } finally {
      doc.destroy()
    }
  }
  if (target === 'validateStateVector') {
    try {
      Y.encodeStateAsUpdate(pool.doc, bytes)
    } catch (err) {
      throw new Error(`validateStateVector accepted a state vector that Y.encodeStateAsUpdate throws on: ${(err as Error).message}`, { cause: err })
    }
  }
  if (target === 'decodeAwarenessUpdate') {
    try {
      awarenessProtocol.applyAwarenessUpdate(awareness, bytes, 'fuzz')
    } catch (err) {
      throw new Error(`decodeAwarenessUpdate accepted an update that applyAwarenessUpdate throws on: ${(err as Error).message}`, { cause: err })
    }
  }
}

function expectOutcome(fuzzCase: FuzzCase, outcome: Outcome): void {
  if (fuzzCase.expect === 'reject' && outcome.ok) throw new Error(`expected ${fuzzCase.target} to refuse this input; it accepted it`)
  if (fuzzCase.expect === 'accept' && !outcome.ok) throw new Error(`expected ${fuzzCase.target} to accept this input; it refused it: ${outcome.message}`)
  if (fuzzCase.closeCode !== undefined && !outcome.ok && outcome.code !== fuzzCase.closeCode) {
    throw new Error(`expected close code ${fuzzCase.closeCode}, got ${outcome.code} (${outcome.message})`)
  }
}

// ---------------------------------------------------------------------------------------------
// Round trips: random valid messages of both protocols, encoded then decoded

function wellFormedString(rng: Rng): string {
  return Array.from({ length: rng.int(12) }, () => rng.pick(['a', 'Z', ' ', '\u0000', 'é', '€', '😀', '\u200b', '/', '"', '\ufeff'])).join('')
}

function roundTrip(seed: number, index: number, pool: Pool): void {
  const rng = rngFor(seed ^ 0x0bad_5eed, index)
  const payload = rng.chance(0.5) ? rng.pick(pool.updates) : randomBytes(rng, rng.int(40))
  const same = (what: string, actual: unknown, expected: unknown): void => {
    const a = JSON.stringify(actual, (_k, v: unknown) => (v instanceof Uint8Array ? toHex(v) : v))
    const e = JSON.stringify(expected, (_k, v: unknown) => (v instanceof Uint8Array ? toHex(v) : v))
    if (a !== e) throw new Error(`round trip of ${what}: decoded ${a}, expected ${e}`)
  }
  if (index % 3 === 0) {
    const reason = wellFormedString(rng)
    switch (rng.int(6)) {
      case 0: return same('sync-step-1', decodeYMessage(encodeSyncStep1(payload)), { kind: 'sync-step-1', stateVector: payload })
      case 1: return same('sync-step-2', decodeYMessage(encodeSyncStep2(payload)), { kind: 'sync-step-2', update: payload })
      case 2: return same('sync-update', decodeYMessage(encodeSyncUpdate(payload)), { kind: 'sync-update', update: payload })
      case 3: return same('awareness', decodeYMessage(encodeAwareness(payload)), { kind: 'awareness', update: payload })
      case 4: return same('query-awareness', decodeYMessage(encodeQueryAwareness()), { kind: 'query-awareness' })
      default: return same('auth-denied', decodeYMessage(encodePermissionDenied(reason)), { kind: 'auth-denied', reason })
    }
  }
  if (index % 3 === 1) {
    const entries: AwarenessEntry[] = Array.from({ length: rng.int(4) }, () => ({
      clientId: rng.chance(0.2) ? Number.MAX_SAFE_INTEGER - rng.int(9) : rng.int(2 ** 32),
      clock: rng.int(2 ** 20),
      state: rng.chance(0.2) ? 'null' : JSON.stringify({ name: wellFormedString(rng), v: anyValue(rng) }, (_k, v: unknown) => (v instanceof Uint8Array ? [...v] : v)),
    }))
    return same('awareness update', decodeAwarenessUpdate(encodeAwarenessUpdate(entries)), entries)
  }
  const document = wellFormedString(rng)
  const text = wellFormedString(rng)
  switch (rng.int(10)) {
    case 0: return same('hp sync-step-1', decodeHocuspocusMessage(encodeHocuspocusSyncStep1(document, payload)), { kind: 'sync-step-1', document, stateVector: payload, reply: false })
    case 1: return same('hp sync-step-2', decodeHocuspocusMessage(encodeHocuspocusSyncStep2(document, payload)), { kind: 'sync-step-2', document, update: payload, reply: false })
    case 2: return same('hp sync-update', decodeHocuspocusMessage(encodeHocuspocusSyncUpdate(document, payload)), { kind: 'sync-update', document, update: payload, reply: false })
    case 3: return same('hp awareness', decodeHocuspocusMessage(encodeHocuspocusAwareness(document, payload)), { kind: 'awareness', document, update: payload })
    case 4: return same('hp query-awareness', decodeHocuspocusMessage(encodeHocuspocusQueryAwareness(document)), { kind: 'query-awareness', document })
    case 5: return same('hp stateless', decodeHocuspocusMessage(encodeHocuspocusStateless(document, text)), { kind: 'stateless', document, payload: text })
    case 6: return same('hp broadcast-stateless', decodeHocuspocusMessage(encodeHocuspocusClientBroadcastStateless(document, text)), { kind: 'broadcast-stateless', document, payload: text })
    case 7: {
      const version = rng.chance(0.5) ? wellFormedString(rng) : undefined
      return same('hp auth-token', decodeHocuspocusMessage(encodeHocuspocusClientAuthToken(document, text, version)), { kind: 'auth-token', document, token: text, providerVersion: version ?? null })
    }
    case 8: return same('hp close', decodeHocuspocusMessage(encodeHocuspocusClientClose(document)), { kind: 'close', document })
    default: return same('hp pong', decodeHocuspocusMessage(encodeHocuspocusClientPong()), { kind: 'pong' })
  }
}

// ---------------------------------------------------------------------------------------------
// Corpus

const CORPUS_DIR = fileURLToPath(new URL('../../test/fuzz-corpus/', import.meta.url))

export function corpusInput(entry: CorpusEntry): Uint8Array {
  const head = fromHex(entry.hex ?? '')
  if (entry.repeatHex === undefined) return concat(head, fromHex(entry.suffixHex ?? ''))
  const unit = fromHex(entry.repeatHex)
  const body = new Uint8Array(unit.length * (entry.repeatCount ?? 0))
  for (let i = 0; i < body.length; i += unit.length) body.set(unit, i)
  return concat(head, body, fromHex(entry.suffixHex ?? ''))
}

export function readCorpus(): Array<{ file: string; entry: CorpusEntry }> {
  return readdirSync(CORPUS_DIR)
    .filter((file) => file.endsWith('.json'))
    .sort()
    .map((file) => ({ file, entry: JSON.parse(readFileSync(join(CORPUS_DIR, file), 'utf8')) as CorpusEntry }))
}

function caseOfEntry(entry: CorpusEntry): FuzzCase {
  if (entry.target === 'roomFromPath') return { target: entry.target, text: entry.text ?? '', expect: entry.expect, ...(entry.closeCode === undefined ? {} : { closeCode: entry.closeCode }) }
  return { target: entry.target, bytes: corpusInput(entry), expect: entry.expect, ...(entry.closeCode === undefined ? {} : { closeCode: entry.closeCode }) }
}

/** Keeps a failing case for ever: the next run replays it before anything random. */
function saveFailure(seed: number, failure: Failure): string {
  mkdirSync(CORPUS_DIR, { recursive: true })
  const input = failure.text ?? failure.hex ?? ''
  const name = `found-${failure.target}-${createHash('sha256').update(input).digest('hex').slice(0, 12)}.json`
  const entry: CorpusEntry = {
    what: `found by fuzz-decoders (seed ${seed}, case ${failure.index}): ${failure.error}`,
    target: failure.target,
    ...(failure.text === undefined ? { hex: failure.hex ?? '' } : { text: failure.text }),
    expect: 'no-crash',
    found: { seed, index: failure.index, error: failure.error },
  }
  writeFileSync(join(CORPUS_DIR, name), JSON.stringify(entry, null, 2) + '\n')
  return name
}

// ---------------------------------------------------------------------------------------------
// Worker side

interface Job {
  mode: 'corpus' | 'fuzz'
  seed: number
  cases: number
  progress: SharedArrayBuffer
  entries?: CorpusEntry[]
}

type WorkerReport =
  | { type: 'batch'; done: number; failures: Failure[] }
  | { type: 'end'; done: number; accepted: Record<string, number> }

function failureOf(index: number, fuzzCase: FuzzCase, err: unknown): Failure {
  return {
    index,
    target: fuzzCase.target,
    ...(fuzzCase.text === undefined ? { hex: toHex(fuzzCase.bytes ?? new Uint8Array(0)) } : { text: fuzzCase.text }),
    error: err instanceof Error ? err.message : String(err),
  }
}

function runJob(job: Job, post: (report: WorkerReport) => void): void {
  const progress = new Int32Array(job.progress)
  const pool = buildPool(job.seed)
  const awarenessDoc = new Y.Doc()
  const awareness = new awarenessProtocol.Awareness(awarenessDoc)
  const accepted: Record<string, number> = {}
  let failures: Failure[] = []
  try {
    if (job.mode === 'corpus') {
      const entries = job.entries ?? []
      entries.forEach((entry, i) => {
        Atomics.store(progress, 0, i)
        const fuzzCase = caseOfEntry(entry)
        try {
          check(fuzzCase, pool, awareness, true)
        } catch (err) {
          failures.push(failureOf(i, fuzzCase, err))
        }
      })
      post({ type: 'batch', done: entries.length, failures })
      post({ type: 'end', done: entries.length, accepted })
      return
    }
    for (let i = 0; i < job.cases; i++) {
      Atomics.store(progress, 0, i)
      const fuzzCase = generateCase(job.seed, i, pool)
      try {
        check(fuzzCase, pool, awareness, i % 4 === 0)
        if (fuzzCase.target !== 'roomFromPath') {
          // Counted for the report: a fuzzer whose inputs are all refused tests only one side.
          const ok = outcomeOf(() => decoderOf(fuzzCase.target)(fuzzCase.bytes ?? new Uint8Array(0))).ok
          if (ok) accepted[fuzzCase.target] = (accepted[fuzzCase.target] ?? 0) + 1
        }
      } catch (err) {
        if (failures.length < 20) failures.push(failureOf(i, fuzzCase, err))
      }
      if ((i + 1) % BATCH === 0 || i + 1 === job.cases) {
        post({ type: 'batch', done: i + 1, failures })
        failures = []
      }
    }
    for (let i = 0; i < ROUND_TRIPS; i++) {
      Atomics.store(progress, 0, job.cases + i)
      try {
        roundTrip(job.seed, i, pool)
      } catch (err) {
        if (failures.length < 20) failures.push({ index: job.cases + i, target: 'decodeYMessage', error: `round trip case ${i}: ${(err as Error).message}` })
      }
    }
    post({ type: 'batch', done: job.cases + ROUND_TRIPS, failures })
    post({ type: 'end', done: job.cases + ROUND_TRIPS, accepted })
  } finally {
    awareness.destroy()
    awarenessDoc.destroy()
  }
}

if (!isMainThread && (workerData as { fuzzDecoders?: Job } | null)?.fuzzDecoders !== undefined) {
  const job = (workerData as { fuzzDecoders: Job }).fuzzDecoders
  runJob(job, (report) => parentPort?.postMessage(report))
}

// ---------------------------------------------------------------------------------------------
// Main side

interface JobResult {
  failures: Failure[]
  /** Set when a batch missed its deadline: the index of the case the worker was stuck in. */
  hungAt: number | null
  done: number
  accepted: Record<string, number>
}

function runInWorker(job: Omit<Job, 'progress'>): Promise<JobResult> {
  const progress = new SharedArrayBuffer(4)
  const worker = new Worker(new URL(import.meta.url), { workerData: { fuzzDecoders: { ...job, progress } } })
  const failures: Failure[] = []
  let done = 0
  return new Promise<JobResult>((resolve, reject) => {
    let timer: NodeJS.Timeout
    const arm = (): void => {
      clearTimeout(timer)
      timer = setTimeout(() => {
        const hungAt = Atomics.load(new Int32Array(progress), 0)
        void worker.terminate().then(() => resolve({ failures, hungAt, done, accepted: {} }))
      }, BATCH_DEADLINE_MS)
    }
    arm()
    worker.on('message', (report: WorkerReport) => {
      failures.push(...(report.type === 'batch' ? report.failures : []))
      done = report.done
      if (report.type === 'end') {
        clearTimeout(timer)
        void worker.terminate().then(() => resolve({ failures, hungAt: null, done, accepted: report.accepted }))
      } else arm()
    })
    worker.on('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
  })
}


function describeFailure(failure: Failure): string {
  const input = failure.text !== undefined ? `text ${JSON.stringify(failure.text)}` : `hex ${(failure.hex ?? '').slice(0, 200)}${(failure.hex ?? '').length > 200 ? '…' : ''}`
  return `case ${failure.index} ${failure.target}: ${failure.error}\n    ${input}`
}

if (isMainThread) {
  const { describe, it } = await import('node:test')
  const seed = envNumber('WEFT_FUZZ_SEED', DEFAULT_SEED)
  const cases = envNumber('WEFT_FUZZ_CASES', DEFAULT_CASES)

  describe('fuzz: decoders of both protocols', () => {
    it('replays every case in test/fuzz-corpus/ first', async (t) => {
      const corpus = readCorpus()
      assert.ok(corpus.length >= 10, `the corpus holds the historic shapes (found ${corpus.length} entries)`)
      const result = await runInWorker({ mode: 'corpus', seed, cases: 0, entries: corpus.map((c) => c.entry) })
      if (result.hungAt !== null) assert.fail(`corpus entry ${corpus[result.hungAt]?.file} did not finish within ${BATCH_DEADLINE_MS} ms`)
      t.diagnostic(`corpus: ${corpus.length} entries replayed`)
      assert.deepEqual(result.failures.map((f) => `${corpus[f.index]?.file}: ${f.error}`), [])
    })

    it(`${cases} random and mutated inputs plus ${ROUND_TRIPS} round trips: return or ProtocolError, never a hang (seed ${seed})`, async (t) => {
      // Printed first, so a run that dies still says how to replay it.
      console.log(`fuzz-decoders: seed ${seed}, ${cases} cases; replay with WEFT_FUZZ_SEED=${seed} WEFT_FUZZ_CASES=${cases}`)
      const started = Date.now()
      const result = await runInWorker({ mode: 'fuzz', seed, cases })
      const elapsed = Date.now() - started
      t.diagnostic(`seed ${seed}: ${result.done} cases in ${elapsed} ms; accepted per target ${JSON.stringify(result.accepted)}`)
      const saved: string[] = []
      if (result.hungAt !== null) {
        const pool = buildPool(seed)
        const stuck = generateCase(seed, result.hungAt, pool)
        const failure = failureOf(result.hungAt, stuck, new Error(`did not return within ${BATCH_DEADLINE_MS} ms`))
        saved.push(saveFailure(seed, failure))
        result.failures.push(failure)
      }
      for (const failure of result.failures) if (failure.index < cases) saved.push(saveFailure(seed, failure))
      assert.equal(result.failures.length, 0, `seed ${seed}: ${result.failures.length} failing cases (saved to test/fuzz-corpus/: ${saved.join(', ')}):\n  ${result.failures.map(describeFailure).join('\n  ')}`)
      assert.equal(result.done, cases + ROUND_TRIPS, 'every case ran')
      // The inputs must reach both sides of every validator, or half of each invariant is untested.
      for (const target of BYTE_TARGETS) {
        if (cases >= 10_000) assert.ok((result.accepted[target] ?? 0) > 50, `${target} accepted ${result.accepted[target] ?? 0} inputs; the generator is not reaching its accepting side`)
      }
    })
  })
}
