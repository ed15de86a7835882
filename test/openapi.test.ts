/**
 * docs/openapi.yaml against the server: every route the HTTP API registers is in the spec with
 * its scope, and every operation of the spec is a route the server answers (the three non-API
 * endpoints included). The YAML is read line by line for the layout the spec keeps (paths at two
 * spaces of indent, methods at four, which this test also enforces), and parsed whole (`yaml`)
 * for what a client generator would see.
 */
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { request } from 'node:http'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { after, before, describe, it } from 'node:test'
import { HttpError } from '../server/codes.js'
import type { HttpApi } from '../server/http-api.js'
import { startServer, type InProcessServer } from './harness/server.js'
import { withDeadline } from './harness/wait.js'
import { parseDocument } from 'yaml'

const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace']
const NON_API = ['GET /health/live', 'GET /health/ready', 'GET /metrics', 'GET /status', 'GET /status.json']

function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  while (!existsSync(join(dir, 'package.json'))) dir = dirname(dir)
  return dir
}

interface Operation {
  method: string
  path: string
  scope: string | null
  statuses: string[]
}

/** The operations under `paths:`: `  /path:` then `    method:`, with the `x-weft-scope` and response statuses of each. */
function operationsOf(yaml: string): Operation[] {
  const operations: Operation[] = []
  let inPaths = false
  let path: string | null = null
  let current: Operation | null = null
  let inResponses = false
  for (const line of yaml.split('\n')) {
    if (/^\S/.test(line)) {
      inPaths = line.trimEnd() === 'paths:'
      path = null
      current = null
      continue
    }
    if (!inPaths || line.trim() === '' || line.trim().startsWith('#')) continue
    const pathKey = /^ {2}(\/\S*):\s*$/.exec(line)
    if (pathKey !== null) {
      path = (pathKey[1] as string).replace(/^'(.*)'$/, '$1')
      current = null
      continue
    }
    const methodKey = /^ {4}([a-z]+):\s*$/.exec(line)
    if (methodKey !== null && path !== null) {
      const method = methodKey[1] as string
      current = null
      inResponses = false
      if (METHODS.includes(method)) {
        current = { method: method.toUpperCase(), path, scope: null, statuses: [] }
        operations.push(current)
      }
      continue
    }
    if (current === null) continue
    const scope = /^ {6}x-weft-scope:\s*(\S+)\s*$/.exec(line)
    if (scope !== null) current.scope = scope[1] as string
    if (/^ {6}\S/.test(line)) inResponses = /^ {6}responses:\s*$/.test(line)
    const status = /^ {8}'(\d{3})':/.exec(line)
    if (inResponses && status !== null) current.statuses.push(status[1] as string)
  }
  return operations
}

function httpStatus(port: number, method: string, path: string): Promise<number> {
  return withDeadline(
    new Promise<number>((resolve, reject) => {
      // Every POST needs a content type a cross-site form cannot send (the body routes check theirs before reading).
      const json = method === 'POST' && (path === '/api/tickets' || path === '/api/connections/revoke' || path.startsWith('/api/webhooks/'))
      const headers = json ? { 'content-type': 'application/json' } : {}
      const req = request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode ?? 0))
      })
      req.on('error', reject)
      // A revocation needs a subject; nobody has one in open mode, so it closes nothing.
      req.end(path === '/api/connections/revoke' ? '{"subject":"openapi-probe"}' : undefined)
    }),
    `${method} ${path}`,
  )
}

