import { test } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import { ProtocolError, deepestNesting, isEmptyUpdate, validateUpdate } from '../protocol/index.js'

// One seed for every property in this file; replay a failure with PROTOCOL_FC_SEED=<seed>.
const seed = Number(process.env.PROTOCOL_FC_SEED ?? Date.now() % 2 ** 31)
console.log(`protocol-update fast-check seed: ${seed} (replay with PROTOCOL_FC_SEED=${seed})`)

function hex (text: string): Uint8Array {
  return Uint8Array.from(text.replace(/\s+/g, '').match(/../g) ?? [], byte => parseInt(byte, 16))
}

function utf8 (text: string): string {
  return Buffer.from(text).toString('hex')
}

function assertRejected (update: Uint8Array, why = ''): void {
  assert.throws(() => validateUpdate(update), (error: unknown) => {
    assert.ok(error instanceof ProtocolError, `expected ProtocolError, got ${String(error)} ${why}`)
    assert.equal(error.closeCode, 1007)
    return true
  }, why)
}

/**
 * The safety property the server relies on: an input is either refused by the validator or
 * Yjs applies it to a fresh document without throwing. Returns whether it was accepted.
 */
function isSafe (update: Uint8Array): boolean {
  try {
    validateUpdate(update)
  } catch (error) {
    if (error instanceof ProtocolError && error.closeCode === 1007) return false
    throw error
  }
  const doc = new Y.Doc()
  try {
    Y.applyUpdate(doc, update)
  } catch (error) {
    throw new Error(`accepted ${Buffer.from(update).toString('hex')} but Y.applyUpdate threw: ${String(error)}`, { cause: error })
  } finally {
    doc.destroy()
  }
  return true
}

/** Validates a real update and checks the summary against Yjs's own decoder. */
function assertValid (update: Uint8Array): void {
  const summary = validateUpdate(update)
  const decoded = Y.decodeUpdate(update)
  assert.equal(summary.bytes, update.length)
  assert.equal(summary.structs, decoded.structs.length)
  let ranges = 0
  for (const list of decoded.ds.clients.values()) ranges += list.length
  assert.equal(summary.deleteRanges, ranges)
  assert.equal(summary.clients, new Set(decoded.structs.map(struct => struct.id.client)).size)
}

/** A document with every kind of content Yjs writes, and the updates that built it. */
function everyContentKind (gc: boolean): { doc: Y.Doc; updates: Uint8Array[] } {
  const doc = new Y.Doc({ gc })
  const updates: Uint8Array[] = []
  doc.on('update', (update: Uint8Array) => updates.push(update))
  const text = doc.getText('text')
  text.insert(0, 'Hello world ✓ 😀')
  text.format(0, 5, { bold: true, link: { href: 'https://example.com' } })
  text.insertEmbed(6, { image: 'cat.png', size: [1, 2] })
  text.insert(3, 'inserted', { italic: true })
  text.delete(1, 4)
  const map = doc.getMap('map')
  map.set('int', 42)
  map.set('negative', -7)
  map.set('large', 2 ** 40)
  map.set('float', 3.25)
  map.set('bigint', 12345678901234567890n)
  map.set('bool', true)
  map.set('false', false)
  map.set('null', null)
  map.set('undefined', undefined)
  map.set('string', 'ünïcödé')
  map.set('object', { a: [1, { b: null, c: new Uint8Array([1, 2, 3]) }], d: 'x' })
  map.set('binary', new Uint8Array([0, 255, 7]))
  map.set('replaced', 1)
  map.set('replaced', 2)
  map.delete('false')
  const nested = new Y.Map<unknown>()
  map.set('nestedMap', nested)
  nested.set('deep', new Y.Text('nested text'))
  const array = doc.getArray<unknown>('array')
  array.insert(0, [1, 'two', [3], { four: 4, none: undefined }, [undefined], new Uint8Array([5])])
  array.insert(2, [new Y.Array(), new Y.Map()])
  array.delete(0, 1)
  map.set('subdoc', new Y.Doc({ guid: 'sub-guid', meta: { kind: 'child' } }))
  array.insert(0, [new Y.Doc()])
  const fragment = doc.getXmlFragment('xml')
  const paragraph = new Y.XmlElement('p')
  paragraph.setAttribute('class', 'lead')
  const xmlText = new Y.XmlText('xml text')
  xmlText.format(0, 3, { em: {} })
  paragraph.insert(0, [xmlText])
  // Yjs's typings leave out XmlHook, which insert accepts.
  fragment.insert(0, [paragraph, new Y.XmlHook('custom-hook') as unknown as Y.XmlElement, new Y.XmlText('tail')])
  fragment.delete(2, 1)
  doc.getXmlElement('element').insert(0, [new Y.XmlElement('div')])
  return { doc, updates }
}

