/**
 * Webhooks (issue 16) across crashes and outages: weft is killed with SIGKILL in the middle of a
 * delivery and restarted on the same data directory; two instances share a Redis that is killed
 * and restarted. Afterwards every change is in a delivered event (no subject missing, no sequence
 * number missing after dedupe by delivery id), in order per room, and in the cluster each change
 * is reported once: by the instance it arrived at, never by the one it was relayed to.
 */
import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import type { DocumentChangedData } from '../server/webhooks/events.js'
import { textUpdate } from './harness/clients.js'
import { envNumber, mulberry32 } from './harness/fuzz.js'
import { httpBytes } from './harness/http.js'
import { metricValue } from './harness/metrics.js'
import { startRedis } from './harness/redis.js'
import { spawnWeft, startServer, tempDir, type WeftProcess } from './harness/server.js'
import { signToken } from './harness/tokens.js'
import { eventually, until, withDeadline } from './harness/wait.js'
import { assertDeliveryInvariants } from './harness/webhook-checks.js'
import { startWebhookReceiver, type WebhookReceiver } from './harness/webhook-receiver.js'

const AUTH = 'webhooks-durability-auth-0123456789abcdef'
const HOOK = 'webhooks-durability-hook-0123456789abcdef'
const SEED = envNumber('WEFT_WEBHOOK_SEED', 16)

const cleanups: Array<() => Promise<void>> = []
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup()
})

async function postAs(base: string, room: string, subject: string): Promise<number> {
  const token = await signToken({ rooms: ['*'], access: 'write' }, { secret: AUTH, subject })
  const answer = await httpBytes(base, 'POST', `/api/rooms/${room}/updates`, {
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream' },
    body: textUpdate(`${subject} was here`),
  })
  return answer.status
}

/** Subjects named in the document.changed events `receiver` accepted at `path`, by room. */
function subjectsByRoom(receiver: WebhookReceiver, path: string): Map<string, Set<string>> {
  const rooms = new Map<string, Set<string>>()
  for (const d of receiver.unique(path)) {
    if (d.event.type !== 'document.changed') continue
    const data = d.event.data as DocumentChangedData
    const set = rooms.get(data.room) ?? new Set<string>()
    for (const subject of data.subjects) set.add(subject)
    rooms.set(data.room, set)
  }
  return rooms
}

function covers(found: Map<string, Set<string>>, expected: Map<string, Set<string>>): boolean {
  return [...expected].every(([room, subjects]) => [...subjects].every((s) => found.get(room)?.has(s) === true))
}

function expect(expected: Map<string, Set<string>>, room: string, subject: string): void {
  const set = expected.get(room) ?? new Set<string>()
  set.add(subject)
  expected.set(room, set)
}

