/**
 * The load generator's light WebSocket client (bench/light-socket.ts): scenario 13's time until
 * all synced is counted on it, so a message it reports before its last byte came, or a frame it
 * misreads, would make a server look faster than it is. Byte vectors for the frame reader, then a
 * real `ws` server on loopback.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { WebSocketServer, type WebSocket } from 'ws'
import { clientFrame, FrameReader, LightSocket, OPEN } from '../bench/light-socket.js'

/** A server frame: FIN unless `more`, the opcode, the length in 7, 16 or 64 bits, the payload. */
function serverFrame (opcode: number, payload: Uint8Array, more = false): Buffer {
  const length = payload.length
  const head = length < 126 ? Buffer.of(0, length) : length < 0x10000 ? Buffer.alloc(4) : Buffer.alloc(10)
  if (length >= 126 && length < 0x10000) {
    head[1] = 126
    head.writeUInt16BE(length, 2)
  } else if (length >= 0x10000) {
    head[1] = 127
    head.writeBigUInt64BE(BigInt(length), 2)
  }
  head[0] = (more ? 0 : 0x80) | opcode
  return Buffer.concat([head, payload])
}

function bytes (length: number, seed: number): Buffer {
  return Buffer.from(Array.from({ length }, (_, i) => (i * 31 + seed) & 0xff))
}

interface Read { messages: Array<{ data: Buffer, length: number }>, controls: Array<{ opcode: number, payload: Buffer }> }

function reader (wholeBytes: number, prefixBytes: number): { reader: FrameReader, read: Read } {
  const read: Read = { messages: [], controls: [] }
  return {
    read,
    reader: new FrameReader(wholeBytes, prefixBytes, {
      message: (data, length) => read.messages.push({ data, length }),
      control: (opcode, payload) => read.controls.push({ opcode, payload }),
    }),
  }
}

/** Feeds `stream` whole, then byte by byte, then in 7-byte pieces: the reader must not care where chunks end. */
function eachChunking (stream: Buffer, check: (read: Read) => void, wholeBytes = 100, prefixBytes = 10): void {
  for (const size of [stream.length, 1, 7]) {
    const { reader: r, read } = reader(wholeBytes, prefixBytes)
    for (let at = 0; at < stream.length; at += size) r.push(stream.subarray(at, at + size))
    check(read)
  }
}

test('messages up to wholeBytes come whole, longer ones as their first bytes with their length (7-, 16- and 64-bit lengths)', () => {
  const small = bytes(100, 1)
  const medium = bytes(300, 2)
  const large = bytes(70_000, 3)
  eachChunking(Buffer.concat([serverFrame(2, small), serverFrame(2, medium), serverFrame(2, large), serverFrame(2, bytes(3, 4))]), (read) => {
    assert.equal(read.messages.length, 4)
    assert.deepEqual(read.messages[0], { data: small, length: 100 })
    assert.deepEqual(read.messages[1], { data: medium.subarray(0, 10), length: 300 })
    assert.deepEqual(read.messages[2], { data: large.subarray(0, 10), length: 70_000 })
    assert.deepEqual(read.messages[3], { data: bytes(3, 4), length: 3 })
  })
  // Not a byte early: the long message is reported with its last byte, not before.
  const { reader: r, read } = reader(100, 10)
  const frame = serverFrame(2, large)
  r.push(frame.subarray(0, frame.length - 1))
  assert.equal(read.messages.length, 0)
  r.push(frame.subarray(frame.length - 1))
  assert.equal(read.messages.length, 1)
})

test('a fragmented message is one message, a ping between its fragments is read apart, and a long one keeps its prefix', () => {
  const ping = Buffer.from('are you there')
  const stream = Buffer.concat([
    serverFrame(2, bytes(60, 5), true),
    serverFrame(9, ping),
    serverFrame(0, bytes(30, 6), true),
    serverFrame(0, bytes(50, 7)),
    serverFrame(2, bytes(40, 8), true),
    serverFrame(0, bytes(40, 9)),
    // A first fragment may be empty.
    serverFrame(2, bytes(0, 0), true),
    serverFrame(0, bytes(5, 10)),
  ])
  eachChunking(stream, (read) => {
    assert.deepEqual(read.controls, [{ opcode: 9, payload: ping }])
    assert.equal(read.messages.length, 3)
    assert.deepEqual(read.messages[2], { data: bytes(5, 10), length: 5 })
    // 140 bytes in three frames, past wholeBytes only in its last: cut to the prefix at the end.
    assert.deepEqual(read.messages[0], { data: bytes(60, 5).subarray(0, 10), length: 140 })
    assert.deepEqual(read.messages[1], { data: Buffer.concat([bytes(40, 8), bytes(40, 9)]), length: 80 })
  })
})

