import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { deflateRawSync } from 'node:zlib'
import { WebSocket } from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { decodeYMessage, encodeHocuspocusStateless, encodeSyncStep1, encodeSyncUpdate } from '../protocol/index.js'
import { ConfigError, parseSettings } from '../server/config.js'
import type { Connection } from '../server/connection.js'
import { converged, destroy, provider, synced } from './harness/clients.js'
import { destroyHocuspocus, hocuspocus, hocuspocusSynced } from './harness/hocuspocus.js'
import { metricValue } from './harness/metrics.js'
import { startServer, type InProcessServer } from './harness/server.js'
import { until } from './harness/wait.js'
import { inflateMessage, WireClient } from './harness/wire-client.js'

// Issue 19, item 8: --compression. permessage-deflate only with clients that offer it, only above
// --compression-threshold-bytes, and each broadcast deflated once for all its recipients.

/** The server's open connections (weft exposes no per-connection API; as test/backpressure.test.ts). */
function connectionsOf(server: InProcessServer): Set<Connection> {
  return new Set((server.server as unknown as { connections: { list(): Connection[] } }).connections.list())
}

/** A stock y-websocket provider whose `ws` does not offer permessage-deflate. */
function plainProvider(url: string, room: string, doc = new Y.Doc()): WebsocketProvider {
  class NoDeflate extends WebSocket {
    constructor(address: string, protocols?: string | string[]) {
      super(address, protocols, { perMessageDeflate: false })
    }
  }
  return new WebsocketProvider(url, room, doc, { WebSocketPolyfill: NoDeflate as unknown as typeof globalThis.WebSocket, disableBc: true, maxBackoffTime: 500 })
}

/** A wire client that joined `room` with an empty document. */
async function wireMember(url: string, room: string, offer?: string): Promise<WireClient> {
  const client = await WireClient.open(`${url}/${room}`, offer)
  client.send(encodeSyncStep1(Y.encodeStateVector(new Y.Doc())))
  await until(() => client.messages().some((m) => decodeYMessage(m).kind === 'sync-step-2'), 'the sync step 2')
  return client
}

/** The update messages a wire client received, as frames on the wire. */
function updateFrames(client: WireClient): { rsv1: boolean; wireBytes: number; update: Uint8Array }[] {
  const out: { rsv1: boolean; wireBytes: number; update: Uint8Array }[] = []
  const messages = client.messages()
  const binary = client.frames.filter((f) => f.opcode === 2)
  messages.forEach((message, i) => {
    const decoded = decodeYMessage(message)
    if (decoded.kind === 'sync-update') out.push({ rsv1: (binary[i] as { rsv1: boolean }).rsv1, wireBytes: (binary[i] as { payload: Buffer }).payload.length, update: decoded.update })
  })
  return out
}

/**
 * Applies to `doc` the update messages `client` received since the last call: each frame is
 * inflated and applied once (re-reading every frame at each look made a long catch-up quadratic).
 */
function follower(client: WireClient, doc: Y.Doc): () => void {
  let next = 0
  return () => {
    for (; next < client.frames.length; next++) {
      const frame = client.frames[next] as { opcode: number; rsv1: boolean; payload: Buffer }
      if (frame.opcode !== 2) continue
      const decoded = decodeYMessage(frame.rsv1 ? inflateMessage(frame.payload) : frame.payload)
      if (decoded.kind === 'sync-update') Y.applyUpdate(doc, decoded.update)
    }
  }
}

/** Text that compresses well and is far above the threshold, as document text is. */
function prose(n: number): string {
  const words = ['the', 'quick', 'brown', 'fox', 'jumps', 'over', 'a', 'lazy', 'dog', 'while', 'weft', 'syncs']
  let out = ''
  for (let i = 0; out.length < n; i++) out += words[(i * 7 + (i >> 3)) % words.length] + ' '
  return out
}

async function metric(server: InProcessServer, name: string): Promise<number> {
  return (await metricValue(server.http, name)) ?? NaN
}

describe('compression is off by default', () => {
  it('negotiates no extension and sends large updates plain', async () => {
    const server = await startServer()
    try {
      const reader = await wireMember(server.url, 'plain')
      assert.equal(reader.extensions, '', 'no Sec-WebSocket-Extensions answer')
      const writer = await wireMember(server.url, 'plain')
      const doc = new Y.Doc()
      doc.getText('t').insert(0, prose(20_000))
      writer.send(encodeSyncUpdate(Y.encodeStateAsUpdate(doc)))
      await until(() => updateFrames(reader).length > 0, 'the update')
      assert.equal(updateFrames(reader)[0]?.rsv1, false)
      assert.equal(await metric(server, 'weft_compressions_total'), 0)
      reader.close()
      writer.close()
    } finally {
      await server.stop()
    }
  })
})

