/**
 * The Docker image, built as far as a machine without a Docker engine allows: the Dockerfile's
 * stages are carried out into temporary folders, one per stage's filesystem. The build context
 * is the repository filtered by .dockerignore; COPY copies (from the context or from another
 * stage's folder), RUN runs with the stage's WORKDIR as working directory and its ARG defaults
 * in the environment. Two departures, both said here: the build stage's `npm ci` is replaced by a
 * link to this checkout's node_modules (installed by the same lockfile; its `npm run build` does
 * run), and the runtime stage's RUN (making /data for the runtime user) is not run on this
 * machine, only checked to touch nothing but WEFT_DATA. Then the assembled /app is checked (no
 * tests, benchmarks or dev dependencies), weft is started from it, and the image's HEALTHCHECK
 * script asks it over http and, with --tls-cert, over https. The test prints that it built without
 * an engine, so a CI log says what was and was not checked.
 */
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { existsSync, readdirSync, statSync } from 'node:fs'
import { cp, mkdir, symlink } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import { dirname, join, relative } from 'node:path'
import { parseDockerfile, parseEnv, type Instruction } from './harness/dockerfile.js'
import { REPO_ROOT, readRepoFile } from './harness/repo.js'
import { freePort } from './harness/redis.js'
import { spawnWeft, tempDir, type WeftProcess } from './harness/server.js'
import { makeCertificate } from './harness/tls.js'
import { withDeadline } from './harness/wait.js'

const instructions = parseDockerfile(readRepoFile('Dockerfile'))
const stages = new Map<number, { name: string; steps: Instruction[] }>()
for (const step of instructions) {
  if (step.keyword === 'FROM') stages.set(step.stage, { name: /\bAS\s+(\S+)/i.exec(step.args)?.[1] ?? String(step.stage), steps: [] })
  else stages.get(step.stage)?.steps.push(step)
}
const runtimeStage = Math.max(...stages.keys())
const pkg = JSON.parse(readRepoFile('package.json')) as { version: string; license: string; files: string[]; dependencies: Record<string, string>; devDependencies: Record<string, string> }

/** .dockerignore as Docker reads it: paths from the context root, `*` within a segment, `**` across. */
function ignoredBy(patterns: string[]): (path: string) => boolean {
  const regexes = patterns.map((p) => {
    const source = p.replace(/^\/+|\/+$/g, '').split('/').map((segment) => (segment === '**' ? '.*' : segment.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]'))).join('/')
    return new RegExp(`^${source}$`)
  })
  return (path) => {
    const parts = path.split('/')
    return parts.some((_, i) => regexes.some((r) => r.test(parts.slice(0, i + 1).join('/'))))
  }
}
const dockerignore = readRepoFile('.dockerignore').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'))
const ignored = ignoredBy(dockerignore)

function files(dir: string, base = dir): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name)
    if (entry.isSymbolicLink()) return [relative(base, path)]
    return entry.isDirectory() ? files(path, base) : [relative(base, path)]
  })
}

async function sh(command: string, cwd: string, env: Record<string, string>): Promise<void> {
  const child = spawn('/bin/sh', ['-c', command], { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk))
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk))
  const status = await withDeadline(new Promise<number | null>((resolve) => child.once('close', resolve)), `RUN ${command}`, 100_000)
  assert.equal(status, 0, `RUN ${command} failed:\n${output}`)
}

let work: { path: string; remove(): Promise<void> }
let context: string
const roots = new Map<string, string>()
const stageRoot = (stage: number): string => join(work.path, 'stages', String(stage))