test('hand-written update vectors', () => {
  // 1 client; 1 struct; client 1; clock 0; info 04 (string, no origins); parent is the root key "t"; "hi"; empty delete set.
  const hi = hex('01 01 01 00 04 01 01' + utf8('t') + '02' + utf8('hi') + '00')
  assert.deepEqual(validateUpdate(hi), { clients: 1, structs: 1, deleteRanges: 0, bytes: 12, types: 0, requires: new Map() })
  const doc = new Y.Doc()
  Y.applyUpdate(doc, hi)
  assert.equal(doc.getText('t').toString(), 'hi')
  // Only a delete set: client 5 loses clocks 0..1.
  assert.deepEqual(validateUpdate(hex('00 01 05 01 00 02')), { clients: 0, structs: 0, deleteRanges: 1, bytes: 6, types: 0, requires: new Map([[5, 2]]) })
  // Item with origin (1, 1), a map key, JSON content with the legacy bare `undefined`.
  const json = hex('01 01 01 02 82 01 01 02 09' + utf8('undefined') + '03' + utf8('[1]') + '00')
  assert.equal(validateUpdate(json).structs, 1)
  // Item in a map: parent key "m", parentSub "k", Any content [true].
  assert.equal(validateUpdate(hex('01 01 07 00 28 01 01' + utf8('m') + '01' + utf8('k') + '01 78 00')).structs, 1)
  // GC and Skip structs with their lengths.
  assert.equal(validateUpdate(hex('01 02 03 00 00 02 0a 05 00')).structs, 2)
  // An empty update is valid, and recognised.
  assert.deepEqual(validateUpdate(hex('0000')), { clients: 0, structs: 0, deleteRanges: 0, bytes: 2, types: 0, requires: new Map() })
})

test('isEmptyUpdate recognises the update Yjs sends when there is nothing', () => {
  assert.equal(isEmptyUpdate(Y.encodeStateAsUpdate(new Y.Doc())), true)
  assert.equal(isEmptyUpdate(hex('0000')), true)
  assert.equal(isEmptyUpdate(hex('00')), false)
  assert.equal(isEmptyUpdate(hex('000000')), false)
  assert.equal(isEmptyUpdate(hex('0001')), false)
  assert.equal(isEmptyUpdate(everyContentKind(true).updates[0] ?? hex('0000')), false)
})

test('accepts every kind of content Yjs writes, with and without gc', () => {
  for (const gc of [true, false]) {
    const { doc, updates } = everyContentKind(gc)
    assert.ok(updates.length > 20)
    for (const update of updates) assertValid(update)
    assertValid(Y.encodeStateAsUpdate(doc))
    assertValid(Y.mergeUpdates(updates))
    const midway = new Y.Doc()
    for (const update of updates.slice(0, 10)) Y.applyUpdate(midway, update)
    assertValid(Y.encodeStateAsUpdate(doc, Y.encodeStateVector(midway)))
    // Merging non-adjacent updates of one client leaves a gap, which Yjs writes as a Skip struct.
    const gapped = Y.mergeUpdates([updates[0] ?? hex('0000'), updates[5] ?? hex('0000')])
    assert.ok(Y.decodeUpdate(gapped).structs.some(struct => struct.constructor.name === 'Skip'))
    assertValid(gapped)
    // Converted through the v2 format and back.
    assertValid(Y.convertUpdateFormatV2ToV1(Y.encodeStateAsUpdateV2(doc)))
  }
})

