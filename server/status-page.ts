/**
 * `GET /status` (HTML) and `GET /status.json`: what one instance is doing, for a person with a
 * browser. The page is a shell with the first figures inlined; a small inline script polls
 * /status.json and redraws, plots included (inline SVG, no external resources). Room names and
 * sizes appear, document content never does. Access: open only when neither --metrics-token nor
 * --auth-secret is set; otherwise the metrics token or an admin token (whose `rooms` scope
 * limits which rooms it lists).
 */
import { randomBytes } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { allows, roomInScope, type Authorizer, type Grant } from './access.js'
import { sendError, sendJson } from './http-response.js'
import { PROTOCOLS, type Protocol, type TrafficMeter } from './metrics.js'
import { SLO_TARGETS, type SloFigures, type SloWindow } from './slo-window.js'

/** A loaded room as the page sees it: no document. */
export interface StatusRoom {
  readonly name: string
  readonly memberCount: number
  /** Upper bound of the document's encoded size (Room's estimate: no encoding per request). */
  readonly estimatedBytes: number
  readonly updatesCommitted: number
}

/** What the page reads from the server. */
export interface StatusSource {
  instance(): string
  version: string
  commit: string
  state(): string
  connections(): Iterable<{ readonly meter: TrafficMeter | null }>
  rooms(): Iterable<StatusRoom>
  storage(): 'ok' | 'failing'
  redis(): 'none' | 'up' | 'down'
  window: SloWindow
  metricsToken: string | null
  authorizer: Authorizer
}

interface RoomFigure {
  room: string
  connections: number
  bytes: number
  updatesPerSecond: number
}

export interface StatusSnapshot {
  instance: string
  version: string
  commit: string
  uptimeSeconds: number
  state: string
  connections: { total: number } & Record<Protocol, number>
  roomsLoaded: number
  topRooms: { byConnections: RoomFigure[]; byBytes: RoomFigure[]; byUpdateRate: RoomFigure[] }
  slo: Omit<SloFigures, 'series' | 'closesByCode'> & { targets: typeof SLO_TARGETS }
  storage: 'ok' | 'failing'
  redis: 'none' | 'up' | 'down'
  closesByCode: Record<string, number>
  series: SloFigures['series']
}

/** How often open connections and per-room update counts are sampled. */
const SAMPLE_MS = 5_000
const TOP_ROOMS = 10

type Access = { ok: true; rooms: (room: string) => boolean } | { ok: false; status: 401 | 403; message: string }

export class StatusPage {
  private timer: NodeJS.Timeout | null = null
  private readonly startedAt = Date.now()
  /** Per room: its update count at the last sample and the rate since the one before. */
  private readonly rates = new Map<string, { count: number; perSecond: number }>()
  /** At least this long after a sample, a snapshot's rate is the one since that sample (fresher than the stored one). */
  private static readonly FRESH_RATE_MS = 1_000
  private lastSampleAt = performance.now()

  constructor(private readonly source: StatusSource) {}

