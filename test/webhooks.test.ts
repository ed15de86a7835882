/**
 * Webhooks (issue 16), in process: a real receiver that answers 500, resets and hangs at random
 * (seeded), signed bodies, batching per room, order per room, each delivery id once after dedupe
 * with none lost, dead letters after the max age and their re-send, the outbox bounds, and the
 * admin scope of the dead-letter routes.
 */
import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import * as Y from 'yjs'
import { WebSocket } from 'ws'
import { WebsocketProvider } from 'y-websocket'
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'
import type { DocumentChangedData, DocumentDeletedData } from '../server/webhooks/events.js'
import { destroy, synced, textUpdate } from './harness/clients.js'
import { envNumber, mulberry32 } from './harness/fuzz.js'
import { httpBytes } from './harness/http.js'
import { metricValue } from './harness/metrics.js'
import { runCli, startServer, type InProcessServer } from './harness/server.js'
import { signToken } from './harness/tokens.js'
import { eventually, until } from './harness/wait.js'
import { startWebhookReceiver, type ReceivedDelivery, type WebhookReceiver } from './harness/webhook-receiver.js'
import { assertDeliveryInvariants } from './harness/webhook-checks.js'

const AUTH = 'webhooks-test-auth-secret-0123456789abcdef'
const HOOK = 'webhooks-test-hook-secret-0123456789abcdef'
const SEED = envNumber('WEFT_WEBHOOK_SEED', 16)

const cleanups: Array<() => Promise<void>> = []
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup()
})

async function receiver(): Promise<WebhookReceiver> {
  const r = await startWebhookReceiver(HOOK)
  cleanups.push(() => r.close())
  return r
}

async function server(url: string, extra: Parameters<typeof startServer>[0] = {}): Promise<InProcessServer> {
  const s = await startServer({
    authSecret: AUTH,
    webhookUrls: [url],
    webhookSecret: HOOK,
    webhookDebounceMs: 30,
    webhookMaxWaitMs: 150,
    webhookTimeoutMs: 300,
    webhookRetryMinMs: 20,
    ...extra,
  })
  cleanups.push(() => s.stop())
  return s
}

function token(subject: string, access = 'write', rooms: string[] = ['*']): Promise<string> {
  return signToken({ rooms, access }, { secret: AUTH, subject })
}

async function post(base: string, path: string, bearer: string, body: Uint8Array | string, type = 'application/octet-stream'): Promise<number> {
  return (await httpBytes(base, 'POST', path, { headers: { authorization: `Bearer ${bearer}`, 'content-type': type }, body })).status
}

function changed(d: ReceivedDelivery): DocumentChangedData {
  return d.event.data as DocumentChangedData
}

