/**
 * `GET /`: a small page that shows a person with a browser that this is weft and that it runs,
 * and `GET /openapi.yaml`, the API description it links to. Nothing on either depends on the
 * documents: no room names, no contents, no counts.
 */
import { readFile } from 'node:fs/promises'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { buildInfo } from './build-info.js'
import { sendError } from './http-response.js'

const HTML_ESCAPES: Readonly<Record<string, string>> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c] as string)
}

/** The host a client used, as far as it can be shown: the Host header when it looks like one. */
function shownHost(req: IncomingMessage): string {
  const host = req.headers.host
  return host !== undefined && /^[A-Za-z0-9.:[\]-]{1,255}$/.test(host) ? host : 'HOST:PORT'
}

/** The page itself; its only inputs are the build, the settings and the request's Host header. */
export function homePage(req: IncomingMessage, hocuspocusPath: string): string {
  const { version, commit } = buildInfo()
  const secure = (req.socket as { encrypted?: boolean }).encrypted === true
  const base = `${secure ? 'wss' : 'ws'}://${shownHost(req)}`
  const hocuspocus = `${base}${hocuspocusPath}`
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>weft</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;color:#222}code{background:#f3f3f3;padding:0 .2em}</style>
</head>
<body>
<h1>weft</h1>
<p>A real-time backend for collaborative editors built on Yjs: stock y-websocket and Hocuspocus clients edit the same rooms, and every room's document is stored.</p>
<p>Version <code>${escapeHtml(version)}</code> (commit <code>${escapeHtml(commit.slice(0, 12))}</code>).</p>
<h2>Connect</h2>
<ul>
<li>y-websocket: <code>${escapeHtml(base)}/&lt;room&gt;</code></li>
<li>Hocuspocus provider: <code>${escapeHtml(hocuspocus)}</code></li>
</ul>
<h2>Links</h2>
<ul>
<li><a href="/health/ready">/health/ready</a>: 200 while this instance serves</li>
<li><a href="/metrics">/metrics</a>: Prometheus metrics</li>
<li><a href="/openapi.yaml">/openapi.yaml</a>: the HTTP API description (OpenAPI 3.1)</li>
</ul>
</body>
</html>
`
}

const SECURITY_HEADERS = {
  // The page needs no script and no resource from elsewhere; nothing can be injected to run.
  'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'",
  'x-content-type-options': 'nosniff',
  'cache-control': 'no-store',
}

export function serveHomePage(req: IncomingMessage, res: ServerResponse, hocuspocusPath: string): void {
  const body = homePage(req, hocuspocusPath)
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(body), ...SECURITY_HEADERS })
  res.end(body)
}

/** docs/openapi.yaml ships in the package (package.json `files`); from dist/server it is two folders up. */
const API_DESCRIPTION = new URL('../../docs/openapi.yaml', import.meta.url)

export function serveApiDescription(res: ServerResponse): void {
  readFile(API_DESCRIPTION).then(
    (body) => {
      res.writeHead(200, { 'content-type': 'application/yaml; charset=utf-8', 'content-length': body.length, ...SECURITY_HEADERS })
      res.end(body)
    },
    () => sendError(res, 'not_found', 'the API description is not part of this installation'),
  )
}
