import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'
import { WebSocket } from 'ws'
import * as Y from 'yjs'
import { encodeHocuspocusAuthenticated, encodeHocuspocusClientAuthToken, encodeHocuspocusClientClose, encodeHocuspocusPermissionDenied } from '../protocol/index.js'
import { destroy, provider, RawClient, synced, textUpdate } from './harness/clients.js'
import { httpRequest, upgradeStatus, type HttpAnswer } from './harness/http.js'
import { describeLive, whileLive } from './harness/live-probe.js'
import { metricValue } from './harness/metrics.js'
import { spawnWeft, startServer, type InProcessServer, type WeftProcess } from './harness/server.js'
import { eventually, until, withDeadline } from './harness/wait.js'

// Issue 12, finding 8: an empty room costs memory, so the rooms one client can make the server
// load are bounded: documents per Hocuspocus socket (--max-documents-per-connection), distinct
// rooms per address over its sockets, documents and HTTP requests (--max-rooms-per-ip), and
// rooms loaded at all (--max-loaded-rooms).

type Answer = 'authenticated' | string

/** Opens Hocuspocus documents on one raw socket (open mode: any token) and waits for every answer. */
async function openDocuments(client: RawClient, names: readonly string[]): Promise<Map<string, Answer>> {
  let read = client.frames.length
  const expected = new Map<string, { name: string; answer: Answer }>()
  for (const name of names) {
    expected.set(Buffer.from(encodeHocuspocusAuthenticated(name, 'read-write')).toString('latin1'), { name, answer: 'authenticated' })
    for (const reason of REASONS) expected.set(Buffer.from(encodeHocuspocusPermissionDenied(name, reason)).toString('latin1'), { name, answer: reason })
  }
  for (const name of names) client.send(encodeHocuspocusClientAuthToken(name, ''))
  const answers = new Map<string, Answer>()
  await until(() => {
    for (; read < client.frames.length; read++) {
      const hit = expected.get(Buffer.from(client.frames[read] as Uint8Array).toString('latin1'))
      if (hit !== undefined) answers.set(hit.name, hit.answer)
    }
    return answers.size === names.length
  }, `answers for ${names.length} documents`, 20_000)
  return answers
}

const PER_CONNECTION = 'too many documents on one connection'
const PER_IP = 'too many rooms from this address'
const LOADED = 'too many rooms loaded; retry later'
const REASONS = [PER_CONNECTION, PER_IP, LOADED]

function tally(answers: Map<string, Answer>): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const answer of answers.values()) counts[answer] = (counts[answer] ?? 0) + 1
  return counts
}

function post(port: number, path: string, body: Uint8Array): Promise<HttpAnswer> {
  return httpRequest(port, path, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body })
}

function refusals(weft: InProcessServer, limit: string, protocol: string): Promise<number | undefined> {
  return metricValue(weft.http, 'weft_room_limit_refusals_total', `{limit="${limit}",protocol="${protocol}"}`)
}

