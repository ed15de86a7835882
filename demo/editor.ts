/**
 * The demo editor's browser side (bundled by scripts/build-demo.mjs into dist/demo/editor.js):
 * a plain ProseMirror editor bound by y-prosemirror to the room's Y.XmlFragment `default` (the
 * field Tiptap's Collaboration extension uses, so a Tiptap app sees the same content), connected
 * with the stock @hocuspocus/provider. Plain ProseMirror rather than Tiptap keeps the bundle small.
 *
 * "Saved" means the provider has no unacknowledged change: weft sends the Hocuspocus SyncStatus
 * only after an update is in storage, so the indicator never claims more than the server has kept.
 */
import { HocuspocusProvider, HocuspocusProviderWebsocket, WebSocketStatus } from '@hocuspocus/provider'
import { baseKeymap } from 'prosemirror-commands'
import { keymap } from 'prosemirror-keymap'
import { Schema } from 'prosemirror-model'
import { schema as basicSchema } from 'prosemirror-schema-basic'
import { addListNodes } from 'prosemirror-schema-list'
import { EditorState } from 'prosemirror-state'
import { EditorView } from 'prosemirror-view'
import { redo, undo, yCursorPlugin, ySyncPlugin, yUndoPlugin } from 'y-prosemirror'
import * as Y from 'yjs'

/** Tiptap's Collaboration extension stores its document in this fragment by default. */
const FIELD = 'default'
/** How long the JSON pane waits after the last change before it asks the API again. */
const REFRESH_DELAY_MS = 300
const REFRESH_MAX_WAIT_MS = 2_000

const COLORS = ['#d7263d', '#1b998b', '#3772ff', '#f46036', '#7768ae', '#2e294e', '#c5a000', '#e84855']

interface DemoUser {
  name: string
  color: string
}

export interface DemoStatus {
  connection: 'connecting' | 'connected' | 'disconnected'
  synced: boolean
  unsyncedChanges: number
  saved: boolean
}

const body = document.body
const room = body.dataset.room ?? 'demo'
const hocuspocusPath = (body.dataset.hocuspocusPath ?? '/').replace(/\/+$/, '')
const params = new URLSearchParams(location.search)
const token = params.get('token')

function pickUser(): DemoUser {
  const given = params.get('name')?.trim()
  const name = given !== undefined && given !== '' ? given.slice(0, 64) : `guest-${Math.floor(Math.random() * 10_000)}`
  let hash = 0
  for (const c of name) hash = (hash * 31 + (c.codePointAt(0) ?? 0)) >>> 0
  return { name, color: COLORS[hash % COLORS.length] as string }
}

/**
 * With the default path `/` the document name travels only inside the protocol (the bare `/` is
 * never a y-websocket room); with another path the room goes after it, so a load balancer that
 * hashes the path (deploy/nginx) sends every editor of a room to the same instance.
 */
function websocketUrl(): string {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws'
  const path = hocuspocusPath === '' ? '/' : `${hocuspocusPath}/${encodeURIComponent(room)}`
  return `${scheme}://${location.host}${path}`
}

/**
 * y-prosemirror's default cursor sets `style` attributes, which the page's CSP (no inline style)
 * refuses; colours set through the CSSOM are allowed.
 */
function cursorBuilder(user: DemoUser): HTMLElement {
  const cursor = document.createElement('span')
  cursor.className = 'ProseMirror-yjs-cursor'
  cursor.style.borderColor = user.color
  const label = document.createElement('div')
  label.style.backgroundColor = user.color
  label.textContent = user.name
  cursor.append('\u2060', label, '\u2060')
  return cursor
}

const schema = new Schema({ nodes: addListNodes(basicSchema.spec.nodes, 'paragraph block*', 'block'), marks: basicSchema.spec.marks })
const user = pickUser()
const ydoc = new Y.Doc()
const fragment = ydoc.getXmlFragment(FIELD)

