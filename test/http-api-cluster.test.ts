/**
 * The HTTP document API across a cluster: a real redis-server and two `weft serve --redis`
 * processes, A and B, with their own LevelDB directories. What is written, saved, issued or
 * deleted through one instance's API is seen through the other's.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import * as Y from 'yjs'
import type { WebsocketProvider } from 'y-websocket'
import { canonicalState, canonicalUpdate, destroy, provider, RawClient, synced } from './harness/clients.js'
import { startRedis, type RedisProcess } from './harness/redis.js'
import { spawnWeft, tempDir, type WeftProcess } from './harness/server.js'
import { until, withDeadline } from './harness/wait.js'
import { signToken } from './harness/tokens.js'
import { httpBytes, refusedWith, type BytesAnswer } from './harness/http.js'

const SECRET = 'http-api-cluster-secret-0123456789abcdef'

type Reply = BytesAnswer

function http(base: string, method: string, path: string, options: { body?: Uint8Array | string; token?: string } = {}): Promise<Reply> {
  return httpBytes(base, method, path, { body: options.body, headers: options.token === undefined ? {} : { authorization: `Bearer ${options.token}` } })
}

const room = (name: string): string => `/api/rooms/${encodeURIComponent(name)}`

process.setMaxListeners(32)

describe('HTTP document API on a cluster of two weft processes', () => {
  let redis: RedisProcess
  const instances: Array<{ weft: WeftProcess; data: { path: string; remove(): Promise<void> } }> = []
  let a: WeftProcess
  let b: WeftProcess
  let admin: string
  const providers: WebsocketProvider[] = []

  const start = async (id: string): Promise<WeftProcess> => {
    const data = await tempDir(`weft-api-${id}-`)
    const weft = await spawnWeft(['--redis', redis.url, '--instance-id', id, '--data', data.path, '--auth-secret', SECRET, '--drain-seconds', '1', '--log-level', 'info'])
    instances.push({ weft, data })
    await until(() => weft.logs.some((line) => line.msg === 'redis relay up'), `${id} to reach redis`, 5000)
    return weft
  }

  const open = (weft: WeftProcess, name: string, doc = new Y.Doc()): WebsocketProvider => {
    const p = provider(`${weft.url}`, `${name}?token=${admin}`, doc)
    providers.push(p)
    return p
  }

  before(async () => {
    admin = await signToken({ rooms: ['*'], access: 'admin' }, { secret: SECRET, subject: 'ops', issuedAt: false })
    redis = await startRedis()
    a = await start('api-a')
    b = await start('api-b')
  })

  after(async () => {
    destroy(...providers)
    for (const { weft } of instances) if (weft.child.exitCode === null && weft.child.signalCode === null) weft.kill('SIGTERM')
    for (const { weft } of instances) {
      await withDeadline(weft.exited, 'weft to stop', 10_000).catch(() => {
        weft.kill('SIGKILL')
        return weft.exited
      })
    }
    await Promise.all(instances.map(({ data }) => data.remove()))
    await redis?.dispose()
  })

  it('a POST on A reaches a client connected to B', async () => {
    const p = open(b, 'c-post')
    await synced(p)
    const author = new Y.Doc()
    author.getText('t').insert(0, 'posted on A')
    const reply = await http(a.http, 'POST', `${room('c-post')}/updates`, { body: Y.encodeStateAsUpdate(author), token: admin })
    assert.equal(reply.status, 204)
    await until(() => p.doc.getText('t').toString() === 'posted on A', 'the client on B to get the update posted on A')
  })

  it('a PUT of ProseMirror JSON on A reaches a client connected to B, and B reads the same JSON', async () => {
    const p = open(b, 'c-put')
    await synced(p)
    const content = { type: 'doc', content: [{ type: 'heading', attrs: { level: 1 }, content: [{ type: 'text', text: 'put on A', marks: [{ type: 'bold', attrs: {} }] }] }] }
    const reply = await http(a.http, 'PUT', `${room('c-put')}/content`, { body: JSON.stringify(content), token: admin })
    assert.equal(reply.status, 204, reply.body.toString())
    const heading = (): string => p.doc.getXmlFragment('default').toString()
    // XmlText's string shows formatting as tags: the mark is there too.
    await until(() => heading() === '<heading level="1"><bold>put on A</bold></heading>', 'the client on B to get the content put on A')
    const read = await http(b.http, 'GET', `${room('c-put')}?format=prosemirror`, { token: admin })
    assert.equal(read.status, 200)
    assert.deepEqual(JSON.parse(read.body.toString()), content)
  })

  it('GET on B, where the room was never loaded, answers the converged document', async () => {
    const p = open(a, 'c-fresh')
    await synced(p)
    p.doc.getText('t').insert(0, 'written on A')
    p.doc.getMap('m').set('k', [1, 2])
    const deadline = Date.now() + 10_000
    let reply: Reply
    // A has it once its own API shows it; B never had a client or a request for the room.
    while (true) {
      reply = await http(a.http, 'GET', `${room('c-fresh')}?format=update`, { token: admin })
      if (reply.status === 200 && Buffer.from(canonicalUpdate(reply.body)).equals(Buffer.from(canonicalState(p.doc)))) break
      if (Date.now() > deadline) throw new Error('A never held the document')
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    const onB = await http(b.http, 'GET', `${room('c-fresh')}?format=update`, { token: admin })
    assert.equal(onB.status, 200)
    assert.deepEqual(canonicalUpdate(onB.body), canonicalState(p.doc))
    assert.deepEqual(JSON.parse((await http(b.http, 'GET', room('c-fresh'), { token: admin })).body.toString()), { t: 'written on A', m: { k: [1, 2] } })
  })

  it('versions created on A are listed and fetched on B', async () => {
    const author = new Y.Doc()
    author.getText('t').insert(0, 'versioned')
    assert.equal((await http(a.http, 'POST', `${room('c-ver')}/updates`, { body: Y.encodeStateAsUpdate(author), token: admin })).status, 204)
    const created = await http(a.http, 'POST', `${room('c-ver')}/versions`, { body: '{"name":"on A"}', token: admin })
    assert.equal(created.status, 201)
    const { id } = JSON.parse(created.body.toString()) as { id: string }
    const list = JSON.parse((await http(b.http, 'GET', `${room('c-ver')}/versions`, { token: admin })).body.toString()) as { versions: Array<{ id: string; name: string }> }
    assert.deepEqual(list.versions.map((v) => [v.id, v.name]), [[id, 'on A']])
    const fetched = await http(b.http, 'GET', `${room('c-ver')}/versions/${encodeURIComponent(id)}?format=update`, { token: admin })
    assert.equal(fetched.status, 200)
    assert.deepEqual(canonicalUpdate(fetched.body), canonicalState(author))
  })

  it('a ticket issued on A connects on B once', async () => {
    const issued = await http(a.http, 'POST', '/api/tickets', { token: admin })
    assert.equal(issued.status, 200)
    const { ticket } = JSON.parse(issued.body.toString()) as { ticket: string }
    const client = await RawClient.open(`${b.url}/c-ticket?ticket=${encodeURIComponent(ticket)}`)
    client.close()
    assert.equal(await refusedWith(`${b.url}/c-ticket?ticket=${encodeURIComponent(ticket)}`), 401)
    assert.equal(await refusedWith(`${a.url}/c-ticket?ticket=${encodeURIComponent(ticket)}`), 401)
  })

  it('DELETE on A closes the clients of B with 4404, and B answers 404', async () => {
    const p = open(b, 'c-del')
    await synced(p)
    p.doc.getText('t').insert(0, 'to be deleted')
    const deadline = Date.now() + 10_000
    while ((await http(a.http, 'GET', room('c-del'), { token: admin })).status !== 200) {
      if (Date.now() > deadline) throw new Error('A never saw the document')
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    const closed = withDeadline(new Promise<number>((resolve) => p.on('closed', (event: { code: number }) => resolve(event.code))), 'the client on B to be closed')
    assert.equal((await http(a.http, 'DELETE', room('c-del'), { token: admin })).status, 204)
    assert.equal(await closed, 4404)
    for (const weft of [b, a]) {
      const reply = await http(weft.http, 'GET', room('c-del'), { token: admin })
      assert.equal(reply.status, 404, reply.body.toString())
      assert.equal(JSON.parse(reply.body.toString()).error, 'not_found')
      const list = JSON.parse((await http(weft.http, 'GET', '/api/rooms', { token: admin })).body.toString()) as { rooms: Array<{ room: string }> }
      assert.ok(!list.rooms.some((r) => r.room === 'c-del'))
    }
  })
})
