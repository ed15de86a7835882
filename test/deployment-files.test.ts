/**
 * The Dockerfile and docker-compose.yml read as text (no Docker engine on the test machines),
 * checked against what the code really uses: the bin path, DEFAULTS, and the SETTINGS table.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { DEFAULTS, SETTINGS } from '../server/config.js'
import { parseDockerfile, parseEnv, type Instruction } from './harness/dockerfile.js'
import { readRepoFile } from './harness/repo.js'

const read = readRepoFile
const envNames = new Set(SETTINGS.map((s) => s.env))

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
    assert.match(from.args, /^node:24-bookworm-slim\b/, `FROM ${from.args}`)
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

test('Dockerfile HEALTHCHECK runs the image\'s node script, which asks /health/ready on the served port', () => {
  const check = only('HEALTHCHECK').args
  assert.match(check, /\bCMD\b/)
  assert.doesNotMatch(check, /\bcurl\b|\bwget\b/, 'the slim image has neither curl nor wget')
  const cmd = JSON.parse(check.slice(check.indexOf('CMD') + 3).trim()) as string[]
  assert.equal(cmd[0], 'node')
  // The script is copied into WORKDIR from the repository; read the source it comes from.
  const copy = runtime.find((i) => i.keyword === 'COPY' && i.args.split(/\s+/).at(-1)?.replace(/^\.\//, '') === cmd[1])
  assert.ok(copy, `the runtime stage copies ${cmd[1]} in`)
  const script = read(copy.args.split(/\s+/)[0] as string)
  assert.match(script, /\/health\/ready/)
  assert.ok(script.includes(`process.env.WEFT_PORT || ${DEFAULTS.port}`), 'falls back to the default port')
  assert.match(script, /WEFT_TLS_CERT/, 'https when weft serves TLS')
})

test('.dockerignore keeps local build output, dependencies, data and .git out of the context', () => {
  const ignored = new Set(read('.dockerignore').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#')))
  for (const name of ['node_modules', 'dist', 'data', '.git']) assert.ok(ignored.has(name), `${name} is ignored`)
})

/**
 * Just enough YAML for docker-compose.yml: each service's keys, their list and map
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
/** The weft instances of the cluster: services `weft-1`, `weft-2`, ... */
const instances = [...compose.services].filter(([name]) => /^weft-\d+$/.test(name)).sort(([a], [b]) => a.localeCompare(b))
const nginx = compose.services.get('nginx')

function composeEnv(service: ComposeService, name: string): string | undefined {
  return service.maps.get('environment')?.get(name)
}

test('compose runs a cluster: redis, three weft instances, nginx in front', () => {
  assert.deepEqual(instances.map(([name]) => name), ['weft-1', 'weft-2', 'weft-3'])
  assert.ok(compose.services.has('redis'), 'services.redis exists')
  assert.ok(nginx, 'services.nginx exists')
})

test('compose builds every weft instance from this folder', () => {
  for (const [name, weft] of instances) {
    const context = weft.maps.get('build')?.get('context') ?? weft.scalars.get('build')
    assert.equal(context, '.', `${name} builds from .`)
    assert.equal(weft.scalars.get('restart'), 'unless-stopped', `${name} restarts unless stopped`)
  }
})

test('compose environment uses only real WEFT_* settings', () => {
  for (const [name, weft] of instances) {
    const env = new Map(weft.maps.get('environment'))
    for (const item of weft.lists.get('environment') ?? []) {
      const eq = item.indexOf('=')
      env.set(eq === -1 ? item : item.slice(0, eq), eq === -1 ? '' : item.slice(eq + 1))
    }
    assert.ok(env.size > 0, `${name}: environment is set`)
    for (const key of env.keys()) {
      assert.ok(key.startsWith('WEFT_') && envNames.has(key), `${name}: ${key} is a setting in server/config.ts`)
    }
  }
})

test('compose joins every instance to the redis service under its own instance id, trusting only nginx', () => {
  const ids = new Set<string>()
  // The one ipv4_address in the file (an indent the small parser above does not read).
  const nginxAddress = /^ {8}ipv4_address:\s*(\S+)$/m.exec(read('docker-compose.yml'))?.[1]
  assert.ok(nginxAddress, 'nginx has a fixed address on the compose network')
  for (const [name, weft] of instances) {
    const url = composeEnv(weft, 'WEFT_REDIS_URL')
    assert.ok(url !== undefined, `${name} sets WEFT_REDIS_URL`)
    assert.equal(new URL(url).hostname, 'redis', `${name} reaches the redis service`)
    assert.equal(composeEnv(weft, 'WEFT_INSTANCE_ID'), name, `${name}'s instance id is its service name`)
    ids.add(composeEnv(weft, 'WEFT_INSTANCE_ID') as string)
    assert.equal(composeEnv(weft, 'WEFT_TRUSTED_PROXIES'), nginxAddress, `${name} trusts X-Forwarded-For from nginx only`)
    assert.equal(weft.lists.get('ports'), undefined, `${name} is reached through nginx, not published itself`)
  }
  assert.equal(ids.size, instances.length, 'instance ids are distinct')
})