let connection: DemoStatus['connection'] = 'connecting'
/** Close codes the server sent, newest last (a drain closes with 1012; the tests look). */
const closeCodes: number[] = []
const socket = new HocuspocusProviderWebsocket({
  url: websocketUrl(),
  // Quicker than the provider's 1 s..30 s default: after a drain (1012) the editor is back in
  // well under a second, with jitter so a drained instance's clients do not arrive at once.
  delay: 200,
  minDelay: 200,
  maxDelay: 3_000,
  onClose: ({ event }) => {
    closeCodes.push(event.code)
  },
})
const provider = new HocuspocusProvider({
  websocketProvider: socket,
  name: room,
  document: ydoc,
  token,
  onStatus: ({ status }) => {
    connection = status === WebSocketStatus.Connected ? 'connected' : status === WebSocketStatus.Connecting ? 'connecting' : 'disconnected'
    render()
  },
  onSynced: () => render(),
  onUnsyncedChanges: () => render(),
})
// An explicitly made socket is only used once the provider is attached to it (provider v4).
provider.attach()
provider.setAwarenessField('user', user)

const view = new EditorView(document.getElementById('editor') as HTMLElement, {
  state: EditorState.create({
    schema,
    plugins: [
      ySyncPlugin(fragment),
      yCursorPlugin(provider.awareness as NonNullable<typeof provider.awareness>, { cursorBuilder, selectionBuilder: () => ({ class: 'ProseMirror-yjs-selection' }) }),
      yUndoPlugin(),
      keymap({ 'Mod-z': undo, 'Mod-y': redo, 'Mod-Shift-z': redo }),
      keymap(baseKeymap),
    ],
  }),
})

function status(): DemoStatus {
  const unsyncedChanges = provider.unsyncedChanges
  return { connection, synced: provider.isSynced, unsyncedChanges, saved: unsyncedChanges === 0 && provider.isSynced }
}

const statusElement = document.getElementById('status') as HTMLElement
function render(): void {
  const now = status()
  statusElement.dataset.connection = now.connection
  statusElement.dataset.saved = String(now.saved)
  const saved = now.saved ? 'saved' : now.unsyncedChanges > 0 ? `unsaved (${now.unsyncedChanges})` : 'syncing'
  statusElement.textContent = `${now.connection} · ${saved}`
}
;(document.getElementById('user-name') as HTMLElement).textContent = user.name
;(document.getElementById('user-name') as HTMLElement).style.color = user.color

/** The second pane: what the HTTP API returns for this room, refetched after changes. */
const jsonElement = document.getElementById('document-json') as HTMLElement
let refreshTimer: ReturnType<typeof setTimeout> | null = null
let fetches = 0
async function refreshJson(): Promise<void> {
  refreshTimer = null
  const url = `/api/rooms/${encodeURIComponent(room)}?format=prosemirror&field=${FIELD}`
  try {
    const response = await fetch(url, { headers: token === null ? {} : { authorization: `Bearer ${token}` }, cache: 'no-store' })
    const text = await response.text()
    let shown = text
    try {
      shown = JSON.stringify(JSON.parse(text), null, 2)
    } catch {
      // not JSON: shown as it came
    }
    // 404: nothing has been stored for this room yet (the API knows no empty documents).
    jsonElement.textContent = response.ok ? shown : response.status === 404 ? '(nothing stored for this room yet)' : `${response.status}\n${shown}`
  } catch (err) {
    jsonElement.textContent = `the API did not answer: ${String(err)}`
  }
  fetches++
}
/**
 * Trailing, so the pane's last answer comes after the last change, but at least every
 * REFRESH_MAX_WAIT_MS while someone keeps typing.
 */
let firstPendingAt = 0
function scheduleRefresh(): void {
  if (refreshTimer === null) firstPendingAt = Date.now()
  else clearTimeout(refreshTimer)
  const wait = Math.max(0, Math.min(REFRESH_DELAY_MS, firstPendingAt + REFRESH_MAX_WAIT_MS - Date.now()))
  refreshTimer = setTimeout(() => void refreshJson(), wait)
}
// The API shows what is stored: ask again after this editor's changes are acknowledged (stored)
// and after remote changes arrive (the sender's instance stores them within --persist-window-ms).
ydoc.on('update', scheduleRefresh)
provider.on('unsyncedChanges', scheduleRefresh)
scheduleRefresh()
render()

declare global {
  interface Window {
    weftDemo: { view: EditorView; provider: HocuspocusProvider; socket: HocuspocusProviderWebsocket; ydoc: Y.Doc; user: DemoUser; room: string; status: () => DemoStatus; jsonFetches: () => number; refreshJson: () => Promise<void>; closeCodes: number[] }
  }
}
// Hooks for the browser tests (test/browser-editor.test.ts) and for poking at it in a console.
window.weftDemo = { view, provider, socket, ydoc, user, room, status, jsonFetches: () => fetches, refreshJson, closeCodes }
