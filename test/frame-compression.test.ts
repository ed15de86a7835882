import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { describe, it } from 'node:test'
import { FrameCompression } from '../server/frame-compression.js'
import { webSocketFrame } from '../server/wire-format.js'
import { inflateMessage } from './harness/wire-client.js'

// The shared compressed frame (issue 19, item 8) as bytes: RFC 7692 framing, deflated once per payload.

function counting(threshold: number): { compression: FrameCompression; runs: Array<[number, number]> } {
  const runs: Array<[number, number]> = []
  return { compression: new FrameCompression(threshold, { compressed: (input, output) => runs.push([input, output]) }), runs }
}

describe('FrameCompression', () => {
  it('frames a compressed message with RSV1 set, without the sync-flush tail, and inflates back to the payload', () => {
    const { compression, runs } = counting(1024)
    const payload = Buffer.from('weft '.repeat(1000))
    const frame = compression.wireFrame(payload)
    assert.ok(frame !== null)
    assert.equal(frame[0], 0xc2, 'FIN, RSV1, binary')
    const length = frame[1] as number
    assert.ok(length < 126, `a 5000-byte payload of one word deflates below 126 bytes (${length})`)
    const body = Buffer.from(frame.subarray(2))
    assert.equal(body.length, length)
    assert.notDeepEqual([...body.subarray(-4)], [0, 0, 0xff, 0xff], 'the empty-block tail is removed')
    assert.deepEqual(inflateMessage(body), payload)
    assert.deepEqual(runs, [[payload.length, length]])
  })

  it('deflates each payload once however often it is asked for', () => {
    const { compression, runs } = counting(16)
    const payload = Buffer.from('a'.repeat(4096))
    const first = compression.wireFrame(payload)
    assert.equal(compression.wireFrame(payload), first)
    assert.equal(compression.wireFrame(payload), first)
    assert.equal(runs.length, 1)
    // Another buffer with the same bytes is another payload (the room's encoding is what is shared).
    compression.wireFrame(Buffer.from(payload))
    assert.equal(runs.length, 2)
  })

  it('leaves payloads below the threshold and payloads that do not shrink plain', () => {
    const { compression, runs } = counting(1024)
    assert.equal(compression.wireFrame(Buffer.alloc(1023, 1)), null)
    assert.equal(runs.length, 0, 'below the threshold nothing is deflated')
    const noise = randomBytes(4096)
    assert.equal(compression.wireFrame(noise), null)
    assert.equal(compression.wireFrame(noise), null)
    assert.equal(runs.length, 1, 'a payload that did not shrink is not deflated again')
  })

  it('frames lengths of 126 and more with the extended length fields', () => {
    assert.deepEqual([...webSocketFrame(Buffer.alloc(200), true).subarray(0, 4)], [0xc2, 126, 0, 200])
    assert.deepEqual([...webSocketFrame(Buffer.alloc(70_000), true).subarray(0, 10)], [0xc2, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70])
    assert.equal(webSocketFrame(Buffer.alloc(3))[0], 0x82)
  })
})
