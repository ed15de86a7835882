/**
 * The floor: a `ws` server that forwards each frame to the other sockets of its room (the URL
 * path) and does no CRDT work at all. No Yjs server can deliver faster than this.
 *
 *   node dist/bench/relay-server.js --port P [--deflate] [--work-us N]
 *
 * `--deflate`: ws's own permessage-deflate (its defaults: context takeover, threshold 1024), which
 * compresses per socket: the comparison for weft's --compression (bench/compression.ts).
 *
 * `--sync-reply ROOM=FILE`: the floor of a join storm (scenario 13). The relay then answers every
 * y-websocket sync step 1 itself, in ROOM with FILE (a document's state, framed once as step 2 and
 * the same buffer written to every joiner), elsewhere with an empty step 2, and forwards no step 1.
 * No server can hand a crowd a document with less work than writing these bytes.
 *
 * `--work-us N`: spins N microseconds on each message before forwarding it, standing for the work
 * a Yjs server does per update before its recipients hear of it (decode, apply, encode, store).
 * The floor with a price: how far a server's p99 moves from the relay's for N µs of work per
 * update alone, on this machine and load (bench/README.md, "Where the latency goal stands").
 */
import { readFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { WebSocketServer, type WebSocket } from 'ws'
import { encodeSyncStep2 } from '../protocol/index.js'

const portIndex = process.argv.indexOf('--port')
const port = Number(portIndex === -1 ? '0' : process.argv[portIndex + 1])
const rooms = new Map<string, Set<WebSocket>>()

const replyIndex = process.argv.indexOf('--sync-reply')
const replyOption = replyIndex === -1 ? null : (process.argv[replyIndex + 1] as string)
const replyRoom = replyOption === null ? null : '/' + encodeURIComponent(replyOption.slice(0, replyOption.indexOf('=')))
const replyFrame = replyOption === null ? null : encodeSyncStep2(readFileSync(replyOption.slice(replyOption.indexOf('=') + 1)))
const EMPTY_REPLY = encodeSyncStep2(new Uint8Array([0, 0]))

const workIndex = process.argv.indexOf('--work-us')
const workMs = workIndex === -1 ? 0 : Number(process.argv[workIndex + 1]) / 1000
if (!(workMs >= 0)) throw new Error('--work-us: a number of microseconds')

/** Busy for `workMs` (a stand-in for per-update work: it holds the event loop as that work would). */
function work (): void {
  const until = performance.now() + workMs
  while (performance.now() < until);
}

/** A y-websocket sync step 1: message type 0 (sync), then 0 (step 1). */
const isSyncStep1 = (data: Buffer): boolean => data.length >= 2 && data[0] === 0 && data[1] === 0

const http = createServer((_req, res) => res.end('relay'))
const wss = new WebSocketServer({ server: http, perMessageDeflate: process.argv.includes('--deflate'), maxPayload: 512 * 1024 * 1024 })

wss.on('connection', (socket, req) => {
  const room = (req.url ?? '/').split('?')[0] as string
  let members = rooms.get(room)
  if (members === undefined) {
    members = new Set()
    rooms.set(room, members)
  }
  const peers = members
  peers.add(socket)
  socket.on('message', (data: Buffer, isBinary: boolean) => {
    if (replyFrame !== null && isSyncStep1(data)) {
      socket.send(room === replyRoom ? replyFrame : EMPTY_REPLY, { binary: true })
      return
    }
    if (workMs > 0) work()
    for (const peer of peers) if (peer !== socket) peer.send(data, { binary: isBinary })
  })
  socket.on('error', () => {})
  socket.on('close', () => {
    peers.delete(socket)
    if (peers.size === 0) rooms.delete(room)
  })
})

http.listen(port, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ msg: 'listening', port }) + '\n')
})
process.on('SIGTERM', () => process.exit(0))
process.on('SIGINT', () => process.exit(0))