test('Any nesting is bounded by maxDepth', () => {
  function nestedArrays (depth: number): unknown {
    let value: unknown = 1
    for (let i = 0; i < depth; i++) value = [value]
    return value
  }
  const at = (depth: number): Uint8Array => {
    const doc = new Y.Doc()
    doc.getMap('m').set('k', nestedArrays(depth))
    return Y.encodeStateAsUpdate(doc)
  }
  assert.equal(validateUpdate(at(64)).structs, 1)
  assertRejected(at(65))
  assert.equal(validateUpdate(at(65), { maxDepth: 65 }).structs, 1)
  assert.throws(() => validateUpdate(at(3), { maxDepth: 2 }), ProtocolError)
  // Deep enough to overflow lib0's recursive reader inside Yjs (and its writer, so built by hand):
  // one Any content in root map "m" holding 20,000 nested one-element arrays around null.
  const deep = hex('01 01 01 00 08 01 01' + utf8('m') + '01' + '7501'.repeat(20000) + '7e' + '00')
  assertRejected(deep)
  assert.throws(() => Y.applyUpdate(new Y.Doc(), deep), RangeError)
})

test('rejects the inputs of yjs#479 and yjs#498', () => {
  assertRejected(Buffer.from('garbagedoc', 'base64'), 'yjs#479')
  assertRejected(new Uint8Array(0), 'yjs#498')
})

test('rejects crafted malformed updates', () => {
  const t = '01' + utf8('t')
  const cases: Array<[string, string]> = [
    ['truncated client count', '80'],
    ['client count larger than the input could hold', 'ffffffff0f 00'],
    ['struct count larger than the input could hold', '01 ff01 01 00 04' + t + '01' + utf8('a') + '00'],
    ['missing delete set', '01 01 01 00 04' + t + '01' + utf8('a')],
    ['trailing bytes', '01 01 01 00 04' + t + '01' + utf8('a') + '00 00'],
    ['delete range count larger than the input could hold', '00 01 05 ff01 00 02'],
    ['unknown struct info 11', '01 01 01 00 0b 00 00'],
    ['unknown struct info 31', '01 01 01 00 1f 00 00'],
    ['GC with flag bits', '01 01 01 00 80 01 00'],
    ['zero-length GC', '01 01 01 00 00 00 00'],
    ['zero-length string', '01 01 01 00 04' + t + '00 00'],
    ['zero-length Any', '01 01 01 00 08' + t + '00 00'],
    ['parent info neither 0 nor 1', '01 01 01 00 04 02 01' + utf8('t') + '01' + utf8('a') + '00'],
    ['string length past the end', '01 01 01 00 04' + t + '05' + utf8('a') + '00'],
    ['string length of 2^32', '01 01 01 00 04' + t + '8080808010' + utf8('a') + '00'],
    ['binary length past the end', '01 01 01 00 03' + t + '09 0102 00'],
    ['string not UTF-8', '01 01 01 00 04' + t + '02 c328 00'],
    ['unknown type ref', '01 01 01 00 07' + t + '07 00'],
    ['XmlElement without its name', '01 01 01 00 07' + t + '03'],
    ['unknown Any tag', '01 01 01 00 08' + t + '01 73 00'],
    ['Any float64 cut short', '01 01 01 00 08' + t + '01 7b 0102 00'],
    ['Any object count larger than the input could hold', '01 01 01 00 08' + t + '01 76 ff01 00'],
    ['Any integer above 2^53', '01 01 01 00 08' + t + '01 7d ffffffffffffffff7f 00'],
    ['invalid JSON in ContentJSON', '01 01 01 00 02' + t + '01 03' + utf8('{a}') + '00'],
    ['empty string in ContentJSON', '01 01 01 00 02' + t + '01 00 00'],
    ['invalid JSON in embed', '01 01 01 00 05' + t + '03' + utf8('{a}') + '00'],
    ['invalid JSON in format', '01 01 01 00 06' + t + '01' + utf8('b') + '04' + utf8('tru') + '00'],
    ['subdocument options null', '01 01 01 00 09' + t + '01' + utf8('g') + '7e 00'],
    ['client id above 2^53', '01 01 8080808080808010 00 04' + t + '01' + utf8('a') + '00'],
    ['clock overflowing 2^53', '01 01 01 ffffffffffffff0f 04' + t + '02' + utf8('ab') + '00'],
    ['delete range overflowing 2^53', '00 01 05 01 ffffffffffffff0f 02'],
    ['zero-length delete range', '00 01 05 01 3e 00'],
    ['item whose origin is itself', '01 01 01 00 84 01 00 01' + utf8('a') + '00'],
    ['item whose right origin is a later clock', '01 01 01 03 44 01 07 01' + utf8('a') + '00'],
    ['item whose parent is itself', '01 01 01 00 04 00 01 00 01' + utf8('a') + '00']
  ]
  for (const [name, bytes] of cases) assertRejected(hex(bytes), name)
})

