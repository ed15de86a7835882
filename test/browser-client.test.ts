/**
 * weft's own client (weft-server/client, bundled with esbuild) in a real Chromium: sync,
 * awareness, a room shared with the stock y-websocket and Hocuspocus providers in other tabs,
 * the close-code policy, the `saved` state, and offline editing with y-indexeddb.
 */
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import type { BrowserContext, Page, WebSocketRoute } from 'playwright-core'
import { artifactPath, launchChromium, type RunningBrowser } from './harness/browser.js'
import { serveClientPage, type ClientPageServer } from './harness/bundle.js'
import { startServer, type InProcessServer } from './harness/server.js'
import { eventually } from './harness/wait.js'

/** What the bundle puts on window, typed loosely: the page code below is plain browser JS. */
declare const window: Record<string, any> // eslint-disable-line @typescript-eslint/no-explicit-any

const WAIT = { timeout: 15_000 }

describe('weft client in Chromium', () => {
  let server: InProcessServer
  let pages: ClientPageServer
  let chromium: RunningBrowser

  before(async () => {
    server = await startServer()
    pages = await serveClientPage()
    chromium = await launchChromium()
  })

  after(async () => {
    await chromium?.close()
    await pages?.stop()
    await server?.stop()
  })

  async function open(context?: BrowserContext): Promise<Page> {
    const page = await (context ?? chromium.browser).newPage()
    await page.goto(pages.url)
    await page.waitForFunction(() => window.weft !== undefined, undefined, WAIT)
    return page
  }

  async function roomText(room: string, name: string): Promise<string | undefined> {
    const res = await fetch(`${server.http}/api/rooms/${encodeURIComponent(room)}`)
    if (res.status !== 200) return undefined
    const body = (await res.json()) as Record<string, unknown>
    return typeof body[name] === 'string' ? body[name] : undefined
  }

  it('syncs and shares awareness with a stock WebsocketProvider and a stock HocuspocusProvider in other tabs', async () => {
    const room = 'browser-mixed'
    const [weftPage, ywsPage, hocusPage] = await Promise.all([open(), open(), open()])
    try {
      await weftPage.evaluate(({ url, room }) => {
        const { Y, WeftProvider } = window.weft
        window.doc = new Y.Doc()
        window.provider = new WeftProvider(url, room, window.doc)
        window.provider.awareness.setLocalStateField('user', 'weft-tab')
      }, { url: server.url, room })
      await ywsPage.evaluate(({ url, room }) => {
        const { Y, WebsocketProvider } = window.weft
        window.doc = new Y.Doc()
        // disableBc: the tabs share an origin, and BroadcastChannel would sync them without the server.
        window.provider = new WebsocketProvider(url, room, window.doc, { disableBc: true })
        window.provider.awareness.setLocalStateField('user', 'y-websocket-tab')
      }, { url: server.url, room })
      await hocusPage.evaluate(({ url, room }) => {
        const { Y, HocuspocusProvider, HocuspocusProviderWebsocket } = window.weft
        window.doc = new Y.Doc()
        const socket = new HocuspocusProviderWebsocket({ url: `${url}/` })
        window.provider = new HocuspocusProvider({ websocketProvider: socket, name: room, document: window.doc })
        window.provider.attach()
        window.provider.awareness.setLocalStateField('user', 'hocuspocus-tab')
      }, { url: server.url, room })

      await weftPage.waitForFunction(() => window.provider.synced, undefined, WAIT)
      await weftPage.evaluate(() => window.doc.getText('t').insert(0, 'weft '))
      await ywsPage.evaluate(() => window.doc.getText('t').insert(0, 'yws '))
      await hocusPage.evaluate(() => window.doc.getText('t').insert(0, 'hocus '))

      const textIn = (page: Page): Promise<string> => page.evaluate(() => window.doc.getText('t').toString())
      for (const page of [weftPage, ywsPage, hocusPage]) {
        await page.waitForFunction(() => ['weft ', 'yws ', 'hocus '].every((part) => window.doc.getText('t').toString().includes(part)), undefined, WAIT)
      }
      const texts = await Promise.all([weftPage, ywsPage, hocusPage].map(textIn))
      assert.equal(texts[1], texts[0], 'y-websocket tab converged with the weft tab')
      assert.equal(texts[2], texts[0], 'hocuspocus tab converged with the weft tab')
      await eventually(async () => (await roomText(room, 't')) === texts[0], 'the server document to hold the merged text')

      // Awareness both ways: the weft tab sees the others, and the others see the weft tab.
      const usersIn = (page: Page): Promise<string[]> =>
        page.evaluate(() => [...window.provider.awareness.getStates().values()].map((state: { user?: string }) => state.user ?? '').sort())
      const everyone = ['hocuspocus-tab', 'weft-tab', 'y-websocket-tab']
      await eventually(async () => JSON.stringify(await usersIn(weftPage)) === JSON.stringify(everyone), 'the weft tab to see every user')
      await eventually(async () => (await usersIn(ywsPage)).includes('weft-tab'), 'the y-websocket tab to see the weft user')
      await eventually(async () => (await usersIn(hocusPage)).includes('weft-tab'), 'the hocuspocus tab to see the weft user')

      // Every local change of the weft tab is acknowledged as stored.
      await weftPage.waitForFunction(() => window.provider.saved === true, undefined, WAIT)
      await weftPage.evaluate((text) => (window.document.getElementById('text')!.textContent = text), texts[0])
      await weftPage.screenshot({ path: await artifactPath('browser-client-mixed.png') })
    } finally {
      for (const page of [weftPage, ywsPage, hocusPage]) await page.evaluate(() => window.provider?.destroy()).catch(() => {})
      await Promise.all([weftPage, ywsPage, hocusPage].map((page) => page.close()))
    }
  })

  it('follows the close-code table: 4404 (room deleted) stops, 1000 by the client stays disconnected', async () => {
    const room = 'browser-deleted'
    const page = await open()
    try {
      await page.evaluate(({ url, room }) => {
        const { Y, WeftProvider } = window.weft
        window.doc = new Y.Doc()
        window.closes = []
        window.provider = new WeftProvider(url, room, window.doc, { backoff: { initialMs: 20, maxMs: 200 } })
        window.provider.on('close', (event: unknown) => window.closes.push(event))
        window.doc.getText('t').insert(0, 'to be deleted')
      }, { url: server.url, room })
      await page.waitForFunction(() => window.provider.saved, undefined, WAIT)
      const deleted = await fetch(`${server.http}/api/rooms/${room}`, { method: 'DELETE' })
      assert.equal(deleted.status < 300, true, `DELETE answered ${deleted.status}`)
      await page.waitForFunction(() => window.provider.status === 'stopped', undefined, WAIT)
      const closes = await page.evaluate(() => window.closes)
      assert.deepEqual(closes.map((c: { code: number; willReconnect: boolean }) => [c.code, c.willReconnect]), [[4404, false]])

      // connect() again after the stop; then the application's own disconnect() is final.
      await page.evaluate(() => window.provider.connect())
      await page.waitForFunction(() => window.provider.synced, undefined, WAIT)
      await page.evaluate(() => window.provider.disconnect())
      await page.waitForFunction(() => window.provider.status === 'disconnected', undefined, WAIT)
      const last = await page.evaluate(() => window.closes.at(-1))
      assert.deepEqual([last.code, last.willReconnect], [1000, false])
    } finally {
      await page.evaluate(() => window.provider?.destroy()).catch(() => {})
      await page.close()
    }
  })

  it('follows the close-code table: 1012 (the server drains) reconnects', async () => {
    const draining = await startServer()
    const page = await open()
    try {
      await page.evaluate(({ url }) => {
        const { Y, WeftProvider } = window.weft
        window.doc = new Y.Doc()
        window.closes = []
        window.provider = new WeftProvider(url, 'browser-restart', window.doc, { backoff: { initialMs: 20, maxMs: 200, restartJitterMs: 100 } })
        window.provider.on('close', (event: unknown) => window.closes.push(event))
      }, { url: draining.url })
      await page.waitForFunction(() => window.provider.synced, undefined, WAIT)
      await draining.stop()
      await page.waitForFunction(() => window.closes.length > 0, undefined, WAIT)
      const first = await page.evaluate(() => window.closes[0])
      assert.deepEqual([first.code, first.willReconnect], [1012, true])
      assert.equal(await page.evaluate(() => window.provider.status), 'connecting')
    } finally {
      await page.evaluate(() => window.provider?.destroy()).catch(() => {})
      await page.close()
    }
  })

  it('offline first with y-indexeddb: an edit made offline survives a reload and reaches the server later', async () => {
    const room = 'browser-offline'
    const context = await chromium.browser.newContext()
    // Offline = every WebSocket to weft refused by Playwright's route (the server never sees it);
    // online = passed through to the real server. HTTP (the page itself) is untouched.
    let online = true
    let refused = 0
    await context.routeWebSocket(/^ws:\/\/127\.0\.0\.1/, (ws: WebSocketRoute) => {
      if (online) {
        ws.connectToServer()
        return
      }
      refused++
      void ws.close({ code: 4000, reason: 'offline (test route)' })
    })
    const start = ({ url, room }: { url: string; room: string }): Promise<void> => {
      const { Y, WeftProvider, IndexeddbPersistence } = window.weft
      window.doc = new Y.Doc()
      window.local = new IndexeddbPersistence(room, window.doc)
      window.provider = new WeftProvider(url, room, window.doc, { backoff: { initialMs: 50, maxMs: 300 } })
      return window.local.whenSynced.then(() => undefined)
    }
    const page = await open(context)
    try {
      await page.evaluate(start, { url: server.url, room })
      await page.evaluate(() => window.doc.getText('t').insert(0, 'online. '))
      await page.waitForFunction(() => window.provider.synced && window.provider.saved, undefined, WAIT)
      await eventually(async () => (await roomText(room, 't')) === 'online. ', 'the online edit on the server')

      // Go offline: close the socket ourselves and refuse every new one (context.setOffline leaves
      // an open WebSocket open and only holds its frames back until it ends; see the README).
      online = false
      await page.evaluate(() => window.provider.disconnect())
      await page.evaluate(() => window.provider.connect())
      await eventually(async () => refused >= 1, 'a reconnect attempt refused while offline')
      await page.evaluate(() => window.doc.getText('t').insert(window.doc.getText('t').length, 'typed offline.'))
      assert.equal(await page.evaluate(() => window.provider.saved), false, 'an offline edit is not saved')
      // The edit must be in IndexedDB before the reload: a second, fresh doc reads it from there.
      await page.waitForFunction(async (room: string) => {
        const { Y, IndexeddbPersistence } = window.weft
        const probe = new Y.Doc()
        const reader = new IndexeddbPersistence(room, probe)
        await reader.whenSynced
        const text = probe.getText('t').toString()
        await reader.destroy()
        return text === 'online. typed offline.'
      }, room, WAIT)
      await page.evaluate(() => window.local.destroy())

      // Reload while still offline: the edit comes back from IndexedDB alone.
      await page.reload()
      await page.waitForFunction(() => window.weft !== undefined, undefined, WAIT)
      await page.evaluate(start, { url: server.url, room })
      assert.equal(await page.evaluate(() => window.doc.getText('t').toString()), 'online. typed offline.')
      assert.equal(await page.evaluate(() => window.provider.synced), false)
      assert.notEqual(await roomText(room, 't'), 'online. typed offline.', 'the server has not seen the offline edit yet')
      await page.evaluate((text) => (window.document.getElementById('text')!.textContent = `offline after reload: ${text}`), await page.evaluate(() => window.doc.getText('t').toString()))
      await page.screenshot({ path: await artifactPath('browser-client-offline.png') })

      // Back online: the provider's next attempt goes through and the edit reaches storage.
      online = true
      await page.waitForFunction(() => window.provider.synced && window.provider.saved, undefined, WAIT)
      await eventually(async () => (await roomText(room, 't')) === 'online. typed offline.', 'the offline edit on the server')
    } finally {
      await page.evaluate(() => {
        window.provider?.destroy()
        return window.local?.destroy()
      }).catch(() => {})
      await context.close()
    }
  })
})