  start(): void {
    if (this.timer !== null) return
    this.sample()
    this.timer = setInterval(() => this.sample(), SAMPLE_MS)
    this.timer.unref()
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer)
    this.timer = null
  }

  /** Open connections into the SLO window; per-room update rates (a cheap counter per room, read here). */
  sample(): void {
    const now = performance.now()
    const seconds = Math.max(0.001, (now - this.lastSampleAt) / 1000)
    this.lastSampleAt = now
    let connections = 0
    for (const _ of this.source.connections()) connections++
    this.source.window.connections(connections, now)
    const seen = new Set<string>()
    for (const room of this.source.rooms()) {
      seen.add(room.name)
      const before = this.rates.get(room.name)
      // A room first seen now: what it committed since it loaded counts for this interval.
      const perSecond = (room.updatesCommitted - (before?.count ?? 0)) / seconds
      this.rates.set(room.name, { count: room.updatesCommitted, perSecond: Math.max(0, perSecond) })
    }
    for (const name of this.rates.keys()) if (!seen.has(name)) this.rates.delete(name)
  }

  private rateOf(room: StatusRoom): number {
    const sampled = this.rates.get(room.name)
    const elapsed = performance.now() - this.lastSampleAt
    if (sampled !== undefined && elapsed < StatusPage.FRESH_RATE_MS) return sampled.perSecond
    return Math.max(0, (room.updatesCommitted - (sampled?.count ?? 0)) / (Math.max(elapsed, StatusPage.FRESH_RATE_MS) / 1000))
  }

  snapshot(inScope: (room: string) => boolean = () => true): StatusSnapshot {
    const { source } = this
    const byProtocol: Record<Protocol, number> = { 'y-websocket': 0, hocuspocus: 0 }
    let total = 0
    for (const connection of source.connections()) {
      total++
      if (connection.meter !== null) byProtocol[connection.meter.protocol]++
    }
    const rooms: RoomFigure[] = []
    let roomsLoaded = 0
    for (const room of source.rooms()) {
      roomsLoaded++
      if (!inScope(room.name)) continue
      rooms.push({ room: room.name, connections: room.memberCount, bytes: room.estimatedBytes, updatesPerSecond: round(this.rateOf(room)) })
    }
    const top = (key: keyof Omit<RoomFigure, 'room'>): RoomFigure[] =>
      [...rooms].sort((a, b) => b[key] - a[key]).slice(0, TOP_ROOMS).filter((figure) => figure[key] > 0)
    const { series, closesByCode, ...slo } = source.window.figures()
    return {
      instance: source.instance(),
      version: source.version,
      commit: source.commit,
      uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000),
      state: source.state(),
      connections: { total, ...byProtocol },
      roomsLoaded,
      topRooms: { byConnections: top('connections'), byBytes: top('bytes'), byUpdateRate: top('updatesPerSecond') },
      slo: { ...slo, targets: SLO_TARGETS },
      storage: source.storage(),
      redis: source.redis(),
      closesByCode,
      series,
    }
  }

  /** Who may look: the metrics token, or an admin token (its room scope filters the rooms shown). */
  async access(req: IncomingMessage, query: URLSearchParams): Promise<Access> {
    const { metricsToken, authorizer } = this.source
    if (metricsToken === null && authorizer.open) return { ok: true, rooms: () => true }
    const header = req.headers.authorization
    const token = header !== undefined && header.startsWith('Bearer ') ? header.slice(7).trim() : query.get('token')
    if (token === null || token === '') return { ok: false, status: 401, message: 'the status page needs the metrics token or an admin token' }
    if (metricsToken !== null && token === metricsToken) return { ok: true, rooms: () => true }
    if (authorizer.open) return { ok: false, status: 401, message: 'the token is not the metrics token' }
    const decision = await authorizer.authorize(token, null)
    if (!decision.ok) return { ok: false, status: 401, message: decision.reason }
    const grant: Grant = decision.grant
    if (!allows(grant.access, 'admin')) return { ok: false, status: 403, message: 'the status page needs admin access' }
    return { ok: true, rooms: (room) => roomInScope(grant, room) }
  }

  async serve(req: IncomingMessage, res: ServerResponse, json: boolean, queryString: string): Promise<void> {
    const access = await this.access(req, new URLSearchParams(queryString))
    if (!access.ok) {
      sendError(res, access.status === 401 ? 'unauthorized' : 'forbidden', access.message)
      return
    }
    const snapshot = this.snapshot(access.rooms)
    if (json) {
      sendJson(res, 200, snapshot)
      return
    }
    const nonce = randomBytes(16).toString('base64')
    const html = statusHtml(snapshot, nonce)
    res.writeHead(200, {
      'content-type': 'text/html; charset=utf-8',
      'content-length': Buffer.byteLength(html),
      'cache-control': 'no-store',
      'content-security-policy': `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
    })
    res.end(req.method === 'HEAD' ? undefined : html)
  }
}

function round(value: number): number {
  return Math.round(value * 100) / 100
}

/** JSON inside a <script> element: nothing in it can close the element. */
function inlineJson(value: unknown): string {
  return JSON.stringify(value).replace(/</g, '\\u003c').replace(/>/g, '\\u003e').replace(/&/g, '\\u0026')
}

/**
 * The page: a fixed shell, the first snapshot inlined as JSON, and a script that renders it and
 * polls /status.json every 5 s with the same credential (`?token=` of the page's own address).
 * Everything from the server goes in with textContent: room names cannot inject markup.
 */
function statusHtml(snapshot: StatusSnapshot, nonce: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>weft status</title>
<style nonce="${nonce}">
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem auto;max-width:64rem;padding:0 1rem;color:#222}
h1{font-size:1.4rem;margin:0 0 .5rem}h2{font-size:1.05rem;margin:1.2rem 0 .4rem}
table{border-collapse:collapse;margin:.2rem 0}td,th{padding:.15rem .6rem;text-align:left;border-bottom:1px solid #ddd}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#176317}.bad{color:#a3170d;font-weight:600}.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(18rem,1fr));gap:0 1.5rem}
svg{background:#fafafa;border:1px solid #ddd}#updated{color:#666}
</style>
</head>
<body>
<h1>weft status</h1>
<p id="updated"></p>
<div class="grid">
<section><h2>Instance</h2><table id="instance"></table></section>
<section><h2>SLO, last <span id="window"></span></h2><table id="slo"></table></section>
</div>
<div class="grid">
<section><h2>Delivery p99 (ms)</h2><svg id="plot-delivery" width="440" height="140" role="img" aria-label="delivery p99"></svg></section>
<section><h2>Open connections</h2><svg id="plot-connections" width="440" height="140" role="img" aria-label="connections"></svg></section>
</div>
<div class="grid">
<section><h2>Top rooms by connections</h2><table id="top-connections"></table></section>
<section><h2>Top rooms by document size</h2><table id="top-bytes"></table></section>
<section><h2>Top rooms by update rate</h2><table id="top-rate"></table></section>
<section><h2>Recent closes by code</h2><table id="closes"></table></section>
</div>
<script id="initial" type="application/json" nonce="${nonce}">${inlineJson(snapshot)}</script>
<script nonce="${nonce}">
'use strict'
const PROTOCOLS = ${JSON.stringify(PROTOCOLS)}
const SVG = 'http://www.w3.org/2000/svg'
function cell(row, text, cls) { const td = document.createElement('td'); td.textContent = String(text); if (cls) td.className = cls; row.appendChild(td); return td }
function rows(id, list) {
  const table = document.getElementById(id)
  table.replaceChildren()
  for (const [key, value, cls, testid] of list) {
    const row = table.insertRow()
    cell(row, key)
    const td = cell(row, value, 'n' + (cls ? ' ' + cls : ''))
    if (testid) td.dataset.figure = testid
  }
}
function pct(value) { return value === null ? 'n/a' : (value * 100).toFixed(2) + ' %' }
function ms(value) { return value === null ? 'n/a' : (value * 1000).toFixed(1) + ' ms' }
function bytes(value) { return value >= 1048576 ? (value / 1048576).toFixed(1) + ' MiB' : value >= 1024 ? (value / 1024).toFixed(1) + ' KiB' : value + ' B' }
function verdict(ok) { return ok === null ? '' : ok ? 'ok' : 'bad' }
function roomTable(id, list, figure, format) {
  const table = document.getElementById(id)
  table.replaceChildren()
  if (list.length === 0) { cell(table.insertRow(), 'none'); return }
  for (const room of list) { const row = table.insertRow(); cell(row, room.room); cell(row, format(room[figure]), 'n') }
}
function plot(id, points, scale) {
  const svg = document.getElementById(id)
  svg.replaceChildren()
  const width = 440, height = 140, pad = 24
  const values = points.filter((p) => p.value !== null)
  const max = Math.max(1e-9, ...values.map((p) => p.value))
  const label = document.createElementNS(SVG, 'text')
  label.setAttribute('x', '4'); label.setAttribute('y', '14'); label.setAttribute('font-size', '11')
  label.textContent = 'max ' + (max * scale).toFixed(scale === 1 ? 0 : 1)
  svg.appendChild(label)
  if (values.length === 0) return
  // x: the last 5 minutes, now at the right edge; a dot per 5-second slot, joined by a line
  const xy = values.map((p) => [pad + ((300 - p.secondsAgo) / 300) * (width - 2 * pad), height - pad - (p.value / max) * (height - 2 * pad)])
  const line = document.createElementNS(SVG, 'path')
  line.setAttribute('d', xy.map(([x, y], i) => (i === 0 ? 'M' : 'L') + x.toFixed(1) + ' ' + y.toFixed(1)).join(' '))
  line.setAttribute('fill', 'none'); line.setAttribute('stroke', '#1f5fbf'); line.setAttribute('stroke-width', '2')
  svg.appendChild(line)
  for (const [x, y] of xy) {
    const dot = document.createElementNS(SVG, 'circle')
    dot.setAttribute('cx', x.toFixed(1)); dot.setAttribute('cy', y.toFixed(1)); dot.setAttribute('r', '2.5'); dot.setAttribute('fill', '#1f5fbf')
    svg.appendChild(dot)
  }
  const axis = document.createElementNS(SVG, 'text')
  axis.setAttribute('x', String(pad)); axis.setAttribute('y', String(height - 6)); axis.setAttribute('font-size', '11')
  axis.textContent = '5 min ago … now'
  svg.appendChild(axis)
  svg.dataset.points = String(values.length)
}
function render(s) {
  document.getElementById('updated').textContent = 'updated ' + new Date().toLocaleTimeString()
  rows('instance', [
    ['instance', s.instance, '', 'instance'], ['version', s.version + ' (' + s.commit.slice(0, 12) + ')', '', 'version'],
    ['uptime', s.uptimeSeconds + ' s', '', 'uptime'], ['state', s.state, s.state === 'serving' ? 'ok' : 'bad', 'state'],
    ['connections', s.connections.total, '', 'connections'],
    ...PROTOCOLS.map((p) => ['  ' + p, s.connections[p], '', 'connections-' + p]),
    ['rooms loaded', s.roomsLoaded, '', 'rooms'],
    ['storage', s.storage, s.storage === 'ok' ? 'ok' : 'bad', 'storage'], ['redis', s.redis, s.redis === 'down' ? 'bad' : 'ok', 'redis'],
  ])
  const slo = s.slo, t = slo.targets
  document.getElementById('window').textContent = slo.windowSeconds + ' s'
  rows('slo', [
    ['p99 delivery (target < ' + ms(t.deliveryP99Seconds) + ')', ms(slo.deliveryP99Seconds), verdict(slo.deliveryP99Seconds === null ? null : slo.deliveryP99Seconds <= t.deliveryP99Seconds), 'delivery-p99'],
    ['p99 persist', ms(slo.persistP99Seconds), '', 'persist-p99'],
    ['connection success (target > ' + pct(t.connectionSuccess) + ')', pct(slo.connectionSuccess), verdict(slo.connectionSuccess === null ? null : slo.connectionSuccess >= t.connectionSuccess), 'connection-success'],
    ['disconnects per hour (target < ' + pct(t.disconnectsPerHour) + ')', pct(slo.disconnectsPerHour), verdict(slo.disconnectsPerHour === null ? null : slo.disconnectsPerHour < t.disconnectsPerHour), 'disconnects'],
    ['upgrades', slo.upgrades, '', 'upgrades'], ['delivery samples', slo.deliverySamples, '', 'delivery-samples'],
  ])
  roomTable('top-connections', s.topRooms.byConnections, 'connections', String)
  roomTable('top-bytes', s.topRooms.byBytes, 'bytes', bytes)
  roomTable('top-rate', s.topRooms.byUpdateRate, 'updatesPerSecond', (v) => v.toFixed(2) + ' /s')
  const closes = Object.entries(s.closesByCode)
  rows('closes', closes.length === 0 ? [['none', '']] : closes.map(([code, count]) => [code, count, '', 'close-' + code]))
  plot('plot-delivery', s.series.map((p) => ({ secondsAgo: p.secondsAgo, value: p.deliveryP99Seconds })), 1000)
  plot('plot-connections', s.series.map((p) => ({ secondsAgo: p.secondsAgo, value: p.connections })), 1)
  document.body.dataset.rendered = String(Number(document.body.dataset.rendered || 0) + 1)
}
render(JSON.parse(document.getElementById('initial').textContent))
const token = new URLSearchParams(location.search).get('token')
async function poll() {
  try {
    const answer = await fetch('status.json' + (token === null ? '' : '?token=' + encodeURIComponent(token)), { cache: 'no-store' })
    if (answer.ok) render(await answer.json())
    else document.getElementById('updated').textContent = 'refresh failed: HTTP ' + answer.status
  } catch (err) {
    document.getElementById('updated').textContent = 'refresh failed: ' + err.message
  }
}
setInterval(poll, 5000)
</script>
</body>
</html>
`
}
