import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { SignJWT } from 'jose'
import { WebSocket } from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { canonicalState, converged, destroy, RawClient, synced } from './harness/clients.js'
import { startServer, type InProcessServer } from './harness/server.js'
import { until } from './harness/wait.js'
import { signToken } from './harness/tokens.js'
import { upgradeStatus } from './harness/http.js'
import { destroyHocuspocus, hocuspocusSynced, nextEvent, hocuspocus as hocuspocusClient, type Hocuspocus } from './harness/hocuspocus.js'

function hocuspocus(url: string, name: string, token: string | null): Hocuspocus {
  return hocuspocusClient(url, name, { token })
}

// Token authentication of both protocols, with the server started with an auth secret: the
// Hocuspocus provider's Auth handshake per document, and y-websocket's `?token=` on the URL.

const SECRET = 'hocuspocus-auth-test-secret-0123456789abcdef'

function token(claims: { rooms?: string[]; access?: string; expiresInSeconds?: number; secret?: string; sub?: string } = {}): Promise<string> {
  return signToken(
    { rooms: claims.rooms ?? ['hp-*'], access: claims.access ?? 'write' },
    { secret: claims.secret ?? SECRET, subject: claims.sub ?? 'u1', expiresInSeconds: claims.expiresInSeconds },
  )
}

/** A stock y-websocket provider with its token as a URL parameter. */
function ywebsocket(url: string, room: string, tokenValue: string): WebsocketProvider {
  return new WebsocketProvider(url, room, new Y.Doc(), {
    WebSocketPolyfill: WebSocket as unknown as typeof globalThis.WebSocket,
    disableBc: true,
    maxBackoffTime: 500,
    params: { token: tokenValue },
  })
}

/** The bytes of an incoming Hocuspocus frame, from the provider's `message` event. */
function isSyncStatus(frame: Uint8Array, applied: boolean): boolean {
  // varString name, varuint 8 (SyncStatus), varint flag
  const nameLength = frame[0] ?? 0
  if (nameLength >= 128) return false
  return frame[1 + nameLength] === 8 && frame[2 + nameLength] === (applied ? 1 : 0) && frame.length === 3 + nameLength
}

