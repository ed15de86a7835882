import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import { WebSocket } from 'ws'
import * as Y from 'yjs'
import type { WebsocketProvider } from 'y-websocket'
import { decodeYMessage, encodeSyncStep1, type YMessage } from '../protocol/index.js'
import { canonicalState, converged, destroy, provider, RawClient, synced } from './harness/clients.js'
import { startServer, tempDir, type InProcessServer } from './harness/server.js'
import { until, withDeadline } from './harness/wait.js'
import { httpRequest } from './harness/http.js'

// Behaviour of the y-websocket protocol against stock WebsocketProviders over loopback sockets,
// with LevelDB in a temp dir.

/** The server's document of a loaded room; fails the test when the room is not loaded. */
function serverDoc(server: InProcessServer, room: string): Y.Doc {
  const loaded = server.server.loadedRoom(room)
  assert.ok(loaded !== undefined, `room ${JSON.stringify(room)} is not loaded on the server`)
  return loaded.doc
}

function decodeOrNull(frame: Uint8Array): YMessage | null {
  try {
    return decodeYMessage(frame)
  } catch {
    return null
  }
}

describe('y-websocket sync with stock providers', () => {
  let server: InProcessServer
  before(async () => {
    server = await startServer()
  })
  after(async () => {
    await server.stop()
  })

  it('converges two providers on concurrent text, map and array edits, byte-identical to the server', async () => {
    const room = 'concurrent'
    const a = provider(server.url, room)
    const b = provider(server.url, room)
    try {
      await Promise.all([synced(a), synced(b)])
      // Both edit before either hears of the other's edit: the server must merge, not overwrite.
      a.doc.transact(() => {
        a.doc.getText('text').insert(0, 'alpha ')
        a.doc.getMap('map').set('shared', 'from a')
        a.doc.getMap('map').set('a', 1)
        a.doc.getArray('list').push(['a1', 'a2'])
      })
      b.doc.transact(() => {
        b.doc.getText('text').insert(0, 'beta ')
        b.doc.getMap('map').set('shared', 'from b')
        b.doc.getMap('map').set('b', 2)
        b.doc.getArray('list').push(['b1'])
      })
      const state = await converged([a.doc, b.doc, serverDoc(server, room)], 'providers and server to converge')
      const text = a.doc.getText('text').toString()
      assert.ok(text.includes('alpha ') && text.includes('beta '), `text has both edits: ${text}`)
      assert.equal(a.doc.getMap('map').get('a'), 1)
      assert.equal(a.doc.getMap('map').get('b'), 2)
      assert.equal(a.doc.getArray('list').length, 3)
      assert.deepEqual(canonicalState(serverDoc(server, room)), state)
      assert.deepEqual(canonicalState(b.doc), state)
    } finally {
      destroy(a, b)
    }
  })

  it('gives a late joiner the content, while the room is loaded and after it was unloaded to LevelDB', async () => {
    const unloading = await startServer({ roomUnloadDelayMs: 0 })
    const room = 'late-joiner'
    const writer = provider(unloading.url, room)
    let joiner: WebsocketProvider | null = null
    let reloaded: WebsocketProvider | null = null
    try {
      await synced(writer)
      writer.doc.getText('text').insert(0, 'written before anyone else came')
      writer.doc.getMap('map').set('k', { nested: [1, 2, 3] })
      await converged([writer.doc, serverDoc(unloading, room)], 'server to have the writer content')

      joiner = provider(unloading.url, room)
      await synced(joiner)
      const state = await converged([writer.doc, joiner.doc], 'late joiner to receive the content')
      assert.equal(joiner.doc.getText('text').toString(), 'written before anyone else came')

      destroy(writer, joiner)
      // With nobody left the room is flushed and unloaded: the next joiner reads LevelDB.
      await until(() => unloading.server.loadedRoom(room) === undefined, 'room to unload')
      reloaded = provider(unloading.url, room)
      await synced(reloaded)
      assert.deepEqual(canonicalState(reloaded.doc), state)
    } finally {
      destroy(writer)
      if (joiner !== null) destroy(joiner)
      if (reloaded !== null) destroy(reloaded)
      await unloading.stop()
    }
  })

  it('keeps 20 parallel rooms apart: no room ever holds another room’s content', async () => {
    const rooms = Array.from({ length: 20 }, (_, i) => `parallel-${i}`)
    const providers: WebsocketProvider[] = []
    const leaks: string[] = []
    try {
      for (const room of rooms) {
        for (let j = 0; j < 2; j++) {
          const p = provider(server.url, room)
          // Watch every change as it happens, not only the end state.
          p.doc.getMap('owner').observe((event) => {
            for (const key of event.keysChanged) if (!key.startsWith(`${room}:`)) leaks.push(`${key} in ${room}`)
          })
          providers.push(p)
        }
      }
      await Promise.all(providers.map((p) => synced(p)))
      for (const p of providers) {
        p.doc.getMap('owner').set(`${p.roomname}:${p.doc.clientID}`, p.roomname)
        p.doc.getText('text').insert(0, `[${p.roomname}]`)
      }
      await Promise.all(
        rooms.map((room, i) => {
          const pair = providers.slice(i * 2, i * 2 + 2).map((p) => p.doc)
          return converged([...pair, serverDoc(server, room)], `room ${room} to converge`)
        }),
      )
      for (const room of rooms) {
        for (const doc of [...providers.filter((p) => p.roomname === room).map((p) => p.doc), serverDoc(server, room)]) {
          const keys = [...doc.getMap('owner').keys()]
          assert.equal(keys.length, 2, `${room} has both of its own keys and nothing else: ${keys.join(', ')}`)
          for (const key of keys) assert.ok(key.startsWith(`${room}:`), `${key} leaked into ${room}`)
          const text = doc.getText('text').toString()
          assert.equal(text.length, 2 * `[${room}]`.length, `${room} text holds only its own two inserts: ${text}`)
          assert.equal(text.split(`[${room}]`).join(''), '', `${room} text holds only its own inserts: ${text}`)
        }
      }
      assert.deepEqual(leaks, [])
    } finally {
      destroy(...providers)
    }
  })

  it('syncs a 5 MB document to a new client', async () => {
    const room = 'five-megabytes'
    const writer = provider(server.url, room)
    let reader: WebsocketProvider | null = null
    try {
      await synced(writer)
      // Not one repeated character: a run of identical bytes would also pass a server that truncated it.
      const big = randomBytes(3_750_000).toString('base64')
      assert.ok(big.length >= 5_000_000)
      writer.doc.getText('big').insert(0, big)
      await until(() => server.server.loadedRoom(room)?.doc.getText('big').length === big.length, 'server to hold the 5 MB text', 20_000)
      reader = provider(server.url, room)
      await synced(reader, 20_000)
      assert.equal(reader.doc.getText('big').toString(), big)
      assert.deepEqual(canonicalState(reader.doc), canonicalState(writer.doc))
    } finally {
      destroy(writer)
      if (reader !== null) destroy(reader)
    }
  })

  it('never answers sync before the room has loaded from storage (y-websocket#81)', async () => {
    const dir = await tempDir()
    const room = 'stored-before-restart'
    let raw: RawClient | null = null
    try {
      const first = await startServer({ data: dir.path })
      const writer = provider(first.url, room)
      let expected: Uint8Array
      try {
        await synced(writer)
        // Many small transactions: the stored log is longer, so loading it takes a moment.
        for (let i = 0; i < 300; i++) writer.doc.getArray('items').push([`item ${i}`])
        expected = await converged([writer.doc, serverDoc(first, room)], 'first server to have the items')
      } finally {
        destroy(writer)
        await first.stop()
      }

      const second = await startServer({ data: dir.path })
      try {
        const socket = new WebSocket(`${second.url}/${room}`)
        raw = new RawClient(socket)
        // Sync step 1 with an empty state vector, sent in the same tick the socket opens: a server that
        // answered before loading would send an empty step 2 and the client would think the room empty.
        socket.once('open', () => socket.send(encodeSyncStep1(Y.encodeStateVector(new Y.Doc()))))
        const step2 = await raw.frame((frame) => decodeOrNull(frame)?.kind === 'sync-step-2', 'sync step 2 from the server')
        const message = decodeYMessage(step2)
        assert.equal(message.kind, 'sync-step-2')
        const received = new Y.Doc()
        Y.applyUpdate(received, message.update)
        assert.equal(received.getArray('items').length, 300)
        assert.deepEqual(canonicalState(received), expected)
        // The server's own sync step 1 comes first and already carries the stored state vector.
        const opening = decodeYMessage(raw.frames[0] as Uint8Array)
        assert.equal(opening.kind, 'sync-step-1')
        assert.deepEqual(opening.stateVector, Y.encodeStateVectorFromUpdate(expected))
        raw.close()
        await raw.waitClosed()
      } finally {
        raw?.socket.terminate()
        await second.stop()
      }
    } finally {
      await dir.remove()
    }
  })
})

