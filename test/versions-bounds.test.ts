/**
 * Issue 12 finding 4: every POST .../versions copied the whole document with no bound (200 POSTs
 * of a 2 MB document added 400 MB to LevelDB). A room's versions are now bounded by count, by
 * bytes and by rate, each refusal counted; listings are paged and read descriptions only.
 * One in-process weft per case, real LevelDB in a temp dir.
 */
import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import { Level } from 'level'
import * as Y from 'yjs'
import { LevelStore, newVersionId } from '../persistence/index.js'
import { encodeVersionValue } from '../persistence/version-value.js'
import { httpRequest, type HttpAnswer } from './harness/http.js'
import { metricValue } from './harness/metrics.js'
import { startServer, tempDir, type InProcessServer } from './harness/server.js'

type Reply = HttpAnswer

function http(base: string, method: string, path: string, body?: Uint8Array | string, contentType?: string): Promise<Reply> {
  const headers: Record<string, string> = body === undefined ? {} : { 'content-type': contentType ?? 'application/json' }
  return httpRequest(Number(new URL(base).port), path, { method, headers, body })
}

const api = (room: string): string => `/api/rooms/${encodeURIComponent(room)}`

/** Writes `text` (as `bytes` characters) into the room through the API; resolves once stored. */
async function writeText(weft: InProcessServer, room: string, bytes: number): Promise<void> {
  const doc = new Y.Doc()
  doc.getText('t').insert(0, 'x'.repeat(bytes))
  const reply = await http(weft.http, 'POST', `${api(room)}/updates`, Y.encodeStateAsUpdate(doc), 'application/octet-stream')
  assert.equal(reply.status, 204, reply.body)
}

const createVersion = (weft: InProcessServer, room: string, name: string): Promise<Reply> => http(weft.http, 'POST', `${api(room)}/versions`, JSON.stringify({ name }))

function errorCode(reply: Reply): string {
  return (JSON.parse(reply.body) as { error: string }).error
}

interface Listing {
  versions: Array<{ id: string; name: string; createdAt: number; bytes: number }>
  nextCursor: string | null
}

async function list(weft: InProcessServer, room: string, query = ''): Promise<Listing> {
  const reply = await http(weft.http, 'GET', `${api(room)}/versions${query}`)
  assert.equal(reply.status, 200, reply.body)
  return JSON.parse(reply.body) as Listing
}

const servers: InProcessServer[] = []
after(async () => {
  await Promise.all(servers.splice(0).map((weft) => weft.stop()))
})

async function start(options: Parameters<typeof startServer>[0]): Promise<InProcessServer> {
  const weft = await startServer(options)
  servers.push(weft)
  return weft
}

describe('versions per room are bounded', () => {
  it('by count: past --max-versions-per-room the POST is 409 too_many_versions, nothing is stored, and it is counted', async () => {
    const weft = await start({ maxVersionsPerRoom: 3 })
    await writeText(weft, 'counted', 100)
    for (let i = 0; i < 3; i++) assert.equal((await createVersion(weft, 'counted', `v${i}`)).status, 201)
    for (let i = 0; i < 2; i++) {
      const refused = await createVersion(weft, 'counted', 'one too many')
      assert.equal(refused.status, 409)
      assert.equal(errorCode(refused), 'too_many_versions')
    }
    assert.deepEqual((await list(weft, 'counted')).versions.map((v) => v.name), ['v0', 'v1', 'v2'])
    assert.equal(await metricValue(weft.http, 'weft_version_refusals_total', '{reason="count"}'), 2)
    assert.equal(await metricValue(weft.http, 'weft_versions_created_total'), 3)
    // The bound is per room: another room still gets its versions.
    await writeText(weft, 'other', 10)
    assert.equal((await createVersion(weft, 'other', 'fine')).status, 201)
  })

  it('by bytes: a version that would take the room past --max-version-bytes-per-room is refused; the old ones stay', async () => {
    const weft = await start({ maxVersionBytesPerRoom: 10_000 })
    await writeText(weft, 'heavy', 4_000)
    assert.equal((await createVersion(weft, 'heavy', 'a')).status, 201)
    assert.equal((await createVersion(weft, 'heavy', 'b')).status, 201)
    const refused = await createVersion(weft, 'heavy', 'c')
    assert.equal(refused.status, 409)
    assert.equal(errorCode(refused), 'too_many_versions')
    assert.match(JSON.parse(refused.body).message as string, /max-version-bytes-per-room/)
    const { versions } = await list(weft, 'heavy')
    assert.deepEqual(versions.map((v) => v.name), ['a', 'b'])
    assert.ok(versions.reduce((sum, v) => sum + v.bytes, 0) <= 10_000)
    assert.equal(await metricValue(weft.http, 'weft_version_refusals_total', '{reason="bytes"}'), 1)
  })

  it('the bounds hold for concurrent POSTs too', async () => {
    const weft = await start({ maxVersionsPerRoom: 5 })
    await writeText(weft, 'race', 50)
    const replies = await Promise.all(Array.from({ length: 12 }, (_, i) => createVersion(weft, 'race', `r${i}`)))
    assert.equal(replies.filter((r) => r.status === 201).length, 5)
    assert.equal(replies.filter((r) => r.status === 409).length, 7)
    assert.equal((await list(weft, 'race')).versions.length, 5)
  })

  it('by rate: past --versions-per-minute-per-room the POST is 429 with Retry-After', async () => {
    const weft = await start({ versionsPerMinutePerRoom: 2 })
    await writeText(weft, 'fast', 10)
    assert.equal((await createVersion(weft, 'fast', 'one')).status, 201)
    assert.equal((await createVersion(weft, 'fast', 'two')).status, 201)
    const refused = await createVersion(weft, 'fast', 'three')
    assert.equal(refused.status, 429)
    assert.equal(errorCode(refused), 'too_many_requests')
    assert.ok(Number(refused.headers['retry-after']) >= 1)
    assert.equal(await metricValue(weft.http, 'weft_version_refusals_total', '{reason="rate"}'), 1)
    assert.equal((await list(weft, 'fast')).versions.length, 2)
  })

  it('defaults: at most 100 versions and 64 MiB per room, 30 a minute', async () => {
    const weft = await start({})
    assert.equal(weft.server.options.maxVersionsPerRoom, 100)
    assert.equal(weft.server.options.maxVersionBytesPerRoom, 64 * 1024 * 1024)
    assert.equal(weft.server.options.versionsPerMinutePerRoom, 30)
  })
})

