/**
 * The demo editor (`GET /demo/<room>`, issue 18) in real Chromium: ProseMirror + y-prosemirror
 * over the stock Hocuspocus provider, against real weft servers (in process, or `weft serve`
 * processes on one redis-server behind a real nginx). Pages are separate browser contexts (own
 * storage, own sockets), typing through the keyboard like a person.
 */
import assert from 'node:assert/strict'
import { copyFile, readFile } from 'node:fs/promises'
import { after, before, describe, it } from 'node:test'
import { isDeepStrictEqual } from 'node:util'
import type { Browser, BrowserContext, Page } from 'playwright-core'
import * as Y from 'yjs'
import { LevelStore, type LocalVersionStore, type Store } from '../persistence/index.js'
import { artifactPath, launchChromium, type RunningBrowser } from './harness/browser.js'
import { metricValue } from './harness/metrics.js'
import { startNginx, type NginxProcess } from './harness/nginx.js'
import { startRedis, type RedisProcess } from './harness/redis.js'
import { REPO_ROOT } from './harness/repo.js'
import { runCli, spawnWeft, startServer, tempDir, type InProcessServer, type WeftProcess } from './harness/server.js'
import { signToken } from './harness/tokens.js'
import { eventually, withDeadline } from './harness/wait.js'

interface Editor {
  name: string
  context: BrowserContext
  page: Page
  /** Uncaught page errors and console errors: a CSP refusal or a bundling fault shows up here. */
  errors: string[]
}

interface DemoStatus {
  connection: string
  synced: boolean
  unsyncedChanges: number
  saved: boolean
}

/**
 * What the page exposes, as the functions below see it. They run in the page and are passed as
 * functions, never as strings: the page's CSP (no unsafe-eval) refuses string evaluation.
 */
interface PageGlobal {
  weftDemo?: {
    status(): DemoStatus
    closeCodes: number[]
    view: { state: { doc: { toJSON(): unknown; textBetween(from: number, to: number, separator: string): string; content: { size: number } } } }
    socket: { webSocket: { close(): void } | null }
  }
  document: {
    querySelectorAll(selector: string): Iterable<{ textContent: string | null }>
    getElementById(id: string): { textContent: string | null; dataset: Record<string, string | undefined> } | null
  }
}

const READY = (): boolean => {
  const demo = (globalThis as unknown as PageGlobal).weftDemo
  return demo !== undefined && demo.status().connection === 'connected' && demo.status().synced
}
const cursorNamed = (name: string): boolean => [...(globalThis as unknown as PageGlobal).document.querySelectorAll('.ProseMirror-yjs-cursor')].some((c) => (c.textContent ?? '').includes(name))
const jsonPaneHas = (text: string): boolean => ((globalThis as unknown as PageGlobal).document.getElementById('document-json')?.textContent ?? '').includes(text)
const closedWith = (code: number): boolean => (globalThis as unknown as PageGlobal).weftDemo?.closeCodes.includes(code) === true
const notConnected = (): boolean => (globalThis as unknown as PageGlobal).weftDemo?.status().connection !== 'connected'
const savedAndShown = (): boolean => {
  const page = globalThis as unknown as PageGlobal
  return page.weftDemo?.status().saved === true && page.document.getElementById('status')?.dataset.saved === 'true'
}

async function openEditor(browser: Browser, base: string, room: string, name: string, query = ''): Promise<Editor> {
  const context = await browser.newContext({ viewport: { width: 1100, height: 640 } })
  const page = await context.newPage()
  const errors: string[] = []
  page.on('pageerror', (err) => errors.push(err.message))
  // Failed loads are judged by their answers below: the JSON pane's first fetch of a room that
  // was never stored is a 404, and Chromium logs every such answer as a console error.
  page.on('console', (message) => {
    if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) errors.push(message.text())
  })
  page.on('response', (response) => {
    if (response.status() >= 400 && !(response.status() === 404 && response.url().includes('/api/rooms/'))) errors.push(`${response.status()} ${response.url()}`)
  })
  await page.goto(`${base}/demo/${encodeURIComponent(room)}?name=${encodeURIComponent(name)}${query}`)
  await page.waitForFunction(READY, null, { timeout: 15_000 })
  return { name, context, page, errors }
}

