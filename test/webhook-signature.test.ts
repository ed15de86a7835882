/**
 * The webhook signature (issue 16) as bytes: a fixed vector computed independently with
 * node:crypto's HMAC over the documented text, and what a receiver must refuse.
 */
import assert from 'node:assert/strict'
import { createHmac } from 'node:crypto'
import { describe, it } from 'node:test'
import { signatureHeader, verifySignatureHeader } from '../server/webhooks/index.js'

const SECRET = 'signature-vector-secret-0123456789abcdef'
const BODY = '{"id":"evt_1","type":"document.deleted","time":"2026-12-04T00:00:00.000Z","sequence":1,"data":{"room":"r","subject":null}}'
const T = 1796342400

describe('webhook signature', () => {
  it('is t=<seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">', () => {
    const expected = createHmac('sha256', SECRET).update(`${T}.${BODY}`).digest('hex')
    assert.equal(signatureHeader(SECRET, T, BODY), `t=${T},v1=${expected}`)
    assert.match(expected, /^[0-9a-f]{64}$/)
  })

  it('verifies within five minutes either side, and refuses older, newer, altered or foreign signatures', () => {
    const header = signatureHeader(SECRET, T, BODY)
    assert.ok(verifySignatureHeader(SECRET, header, BODY, T))
    assert.ok(verifySignatureHeader(SECRET, header, BODY, T + 300))
    assert.ok(verifySignatureHeader(SECRET, header, BODY, T - 300))
    assert.ok(!verifySignatureHeader(SECRET, header, BODY, T + 301), 'a replay after five minutes')
    assert.ok(!verifySignatureHeader(SECRET, header, BODY, T - 301))
    assert.ok(!verifySignatureHeader(SECRET, header, BODY.replace('"r"', '"s"'), T), 'another body')
    assert.ok(!verifySignatureHeader(`${SECRET}x`, header, BODY, T), 'another secret')
    assert.ok(!verifySignatureHeader(SECRET, header.replace(`t=${T}`, `t=${T + 1}`), BODY, T), 'another timestamp')
    assert.ok(!verifySignatureHeader(SECRET, `t=${T}`, BODY, T), 'no v1')
    assert.ok(!verifySignatureHeader(SECRET, 'garbage', BODY, T))
  })
})