/** Carries out one stage: WORKDIR, ARG, ENV, COPY, and RUN (except where `skipRun` says). */
async function build(stage: number, skipRun: (step: Instruction) => boolean): Promise<void> {
  const root = stageRoot(stage)
  roots.set(stages.get(stage)?.name ?? '', root)
  await mkdir(root, { recursive: true })
  let workdir = '/'
  const env: Record<string, string> = { npm_config_prefer_offline: 'true', npm_config_update_notifier: 'false' }
  for (const step of stages.get(stage)?.steps ?? []) {
    if (step.keyword === 'WORKDIR') {
      workdir = step.args
      await mkdir(join(root, workdir), { recursive: true })
    } else if (step.keyword === 'ARG') {
      const [name, value] = step.args.split('=') as [string, string | undefined]
      env[name] = (value ?? '').replace(/^"(.*)"$/, '$1')
    } else if (step.keyword === 'ENV') {
      for (const [k, v] of parseEnv(step.args)) env[k] = v
    } else if (step.keyword === 'COPY') {
      const words = step.args.split(/\s+/)
      const from = words[0]?.startsWith('--from=') ? (words.shift() as string).slice('--from='.length) : null
      const dest = words.pop() as string
      for (const source of words) {
        const target = join(root, dest.startsWith('/') ? dest : join(workdir, dest), dest.endsWith('/') ? source.split('/').at(-1) as string : '')
        const origin = from === null ? join(context, source) : join(roots.get(from) ?? assert.fail(`no stage ${from}`), source)
        assert.ok(existsSync(origin), `COPY ${from === null ? '' : `--from=${from} `}${source}: it exists (${from === null ? 'in the build context' : `in stage ${from}`})`)
        await mkdir(dirname(target), { recursive: true })
        await cp(origin, target, { recursive: true, verbatimSymlinks: true })
      }
    } else if (step.keyword === 'RUN' && !skipRun(step)) {
      await sh(step.args.replace(/\$(\w+)/g, (_, name: string) => env[name] ?? ''), join(root, workdir), env)
    }
  }
}

const app = (): string => join(stageRoot(runtimeStage), '/app')

before(async () => {
  console.log('# no Docker engine here: the Dockerfile stages are carried out into temporary folders (see the top of this file)')
  work = await tempDir('weft-image-')
  // The build context: the repository as .dockerignore filters it.
  context = join(work.path, 'context')
  for (const file of files(REPO_ROOT)) {
    if (ignored(file)) continue
    await mkdir(dirname(join(context, file)), { recursive: true })
    await cp(join(REPO_ROOT, file), join(context, file), { verbatimSymlinks: true })
  }
})

after(async () => {
  await work?.remove()
})

test('the build context holds no tests, benchmarks, build output, dependencies or .git', () => {
  const all = files(context)
  assert.ok(all.includes('server/cli.ts') && all.includes('package-lock.json'), 'the sources are there')
  for (const top of ['test', 'bench', 'dist', 'node_modules', '.git']) assert.ok(!all.some((f) => f === top || f.startsWith(`${top}/`)), `${top} is not in the context`)
})

test('stage build: npm run build from the context (npm ci replaced by this checkout\'s node_modules)', async () => {
  const build0 = [...stages].find(([, s]) => s.name === 'build')
  assert.ok(build0, 'a stage named build')
  const runs = build0[1].steps.filter((s) => s.keyword === 'RUN').map((s) => s.args)
  assert.ok(runs.some((r) => /^npm ci\b/.test(r)), 'the build stage installs with npm ci')
  // The stand-in for its npm ci: the same lockfile's tree, linked in before the steps run.
  await mkdir(join(stageRoot(build0[0]), 'src'), { recursive: true })
  await symlink(join(REPO_ROOT, 'node_modules'), join(stageRoot(build0[0]), 'src', 'node_modules'))
  await build(build0[0], (step) => /^npm ci\b/.test(step.args))
  const dist = join(stageRoot(build0[0]), 'src', 'dist')
  assert.ok(existsSync(join(dist, 'server', 'cli.js')), 'the build made dist/server/cli.js')
  assert.ok(!existsSync(join(dist, 'test')) && !existsSync(join(dist, 'bench')), 'nothing of the tests or benchmarks was built')
})