test('rejects inflated length fields of a real update', () => {
  const doc = new Y.Doc()
  doc.getText('t').insert(0, 'abcdef')
  const update = Y.encodeStateAsUpdate(doc)
  const at = Buffer.from(update).indexOf(Buffer.from('06' + utf8('abcdef'), 'hex'))
  assert.ok(at > 0)
  for (const length of [[0x07], [0x7f], [0xff, 0xff, 0xff, 0xff, 0x0f], [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]]) {
    const inflated = Uint8Array.from([...update.subarray(0, at), ...length, ...update.subarray(at + 1)])
    assertRejected(inflated, `string length ${length.join(',')}`)
  }
  for (const count of [[0x02], [0x7f], [0xff, 0xff, 0xff, 0xff, 0x0f]]) {
    assertRejected(Uint8Array.from([...count, ...update.subarray(1)]), `client count ${count.join(',')}`)
  }
})

function realUpdates (): Uint8Array[] {
  const pool: Uint8Array[] = []
  for (const gc of [true, false]) {
    const { doc, updates } = everyContentKind(gc)
    pool.push(Y.encodeStateAsUpdate(doc), ...updates.filter((_, i) => i % 3 === 0))
  }
  return pool
}

test('every truncation and every single-bit flip of real updates is rejected or safe', () => {
  let accepted = 0
  let checked = 0
  for (const update of realUpdates()) {
    for (let end = 0; end < update.length; end++) {
      if (isSafe(update.subarray(0, end))) accepted++
      checked++
    }
    for (let i = 0; i < update.length; i++) {
      for (let bit = 0; bit < 8; bit++) {
        const flipped = update.slice()
        flipped[i] = (flipped[i] ?? 0) ^ (1 << bit)
        if (isSafe(flipped)) accepted++
        checked++
      }
    }
  }
  assert.ok(checked > 10000, `only ${checked} variants`)
  // Most flips change string or number payloads and remain valid; truncations almost never do.
  assert.ok(accepted > 0 && accepted < checked)
})

const mutation = fc.oneof(
  fc.record({ op: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ op: fc.constant('set' as const), at: fc.nat(), value: fc.oneof(fc.constantFrom(0, 1, 0x7f, 0x80, 0xff), fc.integer({ min: 0, max: 255 })) }),
  fc.record({ op: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 4 }) }),
  fc.record({ op: fc.constant('remove' as const), at: fc.nat(), count: fc.integer({ min: 1, max: 4 }) }),
  fc.record({ op: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ op: fc.constant('duplicate' as const), at: fc.nat(), count: fc.integer({ min: 1, max: 16 }) })
)
type Mutation = typeof mutation extends fc.Arbitrary<infer M> ? M : never