const docJson = (editor: Editor): Promise<string> => editor.page.evaluate(() => JSON.stringify((globalThis as unknown as PageGlobal).weftDemo?.view.state.doc.toJSON()))
const docText = (editor: Editor): Promise<string> =>
  editor.page.evaluate(() => {
    const doc = (globalThis as unknown as PageGlobal).weftDemo?.view.state.doc
    return doc === undefined ? '' : doc.textBetween(0, doc.content.size, '\n')
  })
const status = (editor: Editor): Promise<DemoStatus> => editor.page.evaluate(() => (globalThis as unknown as PageGlobal).weftDemo?.status() as DemoStatus)

/** Types `text` at the start or the end of the document, key by key. */
async function typeAt(editor: Editor, where: 'start' | 'end', text: string): Promise<void> {
  await editor.page.click('#editor .ProseMirror')
  await editor.page.keyboard.press(where === 'start' ? 'Control+Home' : 'Control+End')
  await editor.page.keyboard.type(text, { delay: 10 })
}

/** The text of a ProseMirror JSON document, paragraphs joined by newlines. */
function textOf(json: string): string {
  const walk = (node: { text?: string; content?: unknown[] }): string => node.text ?? (node.content ?? []).map((child) => walk(child as { text?: string })).join(node.content?.every((c) => (c as { type?: string }).type === 'paragraph') === true ? '\n' : '')
  return walk(JSON.parse(json) as { content?: unknown[] })
}

/**
 * Whether every key typed as `word` is in `text`, in order. Two people typing at once at nearby
 * places may interleave their keys (a CRDT keeps each one's order, not their words whole), so
 * "nothing lost" is checked as a subsequence; typing far apart keeps words whole (checked too).
 */
function typedIn(text: string, word: string): boolean {
  let at = 0
  for (const c of text) if (at < word.length && c === word[at]) at++
  return at === word.length
}

/** Every editor shows the same ProseMirror JSON, and it has every typed key. Returns that JSON. */
async function converged(editors: Editor[], words: string[], timeoutMs = 15_000): Promise<string> {
  let last: string[] = []
  await eventually(
    async () => {
      last = await Promise.all(editors.map(docJson))
      return last.every((json) => json === last[0]) && words.every((word) => typedIn(textOf(last[0] as string), word))
    },
    'the editors to converge with every word',
    timeoutMs,
    50,
  ).catch((err: Error) => {
    throw new Error(`${err.message}\n${last.join('\n')}`)
  })
  return last[0] as string
}

/** The ProseMirror JSON of a stored document's `default` fragment, read from its Yjs update. */
function fragmentText(update: Uint8Array): string {
  const doc = new Y.Doc()
  Y.applyUpdate(doc, update)
  return doc.getXmlFragment('default').toString()
}

async function storedUpdate(http: string, room: string, token?: string): Promise<Uint8Array> {
  const response = await fetch(`${http}/api/rooms/${encodeURIComponent(room)}?format=update`, { headers: token === undefined ? {} : { authorization: `Bearer ${token}` } })
  assert.equal(response.status, 200)
  return new Uint8Array(await response.arrayBuffer())
}

async function closeEditors(...editors: Array<Editor | undefined>): Promise<void> {
  for (const editor of editors) await editor?.context.close()
}

/** Two screenshots side by side in one picture, composed by the browser itself. */
async function sideBySide(browser: Browser, left: Editor, right: Editor, name: string): Promise<string> {
  const shots = await Promise.all([left.page.screenshot(), right.page.screenshot()])
  const page = await browser.newPage({ viewport: { width: 2220, height: 660 } })
  try {
    const images = shots.map((png) => `<img style="width:1100px;border:1px solid #888" src="data:image/png;base64,${png.toString('base64')}">`).join('')
    await page.setContent(`<body style="margin:0;background:#444;display:flex;gap:8px;padding:8px">${images}</body>`)
    const path = await artifactPath(name)
    await page.screenshot({ path })
    return path
  } finally {
    await page.close()
  }
}