describe('room names in the URL', () => {
  let server: InProcessServer
  before(async () => {
    server = await startServer()
  })
  after(async () => {
    await server.stop()
  })

  /** Connects providers under the given URL room parts and checks they share the decoded room. */
  async function assertSameRoom(urlRooms: string[], decoded: string): Promise<void> {
    const providers = urlRooms.map((name) => provider(server.url, name))
    try {
      await Promise.all(providers.map((p) => synced(p)))
      providers.forEach((p, i) => p.doc.getMap('m').set(`via ${i}`, urlRooms[i]))
      await converged([...providers.map((p) => p.doc), serverDoc(server, decoded)], `providers of ${decoded} to converge`)
      assert.equal(serverDoc(server, decoded).getMap('m').size, urlRooms.length)
      // The encoded form is not a room of its own.
      for (const name of urlRooms) if (name !== decoded) assert.equal(server.server.loadedRoom(name), undefined, `${name} is not a room`)
    } finally {
      destroy(...providers)
    }
  }

  it('maps my%20room to the room "my room"', async () => {
    await assertSameRoom(['my%20room', 'my room'], 'my room')
  })

  it('maps percent-encoded and raw unicode to the same room', async () => {
    const name = 'zimmer-ä-日本-😀'
    await assertSameRoom([encodeURIComponent(name), name], name)
  })

  it('maps a/b and a%2Fb to the room "a/b"', async () => {
    await assertSameRoom(['a/b', 'a%2Fb'], 'a/b')
  })

  it('leaves the query string out of the room name', async () => {
    await assertSameRoom(['with-query?x=1', 'with-query'], 'with-query')
  })

  it('keeps a leading slash: the stock provider with room "/doc" joins the room "/doc"', async () => {
    // The URL is ws://HOST:PORT//leading-slash; the room is everything after the first "/".
    // (The same URL results from a server URL with a trailing slash, a common configuration.)
    const answer = await httpRequest(server.port, '//leading-slash-raw', { upgrade: true })
    assert.equal(answer.status, 101, `//leading-slash-raw: ${answer.body}`)
    assert.ok(server.server.loadedRoom('/leading-slash-raw') !== undefined, '//leading-slash-raw joined "/leading-slash-raw"')
    await assertSameRoom(['/leading-slash', '%2Fleading-slash'], '/leading-slash')
  })

  /** Upgrades `path` raw and checks which room it joined, and that the normalised room was not used. */
  async function assertRawPathRoom(path: string, room: string, notRoom: string): Promise<void> {
    const answer = await httpRequest(server.port, path, { upgrade: true })
    assert.equal(answer.status, 101, `${path}: ${answer.body}`)
    // The server joins the room before it writes the 101, so the room is loaded by now.
    assert.ok(server.server.loadedRoom(room) !== undefined, `${path} joined ${JSON.stringify(room)}`)
    assert.equal(server.server.loadedRoom(notRoom), undefined, `${path} must not join ${JSON.stringify(notRoom)}`)
  }

  it('does not resolve dot segments: /a/../b is the room "a/../b", not "b"', async () => {
    await assertRawPathRoom('/dots/../target', 'dots/../target', 'target')
    await assertRawPathRoom('/dots/%2e%2e/target2', 'dots/../target2', 'target2')
  })

  it('does not turn a backslash into a slash: /a\\b is the room "a\\b"', async () => {
    await assertRawPathRoom('/back\\slash', 'back\\slash', 'back/slash')
  })

  it('accepts a name of exactly 512 bytes', async () => {
    // 256 × "ä" (two bytes each) = 512 bytes.
    const answer = await httpRequest(server.port, `/${encodeURIComponent('ä'.repeat(256))}`, { upgrade: true })
    assert.equal(answer.status, 101)
    const ascii = await httpRequest(server.port, `/${'x'.repeat(512)}`, { upgrade: true })
    assert.equal(ascii.status, 101)
  })

  const refused: Array<[string, string]> = [
    ['a control character', '/%00x'],
    ['a C1 control character', '/a%C2%85b'],
    ['a 513-byte name', `/${'x'.repeat(513)}`],
    ['a 514-byte name in two-byte characters', `/${encodeURIComponent('ä'.repeat(257))}`],
    ['malformed percent-encoding', '/%E0%A4%A'],
  ]
  for (const [what, path] of refused) {
    it(`refuses ${what} with HTTP 400 and a JSON body before the upgrade`, async () => {
      const answer = await httpRequest(server.port, path, { upgrade: true })
      assert.equal(answer.status, 400, `${path}: ${answer.body}`)
      assert.match(String(answer.headers['content-type']), /^application\/json/)
      const body = JSON.parse(answer.body) as { error?: unknown; message?: unknown }
      assert.equal(body.error, 'invalid_room')
      assert.equal(typeof body.message, 'string')
    })
  }

  it('serves / with the Hocuspocus protocol (the default --hocuspocus-path), not as an empty room', async () => {
    const answer = await httpRequest(server.port, '/', { upgrade: true })
    assert.equal(answer.status, 101)
  })

  it('refuses the empty room with HTTP 400 when the Hocuspocus protocol is on another path', async () => {
    const other = await startServer({ hocuspocusPath: '/collab' })
    try {
      const answer = await httpRequest(other.port, '/', { upgrade: true })
      assert.equal(answer.status, 400, answer.body)
      assert.equal((JSON.parse(answer.body) as { error?: unknown }).error, 'invalid_room')
      assert.equal((await httpRequest(other.port, '/collab', { upgrade: true })).status, 101)
    } finally {
      await other.stop()
    }
  })

  it('refuses a bad name through the stock ws client too (unexpected-response)', async () => {
    const socket = new WebSocket(`${server.url}/%00x`)
    const status = await withDeadline(
      new Promise<number>((resolve, reject) => {
        socket.once('unexpected-response', (req, res) => {
          resolve(res.statusCode ?? 0)
          req.destroy()
        })
        socket.once('open', () => reject(new Error('upgrade was accepted')))
        socket.on('error', () => {})
      }),
      'refusal of /%00x',
    )
    assert.equal(status, 400)
  })
})
