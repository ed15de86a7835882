/**
 * The Dockerfile and docker-compose.yml read as text (no Docker engine on the test machines),
 * checked against what the code really uses: the bin path, DEFAULTS, and the SETTINGS table.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { DEFAULTS, SETTINGS } from '../server/config.js'

/** The repository root: the nearest folder above this file with a package.json (tests run from dist/test). */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir)
    if (parent === dir) throw new Error('no package.json above the test file')
    dir = parent
  }
  return dir
}

const root = repoRoot()
const read = (name: string): string => readFileSync(join(root, name), 'utf8')
const envNames = new Set(SETTINGS.map((s) => s.env))

interface Instruction {
  keyword: string
  args: string
  stage: number
}

/** Dockerfile instructions with continuation lines joined; stage counts FROM lines from 0. */
function parseDockerfile(text: string): Instruction[] {
  const logical: string[] = []
  let pending = ''
  for (const raw of text.split('\n')) {
    const line = raw.trim()
    if (pending === '' && (line === '' || line.startsWith('#'))) continue
    if (line.startsWith('#')) continue
    if (line.endsWith('\\')) {
      pending += line.slice(0, -1) + ' '
      continue
    }
    logical.push(pending + line)
    pending = ''
  }
  if (pending !== '') logical.push(pending)
  let stage = -1
  return logical.map((line) => {
    const match = /^(\S+)\s*(.*)$/.exec(line)
    assert.ok(match, `unparsable Dockerfile line: ${line}`)
    const keyword = (match[1] as string).toUpperCase()
    if (keyword === 'FROM') stage++
    return { keyword, args: (match[2] as string).trim(), stage }
  })
}