describe('docs/openapi.yaml', () => {
  let yaml: string
  let weft: InProcessServer
  let api: HttpApi

  before(async () => {
    yaml = await readFile(join(repoRoot(), 'docs', 'openapi.yaml'), 'utf8')
    weft = await startServer({ data: 'memory' })
    // The route table is the server's private HttpApi; the test reads it rather than a copy.
    const built = (weft.server as unknown as { api: HttpApi | null }).api
    assert.ok(built !== null, 'the started server has an HttpApi')
    api = built
  })

  after(async () => {
    await weft?.stop()
  })

  it('is OpenAPI 3.1 with a bearer security scheme', () => {
    assert.match(yaml, /^openapi: 3\.1\.\d+$/m)
    assert.match(yaml, /^ {4}bearer:\n {6}type: http\n {6}scheme: bearer$/m)
    assert.match(yaml, /^security:\n {2}- bearer: \[\]$/m)
  })

  it('is valid YAML, and every response of every operation is a response object or a reference', () => {
    const document = parseDocument(yaml, { uniqueKeys: true, strict: true })
    assert.deepEqual(document.errors.map((error) => error.message), [])
    const spec = document.toJS() as { paths: Record<string, Record<string, { responses?: Record<string, unknown> }>> }
    for (const [path, item] of Object.entries(spec.paths)) {
      for (const method of METHODS) {
        const responses = item[method]?.responses
        if (responses === undefined) continue
        for (const [status, response] of Object.entries(responses)) {
          assert.match(status, /^[1-5]\d\d$/, `${method} ${path}: ${status} is not a status`)
          const shape = response as { description?: unknown; $ref?: unknown } | null
          assert.ok(shape !== null && (typeof shape.description === 'string' || typeof shape.$ref === 'string'), `${method} ${path} ${status}: ${JSON.stringify(response)}`)
        }
      }
    }
  })

  it('lists every route the server registers, and nothing else besides /health/live, /health/ready, /metrics and /status(.json)', () => {
    const spec = operationsOf(yaml).map((op) => `${op.method} ${op.path}`).sort()
    const server = [...api.routes.map((route) => `${route.method} ${route.path}`), ...NON_API].sort()
    assert.ok(api.routes.length >= 12, `the server registers ${api.routes.length} routes`)
    assert.deepEqual(spec, server)
    assert.equal(new Set(spec).size, spec.length, 'an operation is listed twice')
  })

  it('gives every route the scope the server checks (x-weft-scope)', () => {
    const scopes = new Map(operationsOf(yaml).map((op) => [`${op.method} ${op.path}`, op.scope]))
    for (const route of api.routes) assert.equal(scopes.get(`${route.method} ${route.path}`), route.scope, `${route.method} ${route.path}`)
    for (const endpoint of NON_API) assert.equal(scopes.get(endpoint), 'none', endpoint)
  })

  it('documents the error statuses every API route can answer, with the {error, message} schema and every error code', () => {
    for (const op of operationsOf(yaml)) {
      if (!op.path.startsWith('/api/')) continue
      assert.ok(op.statuses.some((s) => s.startsWith('2')), `${op.method} ${op.path} has a success response`)
      assert.ok(op.statuses.includes('401'), `${op.method} ${op.path} documents 401`)
      assert.ok(op.statuses.includes('503'), `${op.method} ${op.path} documents 503`)
      // --http-requests-per-second-per-ip applies to every route of the API.
      assert.ok(op.statuses.includes('429'), `${op.method} ${op.path} documents 429`)
      if (op.path.includes('{room}')) {
        for (const status of ['400', '403']) assert.ok(op.statuses.includes(status), `${op.method} ${op.path} documents ${status}`)
      }
      if (op.method === 'POST' && op.path !== '/api/tickets') assert.ok(op.statuses.includes('413'), `${op.method} ${op.path} documents 413`)
    }
    assert.match(yaml, /Error:\n {6}type: object\n {6}required: \[error, message\]/)
    const codes = /error:\n {10}type: string\n {10}enum: \[([^\]]+)\]/.exec(yaml)
    assert.ok(codes !== null, 'the Error schema enumerates the codes')
    assert.deepEqual((codes[1] as string).split(',').map((c) => c.trim()).sort(), Object.keys(HttpError).sort())
  })

  it('every operation of the spec is answered by the server (not 404 no-route, not 405)', async () => {
    for (const op of operationsOf(yaml)) {
      const path = op.path.replace('{room}', 'openapi-probe').replace('{id}', '0000000000000000')
      const status = await httpStatus(weft.port, op.method, path)
      assert.notEqual(status, 405, `${op.method} ${path}`)
      // 404 is fine for reads of a room that does not exist; the route itself must exist, which
      // the mirror request with an unknown method proves: it answers 405, not 404.
      const other = op.method === 'PUT' ? 'PATCH' : 'PUT'
      assert.equal(await httpStatus(weft.port, other, path), 405, `${other} ${path} should be 405: the path is a route`)
      if (!path.includes('openapi-probe')) assert.ok(status < 400 || status === 401, `${op.method} ${path} answered ${status}`)
    }
  })
})
