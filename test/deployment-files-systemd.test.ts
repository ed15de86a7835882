/**
 * deploy/systemd/weft.service: `systemd-analyze verify` passes on the file as it is, and the
 * unit keeps the promises weft needs: the stop timeout outlasts the drain, SIGTERM starts it,
 * enough file descriptors, hardened, the data directory is the state directory.
 *
 * verify runs with --root on a temporary tree: the machine's own unit files (so targets like
 * network-online.target resolve) plus a stand-in at the unit's ExecStart path (verify checks
 * that the program exists and is executable). There is no systemd running here (no PID 1 to
 * start the unit), so the service itself is not started; the settings it passes are checked
 * against server/config.ts instead.
 */
import { after, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { chmod, cp, mkdir, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { DEFAULTS, SETTINGS } from '../server/config.js'
import { readRepoFile } from './harness/repo.js'
import { tempDir } from './harness/server.js'
import { withDeadline } from './harness/wait.js'

const UNIT = readRepoFile('deploy/systemd/weft.service')
const dirs: Array<{ remove(): Promise<void> }> = []
after(async () => {
  await Promise.all(dirs.map((d) => d.remove()))
})

/** The unit's `Key=value` lines by section, in order (a key may repeat). */
function parseUnit(text: string): Map<string, Array<[string, string]>> {
  const sections = new Map<string, Array<[string, string]>>()
  let section = ''
  for (const raw of text.split('\n')) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue
    const header = /^\[(.+)\]$/.exec(line)
    if (header !== null) {
      section = header[1] as string
      sections.set(section, [])
      continue
    }
    const eq = line.indexOf('=')
    assert.ok(eq > 0 && section !== '', `unit line in a section: ${line}`)
    sections.get(section)?.push([line.slice(0, eq), line.slice(eq + 1)])
  }
  return sections
}

const unit = parseUnit(UNIT)
const service = unit.get('Service') ?? []
const values = (key: string): string[] => service.filter(([k]) => k === key).map(([, v]) => v)
function one(key: string): string {
  const found = values(key)
  assert.equal(found.length, 1, `[Service] has one ${key}`)
  return found[0] as string
}
const environment = new Map(values('Environment').map((v) => [v.slice(0, v.indexOf('=')), v.slice(v.indexOf('=') + 1)]))

/** systemd's time spans: `40`, `40s`, `1min 30s`, `2m`. */
function seconds(span: string): number {
  if (/^\d+$/.test(span)) return Number(span)
  const units: Record<string, number> = { ms: 0.001, s: 1, sec: 1, m: 60, min: 60, h: 3600 }
  let total = 0
  for (const match of span.matchAll(/(\d+)\s*(ms|sec|s|min|m|h)/g)) total += Number(match[1]) * (units[match[2] as string] as number)
  assert.ok(total > 0, `"${span}" is a time span`)
  return total
}

/** `systemd-analyze verify` of `unitText` installed as weft.service in a fresh root, with a stand-in at the real unit's ExecStart path. */
async function verify(unitText: string): Promise<{ status: number | null; output: string }> {
  const dir = await tempDir('weft-systemd-')
  dirs.push(dir)
  const root = dir.path
  await mkdir(join(root, 'usr', 'lib', 'systemd'), { recursive: true })
  await cp('/usr/lib/systemd/system', join(root, 'usr', 'lib', 'systemd', 'system'), { recursive: true })
  await mkdir(join(root, 'etc', 'systemd', 'system'), { recursive: true })
  await writeFile(join(root, 'etc', 'systemd', 'system', 'weft.service'), unitText)
  const program = one('ExecStart').split(/\s+/)[0] as string
  assert.ok(program.startsWith('/'), `ExecStart names an absolute path: ${program}`)
  await mkdir(join(root, dirname(program)), { recursive: true })
  await writeFile(join(root, program), '#!/bin/sh\nexit 0\n')
  await chmod(join(root, program), 0o755)
  const child = spawn('systemd-analyze', ['--root', root, 'verify', 'weft.service'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk))
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk))
  const closed = new Promise<number | null>((resolve, reject) => {
    child.once('close', resolve)
    child.once('error', (err) => reject(new Error(`systemd-analyze could not run (Debian package systemd): ${err.message}`)))
  })
  const status = await withDeadline(closed, 'systemd-analyze verify', 30_000)
  return { status, output }
}

test('systemd-analyze verify passes on the unit, without a warning', async () => {
  const { status, output } = await verify(UNIT)
  assert.equal(status, 0, output)
  assert.equal(output.trim(), '', 'no warnings (an unknown key is only a warning)')
})

test('the verify step catches a broken unit', async () => {
  const typo = await verify(UNIT.replace('NoNewPrivileges=yes', 'NoNewPrivilege=yes'))
  assert.match(typo.output, /Unknown key 'NoNewPrivilege'/)
  const missing = await verify(UNIT.replace(/^ExecStart=(\S+)/m, 'ExecStart=$1-elsewhere'))
  assert.notEqual(missing.status, 0, missing.output)
  assert.match(missing.output, /is not executable/)
})

test('ExecStart runs the weft binary package.json names, with `serve`', () => {
  const pkg = JSON.parse(readRepoFile('package.json')) as { bin: Record<string, string> }
  assert.ok('weft' in pkg.bin)
  assert.match(one('ExecStart'), /^\/\S+\/weft serve$/)
})

test('stopping drains: SIGTERM to weft, and a stop timeout longer than the drain window', () => {
  assert.equal(one('KillSignal'), 'SIGTERM')
  assert.equal(one('KillMode'), 'mixed', 'SIGTERM to the main process; SIGKILL to all only at the timeout')
  const drain = Number(environment.get('WEFT_DRAIN_SECONDS') ?? DEFAULTS.drainSeconds)
  const timeout = seconds(one('TimeoutStopSec'))
  assert.ok(timeout > drain + 5, `TimeoutStopSec ${timeout} s > drain ${drain} s + time to flush`)
})

test('file descriptors for many WebSockets', () => {
  assert.ok(Number(one('LimitNOFILE')) >= 65536)
})

test('hardened: no privileges, read-only system, data only in the state directory', () => {
  for (const [key, value] of [
    ['NoNewPrivileges', 'yes'],
    ['ProtectSystem', 'strict'],
    ['ProtectHome', 'yes'],
    ['PrivateTmp', 'yes'],
    ['PrivateDevices', 'yes'],
    ['DynamicUser', 'yes'],
    ['CapabilityBoundingSet', ''],
    ['RestrictSUIDSGID', 'yes'],
    ['ProtectKernelTunables', 'yes'],
    ['ProtectControlGroups', 'yes'],
  ]) {
    assert.equal(one(key as string), value, `${key}=${value}`)
  }
  assert.equal(values('User').length, 0, 'no fixed (possibly root) user: DynamicUser makes one')
  assert.ok(values('MemoryDenyWriteExecute').every((v) => v === 'no'), "V8's JIT needs W+X memory")
  assert.equal(environment.get('WEFT_DATA'), `/var/lib/${one('StateDirectory')}`, 'the data directory is the one writable place')
})

test('the environment it sets is made of real settings with their defaults where it names them', () => {
  for (const [name, value] of environment) {
    if (!name.startsWith('WEFT_')) continue
    const setting = SETTINGS.find((s) => s.env === name)
    assert.ok(setting, `${name} is a setting in server/config.ts`)
    if (name === 'WEFT_PORT') assert.equal(Number(value), DEFAULTS.port)
    if (name === 'WEFT_DRAIN_SECONDS') assert.equal(Number(value), DEFAULTS.drainSeconds)
  }
})
