/**
 * GET /status and /status.json: who may see them (401 / 403 / 200 with --auth-secret and
 * --metrics-token), and the page itself in a real Chromium under a known load: it renders, its
 * figures match /metrics, it polls /status.json, and a screenshot is kept as a test artefact.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import * as Y from 'yjs'
import type { WebsocketProvider } from 'y-websocket'
import { artifactPath, launchChromium, type RunningBrowser } from './harness/browser.js'
import { destroy, hocuspocusClient, provider, synced, type HocuspocusClient } from './harness/clients.js'
import { httpBytes } from './harness/http.js'
import { sampleIn, scrapeMetrics } from './harness/metrics.js'
import { startServer, type InProcessServer } from './harness/server.js'
import { signToken } from './harness/tokens.js'
import { eventually, until } from './harness/wait.js'

const SECRET = 'status-page-test-secret-of-at-least-32-bytes'
const METRICS_TOKEN = 'status-page-metrics-token'

describe('status page access', () => {
  let weft: InProcessServer
  let open: InProcessServer

  before(async () => {
    weft = await startServer({ authSecret: SECRET, metricsToken: METRICS_TOKEN })
    open = await startServer({})
  })

  after(async () => {
    await weft?.stop()
    await open?.stop()
  })

  for (const path of ['/status', '/status.json']) {
    it(`${path}: 401 without a credential or with a bad one, 403 without admin access, 200 for admin and for the metrics token`, async () => {
      const reader = await signToken({ rooms: ['*'], access: 'write' }, { secret: SECRET, subject: 'writer' })
      const admin = await signToken({ rooms: ['*'], access: 'admin' }, { secret: SECRET, subject: 'admin' })
      const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` })
      assert.equal((await httpBytes(weft.http, 'GET', path)).status, 401)
      assert.equal((await httpBytes(weft.http, 'GET', path, { headers: bearer('not-a-token') })).status, 401)
      assert.equal((await httpBytes(weft.http, 'GET', path, { headers: bearer(reader) })).status, 403)
      assert.equal((await httpBytes(weft.http, 'GET', path, { headers: bearer(admin) })).status, 200)
      assert.equal((await httpBytes(weft.http, 'GET', path, { headers: bearer(METRICS_TOKEN) })).status, 200)
      assert.equal((await httpBytes(weft.http, 'GET', `${path}?token=${encodeURIComponent(admin)}`)).status, 200)
      const refused = JSON.parse((await httpBytes(weft.http, 'GET', path, { headers: bearer(reader) })).body.toString('utf8')) as { error: string }
      assert.equal(refused.error, 'forbidden')
      // Neither setting: open, like /metrics.
      assert.equal((await httpBytes(open.http, 'GET', path)).status, 200)
      assert.equal((await httpBytes(open.http, 'PUT', path)).status, 405)
    })
  }

  it('lists only the rooms an admin token covers', async () => {
    const scoped = await signToken({ rooms: ['mine-*'], access: 'admin' }, { secret: SECRET, subject: 'scoped' })
    const token = await signToken({ rooms: ['*'], access: 'write' }, { secret: SECRET, subject: 'writer' })
    const a = provider(weft.url, 'mine-room', new Y.Doc(), { connect: false })
    const b = provider(weft.url, 'theirs-room', new Y.Doc(), { connect: false })
    a.params = { token }
    b.params = { token }
    a.connect()
    b.connect()
    try {
      await synced(a)
      await synced(b)
      const answer = await httpBytes(weft.http, 'GET', '/status.json', { headers: { authorization: `Bearer ${scoped}` } })
      const status = JSON.parse(answer.body.toString('utf8')) as { topRooms: { byConnections: Array<{ room: string }> }; roomsLoaded: number }
      assert.deepEqual(status.topRooms.byConnections.map((r) => r.room), ['mine-room'])
      assert.ok(status.roomsLoaded >= 2)
    } finally {
      destroy(a, b)
    }
  })
})

describe('the status page in Chromium under a known load', () => {
  let weft: InProcessServer
  let chromium: RunningBrowser
  const clients: WebsocketProvider[] = []
  let hocuspocus: HocuspocusClient | null = null

  before(async () => {
    weft = await startServer({ roomUnloadDelayMs: -1 })
    chromium = await launchChromium()
  })

  after(async () => {
    destroy(...clients)
    hocuspocus?.destroy()
    await chromium?.close()
    await weft?.stop()
  })

  it('renders figures that match /metrics, refreshes itself, and is kept as a screenshot', async () => {
    // Load: 3 y-websocket connections (2 in status-a, 1 in status-b), 1 Hocuspocus connection in status-a, edits in both.
    for (const room of ['status-a', 'status-a', 'status-b']) clients.push(provider(weft.url, room))
    for (const client of clients) await synced(client)
    hocuspocus = hocuspocusClient(weft.url, 'status-a')
    await hocuspocus.synced()
    const hp = hocuspocus.provider
    ;(clients[0] as WebsocketProvider).doc.getText('t').insert(0, 'hello status page')
    await until(() => hp.document.getText('t').toString() === 'hello status page', 'the edit to reach the Hocuspocus client')
    ;(clients[2] as WebsocketProvider).doc.getText('t').insert(0, 'room b')

    const page = await chromium.browser.newPage({ viewport: { width: 1100, height: 1000 } })
    const errors: string[] = []
    page.on('pageerror', (err) => errors.push(err.message))
    page.on('console', (message) => {
      if (message.type() === 'error') errors.push(message.text())
    })
    const response = await page.goto(`${weft.http}/status`)
    assert.equal(response?.status(), 200)
    await page.waitForSelector('body[data-rendered]', { state: 'attached', timeout: 10_000 }).catch((err: unknown) => {
      throw new Error(`the page did not render: ${errors.join('; ') || String(err)}`)
    })
    const figure = async (name: string): Promise<string> => (await page.locator(`[data-figure="${name}"]`).textContent()) ?? ''

    const metrics = await scrapeMetrics(weft.http)
    assert.equal(Number(await figure('connections')), sampleIn(metrics, 'weft_connections'))
    assert.equal(Number(await figure('connections')), 4)
    assert.equal(Number(await figure('connections-y-websocket')), 3)
    assert.equal(Number(await figure('connections-hocuspocus')), 1)
    assert.equal(Number(await figure('rooms')), sampleIn(metrics, 'weft_rooms_loaded'))
    assert.equal(Number(await figure('rooms')), 2)
    assert.equal(await figure('state'), 'serving')
    assert.equal(await figure('storage'), 'ok')
    assert.equal(await figure('redis'), 'none')
    const upgrades = [...metrics.matchAll(/^weft_upgrades_total\{result="[^"]+"\} (\d+)$/gm)].reduce((sum, m) => sum + Number(m[1]), 0)
    assert.equal(Number(await figure('upgrades')), upgrades)
    assert.equal(await figure('connection-success'), '100.00 %')
    const samples = (sampleIn(metrics, 'weft_delivery_seconds_count', '{protocol="y-websocket",source="local"}') ?? 0) + (sampleIn(metrics, 'weft_delivery_seconds_count', '{protocol="hocuspocus",source="local"}') ?? 0)
    assert.ok(samples >= 1)
    assert.equal(Number(await figure('delivery-samples')), samples)
    assert.match(await figure('delivery-p99'), /^\d+\.\d ms$/)
    // Top rooms by connections: status-a (3 members) before status-b (1).
    const top = await page.locator('#top-connections tr').allTextContents()
    assert.deepEqual(top.slice(0, 2), ['status-a3', 'status-b1'])
    // A plot of connections over the last minutes, drawn inline.
    assert.ok(Number(await page.locator('#plot-connections').getAttribute('data-points')) >= 1)
    // No document content on the page.
    assert.ok(!(await page.content()).includes('hello status page'))

    // It refreshes itself: a new connection shows up without a reload.
    const rendered = Number(await page.locator('body').getAttribute('data-rendered'))
    const fifth = provider(weft.url, 'status-c')
    clients.push(fifth)
    await synced(fifth)
    // The page polls every 5 s; its CSP allows no eval, so the test reads the counter from outside.
    await eventually(async () => Number(await page.locator('body').getAttribute('data-rendered')) > rendered, 'the page to refresh itself', 15_000, 200)
    assert.equal(Number(await figure('connections')), 5)
    assert.equal(Number(await figure('rooms')), 3)

    await page.screenshot({ path: await artifactPath('status.png'), fullPage: true })
    assert.deepEqual(errors, [], 'no script errors or CSP violations')
    await page.close()
  })
})
