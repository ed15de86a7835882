import { createServer, type Server } from 'node:http'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'
import { once } from './wait.js'

/** The worktree root: compiled harness files live in dist/test/harness. */
const ROOT = fileURLToPath(new URL('../../../', import.meta.url))

/**
 * What the page gets on `window.weft`: weft's client from the compiled dist/client (what the
 * package ships), one yjs shared by everything, y-indexeddb, and the stock providers for the
 * mixed-room test. esbuild resolves the packages from the worktree's node_modules.
 */
const ENTRY = `
import * as Y from 'yjs'
import { WeftProvider } from './dist/client/index.js'
import { WebsocketProvider } from 'y-websocket'
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'
import { IndexeddbPersistence } from 'y-indexeddb'
window.weft = { Y, WeftProvider, WebsocketProvider, HocuspocusProvider, HocuspocusProviderWebsocket, IndexeddbPersistence }
`

const PAGE = '<!doctype html><meta charset="utf-8"><title>weft client</title><pre id="text"></pre><script src="/bundle.js"></script>'

export interface ClientPageServer {
  /** http://127.0.0.1:PORT/ : a real origin, which IndexedDB needs (about:blank has none). */
  url: string
  /** Bytes of the bundle, for the report. */
  bundleBytes: number
  stop(): Promise<void>
}

/**
 * Bundles the client once (into a temp dir, as a browser would load it) and serves it with a
 * tiny HTML page from a loopback HTTP server on port 0.
 */
export async function serveClientPage(): Promise<ClientPageServer> {
  const dir = await mkdtemp(join(tmpdir(), 'weft-bundle-'))
  const outfile = join(dir, 'bundle.js')
  await build({
    stdin: { contents: ENTRY, resolveDir: ROOT, sourcefile: 'weft-browser-entry.js', loader: 'js' },
    bundle: true,
    format: 'iife',
    platform: 'browser',
    target: 'es2022',
    outfile,
    logLevel: 'silent',
  })
  await writeFile(join(dir, 'index.html'), PAGE)
  const bundle = await readFile(outfile)
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    if (path === '/bundle.js') {
      res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8', 'cache-control': 'no-store' })
      res.end(bundle)
    } else if (path === '/' || path === '/index.html') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' })
      res.end(PAGE)
    } else {
      res.writeHead(404).end()
    }
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as { port: number }
  return {
    url: `http://127.0.0.1:${port}/`,
    bundleBytes: bundle.length,
    async stop() {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
      await rm(dir, { recursive: true, force: true })
    },
  }
}
