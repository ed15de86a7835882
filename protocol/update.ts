import { ByteReader } from './byte-reader.js'

/** What a valid update contains; `bytes` is its length, for metrics and limits. */
export interface UpdateSummary {
  clients: number
  structs: number
  deleteRanges: number
  bytes: number
  /** Items whose content is a shared type (Y.Map, Y.Array, Y.Text, XML): the only structs that nest. */
  types: number
  /**
   * For each client, the clock the receiving document must have reached (its state vector entry)
   * for every struct and deletion of the update to integrate at once. Below it, Yjs would keep
   * part of the update pending (missing clocks, origins, parents or deleted ranges).
   */
  requires: Map<number, number>
}

const DEFAULT_MAX_DEPTH = 64

// Low 5 bits of a struct's info byte: 0 and 10 are GC and Skip, 1..9 are Item content refs.
const STRUCT_GC = 0
const STRUCT_SKIP = 10
const ContentRef = { deleted: 1, json: 2, binary: 3, string: 4, embed: 5, format: 6, type: 7, any: 8, doc: 9 } as const
const INFO_CONTENT_BITS = 0x1f
const INFO_HAS_PARENT_SUB = 0x20
const INFO_HAS_RIGHT_ORIGIN = 0x40
const INFO_HAS_ORIGIN = 0x80

// ContentType's type refs; XmlElement and XmlHook carry a node name / hook key.
const TypeRef = { array: 0, map: 1, text: 2, xmlElement: 3, xmlFragment: 4, xmlHook: 5, xmlText: 6 } as const

// lib0 writeAny tags, 127 down to 116.
const AnyTag = {
  undefined: 127, null: 126, integer: 125, float32: 124, float64: 123, bigint: 122,
  false: 121, true: 120, string: 119, object: 118, array: 117, bytes: 116
} as const

// Smallest encodings, used to refuse a count before looping over it.
const MIN_CLIENT_BYTES = 3 // struct count, client id, first clock
const MIN_STRUCT_BYTES = 2 // info + length, or info + the smallest content
const MIN_DELETE_CLIENT_BYTES = 2 // client id, range count
const MIN_DELETE_RANGE_BYTES = 2 // clock, length
const MIN_JSON_STRING_BYTES = 2 // length + one character: the empty string is not JSON
const MIN_ANY_BYTES = 1 // a tag
const MIN_ANY_ENTRY_BYTES = 2 // key length + value tag

/**
 * Checks that `update` is a complete, well-formed Yjs v1 update before Y.applyUpdate sees it.
 *
 * Why: Yjs's decoders can loop forever on crafted input (yjs#479, yjs#498), so catching their
 * exceptions is not enough; and Yjs integrates the structs before it reads the delete set, so an
 * update that fails late leaves the document half-changed. Every update accepted here parses
 * to its last byte with no trailing bytes, and everything Yjs would JSON.parse or UTF-8 decode
 * has been checked to parse.
 *
 * Termination invariant: every loop below either consumes at least one byte per iteration or
 * has a count that readCount has checked against the remaining bytes (count × smallest element
 * size ≤ remaining), and Any nesting is bounded by maxDepth. So the walk is O(update.length)
 * for every input and cannot overflow the stack.
 *
 * This is structural: it cannot tell whether an origin or parent ID exists in the document the
 * update will be applied to.
 */
export function validateUpdate (update: Uint8Array, opts: { maxDepth?: number } = {}): UpdateSummary {
  return walkUpdate(update, opts.maxDepth ?? DEFAULT_MAX_DEPTH, new Dependencies(null))
}

/** What the document an update is applied to knows about nesting; depths count a root type as 1. */
export interface NestingLookup {
  /** Depth of the type the document's item (client, clock) sits in; null when the document lacks it. */
  containerDepth (client: number, clock: number): number | null
  /** Depth of the type the document's item (client, clock) is; 0 when it is no type; null when absent. */
  typeDepth (client: number, clock: number): number | null
}

/**
 * The deepest shared type `update` (already accepted by validateUpdate) would create, counting
 * root types as 1 and the depth each parent already has in the document (`lookup`): depth can be
 * built one level per update. Returns Infinity as soon as one exceeds `maxNestingDepth`, or when
 * the update names a client in two runs (Yjs never writes that). Yjs deletes, encodes and
 * serialises nested types recursively, so a chain of thousands overflows the stack in the middle
 * of a transaction (issue 12). Linear in the update: iterative, each item's depth computed once.
 */
