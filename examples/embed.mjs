// @ts-check
// weft inside an application's own HTTP server: the application's login cookie decides who
// may open a document, its own database keeps the documents, and it logs every change.
import http from 'node:http'
import { randomUUID } from 'node:crypto'
import * as Y from 'yjs'
import { createServer, documentToJson, StoreClosedError, VersionLimitError } from 'weft-server'

/** @typedef {import('weft-server').LogEntry} LogEntry */
/** @typedef {import('weft-server').VersionRecord} VersionRecord */
/** @typedef {import('weft-server').DocumentStore} DocumentStore */

/**
 * The application's database: a Map here to keep the example short; Postgres or S3 behind the
 * same methods work the same way ("Writing a store" in weft's README says what each must keep).
 * @implements {DocumentStore}
 */
class AppStore {
  kind = 'app'
  closed = false
  /** @type {Map<string, { next: number, log: LogEntry[], quarantined: LogEntry[], versions: Map<string, VersionRecord> }>} */
  rooms = new Map()

  open() {
    if (this.closed) throw new StoreClosedError()
  }

  /** @param {string} name */
  room(name) {
    this.open()
    let room = this.rooms.get(name)
    if (room === undefined) this.rooms.set(name, (room = { next: 0, log: [], quarantined: [], versions: new Map() }))
    return room
  }

  /** @param {string} name */
  async readLog(name) {
    return this.room(name).log.map(({ key, update }) => ({ key, update: update.slice() }))
  }

  /** @param {string} name @param {Uint8Array} update */
  async append(name, update) {
    const room = this.room(name)
    // Keys increase as strings, in append order, and are never reused.
    const key = String(room.next++).padStart(16, '0')
    room.log.push({ key, update: update.slice() })
    return key
  }

  /** @param {string} name @param {readonly string[]} keys @param {Uint8Array} merged */
  async replace(name, keys, merged) {
    if (keys.length === 0) throw new RangeError('replace needs at least one key')
    const room = this.room(name)
    const gone = new Set(keys)
    if (room.log.filter((entry) => gone.has(entry.key)).length !== gone.size) throw new RangeError('unknown key')
    // The merged entry takes the newest replaced key: it stays before anything appended later.
    room.log = room.log.filter((entry) => !gone.has(entry.key))
    room.log.push({ key: [...keys].sort().at(-1) ?? '', update: merged.slice() })
    room.log.sort((a, b) => (a.key < b.key ? -1 : 1))
  }

  /** @param {string} name */
  async deleteRoom(name) {
    const room = this.room(name)
    room.log = []
    room.quarantined = []
    room.versions.clear()
  }

  /** @param {string} name @param {string} key */
  async quarantine(name, key) {
    const room = this.room(name)
    room.quarantined.push(...room.log.filter((entry) => entry.key === key))
    room.log = room.log.filter((entry) => entry.key !== key)
  }

  async listRooms() {
    this.open()
    return [...this.rooms]
      .filter(([, room]) => room.log.length > 0)
      .map(([name, { log, quarantined }]) => ({
        room: name,
        entries: log.length,
        bytes: log.reduce((sum, entry) => sum + entry.update.byteLength, 0),
        ...(quarantined.length > 0 ? { quarantined: quarantined.length } : {}),
      }))
  }

  async reclaimSpace() {}

  async close() {
    this.closed = true
  }

  /** @param {string} name @param {VersionRecord} version @param {import('weft-server').VersionLimits} [limits] */
  async putVersion(name, version, limits) {
    const { versions } = this.room(name)
    if (limits !== undefined) {
      const others = [...versions.values()].filter((other) => other.id !== version.id)
      const bytes = others.reduce((sum, other) => sum + other.update.byteLength, version.update.byteLength)
      if (others.length + 1 > limits.maxCount) throw new VersionLimitError('count', name, `${others.length} versions`)
      if (bytes > limits.maxBytes) throw new VersionLimitError('bytes', name, `${bytes} bytes of versions`)
    }
    versions.set(version.id, { ...version, update: version.update.slice() })
  }

  /** @param {string} name @param {import('weft-server').VersionPageRequest} [page] */
  async listVersions(name, { after = '', limit = Infinity } = {}) {
    return [...this.room(name).versions.values()]
      .filter((version) => version.id > after)
      .sort((a, b) => (a.id < b.id ? -1 : 1))
      .slice(0, limit)
      .map(({ id, name: title, createdAt, update }) => ({ id, name: title, createdAt, bytes: update.byteLength }))
  }

  /** @param {string} name @param {string} id */
  async getVersion(name, id) {
    const version = this.room(name).versions.get(id)
    return version === undefined ? null : { ...version, update: version.update.slice() }
  }

  /** @param {string} name */
  async deleteVersions(name) {
    this.room(name).versions.clear()
  }
}

/** The application's sessions: cookie value → user. */
const sessions = new Map()

/** @param {string | string[] | undefined} cookie */
function userOf(cookie) {
  const match = typeof cookie === 'string' ? /(?:^|;\s*)session=([^;]+)/.exec(cookie) : null
  return match === null ? undefined : sessions.get(match[1])
}

const store = new AppStore()
const weft = createServer({
  store,
  // Every WebSocket upgrade, Hocuspocus document and HTTP API request comes here.
  authenticate: ({ headers }) => {
    const user = userOf(headers.cookie)
    return user === undefined ? { refuse: 'unauthenticated', message: 'log in first' } : { subject: user, access: 'write' }
  },
  hooks: {
    onChange: (room, update, origin) => {
      const subject = 'subject' in origin ? origin.subject : null
      console.log(JSON.stringify({ msg: 'document changed', room, origin: origin.kind, subject, bytes: update.byteLength }))
    },
  },
})

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url ?? '/', 'http://app')
  if (url.pathname === '/login') {
    // A stand-in for a real login: whoever asks is who they say.
    const session = randomUUID()
    sessions.set(session, url.searchParams.get('user') ?? 'guest')
    res.writeHead(204, { 'set-cookie': `session=${session}; HttpOnly; SameSite=Strict; Path=/` })
    res.end()
  } else if (url.pathname.startsWith('/documents/') && userOf(req.headers.cookie) !== undefined) {
    // The application reads its own copy of a document, straight from its own database.
    const doc = new Y.Doc()
    for (const { update } of await store.readLog(decodeURIComponent(url.pathname.slice(11)))) Y.applyUpdate(doc, update)
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify(documentToJson(doc)))
  } else weft.handleRequest(req, res)
})
weft.attach(server)
server.on('listening', () => console.log(JSON.stringify({ msg: 'app listening', address: server.address() })))
server.listen(8080)
process.once('SIGTERM', async () => {
  await weft.drain()
  server.close()
})