test('stage deps: npm ci --omit=dev installs the production dependencies only', async () => {
  const deps = [...stages].find(([, s]) => s.name === 'deps')
  assert.ok(deps, 'a stage named deps')
  assert.ok(deps[1].steps.some((s) => s.keyword === 'RUN' && /^npm ci --omit=dev\b/.test(s.args)))
  await build(deps[0], () => false)
  const modules = join(stageRoot(deps[0]), 'src', 'node_modules')
  for (const name of Object.keys(pkg.dependencies)) assert.ok(existsSync(join(modules, name, 'package.json')), `${name} is installed`)
  for (const name of Object.keys(pkg.devDependencies)) assert.ok(!existsSync(join(modules, name)), `dev dependency ${name} is not`)
})

test('stage runtime: the copy list is package.json "files" and nothing of the tests, benchmarks or dev dependencies', async () => {
  assert.ok(roots.has('build') && roots.has('deps'), 'the earlier stages ran')
  const runs = stages.get(runtimeStage)?.steps.filter((s) => s.keyword === 'RUN') ?? []
  const data = [...(stages.get(runtimeStage)?.steps ?? [])].filter((s) => s.keyword === 'ENV').map((s) => parseEnv(s.args).get('WEFT_DATA')).find((v) => v !== undefined)
  for (const run of runs) {
    // Not run here (it would touch this machine's /): it only makes the data directory for the user.
    const paths = run.args.match(/\s(\/\S*)/g)?.map((p) => p.trim()) ?? []
    assert.ok(paths.length > 0 && paths.every((p) => p === data), `RUN ${run.args} touches only ${data}`)
  }
  await build(runtimeStage, () => true)
  const copied = (stages.get(runtimeStage)?.steps ?? []).filter((s) => s.keyword === 'COPY').map((s) => (s.args.split(/\s+/).at(-1) as string).replace(/^\.\//, ''))
  for (const entry of pkg.files) assert.ok(copied.includes(entry), `package.json files entry ${entry} is copied`)
  for (const entry of copied) assert.ok(pkg.files.includes(entry) || ['package.json', 'node_modules', 'healthcheck.mjs'].includes(entry), `${entry} is part of the package (or its dependencies, or the healthcheck)`)
  const image = files(app())
  const offending = image.filter((f) => /(^|\/)(test|tests|bench)(\/|$)|\.test\.js$/.test(f) && !f.startsWith('node_modules/'))
  assert.deepEqual(offending, [], 'no test or benchmark files')
  for (const name of Object.keys(pkg.devDependencies)) assert.ok(!existsSync(join(app(), 'node_modules', name)), `no dev dependency ${name}`)
  const bytes = image.reduce((sum, f) => sum + statSync(join(app(), f)).size, 0)
  console.log(`# /app of the image: ${image.length} files, ${(bytes / 1024 / 1024).toFixed(1)} MiB`)
})

test('OCI labels: title, version (package.json), revision and created (build arguments), licenses', () => {
  const steps = stages.get(runtimeStage)?.steps ?? []
  const labels = new Map<string, string>()
  for (const step of steps.filter((s) => s.keyword === 'LABEL')) for (const [k, v] of parseEnv(step.args.replace(/org\.opencontainers\.image\.([a-z]+)=/g, 'OCI_$1='))) labels.set(k.replace(/^OCI_/, ''), v)
  const args = new Map(steps.filter((s) => s.keyword === 'ARG').map((s) => [s.args.split('=')[0] as string, (s.args.split('=')[1] ?? '').replace(/^"(.*)"$/, '$1')]))
  assert.equal(labels.get('title'), 'weft')
  assert.ok((labels.get('description') ?? '').length > 0)
  assert.equal(labels.get('version'), '$WEFT_VERSION')
  assert.equal(args.get('WEFT_VERSION'), pkg.version, 'the version argument defaults to package.json version')
  assert.equal(labels.get('revision'), '$WEFT_BUILD_COMMIT')
  assert.ok(args.has('WEFT_BUILD_COMMIT'), 'the commit argument is declared in the runtime stage (ARGs do not cross stages)')
  assert.equal(labels.get('created'), '$WEFT_BUILD_TIME')
  assert.equal(labels.get('licenses'), pkg.license)
})

/** Runs the image's HEALTHCHECK command in /app with `env`; resolves with its exit status. */
async function healthcheck(env: Record<string, string>): Promise<{ status: number | null; stderr: string }> {
  const step = stages.get(runtimeStage)?.steps.find((s) => s.keyword === 'HEALTHCHECK')
  assert.ok(step)
  const cmd = JSON.parse(step.args.slice(step.args.indexOf('CMD') + 3).trim()) as string[]
  assert.equal(cmd[0], 'node')
  const child = spawn(process.execPath, cmd.slice(1), { cwd: app(), env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
  const status = await withDeadline(new Promise<number | null>((resolve) => child.once('close', resolve)), 'the healthcheck', 10_000)
  return { status, stderr }
}

async function startFromImage(args: string[], env: Record<string, string> = {}): Promise<WeftProcess> {
  assert.ok(existsSync(join(app(), 'dist', 'server', 'cli.js')), 'the runtime stage was assembled')
  const cmd = JSON.parse(stages.get(runtimeStage)?.steps.find((s) => s.keyword === 'CMD')?.args ?? '[]') as string[]
  const data = await tempDir('weft-image-data-')
  const weft = await spawnWeft(['--data', data.path, ...args], { NODE_ENV: 'production', ...env }, 15_000, { cli: join(app(), cmd[1] as string), cwd: app() })
  void weft.exited.then(() => data.remove())
  return weft
}

async function stop(weft: WeftProcess): Promise<void> {
  weft.kill('SIGTERM')
  assert.equal(await withDeadline(weft.exited, 'weft to drain and exit', 30_000), 0)
}

test('weft runs from the assembled image, and its healthcheck passes over http', async () => {
  const weft = await startFromImage([])
  try {
    assert.equal((await fetch(`${weft.http}/openapi.yaml`)).status, 200, 'docs/openapi.yaml is in the image')
    const ok = await healthcheck({ WEFT_PORT: String(weft.port) })
    assert.equal(ok.status, 0, ok.stderr)
  } finally {
    await stop(weft)
  }
  const gone = await healthcheck({ WEFT_PORT: String(weft.port) })
  assert.equal(gone.status, 1, 'no server: unhealthy')
  assert.match(gone.stderr, /failed/)
})

test('with --tls-cert the healthcheck asks over https (from WEFT_TLS_CERT, or by trying when given as flags)', async () => {
  const certs = await tempDir('weft-image-tls-')
  const { cert, key } = makeCertificate(certs.path)
  const weft = await startFromImage([], { WEFT_TLS_CERT: cert, WEFT_TLS_KEY: key })
  try {
    const byEnv = await healthcheck({ WEFT_PORT: String(weft.port), WEFT_TLS_CERT: cert, WEFT_TLS_KEY: key })
    assert.equal(byEnv.status, 0, byEnv.stderr)
    const byFallback = await healthcheck({ WEFT_PORT: String(weft.port) })
    assert.equal(byFallback.status, 0, byFallback.stderr)
  } finally {
    await stop(weft)
    await certs.remove()
  }
})

test('the healthcheck fails when /health/ready is not 200', async () => {
  let server: Server | undefined
  try {
    const port = await freePort()
    server = createServer((req, res) => {
      res.writeHead(req.url === '/health/ready' ? 503 : 200).end()
    })
    await new Promise<void>((resolve) => server?.listen(port, '127.0.0.1', resolve))
    const answer = await healthcheck({ WEFT_PORT: String(port) })
    assert.equal(answer.status, 1)
    assert.match(answer.stderr, /answered 503/)
  } finally {
    await new Promise((resolve) => server?.close(resolve))
  }
})