describe('--compression with y-websocket clients', () => {
  let server: InProcessServer
  before(async () => {
    server = await startServer({ compression: true, compressionThresholdBytes: 1024, maxMessageBytes: 256 * 1024 })
  })
  after(async () => {
    await server.stop()
  })

  it('stock providers with and without the extension converge; one deflate serves every compressing reader', async () => {
    const room = 'mixed'
    const deflating = provider(server.url, room)
    const plain = plainProvider(server.url, room)
    const readers = await Promise.all([wireMember(server.url, room), wireMember(server.url, room), wireMember(server.url, room)])
    const plainReader = await wireMember(server.url, room, '')
    try {
      await Promise.all([synced(deflating), synced(plain)])
      assert.match(readers[0]?.extensions ?? '', /^permessage-deflate; server_no_context_takeover; client_no_context_takeover/)
      assert.equal(plainReader.extensions, '')
      const compressionsBefore = await metric(server, 'weft_compressions_total')
      const framesBefore = await metric(server, 'weft_compressed_frames_sent_total')
      const text = prose(30_000)
      // The stock ws client deflates what it sends too: the server inflates it.
      deflating.doc.getText('t').insert(0, text)
      await converged([deflating.doc, plain.doc], 'both providers to converge')
      assert.equal(plain.doc.getText('t').toString(), text)
      for (const reader of [...readers, plainReader]) await until(() => updateFrames(reader).length > 0, 'the broadcast at every reader')
      const plainFrame = updateFrames(plainReader)[0]
      assert.ok(plainFrame !== undefined && !plainFrame.rsv1, 'a reader that did not offer the extension gets the plain frame')
      for (const reader of readers) {
        const frame = updateFrames(reader)[0]
        assert.ok(frame !== undefined && frame.rsv1, 'compressed on the wire')
        assert.deepEqual(frame.update, plainFrame.update, 'the same message once inflated')
        assert.ok(frame.wireBytes * 3 < plainFrame.wireBytes, `compressed ${frame.wireBytes} bytes vs plain ${plainFrame.wireBytes}`)
      }
      // One broadcast; the writer is its only author and gets nothing back, so three compressed frames.
      assert.equal((await metric(server, 'weft_compressions_total')) - compressionsBefore, 1, 'deflated once')
      assert.equal((await metric(server, 'weft_compressed_frames_sent_total')) - framesBefore, 3, 'written compressed to the three wire readers')
      const input = await metric(server, 'weft_compression_input_bytes_total')
      const output = await metric(server, 'weft_compression_output_bytes_total')
      assert.ok(input > 30_000 && output > 0 && output < input / 3, `before ${input}, after ${output}`)

      // Typing: a one-character update is far below the threshold and goes out plain.
      const count = updateFrames(readers[0] as WireClient).length
      deflating.doc.getText('t').insert(0, 'x')
      await until(() => updateFrames(readers[0] as WireClient).length > count, 'the small update')
      assert.equal(updateFrames(readers[0] as WireClient)[count]?.rsv1, false, 'below the threshold: plain')
      await converged([deflating.doc, plain.doc], 'both providers to converge on the small edit')
    } finally {
      destroy(deflating, plain)
      for (const reader of [...readers, plainReader]) reader.close()
    }
  })

  it('joiners of a large document get the sync reply compressed', async () => {
    const room = 'joiners'
    const seed = provider(server.url, room)
    try {
      await synced(seed)
      const text = prose(50_000)
      seed.doc.getText('t').insert(0, text)
      await until(() => server.server.loadedRoom(room)?.doc.getText('t').length === text.length, 'the server to hold the text')
      const late = provider(server.url, room)
      const lateReader = await wireMember(server.url, room)
      try {
        await converged([seed.doc, late.doc], 'the late joiner to converge')
        const step2 = lateReader.frames.filter((f) => f.opcode === 2).find((_f, i) => decodeYMessage(lateReader.messages()[i] as Buffer).kind === 'sync-step-2')
        assert.ok(step2?.rsv1, 'the sync reply was compressed')
      } finally {
        destroy(late)
        lateReader.close()
      }
    } finally {
      destroy(seed)
    }
  })

  it('a reader that falls behind gets what the send queue held compressed, and ends with the same document', async () => {
    const room = 'behind'
    // A small budget, so the send queue holds updates once the loopback buffers are full.
    const small = await startServer({ compression: true, sendQueueBytes: 64 * 1024, slowConsumerGraceMs: 60_000 })
    const writer = provider(small.url, room)
    await synced(writer)
    const known = new Set(connectionsOf(small))
    const reader = await wireMember(small.url, room)
    try {
      const connection = [...connectionsOf(small)].find((c) => !known.has(c) && c.compressed)
      assert.ok(connection !== undefined, 'the wire reader negotiated compression')
      reader.pause()
      // Random letters compress less than prose (about 1.7x); written until weft holds data for the reader.
      let seed = 7
      const letters = (n: number): string => {
        let out = ''
        for (let i = 0; i < n; i++) {
          seed = (seed * 1103515245 + 12345) & 0x7fffffff
          out += String.fromCharCode(97 + ((seed >> 8) % 26))
        }
        return out
      }
      const text = writer.doc.getText('t')
      let held = 0
      for (let round = 0; round < 400 && held === 0; round++) {
        for (let i = 0; i < 20; i++) text.insert(0, letters(2048))
        await until(() => (small.server.loadedRoom(room)?.doc.getText('t').length ?? 0) === text.length, 'the server to apply the pastes')
        held = connection.heldBytes
      }
      assert.ok(held > 0, 'the send queue held updates for the reader')
      for (let i = 0; i < 50; i++) text.insert(0, letters(512))
      const expected = text.toString()
      await until(() => (small.server.loadedRoom(room)?.doc.getText('t').length ?? 0) === expected.length, 'the server to apply every paste')
      reader.resume()
      const doc = new Y.Doc()
      const follow = follower(reader, doc)
      await until(() => {
        follow()
        return doc.getText('t').length === expected.length
      }, 'the reader to catch up', 20_000)
      assert.equal(doc.getText('t').toString(), expected)
      const frames = updateFrames(reader)
      assert.ok(frames.some((f) => f.rsv1))
      for (const f of frames) assert.ok(f.rsv1 || f.wireBytes < 1024, `a ${f.wireBytes}-byte update above the threshold went out plain`)
    } finally {
      destroy(writer)
      reader.close()
      await small.stop()
    }
  })

  it('a compressed frame that inflates past --max-message-bytes closes with 1009; the room and process are unaffected', async () => {
    const room = 'bomb'
    const a = provider(server.url, room)
    const b = plainProvider(server.url, room)
    const attacker = await wireMember(server.url, room)
    try {
      await Promise.all([synced(a), synced(b)])
      // 16 MiB of zeros deflate to about 16 KiB: far below the 256 KiB limit on the wire.
      const bomb = deflateRawSync(Buffer.alloc(16 * 1024 * 1024))
      assert.ok(bomb.length < 64 * 1024)
      attacker.send(bomb, true)
      await attacker.waitClosed()
      assert.equal(attacker.closeCode, 1009)
      a.doc.getText('t').insert(0, 'still here')
      await converged([a.doc, b.doc], 'the others to keep editing')
      assert.equal(b.doc.getText('t').toString(), 'still here')
      assert.equal((await fetch(`${server.http}/health/live`)).status, 200)
    } finally {
      destroy(a, b)
      attacker.close()
    }
  })
})

