import assert from 'node:assert/strict'
import { request } from 'node:http'
import { after, before, describe, it } from 'node:test'
import { WebSocket } from 'ws'
import { encodeHocuspocusClientAuthToken, encodeHocuspocusSyncStep1 } from '../protocol/index.js'
import { RawClient } from './harness/clients.js'
import { spawnWeft, type WeftProcess } from './harness/server.js'
import { until, withDeadline } from './harness/wait.js'
import { signToken } from './harness/tokens.js'

// Credentials never reach a log line, even at --log-level trace: tokens on the URL, in the
// Hocuspocus Auth message and in Authorization headers, valid and invalid, and the secret itself.

const SECRET = 'log-redaction-secret-6f1d2c9a8b7e'

function token(claims: Record<string, unknown>, secret = SECRET): Promise<string> {
  return signToken(claims, { secret, subject: 'user-7', expiresInSeconds: 5 * 60, issuedAt: false })
}

function httpGet(port: number, path: string, headers: Record<string, string> = {}): Promise<number> {
  return withDeadline(
    new Promise((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path, headers, agent: false }, (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode ?? 0))
      })
      req.on('error', reject)
      req.end()
    }),
    `GET ${path}`,
  )
}

/** Opens a socket and waits for it to open or be refused; returns what happened. */
async function tryOpen(url: string): Promise<string> {
  const socket = new WebSocket(url)
  const outcome = await withDeadline(
    new Promise<string>((resolve) => {
      socket.once('open', () => resolve('open'))
      socket.once('unexpected-response', (_req, res) => resolve(`http ${res.statusCode}`))
      socket.once('error', (err) => resolve(`error ${err.message}`))
    }),
    `socket to ${url}`,
  )
  socket.terminate()
  return outcome
}

describe('log redaction', () => {
  let weft: WeftProcess
  const secrets: string[] = [SECRET]

  before(async () => {
    weft = await spawnWeft(['--data', 'memory', '--log-level', 'trace', '--auth-secret', SECRET])
  })

  after(async () => {
    weft?.kill('SIGTERM')
    await weft?.exited
  })

  it('no token and not the secret appear in stdout or stderr at trace level', async () => {
    const valid = await token({ rooms: ['doc*'], access: 'admin' })
    const wrongKey = await token({ rooms: ['doc*'], access: 'write' }, 'another-secret-0000000000')
    const garbage = 'not.a.jwt-9d8c7b6a5f4e3d2c1b0a'
    secrets.push(valid, wrongKey, garbage)

    assert.equal(await tryOpen(`${weft.url}/doc-1?token=${valid}`), 'open')
    assert.equal(await tryOpen(`${weft.url}/doc-1?token=${wrongKey}`), 'http 401')
    assert.equal(await tryOpen(`${weft.url}/doc-1?token=${garbage}`), 'http 401')

    for (const t of [valid, wrongKey, garbage]) {
      const hp = await RawClient.open(`${weft.url}/`)
      hp.send(encodeHocuspocusClientAuthToken('doc-2', t, '4.8.0'))
      hp.send(encodeHocuspocusSyncStep1('doc-2', Uint8Array.of(0)))
      // An answer to the token (Authenticated or PermissionDenied, both Auth frames) proves it was handled.
      await hp.frame((f) => f[0] === 5 && f[6] === 2, 'the answer to the hocuspocus token')
      hp.close()
      await hp.waitClosed()
    }

    for (const t of [valid, wrongKey, garbage]) {
      await httpGet(weft.port, '/metrics', { authorization: `Bearer ${t}` })
      await httpGet(weft.port, `/api/rooms?token=${t}`, { authorization: `Bearer ${t}` })
      await httpGet(weft.port, `/health/ready?token=${t}`)
    }

    // Trace logging is on: the requests above did log something, so an empty log proves nothing.
    await until(() => weft.logs.length > 3, 'log lines')
    weft.kill('SIGTERM')
    await withDeadline(weft.exited, 'weft to exit')
    const output = JSON.stringify(weft.logs) + weft.stderr()
    for (const secret of secrets) {
      assert.ok(!output.includes(secret), `a credential appears in the logs: ${secret.slice(0, 12)}…`)
      // Also no long fragment of it, e.g. a token cut off by a length limit.
      assert.ok(!output.includes(secret.slice(0, 24)), `a fragment of a credential appears in the logs: ${secret.slice(0, 12)}…`)
    }
  })
})