describe('version listings', () => {
  it('are paged: limit and cursor walk every version once, oldest first', async () => {
    const weft = await start({})
    await writeText(weft, 'paged', 10)
    const created: string[] = []
    for (let i = 0; i < 7; i++) created.push((JSON.parse((await createVersion(weft, 'paged', `p${i}`)).body) as { id: string }).id)
    const seen: string[] = []
    let cursor: string | null = null
    let pages = 0
    do {
      const page: Listing = await list(weft, 'paged', `?limit=3${cursor === null ? '' : `&cursor=${cursor}`}`)
      assert.ok(page.versions.length <= 3)
      seen.push(...page.versions.map((v) => v.id))
      cursor = page.nextCursor
      pages++
    } while (cursor !== null)
    assert.equal(pages, 3)
    assert.deepEqual(seen, created)
    const whole = await list(weft, 'paged')
    assert.equal(whole.nextCursor, null)
    assert.equal(whole.versions.length, 7)
    assert.equal((await http(weft.http, 'GET', `${api('paged')}/versions?cursor=..%2Fx`)).status, 400)
    assert.equal((await http(weft.http, 'GET', `${api('paged')}/versions?limit=0`)).status, 400)
  })

  it('never read the saved documents: a version whose document is gone from LevelDB is still listed from its description', async () => {
    const dir = await tempDir('weft-versions-layout-')
    try {
      let weft = await startServer({ data: dir.path, keepData: true })
      await writeText(weft, 'described', 2_000)
      const { id } = JSON.parse((await createVersion(weft, 'described', 'kept apart')).body) as { id: string }
      await weft.stop()
      // Remove the document (the value a listing used to read) behind weft's back.
      const raw = new Level<string, Uint8Array>(dir.path, { keyEncoding: 'utf8', valueEncoding: 'view' })
      await raw.del(`version\u0000described\u0000${id}`)
      await raw.close()
      weft = await startServer({ data: dir.path, keepData: true })
      try {
        const { versions } = await list(weft, 'described')
        assert.deepEqual(versions.map((v) => [v.id, v.name]), [[id, 'kept apart']])
        assert.ok((versions[0]?.bytes ?? 0) > 2_000)
      } finally {
        await weft.stop()
      }
    } finally {
      await dir.remove()
    }
  })

  it('versions stored before descriptions existed are described once at open and listed', async () => {
    const dir = await tempDir('weft-versions-old-')
    try {
      // The layout before: one value per version, no description.
      const raw = new Level<string, Uint8Array>(dir.path, { keyEncoding: 'utf8', valueEncoding: 'view' })
      const old = { id: newVersionId(1_000), name: 'from before', createdAt: 1_000, update: Uint8Array.of(0, 0) }
      await raw.put(`version\u0000legacy\u0000${old.id}`, encodeVersionValue(old))
      await raw.close()
      const store = await LevelStore.open(dir.path)
      try {
        assert.deepEqual(await store.listVersions('legacy'), [{ id: old.id, name: 'from before', createdAt: 1_000, bytes: 2 }])
        assert.deepEqual(await store.getVersion('legacy', old.id), old)
        assert.deepEqual(await store.listVersionRooms(), ['legacy'])
      } finally {
        await store.close()
      }
    } finally {
      await dir.remove()
    }
  })
})