/** `KEY=value KEY2=value2` (or the legacy `KEY value`) of an ENV instruction. */
function parseEnv(args: string): Map<string, string> {
  const vars = new Map<string, string>()
  if (!args.includes('=')) {
    const [key, ...rest] = args.split(/\s+/)
    vars.set(key as string, rest.join(' '))
    return vars
  }
  for (const pair of args.match(/[A-Za-z_][A-Za-z0-9_]*=("[^"]*"|\S*)/g) ?? []) {
    const eq = pair.indexOf('=')
    vars.set(pair.slice(0, eq), pair.slice(eq + 1).replace(/^"(.*)"$/, '$1'))
  }
  return vars
}

const dockerfile = parseDockerfile(read('Dockerfile'))
const lastStage = Math.max(...dockerfile.map((i) => i.stage))
const runtime = dockerfile.filter((i) => i.stage === lastStage)
const runtimeEnv = new Map<string, string>()
for (const i of runtime.filter((i) => i.keyword === 'ENV')) {
  for (const [k, v] of parseEnv(i.args)) runtimeEnv.set(k, v)
}

function only(keyword: string): Instruction {
  const found = runtime.filter((i) => i.keyword === keyword)
  assert.equal(found.length, 1, `the runtime stage has one ${keyword}, found ${found.length}`)
  return found[0] as Instruction
}

test('Dockerfile is multi-stage', () => {
  assert.ok(lastStage >= 1, 'at least two FROM stages')
  for (const from of dockerfile.filter((i) => i.keyword === 'FROM')) {
    assert.match(from.args, /^node:20-bookworm-slim\b/, `FROM ${from.args}`)
  }
})

test('Dockerfile CMD runs `serve` of the file package.json names as the weft binary', () => {
  const pkg = JSON.parse(read('package.json')) as { bin: Record<string, string> }
  const bin = (pkg.bin.weft ?? '').replace(/^\.\//, '')
  assert.equal(bin, 'dist/server/cli.js')
  const cmd = JSON.parse(only('CMD').args) as string[]
  assert.deepEqual(cmd, ['node', bin, 'serve'], 'CMD in exec form, so node gets SIGTERM directly')
  assert.equal(only('WORKDIR').args, '/app')
  assert.equal(only('STOPSIGNAL').args, 'SIGTERM')
})

test('Dockerfile runtime stage runs as a non-root user', () => {
  const user = only('USER').args
  assert.notEqual(user, '', 'USER is set')
  assert.ok(!/^(root|0)(:|$)/.test(user), `USER ${user} is not root`)
  const userIndex = runtime.findIndex((i) => i.keyword === 'USER')
  const cmdIndex = runtime.findIndex((i) => i.keyword === 'CMD')
  assert.ok(userIndex < cmdIndex, 'USER comes before CMD')
})

test('Dockerfile port, data directory and environment match DEFAULTS and SETTINGS', () => {
  assert.equal(Number(only('EXPOSE').args), DEFAULTS.port)
  assert.equal(Number(runtimeEnv.get('WEFT_PORT')), DEFAULTS.port)
  assert.equal(runtimeEnv.get('WEFT_HOST'), '0.0.0.0')
  const data = runtimeEnv.get('WEFT_DATA')
  assert.ok(data !== undefined && data.startsWith('/'), 'WEFT_DATA is an absolute path')
  assert.equal(only('VOLUME').args.replace(/^\["?|"?\]$/g, ''), data, 'VOLUME is the WEFT_DATA directory')
  for (const name of runtimeEnv.keys()) {
    if (name.startsWith('WEFT_')) assert.ok(envNames.has(name), `${name} is a setting in server/config.ts`)
  }
})

test('Dockerfile HEALTHCHECK asks /health/ready with node on the served port', () => {
  const check = only('HEALTHCHECK').args
  assert.match(check, /\bCMD\b/)
  assert.match(check, /\/health\/ready/)
  assert.match(check, /"node"|\bnode\b/)
  assert.ok(check.includes(String(DEFAULTS.port)), 'falls back to the default port')
  assert.doesNotMatch(check, /\bcurl\b|\bwget\b/, 'the slim image has neither curl nor wget')
})

test('.dockerignore keeps local build output, dependencies, data and .git out of the context', () => {
  const ignored = new Set(read('.dockerignore').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#')))
  for (const name of ['node_modules', 'dist', 'data', '.git']) assert.ok(ignored.has(name), `${name} is ignored`)
})

/**
 * Just enough YAML for docker-compose.yml: the `weft` service's keys, its list and map
 * blocks, and the top-level keys. Indentation is two spaces per level.
 */
interface ComposeService {
  scalars: Map<string, string>
  lists: Map<string, string[]>
  maps: Map<string, Map<string, string>>
}

function unquote(value: string): string {
  return value.trim().replace(/^"(.*)"$/, '$1').replace(/^'(.*)'$/, '$1')
}

function parseCompose(text: string): { topLevel: Map<string, string[]>; services: Map<string, ComposeService> } {
  const topLevel = new Map<string, string[]>()
  const services = new Map<string, ComposeService>()
  let top = ''
  let service: ComposeService | undefined
  let block = ''
  for (const raw of text.split('\n')) {
    if (raw.trim() === '' || raw.trim().startsWith('#')) continue
    const indent = raw.length - raw.trimStart().length
    const line = raw.trim()
    if (indent === 0) {
      top = line.replace(/:.*$/, '')
      topLevel.set(top, [])
      service = undefined
      continue
    }
    if (indent === 2) {
      topLevel.get(top)?.push(line.replace(/:.*$/, ''))
      if (top === 'services') {
        service = { scalars: new Map(), lists: new Map(), maps: new Map() }
        services.set(line.replace(/:.*$/, ''), service)
      }
      continue
    }
    if (service === undefined) continue
    if (indent === 4) {
      const match = /^([A-Za-z_]+):\s*(.*)$/.exec(line)
      assert.ok(match, `unparsable compose line: ${raw}`)
      block = match[1] as string
      if ((match[2] as string) !== '') service.scalars.set(block, unquote(match[2] as string))
      continue
    }
    if (indent === 6) {
      if (line.startsWith('- ')) {
        const list = service.lists.get(block) ?? []
        list.push(unquote(line.slice(2)))
        service.lists.set(block, list)
      } else {
        const match = /^([A-Za-z_][A-Za-z0-9_]*):\s*(.*)$/.exec(line)
        if (match === null) continue
        const map = service.maps.get(block) ?? new Map<string, string>()
        map.set(match[1] as string, unquote(match[2] as string))
        service.maps.set(block, map)
      }
    }
  }
  return { topLevel, services }
}

/** Compose durations: `30s`, `1m30s`, `90`… in seconds. */
function durationSeconds(value: string): number {
  if (/^\d+$/.test(value)) return Number(value)
  const units: Record<string, number> = { h: 3600, m: 60, s: 1, ms: 0.001 }
  let total = 0
  let rest = value
  for (const match of value.matchAll(/(\d+(?:\.\d+)?)(ms|h|m|s)/g)) {
    total += Number(match[1]) * (units[match[2] as string] as number)
    rest = rest.replace(match[0], '')
  }
  assert.equal(rest, '', `"${value}" is a duration`)
  return total
}

const compose = parseCompose(read('docker-compose.yml'))
const weft = compose.services.get('weft')

test('compose has a weft service built from this folder', () => {
  assert.ok(weft, 'services.weft exists')
  const context = weft.maps.get('build')?.get('context') ?? weft.scalars.get('build')
  assert.equal(context, '.')
  assert.equal(weft.scalars.get('restart'), 'unless-stopped')
})

test('compose environment uses only real WEFT_* settings', () => {
  assert.ok(weft)
  const env = new Map(weft.maps.get('environment'))
  for (const item of weft.lists.get('environment') ?? []) {
    const eq = item.indexOf('=')
    env.set(eq === -1 ? item : item.slice(0, eq), eq === -1 ? '' : item.slice(eq + 1))
  }
  assert.ok(env.size > 0, 'environment is set')
  for (const name of env.keys()) {
    assert.ok(name.startsWith('WEFT_') && envNames.has(name), `${name} is a setting in server/config.ts`)
  }
})

function composeEnv(name: string): string | undefined {
  return weft?.maps.get('environment')?.get(name)
}

test('compose publishes the served port', () => {
  assert.ok(weft)
  const port = Number(composeEnv('WEFT_PORT') ?? DEFAULTS.port)
  assert.equal(port, DEFAULTS.port)
  const mappings = weft.lists.get('ports') ?? []
  assert.ok(
    mappings.some((m) => m.split(':').at(-1)?.replace(/\/tcp$/, '') === String(port)),
    `one of ${JSON.stringify(mappings)} maps container port ${port}`,
  )
})

test('compose mounts a named volume at the WEFT_DATA path', () => {
  assert.ok(weft)
  const data = composeEnv('WEFT_DATA') ?? runtimeEnv.get('WEFT_DATA')
  assert.ok(data !== undefined && data.startsWith('/'), 'WEFT_DATA is an absolute path')
  const mount = (weft.lists.get('volumes') ?? []).map((v) => v.split(':')).find((parts) => parts[1] === data)
  assert.ok(mount, `a volume is mounted at ${data}`)
  const name = mount[0] as string
  assert.ok(!name.startsWith('.') && !name.startsWith('/'), `${name} is a named volume, not a bind mount`)
  assert.ok(compose.topLevel.get('volumes')?.includes(name), `${name} is declared under top-level volumes`)
})

test('compose healthcheck asks /health/ready', () => {
  assert.ok(weft)
  assert.match(weft.maps.get('healthcheck')?.get('test') ?? '', /\/health\/ready/)
})

test('compose stop_grace_period outlasts the drain window', () => {
  assert.ok(weft)
  const grace = weft.scalars.get('stop_grace_period')
  assert.ok(grace !== undefined, 'stop_grace_period is set (the default 10 s cuts the drain short)')
  const drain = Number(composeEnv('WEFT_DRAIN_SECONDS') ?? DEFAULTS.drainSeconds)
  assert.ok(durationSeconds(grace) > drain, `stop_grace_period ${grace} > drain ${drain} s`)
})