export function deepestNesting (update: Uint8Array, maxNestingDepth: number, lookup: NestingLookup): number {
  const nesting = new NestingRecorder()
  walkUpdate(update, DEFAULT_MAX_DEPTH, new Dependencies(nesting))
  return nesting.deepest(maxNestingDepth, lookup)
}

function walkUpdate (update: Uint8Array, maxDepth: number, deps: Dependencies): UpdateSummary {
  const reader = new ByteReader(update, 1007)
  // yjs#498: an empty update made Yjs hang.
  if (update.length === 0) reader.fail('empty update')

  const clients = reader.readCount(MIN_CLIENT_BYTES, 'client')
  let structs = 0
  for (let c = 0; c < clients; c++) {
    const structCount = reader.readCount(MIN_STRUCT_BYTES, 'struct')
    const client = reader.readVarUint()
    let clock = reader.readVarUint()
    deps.startRun(client, clock)
    for (let s = 0; s < structCount; s++) {
      const length = readStruct(reader, client, clock, maxDepth, deps)
      clock += length
      // Yjs does clock arithmetic in doubles; past 2^53 neighbouring clocks compare equal.
      if (clock > Number.MAX_SAFE_INTEGER) reader.fail('struct clock exceeds 2^53')
    }
    deps.endRun(client, clock)
    structs += structCount
  }

  const deleteClients = reader.readCount(MIN_DELETE_CLIENT_BYTES, 'delete set client')
  let deleteRanges = 0
  for (let c = 0; c < deleteClients; c++) {
    const client = reader.readVarUint()
    const ranges = reader.readCount(MIN_DELETE_RANGE_BYTES, 'delete range')
    for (let r = 0; r < ranges; r++) {
      const clock = reader.readVarUint()
      const length = reader.readVarUint()
      // Yjs never writes an empty range, and one for a client it has not seen throws
      // "Unexpected case" (found by fuzzing) after the structs were already integrated.
      if (length === 0) reader.fail('delete range of length 0')
      if (clock + length > Number.MAX_SAFE_INTEGER) reader.fail('delete range exceeds 2^53')
      deps.need(client, clock + length)
    }
    deleteRanges += ranges
  }

  reader.expectEnd('update')
  return { clients, structs, deleteRanges, bytes: update.length, types: deps.types, requires: deps.requirements() }
}

/**
 * What an update needs from the document it is applied to. Its own structs provide, per client,
 * the clocks of its run (minus Skip gaps); origins, parents and delete ranges need clocks. Clients
 * come in any order, so needs are kept as a maximum per client and resolved at the end.
 */
class Dependencies {
  types = 0
  /** The ID readEarlierId read last (no tuple allocated per reference). */
  idClient = 0
  idClock = 0

  constructor (readonly nesting: NestingRecorder | null) {}

  /** Per client: the clock of its run's first struct, and the end of the run. */
  private readonly runs = new Map<number, { start: number; end: number }>()
  /** Per client: the highest clock + 1 referred to (origins, parents, delete ranges). */
  private readonly needs = new Map<number, number>()
  /** Per client: the clock the document must reach by itself (run start, Skip gaps). */
  private readonly own = new Map<number, number>()

  startRun (client: number, clock: number): void {
    // Yjs writes each client once; a second run of the same client is refused by nothing else, so
    // it only widens the requirement.
    this.require(client, clock)
    const run = this.runs.get(client)
    if (run === undefined) this.runs.set(client, { start: clock, end: clock })
  }

  endRun (client: number, end: number): void {
    const run = this.runs.get(client) as { start: number; end: number }
    run.end = Math.max(run.end, end)
  }

  /** A Skip struct: the clocks it stands for must already be in the document. */
  gap (client: number, end: number): void {
    this.require(client, end)
  }

  need (client: number, clockEnd: number): void {
    if ((this.needs.get(client) ?? 0) < clockEnd) this.needs.set(client, clockEnd)
  }

  requirements (): Map<number, number> {
    const result = new Map(this.own)
    for (const [client, clockEnd] of this.needs) {
      const run = this.runs.get(client)
      // Provided by the update itself when it falls inside the client's run (whose own start and
      // gaps are already required).
      if (run !== undefined && clockEnd <= run.end) continue
      if ((result.get(client) ?? 0) < clockEnd) result.set(client, clockEnd)
    }
    return result
  }

  private require (client: number, clock: number): void {
    if ((this.own.get(client) ?? 0) < clock) this.own.set(client, clock)
  }
}