test('frames no server may send are refused', () => {
  const masked = Buffer.of(0x82, 0x81, 1, 2, 3, 4, 5)
  const reserved = Buffer.of(0xc2, 0x01, 0)
  const longPing = serverFrame(9, bytes(126, 0))
  const orphan = serverFrame(0, bytes(3, 0))
  const interleaved = Buffer.concat([serverFrame(2, bytes(3, 0), true), serverFrame(2, bytes(3, 0))])
  for (const frame of [masked, reserved, longPing, orphan, interleaved]) {
    assert.throws(() => reader(100, 10).reader.push(frame))
  }
})

test('a client frame is masked, and unmasked it is the payload', () => {
  for (const length of [0, 5, 125, 126, 65_535, 65_536]) {
    const payload = bytes(length, length)
    const frame = clientFrame(2, payload)
    assert.equal(frame[0], 0x82)
    assert.equal((frame[1] as number) & 0x80, 0x80)
    const lengthBytes = length < 126 ? 0 : length < 0x10000 ? 2 : 8
    const maskAt = 2 + lengthBytes
    const unmasked = frame.subarray(maskAt + 4).map((b, i) => b ^ (frame[maskAt + (i & 3)] as number))
    assert.deepEqual(Buffer.from(unmasked), payload)
  }
})

test('against a ws server: handshake, a long message counted to its last byte, sends, pings and the closing handshake', async (t) => {
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 })
  await once(server, 'listening')
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())))
  const long = bytes(3 * 1024 * 1024, 11)
  const connected = once(server, 'connection') as Promise<[WebSocket, { url?: string }]>
  const client = new LightSocket(`ws://127.0.0.1:${(server.address() as AddressInfo).port}/some%20room?x=1`, { wholeBytes: 1 << 20, prefixBytes: 16 })
  const errors: Error[] = []
  client.on('error', (error) => errors.push(error))
  await new Promise<void>((resolve) => client.on('open', resolve))
  assert.equal(client.readyState, OPEN)
  const [peer, request] = await connected
  assert.equal(request.url, '/some%20room?x=1')

  const messages: Array<{ data: Buffer, length: number }> = []
  const two = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${messages.length} of 2 messages after 10 s`)), 10_000)
    client.on('message', (data, length) => {
      messages.push({ data, length })
      if (messages.length === 2) {
        clearTimeout(timer)
        resolve()
      }
    })
  })
  const received = once(peer, 'message') as Promise<[Buffer, boolean]>
  client.send(Uint8Array.of(0, 0, 1, 0))
  const [data, binary] = await received
  assert.deepEqual(data, Buffer.of(0, 0, 1, 0))
  assert.equal(binary, true)

  peer.send(long)
  peer.send(Buffer.from('after'))
  const ponged = once(peer, 'pong') as Promise<[Buffer]>
  peer.ping(Buffer.from('p1'))
  assert.deepEqual((await ponged)[0], Buffer.from('p1'))
  await two
  assert.deepEqual(messages, [{ data: long.subarray(0, 16), length: long.length }, { data: Buffer.from('after'), length: 5 }])

  const peerClosed = once(peer, 'close') as Promise<[number, Buffer]>
  const closed = new Promise<void>((resolve) => client.once('close', resolve))
  client.close()
  const [code] = await peerClosed
  assert.equal(code, 1000)
  await closed
  assert.deepEqual(errors, [])
})

test('against a ws server: the server\'s close ends the socket, and a refused upgrade is an error then a close', async (t) => {
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0, verifyClient: (info: { req: { url?: string } }) => info.req.url !== '/refused' })
  await once(server, 'listening')
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())))
  const port = (server.address() as AddressInfo).port
  server.on('connection', (peer) => peer.close(4000, 'bye'))
  const client = new LightSocket(`ws://127.0.0.1:${port}/room`, { wholeBytes: 1024, prefixBytes: 16 })
  client.on('error', (error) => assert.fail(error))
  await new Promise<void>((resolve) => client.on('close', resolve))

  const refused = new LightSocket(`ws://127.0.0.1:${port}/refused`, { wholeBytes: 1024, prefixBytes: 16 })
  const errors: Error[] = []
  refused.on('error', (error) => errors.push(error))
  let opened = false
  refused.on('open', () => { opened = true })
  await new Promise<void>((resolve) => refused.on('close', resolve))
  assert.equal(opened, false)
  assert.match(errors[0]?.message ?? '', /answered the upgrade with HTTP\/1\.1 401/)
})