function mutate (update: Uint8Array, mutations: readonly Mutation[]): Uint8Array {
  let bytes = Array.from(update)
  for (const m of mutations) {
    const at = bytes.length === 0 ? 0 : m.at % bytes.length
    switch (m.op) {
      case 'flip': bytes[at] = (bytes[at] ?? 0) ^ (1 << m.bit); break
      case 'set': bytes[at] = m.value; break
      case 'insert': bytes.splice(at, 0, ...m.bytes); break
      case 'remove': bytes.splice(at, m.count); break
      case 'truncate': bytes = bytes.slice(0, at); break
      case 'duplicate': bytes.splice(at, 0, ...bytes.slice(at, at + m.count)); break
    }
  }
  return Uint8Array.from(bytes)
}

test('property: 24,000 random and mutated inputs are rejected or applied without throwing', () => {
  const pool = realUpdates()
  const mutated = fc.tuple(fc.constantFrom(...pool), fc.array(mutation, { minLength: 1, maxLength: 4 }))
    .map(([update, mutations]) => mutate(update, mutations))
  const random = fc.uint8Array({ maxLength: 64 })
  // Starts like a real update (small counts) so random tails reach the struct parser.
  const plausible = fc.tuple(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 4 }), fc.uint8Array({ maxLength: 48 }))
    .map(([clients, structs, tail]) => Uint8Array.from([clients, structs, ...tail]))
  let accepted = 0
  fc.assert(fc.property(mutated, update => { if (isSafe(update)) accepted++ }), { seed, numRuns: 16000 })
  fc.assert(fc.property(random, update => { if (isSafe(update)) accepted++ }), { seed, numRuns: 4000 })
  fc.assert(fc.property(plausible, update => { if (isSafe(update)) accepted++ }), { seed, numRuns: 4000 })
  assert.ok(accepted > 100, `only ${accepted} inputs were accepted, so Y.applyUpdate was barely exercised`)
})

const anyValue: fc.Arbitrary<unknown> = fc.letrec<{ value: unknown }>(tie => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.integer(),
    fc.integer({ min: -(2 ** 53) + 1, max: 2 ** 53 - 1 }),
    fc.double(),
    fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
    fc.boolean(),
    fc.constant(null),
    fc.constant(undefined),
    fc.string({ unit: 'binary', maxLength: 8 }),
    fc.uint8Array({ maxLength: 4 }),
    fc.array(tie('value'), { maxLength: 3 }),
    fc.dictionary(fc.string({ maxLength: 4 }), tie('value'), { maxKeys: 3, noNullPrototype: true })
  )
})).value