/**
 * The deepest nesting of arrays and objects in a JSON text, counted without parsing again
 * (JSON.parse has already accepted it, so brackets inside strings are the only trap).
 */
function jsonDepth (text: string): number {
  let depth = 0
  let deepest = 0
  let inString = false
  for (let i = 0; i < text.length; i++) {
    const char = text.charCodeAt(i)
    if (inString) {
      if (char === 0x5c) i++ // backslash: the next character is escaped
      else if (char === 0x22) inString = false
    } else if (char === 0x22) {
      inString = true
    } else if (char === 0x5b || char === 0x7b) {
      depth++
      if (depth > deepest) deepest = depth
    } else if (char === 0x5d || char === 0x7d) {
      depth--
    }
  }
  return deepest
}

/** True for the two-byte update (no structs, empty delete set) that Yjs sends when there is nothing to send. */
/**
 * Checks a state vector (sync step 1) completely: pairs of client id and clock, nothing after.
 * Yjs would otherwise throw a plain Error deep inside encodeStateAsUpdate, or ignore trailing bytes.
 */
export function validateStateVector (stateVector: Uint8Array): void {
  const reader = new ByteReader(stateVector, 1007)
  // Each entry is two varuints of at least one byte each, so the loop is bounded by the input.
  const entries = reader.readCount(2, 'state vector entry')
  for (let i = 0; i < entries; i++) {
    reader.readVarUint()
    reader.readVarUint()
  }
  reader.expectEnd('state vector')
}

export function isEmptyUpdate (update: Uint8Array): boolean {
  return update.length === 2 && update[0] === 0 && update[1] === 0
}

/** Reads one struct, whose ID is (client, clock), and returns its length in clock units. */
function readStruct (reader: ByteReader, client: number, clock: number, maxDepth: number, deps: Dependencies): number {
  const info = reader.readUint8()
  const ref = info & INFO_CONTENT_BITS
  if (ref === STRUCT_GC || ref === STRUCT_SKIP) {
    // Yjs writes these info bytes bare; flag bits on them are not something it produced.
    if (info !== ref) reader.fail(`struct info ${info} has flags on a ${ref === STRUCT_GC ? 'GC' : 'Skip'} struct`)
    const length = nonEmpty(reader, reader.readVarUint())
    if (ref === STRUCT_SKIP) deps.gap(client, clock + length)
    return length
  }
  // Yjs takes the parent from the origin, else from the right origin, else as written.
  let link: LinkKind = Link.root
  let linkClient = 0
  let linkClock = 0
  if (info & INFO_HAS_ORIGIN) {
    readEarlierId(reader, client, clock, deps)
    link = Link.neighbour
    linkClient = deps.idClient
    linkClock = deps.idClock
  }
  if (info & INFO_HAS_RIGHT_ORIGIN) {
    readEarlierId(reader, client, clock, deps)
    if (link === Link.root) {
      link = Link.neighbour
      linkClient = deps.idClient
      linkClock = deps.idClock
    }
  }
  // Without an origin the parent cannot be inherited from a neighbour, so it is written out.
  if ((info & (INFO_HAS_ORIGIN | INFO_HAS_RIGHT_ORIGIN)) === 0) {
    const parentIsRootKey = reader.readVarUint()
    if (parentIsRootKey === 1) reader.readVarString()
    else if (parentIsRootKey === 0) {
      readEarlierId(reader, client, clock, deps)
      link = Link.parent
      linkClient = deps.idClient
      linkClock = deps.idClock
    } else reader.fail(`parent info ${parentIsRootKey} is neither 0 nor 1`)
    if (info & INFO_HAS_PARENT_SUB) reader.readVarString()
  }
  if (ref === ContentRef.type) deps.types++
  const length = nonEmpty(reader, readContent(reader, ref, maxDepth))
  deps.nesting?.item(client, clock, length, ref === ContentRef.type, link, linkClient, linkClock)
  return length
}

/** How an item finds its parent type: a root type, a type item named as parent, or a neighbour's parent. */
const Link = { root: 0, parent: 1, neighbour: 2 } as const
type LinkKind = (typeof Link)[keyof typeof Link]

/** Depth not computed yet, and depth being computed (met again: a cycle of references). */
const DEPTH_UNKNOWN = -1
const DEPTH_IN_PROGRESS = -2