describe('webhooks durability', () => {
  it('loses no event when weft is killed with SIGKILL during a delivery and restarted', async () => {
    const receiver = await startWebhookReceiver(HOOK)
    cleanups.push(() => receiver.close())
    const data = await tempDir('weft-webhooks-kill-')
    cleanups.push(() => data.remove())
    const args = [
      '--data', data.path,
      '--webhook-url', `${receiver.base}/kill`,
      '--webhook-debounce-ms', '20',
      '--webhook-max-wait-ms', '100',
      '--webhook-timeout-ms', '500',
      '--webhook-retry-min-ms', '20',
      '--log-level', 'warn',
    ]
    const env = { WEFT_AUTH_SECRET: AUTH, WEFT_WEBHOOK_SECRET: HOOK }
    let weft: WeftProcess = await spawnWeft(args, env)
    const running: WeftProcess[] = [weft]
    cleanups.push(async () => {
      for (const p of running) {
        p.kill('SIGKILL')
        await withDeadline(p.exited, 'weft to exit')
      }
    })
    const rooms = ['k1', 'k2', 'k3', 'k4']
    const expected = new Map<string, Set<string>>()
    // Nothing is accepted while the edits arrive: the outbox fills, retrying.
    receiver.behave = () => 'error'
    for (let i = 0; i < 20; i++) {
      const room = rooms[i % rooms.length] as string
      assert.equal(await postAs(weft.http, room, `before-${i}`), 204)
      expect(expected, room, `before-${i}`)
    }
    // Then the receiver fails at random (seeded) and weft is killed at its third accepted delivery,
    // as that answer is on its way back: the delivery may count as done here and not there.
    const random = mulberry32(SEED)
    let accepted = 0
    const victim = weft
    receiver.behave = () => {
      if (random() < 0.25) return 'error'
      if (++accepted === 3) victim.kill('SIGKILL')
      return 'ok'
    }
    assert.equal(await withDeadline(victim.exited, 'the kill', 20_000), 'SIGKILL')
    const beforeRestart = receiver.unique('/kill').length
    assert.ok(beforeRestart >= 2 && beforeRestart < 20, `${beforeRestart} events delivered before the kill`)

    weft = await spawnWeft(args, env)
    running.push(weft)
    for (let i = 0; i < 8; i++) {
      const room = rooms[i % rooms.length] as string
      assert.equal(await postAs(weft.http, room, `after-${i}`), 204)
      expect(expected, room, `after-${i}`)
    }
    const restarted = weft
    await eventually(
      async () => covers(subjectsByRoom(receiver, '/kill'), expected) && (await metricValue(restarted.http, 'weft_webhook_queued')) === 0,
      'every change to be delivered after the restart',
      30_000,
    )
    assertDeliveryInvariants(receiver, '/kill')
    assert.equal(await metricValue(restarted.http, 'weft_webhook_dead'), 0)
  })

  it('keeps acknowledged changes whose event was not made yet (debounce window) across SIGKILL', async () => {
    const receiver = await startWebhookReceiver(HOOK)
    cleanups.push(() => receiver.close())
    const data = await tempDir('weft-webhooks-batch-')
    cleanups.push(() => data.remove())
    const args = (debounceMs: string) => ['--data', data.path, '--webhook-url', `${receiver.base}/batch`, '--webhook-debounce-ms', debounceMs, '--webhook-max-wait-ms', debounceMs, '--log-level', 'warn']
    const env = { WEFT_AUTH_SECRET: AUTH, WEFT_WEBHOOK_SECRET: HOOK }
    // A debounce far longer than the test: no event is made before the kill.
    const first = await spawnWeft(args('600000'), env)
    const expected = new Map<string, Set<string>>()
    for (let i = 0; i < 6; i++) {
      assert.equal(await postAs(first.http, `b${i % 2}`, `pending-${i}`), 204)
      expect(expected, `b${i % 2}`, `pending-${i}`)
    }
    first.kill('SIGKILL')
    assert.equal(await withDeadline(first.exited, 'the kill'), 'SIGKILL')
    assert.equal(receiver.received.length, 0, 'nothing was sent before the kill')
    const second = await spawnWeft(args('50'), env)
    cleanups.push(async () => {
      second.kill('SIGKILL')
      await withDeadline(second.exited, 'weft to exit')
    })
    await eventually(async () => covers(subjectsByRoom(receiver, '/batch'), expected), 'the changes gathered before the kill to be delivered', 20_000)
    assertDeliveryInvariants(receiver, '/batch')
  })

  it('reports each change once cluster-wide, by the instance it arrived at, through a Redis outage', async () => {
    const redis = await startRedis()
    cleanups.push(() => redis.dispose())
    const receiver = await startWebhookReceiver(HOOK)
    cleanups.push(() => receiver.close())
    const random = mulberry32(SEED + 1)
    receiver.behave = () => (random() < 0.2 ? 'error' : 'ok')
    const instance = async (path: string) => {
      const s = await startServer({
        redisUrl: redis.url,
        authSecret: AUTH,
        webhookUrls: [`${receiver.base}${path}`],
        webhookSecret: HOOK,
        webhookDebounceMs: 20,
        webhookMaxWaitMs: 100,
        webhookRetryMinMs: 20,
        webhookTimeoutMs: 500,
      })
      cleanups.push(() => s.stop())
      return s
    }
    const a = await instance('/a')
    const b = await instance('/b')
    const viaA = new Map<string, Set<string>>()
    const viaB = new Map<string, Set<string>>()
    let n = 0
    // Shared rooms are edited through both instances; each instance also has a room of its own.
    const round = async (label: string): Promise<void> => {
      for (const room of ['shared-1', 'shared-2', 'only-a']) {
        const subject = `${label}-a-${n++}`
        assert.equal(await postAs(a.http, room, subject), 204)
        expect(viaA, room, subject)
      }
      for (const room of ['shared-1', 'shared-2', 'only-b']) {
        const subject = `${label}-b-${n++}`
        assert.equal(await postAs(b.http, room, subject), 204)
        expect(viaB, room, subject)
      }
    }
    await round('up')
    // Relayed: B holds A's edit of shared-1 (and reports none of it).
    await eventually(async () => {
      const token = await signToken({ rooms: ['*'], access: 'read' }, { secret: AUTH, subject: 'reader' })
      const json = await httpBytes(b.http, 'GET', '/api/rooms/shared-1', { headers: { authorization: `Bearer ${token}` } })
      return json.status === 200 && json.body.toString().includes('up-a-0 was here')
    }, 'the relay to carry A\'s edit to B')
    await redis.kill()
    await round('outage')
    await redis.restart()
    await round('back')
    await eventually(
      async () =>
        covers(subjectsByRoom(receiver, '/a'), viaA) &&
        covers(subjectsByRoom(receiver, '/b'), viaB) &&
        (await metricValue(a.http, 'weft_webhook_queued')) === 0 &&
        (await metricValue(b.http, 'weft_webhook_queued')) === 0,
      'every change to be delivered by the instance it arrived at',
      30_000,
    )
    // Once cluster-wide: no instance reports a subject that arrived at the other one.
    const aSubjects = [...subjectsByRoom(receiver, '/a').values()].flatMap((set) => [...set])
    const bSubjects = [...subjectsByRoom(receiver, '/b').values()].flatMap((set) => [...set])
    assert.ok(aSubjects.every((s) => s.includes('-a-')), `A reported ${aSubjects.join(',')}`)
    assert.ok(bSubjects.every((s) => s.includes('-b-')), `B reported ${bSubjects.join(',')}`)
    assert.ok(!subjectsByRoom(receiver, '/a').has('only-b') && !subjectsByRoom(receiver, '/b').has('only-a'))
    assertDeliveryInvariants(receiver, '/a')
    assertDeliveryInvariants(receiver, '/b')
    await until(() => receiver.received.some((d) => d.answer === 'error'), 'a failed attempt to have been retried')
  })
})