describe('--compression with Hocuspocus providers', () => {
  it('stock Hocuspocus providers converge over compressed frames', async () => {
    const server = await startServer({ compression: true })
    const one = hocuspocus(server.url, 'hp')
    const two = hocuspocus(server.url, 'hp')
    try {
      await Promise.all([hocuspocusSynced(one), hocuspocusSynced(two)])
      const framesBefore = await metric(server, 'weft_compressed_frames_sent_total')
      const text = prose(20_000)
      one.doc.getText('t').insert(0, text)
      await converged([one.doc, two.doc], 'the Hocuspocus providers to converge')
      assert.equal(two.doc.getText('t').toString(), text)
      assert.ok((await metric(server, 'weft_compressed_frames_sent_total')) > framesBefore, 'the broadcast went out compressed')
    } finally {
      destroyHocuspocus(one, two)
      await server.stop()
    }
  })
})

describe('--compression before a Hocuspocus socket authenticates', () => {
  it('counts inflated bytes toward --preauth-bytes: a small compressed frame that inflates past it closes with 1009', async () => {
    const server = await startServer({ compression: true, authSecret: 'compression-preauth-secret-with-32-bytes!', preauthBytes: 65_536 })
    const client = await WireClient.open(`${server.url}/`)
    try {
      const message = encodeHocuspocusStateless('doc', 'a'.repeat(200_000))
      const deflated = deflateRawSync(message)
      assert.ok(deflated.length < 2048, 'far below --preauth-bytes on the wire')
      client.send(deflated, true)
      await client.waitClosed()
      assert.equal(client.closeCode, 1009)
      assert.equal(await metricValue(server.http, 'weft_preauth_closes_total', '{reason="bytes"}'), 1)
    } finally {
      client.close()
      await server.stop()
    }
  })
})

describe('compression settings', () => {
  it('reads --compression as a switch and checks the threshold', () => {
    assert.equal(parseSettings([], {}).compression, false)
    assert.equal(parseSettings(['--compression'], {}).compression, true)
    assert.equal(parseSettings(['--compression', '--port', '1'], {}).compression, true)
    assert.equal(parseSettings(['--compression=off'], { WEFT_COMPRESSION: 'on' }).compression, false)
    assert.equal(parseSettings([], { WEFT_COMPRESSION: 'on' }).compression, true)
    assert.equal(parseSettings([], {}).compressionThresholdBytes, 1024)
    assert.equal(parseSettings(['--compression-threshold-bytes', '0'], {}).compressionThresholdBytes, 0)
    assert.throws(() => parseSettings(['--compression', 'maybe'], {}), ConfigError)
    assert.throws(() => parseSettings([], { WEFT_COMPRESSION: 'yes please' }), ConfigError)
    assert.throws(() => parseSettings(['--compression-threshold-bytes', '-1'], {}), ConfigError)
    assert.throws(() => parseSettings(['--compression-threshold-bytes', 'big'], {}), ConfigError)
  })
})