test('compose publishes the served port on nginx, which proxies to every instance on its port', () => {
  assert.ok(nginx)
  const mappings = nginx.lists.get('ports') ?? []
  const listen = composeEnv(nginx, 'LISTEN_PORT')
  assert.equal(Number(listen), DEFAULTS.port)
  assert.ok(
    mappings.some((m) => m.split(':').at(-1)?.replace(/\/tcp$/, '') === listen && m.split(':').at(-2) === String(DEFAULTS.port)),
    `one of ${JSON.stringify(mappings)} maps ${DEFAULTS.port} to nginx's LISTEN_PORT ${listen}`,
  )
  const upstreams = composeEnv(nginx, 'WEFT_UPSTREAMS') ?? ''
  for (const [name, weft] of instances) {
    const port = Number(composeEnv(weft, 'WEFT_PORT') ?? DEFAULTS.port)
    assert.ok(upstreams.includes(`server ${name}:${port} `), `WEFT_UPSTREAMS names ${name}:${port}`)
  }
  const volumes = nginx.lists.get('volumes') ?? []
  assert.ok(volumes.some((v) => v.startsWith('./deploy/nginx/weft.conf.template:/etc/nginx/templates/')), 'the template goes where the image renders templates')
  assert.ok(volumes.some((v) => v.startsWith('./deploy/nginx/nginx.conf:/etc/nginx/nginx.conf')), 'the main config is deploy/nginx/nginx.conf')
  const template = read('deploy/nginx/weft.conf.template')
  for (const name of ['WEFT_UPSTREAMS', 'LISTEN_PORT', 'WEFT_HOCUSPOCUS_PATH']) assert.ok(template.includes('${' + name + '}'), `the template uses ${name}`)
  // nginx strips the instances' Hocuspocus path to route by room: both must name the same path.
  for (const [name, weft] of instances) {
    assert.equal(composeEnv(nginx, 'WEFT_HOCUSPOCUS_PATH'), composeEnv(weft, 'WEFT_HOCUSPOCUS_PATH') ?? DEFAULTS.hocuspocusPath, `nginx and ${name} agree on the Hocuspocus path`)
  }
})

test('compose mounts a named volume of its own at the WEFT_DATA path of each instance', () => {
  const names = new Set<string>()
  for (const [service, weft] of instances) {
    const data = composeEnv(weft, 'WEFT_DATA') ?? runtimeEnv.get('WEFT_DATA')
    assert.ok(data !== undefined && data.startsWith('/'), `${service}: WEFT_DATA is an absolute path`)
    const mount = (weft.lists.get('volumes') ?? []).map((v) => v.split(':')).find((parts) => parts[1] === data)
    assert.ok(mount, `${service}: a volume is mounted at ${data}`)
    const name = mount[0] as string
    assert.ok(!name.startsWith('.') && !name.startsWith('/'), `${name} is a named volume, not a bind mount`)
    assert.ok(compose.topLevel.get('volumes')?.includes(name), `${name} is declared under top-level volumes`)
    names.add(name)
  }
  assert.equal(names.size, instances.length, 'no two instances share a data volume (LevelDB admits one process)')
})

test('compose healthcheck asks /health/ready', () => {
  for (const [name, weft] of instances) assert.match(weft.maps.get('healthcheck')?.get('test') ?? '', /\/health\/ready/, name)
})

test('compose stop_grace_period outlasts the drain window', () => {
  for (const [name, weft] of instances) {
    const grace = weft.scalars.get('stop_grace_period')
    assert.ok(grace !== undefined, `${name}: stop_grace_period is set (the default 10 s cuts the drain short)`)
    const drain = Number(composeEnv(weft, 'WEFT_DRAIN_SECONDS') ?? DEFAULTS.drainSeconds)
    assert.ok(durationSeconds(grace) > drain, `${name}: stop_grace_period ${grace} > drain ${drain} s`)
  }
})
