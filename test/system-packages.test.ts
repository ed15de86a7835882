/**
 * scripts/system-packages.mjs, which `npm test` runs first (issue 14): on a machine without
 * nginx it installs it when it may (root with apt-get, daemons kept from starting), and otherwise
 * stops at once with one line naming the command to run. The machine's own nginx is never
 * touched: WEFT_TOOLS_PATH makes the script look only in a temporary folder of stand-ins.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { chmod, copyFile, readFile, writeFile } from 'node:fs/promises'
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { after, describe, it } from 'node:test'
import { tempDir } from './harness/server.js'
import { withDeadline } from './harness/wait.js'

function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  while (!existsSync(join(dir, 'package.json'))) dir = dirname(dir)
  return dir
}

const ROOT = repoRoot()
const SCRIPT = join(ROOT, 'scripts', 'system-packages.mjs')
const isRoot = process.getuid?.() === 0
/** nobody: how a root test runner plays a user who may not install packages. */
const NOBODY = 65534

const dirs: Array<{ remove(): Promise<void> }> = []
after(async () => {
  await Promise.all(dirs.map((dir) => dir.remove()))
})

/** A folder (readable by everyone) of stand-in programs; each records its arguments in calls.log. */
async function toolsDir(programs: Record<string, string>): Promise<string> {
  const dir = await tempDir('weft-tools-')
  dirs.push(dir)
  await chmod(dir.path, 0o777)
  for (const [name, body] of Object.entries(programs)) {
    const file = join(dir.path, name)
    await writeFile(file, `#!/bin/sh\necho "${name} $*" >> "${dir.path}/calls.log"\n${body}\n`)
    await chmod(file, 0o755)
  }
  return dir.path
}

/**
 * A copy of the script in a folder everyone may read: a checkout can sit below a folder only its
 * owner may enter (mktemp -d makes 0700 folders), which another user could not run it from.
 */
async function readableScript(): Promise<string> {
  const dir = await tempDir('weft-script-')
  dirs.push(dir)
  await chmod(dir.path, 0o755)
  const copy = join(dir.path, 'system-packages.mjs')
  await copyFile(SCRIPT, copy)
  await chmod(copy, 0o644)
  return copy
}

async function runScript(env: Record<string, string>, uid?: number): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const script = uid === undefined ? SCRIPT : await readableScript()
  const child = spawn(process.execPath, [script], {
    cwd: dirname(script),
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(uid === undefined ? {} : { uid, gid: uid }),
  })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk))
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
  const closed = new Promise<number | null>((resolve) => child.once('close', resolve))
  return withDeadline(closed, 'system-packages.mjs', 15_000).then((status) => ({ status, stdout, stderr }))
}

/** The script's NEEDED table (program → Debian package), read from its text so the tests follow it. */
const NEEDED = [...readFileSync(SCRIPT, 'utf8').matchAll(/\{ program: '([^']+)', apt: '([^']+)'/g)].map((m) => ({ program: m[1] as string, apt: m[2] as string }))
/** Stand-ins for every needed program but `except`. */
const standIns = (...except: string[]): Record<string, string> => Object.fromEntries(NEEDED.filter(({ program }) => !except.includes(program)).map(({ program }) => [program, '']))

const calls = async (dir: string): Promise<string[]> => (existsSync(join(dir, 'calls.log')) ? (await readFile(join(dir, 'calls.log'), 'utf8')).split('\n').filter((l) => l !== '') : [])

describe('npm test checks its system packages first', () => {
  it('npm test runs the script before anything else, and .ci/run runs it too', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }
    assert.match(pkg.scripts.pretest ?? '', /^node scripts\/system-packages\.mjs && /)
    assert.match(readFileSync(join(ROOT, '.ci', 'run'), 'utf8'), /^node scripts\/system-packages\.mjs$/m)
  })

  it('does nothing when every needed program is there', async () => {
    assert.ok(NEEDED.some(({ program }) => program === 'redis-server') && NEEDED.some(({ program }) => program === 'nginx'), 'NEEDED was read from the script')
    const dir = await toolsDir({ ...standIns(), 'apt-get': 'exit 1' })
    const { status, stdout, stderr } = await runScript({ WEFT_TOOLS_PATH: dir })
    assert.equal(status, 0, stderr)
    assert.equal(stdout + stderr, '')
    assert.deepEqual(await calls(dir), [])
  })

  it('a user who may not install packages gets one line naming the exact command, at once', async () => {
    const dir = await toolsDir({ ...standIns('nginx'), 'apt-get': 'exit 0' })
    // 'At once': runScript's deadline fails a script that waits (for a password, say); no timing is asserted.
    const { status, stdout, stderr } = await runScript({ WEFT_TOOLS_PATH: dir }, isRoot ? NOBODY : undefined)
    assert.equal(status, 1)
    assert.equal(stdout, '')
    const lines = stderr.split('\n').filter((line) => line !== '')
    assert.equal(lines.length, 1, stderr)
    assert.equal(lines[0], 'npm test needs nginx: run `sudo apt-get update && sudo apt-get install -y nginx`, then npm test again')
    assert.deepEqual(await calls(dir), [], 'apt-get was run')
  })

  it('names every missing program, and says so when there is no apt-get', async () => {
    const dir = await toolsDir({})
    const { status, stderr } = await runScript({ WEFT_TOOLS_PATH: dir }, isRoot ? NOBODY : undefined)
    assert.equal(status, 1)
    const lines = stderr.split('\n').filter((line) => line !== '')
    assert.equal(lines.length, 1, stderr)
    const programs = NEEDED.map(({ program }) => program).join(' and ')
    const packages = NEEDED.map(({ apt }) => apt).join(' ')
    assert.ok(
      (lines[0] as string).startsWith(`npm test needs ${programs}: install them with the system's package manager (on Debian or Ubuntu: \`sudo apt-get update && sudo apt-get install -y ${packages}\`)`),
      lines[0],
    )
  })

  it('as root with apt-get it installs what is missing, with daemons kept from starting', async () => {
    const policyDir = await tempDir('weft-policy-')
    dirs.push(policyDir)
    const policy = join(policyDir.path, 'policy-rc.d')
    // The stand-in apt-get checks the guard is in place while it runs, and "installs" nginx.
    const dir = await toolsDir({
      ...standIns('nginx'),
      'apt-get': [
        `grep -q 'exit 101' "${policy}" || { echo "no policy-rc.d" >&2; exit 7; }`,
        'echo "DEBIAN_FRONTEND=$DEBIAN_FRONTEND" >> "$(dirname "$0")/calls.log"',
        'if [ "$1" = install ]; then printf "#!/bin/sh\\n" > "$(dirname "$0")/nginx"; chmod 755 "$(dirname "$0")/nginx"; fi',
      ].join('\n'),
    })
    const { status, stderr } = await runScript({ WEFT_TOOLS_PATH: dir, WEFT_POLICY_RC_D: policy })
    if (!isRoot) {
      // Not root: the same refusal as above, and nothing installed.
      assert.equal(status, 1)
      assert.deepEqual(await calls(dir), [])
      return
    }
    assert.equal(status, 0, stderr)
    assert.deepEqual(await calls(dir), ['apt-get update', 'DEBIAN_FRONTEND=', 'apt-get install -y --no-install-recommends nginx', 'DEBIAN_FRONTEND=noninteractive'])
    assert.equal(existsSync(policy), false, 'the guard it made is removed again')
  })
})