/** The items of one client in an update, in clock order (parallel arrays: no object per item). */
interface ClientItems {
  clocks: number[]
  lengths: number[]
  links: LinkKind[]
  linkClients: number[]
  linkClocks: number[]
  /** Depth of the type each item sits in, or DEPTH_UNKNOWN / DEPTH_IN_PROGRESS. */
  depths: number[]
}

class NestingRecorder {
  private readonly byClient = new Map<number, ClientItems>()
  private readonly typeItems: Array<{ items: ClientItems; index: number }> = []
  private disordered = false

  item (client: number, clock: number, length: number, isType: boolean, link: LinkKind, linkClient: number, linkClock: number): void {
    let items = this.byClient.get(client)
    if (items === undefined) {
      items = { clocks: [], lengths: [], links: [], linkClients: [], linkClocks: [], depths: [] }
      this.byClient.set(client, items)
    }
    const last = items.clocks.length - 1
    if (last >= 0 && clock < (items.clocks[last] as number) + (items.lengths[last] as number)) this.disordered = true
    items.clocks.push(clock)
    items.lengths.push(length)
    items.links.push(link)
    items.linkClients.push(linkClient)
    items.linkClocks.push(linkClock)
    items.depths.push(DEPTH_UNKNOWN)
    if (isType) this.typeItems.push({ items, index: items.clocks.length - 1 })
  }

  deepest (maxNestingDepth: number, lookup: NestingLookup): number {
    if (this.typeItems.length === 0) return 0
    if (this.disordered) return Infinity
    let deepest = 0
    for (const { items, index } of this.typeItems) {
      const depth = this.containerDepth(items, index, lookup) + 1
      if (depth > maxNestingDepth) return Infinity
      if (depth > deepest) deepest = depth
    }
    return deepest
  }

  /** Iterative: a chain of references in one update can be longer than the JavaScript stack is deep. */
  private containerDepth (startItems: ClientItems, startIndex: number, lookup: NestingLookup): number {
    const chain: Array<{ items: ClientItems; index: number; plusOne: boolean }> = []
    let items = startItems
    let index = startIndex
    let depth: number
    while (true) {
      const known = items.depths[index] as number
      if (known >= 0) {
        depth = known
        break
      }
      if (known === DEPTH_IN_PROGRESS) {
        depth = Infinity
        break
      }
      const link = items.links[index] as LinkKind
      if (link === Link.root) {
        depth = 1
        items.depths[index] = depth
        break
      }
      const client = items.linkClients[index] as number
      const clock = items.linkClocks[index] as number
      const target = this.find(client, clock)
      if (target === null) {
        // In the document (or missing: then Yjs keeps the item pending and the room refuses it).
        const found = link === Link.parent ? lookup.typeDepth(client, clock) : lookup.containerDepth(client, clock)
        depth = found ?? 1
        items.depths[index] = depth
        break
      }
      items.depths[index] = DEPTH_IN_PROGRESS
      chain.push({ items, index, plusOne: link === Link.parent })
      items = target.items
      index = target.index
    }
    for (let i = chain.length - 1; i >= 0; i--) {
      const step = chain[i] as { items: ClientItems; index: number; plusOne: boolean }
      if (step.plusOne) depth++
      step.items.depths[step.index] = depth
    }
    return depth
  }

  private find (client: number, clock: number): { items: ClientItems; index: number } | null {
    const items = this.byClient.get(client)
    if (items === undefined) return null
    let low = 0
    let high = items.clocks.length - 1
    while (low <= high) {
      const middle = (low + high) >>> 1
      const start = items.clocks[middle] as number
      if (clock < start) high = middle - 1
      else if (clock >= start + (items.lengths[middle] as number)) low = middle + 1
      else return { items, index: middle }
    }
    return null
  }
}

/**
 * Yjs never writes a struct of length 0, and its clock bookkeeping assumes every struct moves
 * the clock forward, so one is refused rather than handed to it.
 */
function nonEmpty (reader: ByteReader, length: number): number {
  if (length === 0) reader.fail('struct of length 0')
  return length
}

/**
 * Reads the ID of an item's origin, right origin or parent. Those existed before the item was
 * created, so one from the item's own client has a smaller clock. Yjs does not check this, and
 * an item that names itself or a later item of its client as a neighbour makes it throw after
 * other structs were integrated (found by fuzzing with structurally valid updates).
 */