describe('Hocuspocus and y-websocket authentication (server with an auth secret)', () => {
  let server: InProcessServer

  before(async () => {
    server = await startServer({ authSecret: SECRET })
  })
  after(async () => {
    await server.stop()
  })

  it('a valid write token: authenticated with scope read-write, and the document syncs both ways', async () => {
    const hp = hocuspocus(server.url, 'hp-valid', await token())
    const authenticatedEvent = nextEvent<{ scope: string }>(hp.provider, 'authenticated', 'authenticated')
    const yw = ywebsocket(server.url, 'hp-valid', await token())
    try {
      const authenticated = await authenticatedEvent
      assert.equal(authenticated.scope, 'read-write')
      assert.equal(hp.provider.authorizedScope, 'read-write')
      await Promise.all([hocuspocusSynced(hp), synced(yw)])
      hp.doc.getText('text').insert(0, 'from hocuspocus ')
      yw.doc.getMap('map').set('from', 'y-websocket')
      const room = server.server.loadedRoom('hp-valid')
      assert.ok(room !== undefined)
      await converged([hp.doc, yw.doc, room.doc])
      assert.equal(hp.doc.getMap('map').get('from'), 'y-websocket')
      assert.equal(yw.doc.getText('text').toString(), 'from hocuspocus ')
    } finally {
      destroyHocuspocus(hp)
      destroy(yw)
    }
  })

  const refusals: Array<{ what: string; make: () => Promise<string>; reason: RegExp }> = [
    { what: 'a token with a bad signature', make: () => token({ secret: 'not-the-secret' }), reason: /not valid/ },
    { what: 'an expired token', make: () => token({ expiresInSeconds: -60 }), reason: /expired/ },
    { what: 'a token for other rooms', make: () => token({ rooms: ['elsewhere-*'] }), reason: /does not cover/ },
    { what: 'no token at all', make: async () => '', reason: /required/ },
  ]

  refusals.forEach(({ what, make, reason }, index) => {
    it(`${what}: authenticationFailed with a reason, nothing synced; the provider's retry with a valid token works`, async () => {
      const name = `hp-refused-${index}`
      const bad = await make()
      // Content the refused provider must not receive.
      const writer = ywebsocket(server.url, name, await token())
      await synced(writer).catch((err: unknown) => {
        destroy(writer)
        throw err
      })
      const hp = hocuspocus(server.url, name, bad)
      const failure = nextEvent<{ reason: string }>(hp.provider, 'authenticationFailed', 'authenticationFailed')
      try {
        writer.doc.getText('text').insert(0, 'secret content')
        const room = server.server.loadedRoom(name)
        assert.ok(room !== undefined)
        await until(() => room.doc.getText('text').length > 0, 'the writer edit to reach the server')

        const failed = await failure
        assert.match(failed.reason, reason)
        assert.equal(hp.provider.isAuthenticated, false)
        assert.equal(hp.provider.isSynced, false)
        assert.equal(hp.doc.getText('text').toString(), '', 'nothing of the document reached the refused provider')
        assert.equal(room.memberCount, 1, 'the refused document is not a member of the room')

        // Retry with a new token: the provider reads `configuration.token` again on every socket
        // open (onOpen: sendToken, then startSync), so a reconnect of its socket retries.
        hp.provider.configuration.token = await token()
        const authenticated = nextEvent<{ scope: string }>(hp.provider, 'authenticated', 'authenticated after the retry')
        const resynced = nextEvent<unknown>(hp.provider, 'synced', 'synced after the retry')
        resynced.catch(() => {})
        hp.socket.disconnect()
        // connect() is a no-op while the socket still counts as connected.
        await until(() => hp.socket.status === 'disconnected', 'the socket to close')
        void hp.socket.connect()
        assert.equal((await authenticated).scope, 'read-write')
        await resynced
        assert.equal(hp.doc.getText('text').toString(), 'secret content')
        hp.doc.getMap('map').set('retry', true)
        await until(() => writer.doc.getMap('map').get('retry') === true, 'the retried provider edit to reach the writer')
      } finally {
        destroyHocuspocus(hp)
        destroy(writer)
      }
    })
  })

  // The retry without a reconnect: after a denial the server forgets the document (so a second
  // token is authenticated afresh), but the provider sends its Sync step 1 only on socket open.
  const retriesOnOpenSocket: Array<{ what: string; retry(client: Hocuspocus): Promise<void> }> = [
    { what: 'provider.sendToken() with a new token', retry: (client) => client.provider.sendToken() },
    {
      what: 'detach() and attach() of the provider with a new token',
      retry: async (client) => {
        client.provider.detach()
        client.provider.attach()
      },
    },
  ]

  retriesOnOpenSocket.forEach(({ what, retry }, index) => {
    it(`after a denial, ${what} on the same open socket authenticates and syncs the document`, async () => {
      const name = `hp-retry-${index}`
      const writer = ywebsocket(server.url, name, await token())
      await synced(writer).catch((err: unknown) => {
        destroy(writer)
        throw err
      })
      const hp = hocuspocus(server.url, name, await token({ rooms: ['elsewhere'] }))
      const failure = nextEvent<{ reason: string }>(hp.provider, 'authenticationFailed', 'authenticationFailed')
      try {
        writer.doc.getText('text').insert(0, 'content')
        await failure
        hp.provider.configuration.token = await token()
        const socketBefore = hp.socket.webSocket
        const authenticated = nextEvent<{ scope: string }>(hp.provider, 'authenticated', 'authenticated after the retry')
        const resynced = nextEvent<unknown>(hp.provider, 'synced', 'synced after the retry', () => true, 3_000)
        resynced.catch(() => {})
        await retry(hp)
        assert.equal((await authenticated).scope, 'read-write')
        await resynced
        assert.equal(hp.socket.webSocket, socketBefore, 'the same socket')
        await converged([hp.doc, writer.doc])
      } finally {
        destroyHocuspocus(hp)
        destroy(writer)
      }
    })
  })

  it('a read-only token: scope readonly; local edits are refused, stored nothing, seen by nobody; remote edits still arrive', async () => {
    const name = 'hp-readonly'
    const writer = ywebsocket(server.url, name, await token())
    const other = hocuspocus(server.url, name, await token())
    const reader = hocuspocus(server.url, name, await token({ access: 'read' }))
    const authenticated = nextEvent<{ scope: string }>(reader.provider, 'authenticated', 'authenticated')
    const frames: Uint8Array[] = []
    reader.provider.on('message', ({ event }: { event: MessageEvent }) => frames.push(new Uint8Array(event.data as ArrayBuffer)))
    try {
      const scope = await authenticated
      assert.equal(scope.scope, 'readonly')
      await Promise.all([synced(writer), hocuspocusSynced(other), hocuspocusSynced(reader)])
      writer.doc.getText('text').insert(0, 'written ')
      const room = server.server.loadedRoom(name)
      assert.ok(room !== undefined)
      await converged([writer.doc, other.doc, reader.doc, room.doc], 'the readers to get the writer edit')
      const before = canonicalState(room.doc)

      const refusedBefore = frames.filter((f) => isSyncStatus(f, false)).length
      reader.doc.getText('text').insert(0, 'READONLY EDIT ')
      reader.doc.getMap('map').set('readonly', true)
      await until(() => frames.filter((f) => isSyncStatus(f, false)).length >= refusedBefore + 2, 'both read-only updates to be refused with SyncStatus(0)')
      assert.deepEqual(canonicalState(room.doc), before, 'the server document is unchanged')

      // A later edit round-trips to everyone; the read-only edit is still nowhere but in the reader.
      writer.doc.getMap('map').set('later', 1)
      await until(() => reader.doc.getMap('map').get('later') === 1 && other.doc.getMap('map').get('later') === 1, 'a later writer edit to reach both Hocuspocus providers')
      for (const doc of [writer.doc, other.doc, room.doc]) {
        assert.ok(!doc.getText('text').toString().includes('READONLY'), 'no other client sees the read-only edit')
        assert.equal(doc.getMap('map').get('readonly'), undefined)
      }
      assert.equal(reader.provider.hasUnsyncedChanges, true, 'refused edits stay unsynced at the provider')

      // What LevelDB holds: flushed, then read through the server's store.
      const internals = server.server as unknown as { writer: { flush(room: string): Promise<void>; store: { readLog(room: string): Promise<Array<{ update: Uint8Array }>> } } }
      await internals.writer.flush(name)
      const stored = new Y.Doc()
      for (const entry of await internals.writer.store.readLog(name)) Y.applyUpdate(stored, entry.update)
      assert.deepEqual(canonicalState(stored), canonicalState(room.doc), 'the stored document is the server document')
      assert.ok(!stored.getText('text').toString().includes('READONLY'))
    } finally {
      destroyHocuspocus(reader, other)
      destroy(writer)
    }
  })

  it('y-websocket with ?token=: valid works; missing or bad is 401 before the upgrade; out of scope is 403', async () => {
    const valid = ywebsocket(server.url, 'hp-yws', await token())
    try {
      await synced(valid)
      valid.doc.getText('text').insert(0, 'ok')
      const room = server.server.loadedRoom('hp-yws')
      assert.ok(room !== undefined)
      await converged([valid.doc, room.doc])
    } finally {
      destroy(valid)
    }
    assert.equal(await upgradeStatus(`${server.url}/hp-yws`), 401, 'no token')
    assert.equal(await upgradeStatus(`${server.url}/hp-yws?token=`), 401, 'empty token')
    assert.equal(await upgradeStatus(`${server.url}/hp-yws?token=${await token({ secret: 'wrong' })}`), 401, 'bad signature')
    assert.equal(await upgradeStatus(`${server.url}/hp-yws?token=${await token({ expiresInSeconds: -60 })}`), 401, 'expired')
    assert.equal(await upgradeStatus(`${server.url}/hp-yws?token=${await token({ rooms: ['other'] })}`), 403, 'out of scope')
    assert.equal(await upgradeStatus(`${server.url}/hp-yws?token=${await token({ rooms: ['hp-yws'] })}`), 101, 'exact room name in scope')
  })

  it('y-websocket: a token that expires while connected closes the socket with 4401 at its expiry', async () => {
    const nowSeconds = Math.floor(Date.now() / 1000)
    const expiresAt = (nowSeconds + 2) * 1000
    const short = await new SignJWT({ rooms: ['hp-expiring'], access: 'write' })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('u1')
      .setExpirationTime(nowSeconds + 2)
      .sign(new TextEncoder().encode(SECRET))
    const raw = await RawClient.open(`${server.url}/hp-expiring?token=${short}`)
    try {
      await raw.frame((f) => f.length > 0, 'the server sync step 1')
      const code = await raw.waitClosed(5_000)
      const closedAt = Date.now()
      assert.equal(code, 4401, `close reason: ${raw.closeReason}`)
      assert.ok(closedAt >= expiresAt - 50, `closed ${expiresAt - closedAt} ms before the expiry`)
      assert.ok(closedAt <= expiresAt + 1_000, `closed ${closedAt - expiresAt} ms after the expiry`)
    } finally {
      raw.socket.terminate()
    }
  })
})