describe('rooms per client', () => {
  const servers: InProcessServer[] = []
  after(async () => {
    for (const server of servers) await server.stop()
  })

  async function serve(options: Parameters<typeof startServer>[0]): Promise<InProcessServer> {
    const weft = await startServer(options)
    servers.push(weft)
    return weft
  }

  it('one Hocuspocus socket opening 8 documents with --max-documents-per-connection 5: 5 open, 3 are denied; a closed one makes room', async () => {
    const weft = await serve({ maxDocumentsPerConnection: 5 })
    const client = await RawClient.open(`${weft.url}/`)
    const names = Array.from({ length: 8 }, (_, i) => `doc-${i}`)
    const answers = await openDocuments(client, names)
    assert.deepEqual(tally(answers), { authenticated: 5, [PER_CONNECTION]: 3 })
    assert.equal(await refusals(weft, 'per_connection', 'hocuspocus'), 3)
    const open = names.filter((n) => answers.get(n) === 'authenticated')
    client.send(encodeHocuspocusClientClose(open[0] as string))
    assert.equal((await openDocuments(client, ['doc-late'])).get('doc-late'), 'authenticated')
    client.close()
  })

  it('the official provider on a shared socket: the document past the bound fails authentication with the documented reason', async () => {
    const weft = await serve({ maxDocumentsPerConnection: 3 })
    const socket = new HocuspocusProviderWebsocket({ url: `${weft.url}/`, WebSocketPolyfill: WebSocket, delay: 100, minDelay: 50, maxDelay: 500 })
    const providers = Array.from({ length: 4 }, (_, i) => new HocuspocusProvider({ websocketProvider: socket, name: `shared-${i}`, document: new Y.Doc(), token: null }))
    const outcomes = providers.map((p) =>
      withDeadline(
        new Promise<string>((resolve) => {
          p.on('synced', () => resolve('synced'))
          p.on('authenticationFailed', ({ reason }: { reason: string }) => resolve(reason))
        }),
        `${p.configuration.name} to sync or fail`,
      ),
    )
    for (const p of providers) p.attach()
    try {
      const results = await Promise.all(outcomes)
      assert.deepEqual(results.filter((r) => r === 'synced').length, 3)
      assert.deepEqual(results.filter((r) => r !== 'synced'), [PER_CONNECTION])
    } finally {
      for (const p of providers) p.destroy()
      socket.destroy()
    }
  })

  it('--max-rooms-per-ip 6 counts distinct rooms over y-websocket sockets, Hocuspocus documents and HTTP; each protocol is refused past it', async () => {
    const weft = await serve({ maxRoomsPerIp: 6 })
    const ys = [provider(weft.url, 'r1'), provider(weft.url, 'r2'), provider(weft.url, 'r2')]
    try {
      await Promise.all(ys.map((p) => synced(p)))
      const hp = await RawClient.open(`${weft.url}/`)
      // r1 is held already: opening it again is not a new room for this address.
      const answers = await openDocuments(hp, ['r1', 'r3', 'r4', 'r5', 'r6', 'r7', 'r8'])
      assert.deepEqual(tally(answers), { authenticated: 5, [PER_IP]: 2 })
      assert.equal(answers.get('r1'), 'authenticated')
      // y-websocket: 429 before the upgrade; HTTP: 429 too_many_rooms; a held room is still served.
      assert.equal(await upgradeStatus(`${weft.url}/r9`), 429)
      const refused = await post(weft.port, '/api/rooms/r10/updates', textUpdate('x'))
      assert.equal(refused.status, 429)
      assert.equal((JSON.parse(refused.body) as { error: string }).error, 'too_many_rooms')
      assert.equal((await post(weft.port, '/api/rooms/r2/updates', textUpdate('y'))).status, 204)
      assert.equal(await refusals(weft, 'per_ip', 'hocuspocus'), 2)
      assert.equal(await refusals(weft, 'per_ip', 'ywebsocket'), 1)
      assert.equal(await refusals(weft, 'per_ip', 'http'), 1)
      // Closing the Hocuspocus socket gives its rooms back.
      hp.close()
      await hp.waitClosed()
      // Its rooms are given back once the server has handled the close.
      await eventually(async () => (await upgradeStatus(`${weft.url}/r9`)) === 101, 'r9 to be admitted')
    } finally {
      destroy(...ys)
    }
  })

  it('--max-loaded-rooms 3: a request that would load a fourth room is refused on every protocol; loaded rooms are still served', async () => {
    const weft = await serve({ maxLoadedRooms: 3, roomUnloadDelayMs: -1 })
    const ys = [provider(weft.url, 'a'), provider(weft.url, 'b'), provider(weft.url, 'c')]
    try {
      await Promise.all(ys.map((p) => synced(p)))
      assert.equal(await upgradeStatus(`${weft.url}/d`), 503)
      assert.equal(await upgradeStatus(`${weft.url}/a`), 101)
      const hp = await RawClient.open(`${weft.url}/`)
      const answers = await openDocuments(hp, ['b', 'd'])
      assert.deepEqual(Object.fromEntries(answers), { b: 'authenticated', d: LOADED })
      hp.close()
      const refused = await post(weft.port, '/api/rooms/d/updates', textUpdate('x'))
      assert.equal(refused.status, 503)
      assert.equal((JSON.parse(refused.body) as { error: string }).error, 'unavailable')
      assert.equal(weft.server.loadedRoom('d'), undefined)
      for (const protocol of ['ywebsocket', 'hocuspocus', 'http']) assert.equal(await refusals(weft, 'loaded', protocol), 1, protocol)
    } finally {
      destroy(...ys)
    }
  })
})

describe('a room flood', () => {
  let proc: WeftProcess | null = null
  after(async () => {
    if (proc === null) return
    proc.kill('SIGTERM')
    await proc.exited
  })

  it('10 Hocuspocus sockets asking for 100 documents each load at most --max-rooms-per-ip rooms; /health/live answers throughout', async (t) => {
    // Scaled down by the settings (the run: 20 sockets x 1,000 documents): the bounds are
    // what is tested, not the size of the machine.
    proc = await spawnWeft(['--data', 'memory', '--log-level', 'warn', '--max-documents-per-connection', '20', '--max-rooms-per-ip', '100'])
    const base = proc.http
    const counts: Record<string, number> = {}
    const url = proc.url
    // The flood does not stall the server: no /health/live probe fails or hangs, and one sent after
    // it is answered (how fast is measured in bench/, not asserted here).
    const { value: clients, live } = await whileLive(proc.port, async () => {
      const opened = await Promise.all(Array.from({ length: 10 }, () => RawClient.open(`${url}/`)))
      const results = await Promise.all(opened.map((client, c) => openDocuments(client, Array.from({ length: 100 }, (_, i) => `flood-${c}-${i}`))))
      for (const answers of results) for (const [answer, n] of Object.entries(tally(answers))) counts[answer] = (counts[answer] ?? 0) + n
      return opened
    })
    t.diagnostic(describeLive(live))
    // Per socket at most 20, per address at most 100: the rest is refused.
    assert.equal(counts.authenticated, 100)
    assert.equal((counts[PER_CONNECTION] ?? 0) + (counts[PER_IP] ?? 0), 900)
    const loaded = await metricValue(base, 'weft_rooms_loaded')
    assert.ok(loaded !== undefined && loaded <= 100, `${loaded} rooms loaded`)
    for (const client of clients) client.close()
  })
})
