/**
 * The demo collaborative editor (issue 18): `GET /demo/<room>` answers one HTML page, and
 * `GET /demo-assets/<file>` its script and stylesheet, which scripts/build-demo.mjs bundles into
 * dist/demo/ at build time (ProseMirror, y-prosemirror and the stock Hocuspocus provider, from
 * demo/). Nothing is fetched from elsewhere at run time: the CSP allows this origin only.
 *
 * The assets live under their own prefix, not under /demo/, because every name after /demo/ is a
 * room (a room may be called `editor.js`).
 */
import { readFileSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { roomFromPath } from '../protocol/index.js'
import type { DemoMode } from './config.js'
import { sendError } from './http-response.js'

export const DEMO_PAGE_PREFIX = '/demo/'
export const DEMO_ASSETS_PREFIX = '/demo-assets/'

/** dist/demo/, next to dist/server/ (package.json `files` and the Dockerfile ship both). */
const ASSETS_DIR = new URL('../demo/', import.meta.url)

const ASSET_TYPES: Readonly<Record<string, string>> = {
  'editor.js': 'text/javascript; charset=utf-8',
  'editor.css': 'text/css; charset=utf-8',
}

/**
 * Only this origin: scripts and styles from the asset files, the WebSocket and the API on the
 * same host (CSP Level 3 `'self'` covers ws:/wss: of the same host). No inline script or style,
 * so the page's own markup holds data, never code; remote cursors are coloured through the CSSOM.
 */
const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
}

const HTML_ESCAPES: Readonly<Record<string, string>> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c] as string)
}

/**
 * `auto` follows the access mode: anyone may edit every room in open mode, so the editor shows
 * nothing new there; with tokens it stays off unless the operator turns it on (it then needs
 * `?token=` in its URL like any other client).
 */
export function demoEnabled(mode: DemoMode, openMode: boolean): boolean {
  return mode === 'on' || (mode === 'auto' && openMode)
}

/** The page: the room and the Hocuspocus path travel as data attributes, read by demo/editor.ts. */
export function demoPageHtml(room: string, hocuspocusPath: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(room)} · weft demo</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="${DEMO_ASSETS_PREFIX}editor.css">
<script type="module" src="${DEMO_ASSETS_PREFIX}editor.js"></script>
</head>
<body data-room="${escapeHtml(room)}" data-hocuspocus-path="${escapeHtml(hocuspocusPath)}">
<header>
<h1>weft demo · <span id="room-name">${escapeHtml(room)}</span></h1>
<span id="user-name"></span>
<span id="status" data-connection="connecting" data-saved="true">connecting</span>
</header>
<main>
<section class="pane"><h2>Editor</h2><div id="editor"></div></section>
<section class="pane"><h2>Stored document (<code>GET /api/rooms/…?format=prosemirror</code>)</h2><pre id="document-json">loading…</pre></section>
</main>
</body>
</html>
`
}

export class DemoPage {
  /** The bundled files, read once; null when this installation was built without them. */
  private readonly assets = new Map<string, Buffer | null>()

  constructor(private readonly hocuspocusPath: string) {}

  handles(path: string): boolean {
    return path.startsWith(DEMO_PAGE_PREFIX) || path.startsWith(DEMO_ASSETS_PREFIX)
  }

  /** The metrics' route label: a template, never the room or file a client chose. */
  routeOf(path: string): string {
    return path.startsWith(DEMO_ASSETS_PREFIX) ? `${DEMO_ASSETS_PREFIX}{file}` : `${DEMO_PAGE_PREFIX}{room}`
  }

  serve(req: IncomingMessage, res: ServerResponse, path: string): void {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      sendError(res, 'method_not_allowed', `${req.method} is not allowed on ${path}`)
      return
    }
    if (path.startsWith(DEMO_ASSETS_PREFIX)) this.serveAsset(req, res, path.slice(DEMO_ASSETS_PREFIX.length))
    else this.servePage(req, res, path.slice(DEMO_PAGE_PREFIX.length - 1))
  }

  private servePage(req: IncomingMessage, res: ServerResponse, roomPath: string): void {
    const room = roomFromPath(roomPath)
    if (room === null) {
      sendError(res, 'bad_request', 'the demo needs a valid room name: /demo/<room>')
      return
    }
    const body = demoPageHtml(room, this.hocuspocusPath)
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store', ...SECURITY_HEADERS })
    res.end(req.method === 'HEAD' ? undefined : body)
  }

  private serveAsset(req: IncomingMessage, res: ServerResponse, name: string): void {
    const type = ASSET_TYPES[name]
    const body = type === undefined ? null : this.asset(name)
    if (type === undefined || body === null) {
      sendError(res, 'not_found', type === undefined ? `no demo asset ${name}` : 'the demo editor is not part of this build (npm run build makes dist/demo)')
      return
    }
    // Fixed names, so a new build must reach browsers that have the old one: revalidate each time.
    res.writeHead(200, { 'content-type': type, 'content-length': body.length, 'cache-control': 'no-cache', ...SECURITY_HEADERS })
    res.end(req.method === 'HEAD' ? undefined : body)
  }

  private asset(name: string): Buffer | null {
    if (!this.assets.has(name)) {
      let body: Buffer | null = null
      try {
        body = readFileSync(new URL(name, ASSETS_DIR))
      } catch {
        // not built: answered as 404 above
      }
      this.assets.set(name, body)
    }
    return this.assets.get(name) ?? null
  }
}