const text = fc.string({ unit: 'binary', minLength: 1, maxLength: 6 })
const attributes = fc.option(fc.dictionary(fc.constantFrom('bold', 'italic', 'href'), fc.oneof(fc.boolean(), fc.string({ maxLength: 3 }), fc.constant(null)), { maxKeys: 2, noNullPrototype: true }))
const edit = fc.oneof(
  fc.record({ op: fc.constant('text-insert' as const), at: fc.nat(), text, attributes }),
  fc.record({ op: fc.constant('text-format' as const), at: fc.nat(), length: fc.nat(5), attributes }),
  fc.record({ op: fc.constant('text-delete' as const), at: fc.nat(), length: fc.nat(5) }),
  fc.record({ op: fc.constant('text-embed' as const), at: fc.nat(), value: fc.dictionary(fc.string({ maxLength: 3 }), fc.integer(), { maxKeys: 2, noNullPrototype: true }) }),
  fc.record({ op: fc.constant('map-set' as const), key: fc.constantFrom('a', 'b', 'c'), value: anyValue }),
  fc.record({ op: fc.constant('map-type' as const), key: fc.constantFrom('a', 'b', 'c'), type: fc.constantFrom('map', 'array', 'text', 'doc', 'binary') }),
  fc.record({ op: fc.constant('map-delete' as const), key: fc.constantFrom('a', 'b', 'c') }),
  // Yjs refuses a bare undefined or bigint as an array element (nested inside objects they are fine).
  fc.record({ op: fc.constant('array-insert' as const), at: fc.nat(), values: fc.array(anyValue.filter(v => v !== undefined && typeof v !== 'bigint'), { minLength: 1, maxLength: 3 }) }),
  fc.record({ op: fc.constant('array-delete' as const), at: fc.nat(), length: fc.nat(3) }),
  fc.record({ op: fc.constant('xml-insert' as const), at: fc.nat(), node: fc.constantFrom('element', 'text', 'hook'), name: fc.constantFrom('p', 'h1', 'x-y') }),
  fc.record({ op: fc.constant('xml-delete' as const), at: fc.nat(), length: fc.nat(2) }),
  fc.record({ op: fc.constant('nested' as const), key: fc.constantFrom('a', 'b', 'c'), text }),
  fc.record({ op: fc.constant('sync' as const) })
)
type Edit = typeof edit extends fc.Arbitrary<infer E> ? E : never

function applyEdit (doc: Y.Doc, peer: Y.Doc, e: Edit): void {
  const t = doc.getText('text')
  const m = doc.getMap<unknown>('map')
  const a = doc.getArray<unknown>('array')
  const x = doc.getXmlFragment('xml')
  switch (e.op) {
    case 'text-insert': t.insert(e.at % (t.length + 1), e.text, e.attributes ?? undefined); break
    case 'text-format': t.format(e.at % (t.length + 1), e.length, e.attributes ?? { bold: true }); break
    case 'text-delete': if (t.length > 0) t.delete(e.at % t.length, Math.min(e.length, t.length - e.at % t.length)); break
    case 'text-embed': t.insertEmbed(e.at % (t.length + 1), e.value); break
    case 'map-set': m.set(e.key, e.value); break
    case 'map-type': m.set(e.key, e.type === 'map' ? new Y.Map() : e.type === 'array' ? new Y.Array() : e.type === 'text' ? new Y.Text('n') : e.type === 'doc' ? new Y.Doc() : new Uint8Array([1, 2])); break
    case 'map-delete': m.delete(e.key); break
    case 'array-insert': a.insert(e.at % (a.length + 1), e.values); break
    case 'array-delete': if (a.length > 0) a.delete(e.at % a.length, Math.min(e.length, a.length - e.at % a.length)); break
    case 'xml-insert': {
      const node = e.node === 'element' ? new Y.XmlElement(e.name) : e.node === 'text' ? new Y.XmlText(e.name) : new Y.XmlHook(e.name)
      if (node instanceof Y.XmlElement) node.setAttribute('data-x', e.name)
      x.insert(e.at % (x.length + 1), [node as Y.XmlElement])
      break
    }
    case 'xml-delete': if (x.length > 0) x.delete(e.at % x.length, Math.min(e.length, x.length - e.at % x.length)); break
    case 'nested': {
      const target = m.get(e.key)
      if (target instanceof Y.Text) target.insert(0, e.text)
      else if (target instanceof Y.Array) target.push([e.text, new Y.Map()])
      else if (target instanceof Y.Map) target.set(e.text, new Y.Text(e.text))
      break
    }
    case 'sync':
      Y.applyUpdate(peer, Y.encodeStateAsUpdate(doc, Y.encodeStateVector(peer)))
      Y.applyUpdate(doc, Y.encodeStateAsUpdate(peer, Y.encodeStateVector(doc)))
      break
  }
}