function readEarlierId (reader: ByteReader, client: number, clock: number, deps: Dependencies): void {
  const idClient = reader.readVarUint()
  const idClock = reader.readVarUint()
  if (idClient === client && idClock >= clock) reader.fail(`struct (${client}, ${clock}) refers to (${idClient}, ${idClock}), which is not older`)
  deps.need(idClient, idClock + 1)
  deps.idClient = idClient
  deps.idClock = idClock
}

/** Reads Item content and returns its length in clock units (UTF-16 code units for strings). */
function readContent (reader: ByteReader, ref: number, maxDepth: number): number {
  switch (ref) {
    case ContentRef.deleted:
      return reader.readVarUint()
    case ContentRef.json: {
      const count = reader.readCount(MIN_JSON_STRING_BYTES, 'JSON content')
      for (let i = 0; i < count; i++) {
        const text = reader.readVarString()
        // Legacy ContentJSON writes undefined as the bare word, which is not JSON.
        if (text !== 'undefined') readJson(reader, text, maxDepth)
      }
      return count
    }
    case ContentRef.binary:
      reader.readVarBytes()
      return 1
    case ContentRef.string:
      return reader.readVarString().length
    case ContentRef.embed:
      readJson(reader, reader.readVarString(), maxDepth)
      return 1
    case ContentRef.format:
      reader.readVarString() // attribute key
      readJson(reader, reader.readVarString(), maxDepth)
      return 1
    case ContentRef.type:
      readTypeRef(reader)
      return 1
    case ContentRef.any: {
      const count = reader.readCount(MIN_ANY_BYTES, 'Any content')
      for (let i = 0; i < count; i++) readAny(reader, maxDepth, 0)
      return count
    }
    case ContentRef.doc: {
      reader.readVarString() // guid
      // Yjs reads `opts.shouldLoad` from this value, which throws for null and undefined;
      // Yjs itself always writes an object here.
      if (readAny(reader, maxDepth, 0) !== AnyTag.object) reader.fail('subdocument options are not an object')
      return 1
    }
    default:
      return reader.fail(`unknown content ref ${ref}`)
  }
}

function readTypeRef (reader: ByteReader): void {
  const typeRef = reader.readVarUint()
  switch (typeRef) {
    case TypeRef.xmlElement:
    case TypeRef.xmlHook:
      reader.readVarString() // node name or hook name
      return
    case TypeRef.array:
    case TypeRef.map:
    case TypeRef.text:
    case TypeRef.xmlFragment:
    case TypeRef.xmlText:
      return
    default:
      reader.fail(`unknown type ref ${typeRef}`)
  }
}

function readJson (reader: ByteReader, text: string, maxDepth: number): void {
  try {
    JSON.parse(text)
  } catch {
    reader.fail('content is not valid JSON')
  }
  // Yjs JSON.stringifies this content again whenever the document is encoded: recursively.
  if (jsonDepth(text) > maxDepth) reader.fail(`JSON nesting deeper than ${maxDepth}`)
}

/**
 * Walks one lib0 `writeAny` value and returns its tag. `depth` counts the objects and arrays
 * around it: lib0's readAny recurses without a limit, so deep nesting would overflow the stack
 * inside Y.applyUpdate after earlier structs were already integrated.
 */
function readAny (reader: ByteReader, maxDepth: number, depth: number): number {
  const tag = reader.readUint8()
  switch (tag) {
    case AnyTag.undefined:
    case AnyTag.null:
    case AnyTag.false:
    case AnyTag.true:
      break
    case AnyTag.integer:
      reader.readVarInt()
      break
    case AnyTag.float32:
      reader.readBytes(4)
      break
    case AnyTag.float64:
    case AnyTag.bigint:
      reader.readBytes(8)
      break
    case AnyTag.string:
      reader.readVarString()
      break
    case AnyTag.bytes:
      reader.readVarBytes()
      break
    case AnyTag.object: {
      if (depth >= maxDepth) reader.fail(`Any nesting deeper than ${maxDepth}`)
      const count = reader.readCount(MIN_ANY_ENTRY_BYTES, 'Any object entry')
      for (let i = 0; i < count; i++) {
        reader.readVarString() // key
        readAny(reader, maxDepth, depth + 1)
      }
      break
    }
    case AnyTag.array: {
      if (depth >= maxDepth) reader.fail(`Any nesting deeper than ${maxDepth}`)
      const count = reader.readCount(MIN_ANY_BYTES, 'Any array element')
      for (let i = 0; i < count; i++) readAny(reader, maxDepth, depth + 1)
      break
    }
    default:
      reader.fail(`unknown Any tag ${tag}`)
  }
  return tag
}