describe('webhooks', () => {
  it('delivers every change, version and deletion once by delivery id, in order per room, signed, through a receiver that fails at random', async () => {
    const r = await receiver()
    const random = mulberry32(SEED)
    // Seeded: 30% 500, 10% connection reset, 10% no answer (the per-attempt timeout ends it).
    r.behave = () => {
      const roll = random()
      return roll < 0.3 ? 'error' : roll < 0.4 ? 'reset' : roll < 0.5 ? 'hang' : 'ok'
    }
    const s = await server(`${r.base}/hooks`)
    const rooms = ['alpha', 'beta', 'gamma']
    const expected = new Map<string, Set<string>>(rooms.map((room) => [room, new Set()]))
    for (let i = 0; i < 24; i++) {
      const room = rooms[i % rooms.length] as string
      const subject = `user-${i}`
      assert.equal(await post(s.http, `/api/rooms/${room}/updates`, await token(subject), textUpdate(`edit ${i}`)), 204)
      expected.get(room)?.add(subject)
    }
    // A stock y-websocket client's edit is a change of its token's subject too.
    const doc = new Y.Doc()
    const client = new WebsocketProvider(s.url, 'alpha', doc, {
      WebSocketPolyfill: WebSocket as unknown as typeof globalThis.WebSocket,
      disableBc: true,
      params: { token: await token('ws-user') },
    })
    await synced(client)
    doc.getText('t').insert(0, 'from a socket')
    expected.get('alpha')?.add('ws-user')
    // And a stock Hocuspocus provider's (acknowledged once the change and its record are stored).
    const hpDoc = new Y.Doc()
    const hpSocket = new HocuspocusProviderWebsocket({ url: `${s.url}/`, WebSocketPolyfill: WebSocket, delay: 100, minDelay: 50, maxDelay: 500 })
    const hp = new HocuspocusProvider({ websocketProvider: hpSocket, name: 'beta', document: hpDoc, token: await token('hp-user') })
    hp.attach()
    await until(() => hp.isSynced, 'the Hocuspocus provider to sync')
    hpDoc.getText('t').insert(0, 'from hocuspocus')
    expected.get('beta')?.add('hp-user')
    await until(() => !hp.hasUnsyncedChanges, 'the Hocuspocus edit to be acknowledged')
    const delivered = (subject: string) => r.unique().some((d) => changed(d).subjects?.includes(subject))
    await eventually(async () => (await metricValue(s.http, 'weft_webhook_queued')) === 0 && delivered('ws-user') && delivered('hp-user'), 'the socket edits to be delivered', 30_000)
    destroy(client)
    hp.destroy()
    hpSocket.destroy()

    const admin = await token('admin-1', 'admin')
    const versionAnswer = await httpBytes(s.http, 'POST', '/api/rooms/beta/versions', { headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, body: '{"name":"v1"}' })
    assert.equal(versionAnswer.status, 201)
    const version = JSON.parse(versionAnswer.body.toString()) as { id: string }
    assert.equal((await httpBytes(s.http, 'DELETE', '/api/rooms/gamma', { headers: { authorization: `Bearer ${admin}` } })).status, 204)

    await eventually(
      async () => (await metricValue(s.http, 'weft_webhook_queued')) === 0 && r.unique().some((d) => d.event.type === 'document.deleted'),
      'every event to be delivered',
      30_000,
    )
    const unique = r.unique('/hooks')
    assertDeliveryInvariants(r, '/hooks')
    // The receiver failed some attempts, so weft retried; each id it accepted once (no crash here).
    assert.ok(r.received.length > unique.length, 'some attempts failed and were retried')
    assert.equal(r.accepted.length, unique.length, 'nothing accepted twice without a crash')
    assert.ok(((await metricValue(s.http, 'weft_webhook_failed_attempts_total')) ?? 0) > 0)
    assert.equal(await metricValue(s.http, 'weft_webhook_delivered_total'), unique.length)

    for (const [room, subjects] of expected) {
      const events = unique.filter((d) => d.event.type === 'document.changed' && changed(d).room === room)
      // Batched (never more events than edits), and every subject is in one of them.
      assert.ok(events.length >= 1 && events.length <= subjects.size, `${room}: ${events.length} events`)
      assert.deepEqual(new Set(events.flatMap((d) => changed(d).subjects)), subjects, room)
      for (const d of events) assert.ok(Date.parse(changed(d).firstChangeAt) <= Date.parse(changed(d).lastChangeAt))
    }
    // The last change event of a room carries the room's state vector as it is now.
    const betaState = await httpBytes(s.http, 'GET', '/api/rooms/beta/state-vector', { headers: { authorization: `Bearer ${admin}` } })
    const lastBeta = unique.filter((d) => d.event.type === 'document.changed' && changed(d).room === 'beta').at(-1) as ReceivedDelivery
    assert.equal(changed(lastBeta).stateVector, betaState.body.toString('base64'))
    // version.created comes after beta's changes; document.deleted is gamma's last event and names the admin.
    const betaEvents = unique.filter((d) => (d.event.data as { room: string }).room === 'beta')
    const created = betaEvents.at(-1) as ReceivedDelivery
    assert.equal(created.event.type, 'version.created')
    assert.equal((created.event.data as { version: { id: string } }).version.id, version.id)
    const gammaEvents = unique.filter((d) => (d.event.data as { room: string }).room === 'gamma')
    const deleted = gammaEvents.at(-1) as ReceivedDelivery
    assert.equal(deleted.event.type, 'document.deleted')
    assert.equal((deleted.event.data as DocumentDeletedData).subject, 'admin-1')
  })

  it('dead-letters an event after the max age, lists it to admins only, and re-sends it with the same delivery id', async () => {
    const r = await receiver()
    r.behave = () => 'error'
    const s = await server(`${r.base}/dead`, { webhookMaxAgeSeconds: 1, webhookRetryMinMs: 50, webhookDebounceMs: 0 })
    assert.equal(await post(s.http, '/api/rooms/doomed/updates', await token('writer-1'), textUpdate('x')), 204)
    const admin = await token('admin-2', 'admin')
    const list = async (bearer = admin) => httpBytes(s.http, 'GET', '/api/webhooks/dead', { headers: { authorization: `Bearer ${bearer}` } })
    await eventually(async () => (await metricValue(s.http, 'weft_webhook_dead')) === 1, 'the event to be dead-lettered', 20_000)
    const listed = JSON.parse((await list()).body.toString()) as { total: number; deadLetters: Array<{ deliveryId: string; room: string; attempts: number; lastError: string; event: { type: string } }> }
    assert.equal(listed.total, 1)
    const letter = listed.deadLetters[0]
    assert.ok(letter !== undefined)
    assert.equal(letter.room, 'doomed')
    assert.equal(letter.event.type, 'document.changed')
    assert.equal(letter.lastError, 'HTTP 500')
    assert.ok(letter.attempts >= 2, `${letter.attempts} attempts`)
    assert.ok(r.received.every((d) => d.deliveryId === letter.deliveryId))
    assert.equal(await metricValue(s.http, 'weft_webhook_queued'), 0)
    // Write access, or an admin of other rooms, does not see or re-send it.
    assert.equal((await list(await token('writer-1'))).status, 403)
    const otherAdmin = await token('admin-3', 'admin', ['other/*'])
    assert.equal((JSON.parse((await list(otherAdmin)).body.toString()) as { total: number }).total, 0)
    const noRetry = await httpBytes(s.http, 'POST', '/api/webhooks/dead/retry', { headers: { authorization: `Bearer ${otherAdmin}`, 'content-type': 'application/json' }, body: '{}' })
    assert.equal(JSON.parse(noRetry.body.toString()).requeued, 0)
    assert.equal((await httpBytes(s.http, 'POST', '/api/webhooks/dead/retry', { headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, body: '{"ids": 3}' })).status, 400)

    r.behave = () => 'ok'
    const retried = await httpBytes(s.http, 'POST', '/api/webhooks/dead/retry', { headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, body: JSON.stringify({ ids: [letter.deliveryId] }) })
    assert.equal(retried.status, 200)
    assert.equal(JSON.parse(retried.body.toString()).requeued, 1)
    await until(() => r.accepted.length === 1, 'the re-sent event to arrive')
    assert.equal(r.accepted[0]?.deliveryId, letter.deliveryId)
    assert.ok(r.accepted[0]?.signatureValid)
    await eventually(async () => (await metricValue(s.http, 'weft_webhook_dead')) === 0, 'the dead letter to be gone')
    assert.equal((JSON.parse((await list()).body.toString()) as { total: number }).total, 0)
  })

  it('refuses events past --webhook-max-entries and counts them', async () => {
    const r = await receiver()
    r.behave = () => 'hang'
    const s = await server(`${r.base}/full`, { webhookMaxEntries: 2, webhookDebounceMs: 0, webhookTimeoutMs: 60_000 })
    for (const room of ['f1', 'f2', 'f3', 'f4']) assert.equal(await post(s.http, `/api/rooms/${room}/updates`, await token('w'), textUpdate(room)), 204)
    await eventually(async () => ((await metricValue(s.http, 'weft_webhook_refused_total', '{reason="entries"}')) ?? 0) === 2, 'two refusals to be counted')
    assert.equal(await metricValue(s.http, 'weft_webhook_queued'), 2)
    assert.ok(((await metricValue(s.http, 'weft_webhook_oldest_age_seconds')) ?? -1) >= 0)
  })

  it('lists no dead letters and re-sends none when no webhook is configured', async () => {
    const s = await startServer({ authSecret: AUTH })
    cleanups.push(() => s.stop())
    const bearer = { authorization: `Bearer ${await token('a', 'admin')}` }
    const listed = await httpBytes(s.http, 'GET', '/api/webhooks/dead', { headers: bearer })
    assert.equal(listed.status, 200)
    assert.deepEqual(JSON.parse(listed.body.toString()), { deadLetters: [], total: 0 })
    const retried = await httpBytes(s.http, 'POST', '/api/webhooks/dead/retry', { headers: bearer })
    assert.deepEqual([retried.status, JSON.parse(retried.body.toString())], [200, { requeued: 0 }])
  })

  it('refuses at start, with status 2 and one line naming the setting, a URL that is not http(s), a missing secret and a short one', async () => {
    const cases: Array<[string[], string]> = [
      [['--webhook-url', 'ftp://example.com/hook', '--webhook-secret', HOOK], '--webhook-url'],
      [['--webhook-url', 'http://127.0.0.1:9/a,not a url', '--webhook-secret', HOOK], '--webhook-url'],
      [['--webhook-url', 'http://127.0.0.1:9/a'], '--webhook-secret'],
      [['--webhook-url', 'http://127.0.0.1:9/a', '--webhook-secret', 'short'], '--webhook-secret'],
      [['--webhook-max-age-seconds', '0'], '--webhook-max-age-seconds'],
    ]
    for (const [args, setting] of cases) {
      const { status, stderr } = await runCli(['serve', '--port', '0', '--data', 'memory', ...args])
      assert.equal(status, 2, `${args.join(' ')}: ${stderr}`)
      const lines = stderr.split('\n').filter((line) => line !== '')
      assert.equal(lines.length, 1, stderr)
      assert.ok(lines[0]?.includes(setting), `${lines[0]} names ${setting}`)
    }
  })
})