test('property: every update of random documents edited by two peers is accepted', () => {
  const scenario = fc.record({ gc: fc.boolean(), edits: fc.array(fc.tuple(fc.boolean(), edit), { minLength: 1, maxLength: 25 }) })
  fc.assert(fc.property(scenario, ({ gc, edits }) => {
    const left = new Y.Doc({ gc })
    const right = new Y.Doc({ gc })
    const updates: Uint8Array[] = []
    left.on('update', (update: Uint8Array) => updates.push(update))
    right.on('update', (update: Uint8Array) => updates.push(update))
    edits.forEach(([onLeft, e], i) => {
      applyEdit(onLeft ? left : right, onLeft ? right : left, e)
      if (i === Math.floor(edits.length / 2)) updates.push(Y.encodeStateAsUpdate(left, Y.encodeStateVector(right)))
    })
    for (const update of updates) assertValid(update)
    assertValid(Y.encodeStateAsUpdate(left))
    assertValid(Y.encodeStateAsUpdate(right))
    assertValid(Y.mergeUpdates(updates))
    left.destroy()
    right.destroy()
  }), { seed, numRuns: 300 })
})

// Structurally valid updates with small client ids and clocks, so that origins, parents and
// delete ranges often point at each other: this reaches Yjs's integration code, where a
// well-formed update can still throw. It is how the same-client reference rule, zero-length
// rules and the subdocument-options rule in update.ts were found.
const smallNumber = fc.integer({ min: 0, max: 4 })
const structId = fc.record({ client: smallNumber, clock: smallNumber })
const rootKey = fc.constantFrom('t', 'm', 'x')
const craftedContent = fc.oneof(
  fc.record({ ref: fc.constant(1), length: fc.integer({ min: 1, max: 3 }) }),
  fc.record({ ref: fc.constant(2), values: fc.array(fc.constantFrom('1', '"a"', 'undefined', 'null'), { minLength: 1, maxLength: 3 }) }),
  fc.record({ ref: fc.constant(3) }),
  fc.record({ ref: fc.constant(4), text: fc.string({ minLength: 1, maxLength: 3 }) }),
  fc.record({ ref: fc.constant(5) }),
  fc.record({ ref: fc.constant(6), key: rootKey }),
  fc.record({ ref: fc.constant(7), typeRef: fc.integer({ min: 0, max: 6 }) }),
  fc.record({ ref: fc.constant(8), values: fc.array(fc.oneof(fc.integer(), fc.string(), fc.constant(null), fc.array(fc.boolean(), { maxLength: 2 })), { minLength: 1, maxLength: 3 }) }),
  fc.record({ ref: fc.constant(9) })
)
const craftedStruct = fc.oneof(
  { weight: 1, arbitrary: fc.record({ kind: fc.constantFrom('gc' as const, 'skip' as const), length: fc.integer({ min: 1, max: 3 }) }) },
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('item' as const), origin: fc.option(structId), rightOrigin: fc.option(structId), parent: fc.oneof(rootKey, structId), parentSub: fc.option(rootKey), content: craftedContent }) }
)
const craftedUpdate = fc.record({
  clients: fc.array(fc.record({ client: smallNumber, clock: smallNumber, structs: fc.array(craftedStruct, { minLength: 1, maxLength: 4 }) }), { maxLength: 3 }),
  deletes: fc.array(fc.record({ client: smallNumber, ranges: fc.array(fc.tuple(smallNumber, fc.integer({ min: 1, max: 4 })), { maxLength: 2 }) }), { maxLength: 2 })
})