describe('demo editor in Chromium', () => {
  let chromium: RunningBrowser

  before(async () => {
    chromium = await launchChromium()
  })

  after(async () => {
    await chromium?.close()
  })

  describe('one server, open mode', () => {
    let weft: InProcessServer
    before(async () => {
      weft = await startServer()
    })
    after(async () => {
      await weft?.stop()
    })

    it('two people typing at once in one room converge to the same ProseMirror JSON and see each other', async () => {
      const room = 'pair room'
      const alice = await openEditor(chromium.browser, weft.http, room, 'alice')
      const bob = await openEditor(chromium.browser, weft.http, room, 'bob')
      try {
        await typeAt(alice, 'end', 'middle words here')
        await converged([alice, bob], ['middle words here'])
        // At the same time: alice at the start, bob at the end (after a new paragraph).
        await Promise.all([typeAt(alice, 'start', 'alpha bravo charlie '), typeAt(bob, 'end', ' xray yankee zulu')])
        await bob.page.keyboard.press('Enter')
        await bob.page.keyboard.type('second paragraph', { delay: 10 })
        const json = await converged([alice, bob], ['alpha bravo charlie', 'middle words here', 'xray yankee zulu', 'second paragraph'])
        const doc = JSON.parse(json) as { type: string; content: Array<{ type: string }> }
        assert.equal(doc.type, 'doc')
        assert.deepEqual(doc.content.map((node) => node.type), ['paragraph', 'paragraph'])
        assert.equal((await docText(alice)).split('\n')[0], 'alpha bravo charlie middle words here xray yankee zulu')

        // Each sees the other's cursor, labelled with the other's name.
        await alice.page.waitForFunction(cursorNamed, 'bob', { timeout: 10_000 })
        await bob.page.waitForFunction(cursorNamed, 'alice', { timeout: 10_000 })
        assert.equal(await alice.page.locator('.ProseMirror-yjs-cursor', { hasText: 'alice' }).count(), 0, 'no cursor of her own')

        // The JSON pane shows what the HTTP API returns for the room, refetched after the edits.
        await alice.page.waitForFunction(jsonPaneHas, 'second paragraph', { timeout: 10_000 })
        await eventually(async () => (await status(alice)).saved && (await status(bob)).saved, 'both editors to show saved')
        assert.match(await alice.page.locator('#status').innerText(), /connected · saved/)
        assert.match(fragmentText(await storedUpdate(weft.http, room)), /second paragraph/)
        // Rich text over HTTP: the API's ProseMirror JSON is what the editor holds (editor.getJSON()).
        const api = await fetch(`${weft.http}/api/rooms/${encodeURIComponent(room)}?format=prosemirror&field=default`)
        assert.equal(api.status, 200)
        assert.deepEqual(await api.json(), JSON.parse(await docJson(alice)))
        // And the other way: a PUT of ProseMirror JSON (attrs and marks) shows in both editors live.
        const replacement = {
          type: 'doc',
          content: [
            { type: 'heading', attrs: { level: 2 }, content: [{ type: 'text', text: 'From the API' }] },
            { type: 'paragraph', content: [{ type: 'text', text: 'bold', marks: [{ type: 'strong' }] }, { type: 'text', text: ' and a ' }, { type: 'text', text: 'link', marks: [{ type: 'link', attrs: { href: 'https://example.com/', title: null } }] }] },
          ],
        }
        const put = await fetch(`${weft.http}/api/rooms/${encodeURIComponent(room)}/content?field=default`, { method: 'PUT', body: JSON.stringify(replacement), headers: { 'content-type': 'application/json' } })
        assert.equal(put.status, 204, await put.text())
        const shows = async (editor: Editor): Promise<boolean> => isDeepStrictEqual(JSON.parse(await docJson(editor)), replacement)
        await eventually(async () => (await shows(alice)) && (await shows(bob)), 'both editors to show the PUT content')

        const path = await sideBySide(chromium.browser, alice, bob, 'demo-editor-two.png')
        assert.ok((await readFile(path)).length > 10_000, 'the screenshot has content')
        // The committed picture in docs/ is refreshed only when asked, so a run leaves the tree clean.
        if (process.env.WEFT_UPDATE_DOCS_SCREENSHOT === '1') await copyFile(path, `${REPO_ROOT}/docs/demo-editor.png`)
        assert.deepEqual([...alice.errors, ...bob.errors], [], 'no page errors (CSP, bundle)')
      } finally {
        await closeEditors(alice, bob)
      }
    })

    it('an editor that goes offline keeps its edits, and both converge when it is back', async () => {
      const room = 'offline room'
      const alice = await openEditor(chromium.browser, weft.http, room, 'alice')
      const bob = await openEditor(chromium.browser, weft.http, room, 'bob')
      try {
        await typeAt(alice, 'end', 'shared start')
        await converged([alice, bob], ['shared start'])

        // setOffline refuses new connections but leaves an open WebSocket alone (seen with
        // Chromium 156: the socket stayed connected for seconds). So the page's socket is also
        // closed from inside, as a dropped network would; the provider's reconnects then fail
        // (1006) until the network is back.
        await bob.context.setOffline(true)
        await bob.page.evaluate(() => (globalThis as unknown as PageGlobal).weftDemo?.socket.webSocket?.close())
        await bob.page.waitForFunction(notConnected, null, { timeout: 10_000 })
        await bob.page.waitForFunction(closedWith, 1006, { timeout: 10_000 })

        await Promise.all([typeAt(alice, 'end', ' online one online two'), typeAt(bob, 'start', 'offline one offline two ')])
        await bob.page.keyboard.press('Enter')
        await bob.page.keyboard.type('offline paragraph', { delay: 10 })
        await converged([alice], ['online one online two'])
        // Bob's words stay his alone while he is offline, and he is not "saved".
        assert.ok(!(await docJson(alice)).includes('offline'), 'alice does not see offline edits')
        assert.ok(!(await docJson(bob)).includes('online one'), 'bob does not see online edits')
        const offline = await status(bob)
        assert.notEqual(offline.connection, 'connected')
        assert.equal(offline.saved, false)
        assert.match(await bob.page.locator('#status').innerText(), /unsaved|disconnected|connecting/)

        await bob.context.setOffline(false)
        await bob.page.waitForFunction(READY, null, { timeout: 15_000 })
        await converged([alice, bob], ['shared start', 'online one online two', 'offline one offline two', 'offline paragraph'])
        await eventually(async () => (await status(bob)).saved, 'bob saved after reconnecting')
        const stored = fragmentText(await storedUpdate(weft.http, room))
        for (const word of ['online one online two', 'offline one offline two', 'offline paragraph']) assert.ok(stored.includes(word), `stored: ${word}`)
        assert.deepEqual([...alice.errors, ...bob.errors].filter((e) => !/ERR_INTERNET_DISCONNECTED|WebSocket/.test(e)), [])
      } finally {
        await closeEditors(alice, bob)
      }
    })
  })

  it('"saved" shows only after the store has the change', async () => {
    const dir = await tempDir('weft-demo-gate-')
    const level = await LevelStore.open(dir.path)
    // A store that holds every append until released: the document is applied and relayed, not stored.
    let held: Array<() => void> | null = null
    const gated = new Proxy(level, {
      get(target, property, receiver) {
        if (property === 'append') {
          return async (room: string, update: Uint8Array): Promise<string> => {
            if (held !== null) await new Promise<void>((resolve) => (held as Array<() => void>).push(resolve))
            return target.append(room, update)
          }
        }
        const value = Reflect.get(target, property, receiver) as unknown
        return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value
      },
    }) as Store & LocalVersionStore
    const weft = await startServer({ store: gated, persistWindowMs: 0 })
    let editor: Editor | undefined
    try {
      editor = await openEditor(chromium.browser, weft.http, 'gated', 'carol')
      // Synced comes with the server's sync step 2; saved follows the ack of the page's own step 2.
      await editor.page.waitForFunction(savedAndShown, null, { timeout: 10_000 })
      held = []
      await typeAt(editor, 'end', 'held back')
      await eventually(async () => (held as Array<() => void>).length > 0, 'an append to be held')
      const holding = await status(editor)
      assert.equal(holding.saved, false, 'unsaved while the store holds the append')
      assert.ok(holding.unsyncedChanges > 0)
      assert.equal(holding.connection, 'connected')
      assert.equal(await editor.page.locator('#status').getAttribute('data-saved'), 'false')
      assert.match(await editor.page.locator('#status').innerText(), /unsaved/)
      await editor.page.screenshot({ path: await artifactPath('demo-editor-unsaved.png') })

      const release = held
      held = null
      for (const resolve of release) resolve()
      await editor.page.waitForFunction(savedAndShown, null, { timeout: 10_000 })
      assert.match(await editor.page.locator('#status').innerText(), /connected · saved/)
      const entries = await level.readLog('gated')
      assert.match(fragmentText(Y.mergeUpdates(entries.map((entry) => entry.update))), /held back/, 'the store has the text')
    } finally {
      await closeEditors(editor)
      if (held !== null) for (const resolve of held as Array<() => void>) resolve()
      held = null
      await weft.stop()
      await level.close()
      await dir.remove()
    }
  })

  describe('drain behind nginx: two instances on one redis-server, Hocuspocus on /collab', () => {
    let redis: RedisProcess
    let nginx: NginxProcess
    const instances: Array<{ weft: WeftProcess; data: { path: string; remove(): Promise<void> } }> = []

    before(async () => {
      redis = await startRedis()
      for (const name of ['weft-a', 'weft-b']) {
        const data = await tempDir(`${name}-`)
        const weft = await spawnWeft(['--redis', redis.url, '--instance-id', name, '--data', data.path, '--drain-seconds', '2', '--hocuspocus-path', '/collab', '--trusted-proxies', '127.0.0.1'])
        instances.push({ weft, data })
      }
      nginx = await startNginx({ upstreams: instances.map(({ weft }) => `127.0.0.1:${weft.port}`), hocuspocusPath: '/collab' })
    })

    after(async () => {
      await nginx?.stop()
      for (const { weft } of instances) {
        if (weft.child.exitCode === null && weft.child.signalCode === null) {
          weft.kill('SIGTERM')
          await withDeadline(weft.exited, 'weft to exit', 10_000).catch(() => weft.kill('SIGKILL'))
        }
      }
      for (const { data } of instances) await data.remove()
      await redis?.stop()
    })

    it('SIGTERM on the instance both pages use: they reconnect by themselves (1012) and keep editing, nothing lost', async () => {
      const room = 'drained room'
      const alice = await openEditor(chromium.browser, nginx.http, room, 'alice')
      const bob = await openEditor(chromium.browser, nginx.http, room, 'bob')
      try {
        await typeAt(alice, 'end', 'before drain')
        await converged([alice, bob], ['before drain'])
        // nginx routes by the path after /collab: both pages are on the same instance. Find it.
        const counts = await Promise.all(instances.map(({ weft }) => metricValue(weft.http, 'weft_connections')))
        assert.deepEqual([...counts].sort(), [0, 2], 'both sockets on one instance')
        const used = instances[counts.indexOf(2)] as (typeof instances)[number]
        const other = instances.find((i) => i !== used) as (typeof instances)[number]

        used.weft.kill('SIGTERM')
        // Typing through the drain: words typed while the socket is closing must not be lost.
        await Promise.all([typeAt(alice, 'end', ' during one'), typeAt(bob, 'start', 'during two ')])
        assert.equal(await withDeadline(used.weft.exited, 'the drained instance to exit', 15_000), 0)
        for (const editor of [alice, bob]) {
          await editor.page.waitForFunction(closedWith, 1012, { timeout: 10_000 })
          await editor.page.waitForFunction(READY, null, { timeout: 15_000 })
        }
        await Promise.all([typeAt(alice, 'end', ' after one'), typeAt(bob, 'start', 'after two ')])
        const words = ['before drain', 'during one', 'during two', 'after one', 'after two']
        const json = await converged([alice, bob], words)
        await eventually(async () => (await status(alice)).saved && (await status(bob)).saved, 'both editors saved on the other instance')
        const stored = fragmentText(await storedUpdate(other.weft.http, room))
        for (const word of words) assert.ok(typedIn(stored, word), `stored on the remaining instance: ${word}`)
        // Keys typed while the page re-syncs after the reconnect can land split around the
        // other's (y-prosemirror maps the selection through the remote change): every key is
        // there in order, not necessarily side by side.
        assert.ok(typedIn(textOf(json), 'after two'), textOf(json))
        await alice.page.screenshot({ path: await artifactPath('demo-editor-after-drain.png') })

        // Stored, not only held: stop the other instance too (its drain flushes) and read both
        // LevelDB directories; together they hold every typed key.
        await closeEditors(alice, bob)
        other.weft.kill('SIGTERM')
        assert.equal(await withDeadline(other.weft.exited, 'the other instance to exit', 15_000), 0)
        const updates: Uint8Array[] = []
        for (const { data } of instances) {
          const store = await LevelStore.open(data.path)
          try {
            for (const entry of await store.readLog(room)) updates.push(entry.update)
          } finally {
            await store.close()
          }
        }
        const onDisk = fragmentText(Y.mergeUpdates(updates))
        for (const word of words) assert.ok(typedIn(onDisk, word), `on disk: ${word}`)
      } finally {
        await closeEditors(alice, bob)
      }
    })
  })

  describe('--demo', () => {
    const get = (base: string, path: string, init?: RequestInit): Promise<Response> => fetch(`${base}${path}`, init)
    const SECRET = 'demo-test-secret-that-is-long-enough-32b'

    it('is on in open mode: the page, its assets, its content types and CSP', async () => {
      const weft = await startServer()
      try {
        const page = await get(weft.http, '/demo/some%20room')
        assert.equal(page.status, 200)
        assert.equal(page.headers.get('content-type'), 'text/html; charset=utf-8')
        const csp = page.headers.get('content-security-policy') ?? ''
        assert.match(csp, /default-src 'none'/)
        assert.match(csp, /script-src 'self'/)
        assert.doesNotMatch(csp, /unsafe-inline|https?:/)
        const html = await page.text()
        assert.match(html, /data-room="some room"/)
        assert.match(html, /data-hocuspocus-path="\/"/)
        assert.doesNotMatch(html, /<script>|https?:\/\//, 'no inline script, nothing from elsewhere')
        const script = await get(weft.http, '/demo-assets/editor.js')
        assert.equal(script.status, 200)
        assert.equal(script.headers.get('content-type'), 'text/javascript; charset=utf-8')
        assert.ok((await script.arrayBuffer()).byteLength > 50_000, 'the bundle holds ProseMirror and the provider')
        const style = await get(weft.http, '/demo-assets/editor.css')
        assert.equal(style.headers.get('content-type'), 'text/css; charset=utf-8')
        assert.equal((await get(weft.http, '/demo-assets/nothing.js')).status, 404)
        assert.equal((await get(weft.http, '/demo/%ff')).status, 400)
        assert.equal((await get(weft.http, '/demo/x', { method: 'POST' })).status, 405)
        const head = await get(weft.http, '/demo/x', { method: 'HEAD' })
        assert.equal(head.status, 200)
        assert.equal(await head.text(), '')
        // The route label is the template, never the room a client chose.
        const metrics = await (await get(weft.http, '/metrics')).text()
        assert.match(metrics, /weft_http_requests_total\{[^}]*route="\/demo\/\{room\}"/)
        assert.doesNotMatch(metrics, /route="\/demo\/some/)
      } finally {
        await weft.stop()
      }
    })

    it('is off with --auth-secret (404), and on again with --demo on, where the page uses ?token=', async () => {
      const locked = await startServer({ authSecret: SECRET })
      try {
        const answer = await get(locked.http, '/demo/room')
        assert.equal(answer.status, 404)
        assert.equal(((await answer.json()) as { error: string }).error, 'not_found')
        assert.equal((await get(locked.http, '/demo-assets/editor.js')).status, 404)
      } finally {
        await locked.stop()
      }
      const shown = await startServer({ authSecret: SECRET, demo: 'on' })
      let editor: Editor | undefined
      try {
        assert.equal((await get(shown.http, '/demo/room')).status, 200)
        const token = await signToken({ rooms: ['room'], access: 'write' }, { secret: SECRET, subject: 'dave' })
        editor = await openEditor(chromium.browser, shown.http, 'room', 'dave', `&token=${token}`)
        await typeAt(editor, 'end', 'with a token')
        await eventually(async () => (await status(editor as Editor)).saved, 'saved with a token')
        assert.match(fragmentText(await storedUpdate(shown.http, 'room', token)), /with a token/)
        await editor.page.waitForFunction(jsonPaneHas, 'with a token', { timeout: 10_000 })
      } finally {
        await closeEditors(editor)
        await shown.stop()
      }
    })

    it('WEFT_DEMO=off turns it off in open mode; a bad value exits 2 naming --demo', async () => {
      const weft = await spawnWeft(['--data', 'memory'], { WEFT_DEMO: 'off' })
      try {
        assert.equal((await get(weft.http, '/demo/room')).status, 404)
        assert.equal((await get(weft.http, '/')).status, 200)
      } finally {
        weft.kill('SIGTERM')
        await withDeadline(weft.exited, 'weft to exit', 10_000)
      }
      const bad = await runCli(['serve', '--demo', 'maybe', '--port', '0', '--data', 'memory'])
      assert.equal(bad.status, 2)
      assert.match(bad.stderr.trim(), /^.*--demo.*"maybe" is not one of auto, on, off.*$/)
    })
  })
})