function encodeCrafted (update: typeof craftedUpdate extends fc.Arbitrary<infer U> ? U : never): Uint8Array {
  const out = encoding.createEncoder()
  const writeId = (id: { client: number; clock: number }): void => {
    encoding.writeVarUint(out, id.client)
    encoding.writeVarUint(out, id.clock)
  }
  encoding.writeVarUint(out, update.clients.length)
  for (const { client, clock, structs } of update.clients) {
    encoding.writeVarUint(out, structs.length)
    encoding.writeVarUint(out, client)
    encoding.writeVarUint(out, clock)
    for (const struct of structs) {
      if (struct.kind !== 'item') {
        encoding.writeUint8(out, struct.kind === 'gc' ? 0 : 10)
        encoding.writeVarUint(out, struct.length)
        continue
      }
      const { origin, rightOrigin, parent, parentSub, content } = struct
      encoding.writeUint8(out, content.ref | (origin ? 0x80 : 0) | (rightOrigin ? 0x40 : 0) | (parentSub ? 0x20 : 0))
      if (origin) writeId(origin)
      if (rightOrigin) writeId(rightOrigin)
      if (!origin && !rightOrigin) {
        encoding.writeVarUint(out, typeof parent === 'string' ? 1 : 0)
        if (typeof parent === 'string') encoding.writeVarString(out, parent)
        else writeId(parent)
        if (parentSub) encoding.writeVarString(out, parentSub)
      }
      switch (content.ref) {
        case 1: encoding.writeVarUint(out, content.length); break
        case 2: encoding.writeVarUint(out, content.values.length); content.values.forEach(v => encoding.writeVarString(out, v)); break
        case 3: encoding.writeVarUint8Array(out, Uint8Array.of(1, 2)); break
        case 4: encoding.writeVarString(out, content.text); break
        case 5: encoding.writeVarString(out, '{"image":1}'); break
        case 6: encoding.writeVarString(out, content.key); encoding.writeVarString(out, 'true'); break
        case 7:
          encoding.writeVarUint(out, content.typeRef)
          if (content.typeRef === 3 || content.typeRef === 5) encoding.writeVarString(out, 'p')
          break
        case 8: encoding.writeVarUint(out, content.values.length); content.values.forEach(v => encoding.writeAny(out, v)); break
        case 9: encoding.writeVarString(out, 'guid'); encoding.writeAny(out, {}); break
      }
    }
  }
  encoding.writeVarUint(out, update.deletes.length)
  for (const { client, ranges } of update.deletes) {
    encoding.writeVarUint(out, client)
    encoding.writeVarUint(out, ranges.length)
    for (const [clock, length] of ranges) {
      encoding.writeVarUint(out, clock)
      encoding.writeVarUint(out, length)
    }
  }
  return encoding.toUint8Array(out)
}

test('property: crafted well-formed updates with tangled references are rejected or applied without throwing', () => {
  let accepted = 0
  fc.assert(fc.property(craftedUpdate, update => { if (isSafe(encodeCrafted(update))) accepted++ }), { seed, numRuns: 6000 })
  assert.ok(accepted > 1000, `only ${accepted} crafted updates were accepted`)
})

test('deepestNesting counts nested types within one update and on top of the document', () => {
  const doc = new Y.Doc()
  let parent: Y.Map<unknown> = doc.getMap('root')
  for (let level = 2; level <= 10; level++) {
    const child = new Y.Map<unknown>()
    parent.set('k', child)
    parent = child
  }
  // Array items after the first inherit their parent through their origin.
  const list = new Y.Array<unknown>()
  parent.set('list', list)
  list.push(['a', new Y.Map()])
  const update = Y.encodeStateAsUpdate(doc)
  const empty = { containerDepth: () => null, typeDepth: () => null }
  assert.equal(deepestNesting(update, 100, empty), 12)
  assert.equal(deepestNesting(update, 11, empty), Infinity)
  // A child whose parent already sits 50 deep in the document.
  const next = new Y.Doc()
  Y.applyUpdate(next, update)
  const sv = Y.encodeStateVector(next)
  ;(next.getMap('root').get('k') as Y.Map<unknown>).set('other', new Y.Map())
  const delta = Y.encodeStateAsUpdate(next, sv)
  assert.equal(deepestNesting(delta, 100, { containerDepth: () => null, typeDepth: () => 50 }), 51)
  assert.equal(deepestNesting(delta, 50, { containerDepth: () => null, typeDepth: () => 50 }), Infinity)
})
