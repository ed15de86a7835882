/**
 * The floor: a `ws` server that forwards each frame to the other sockets of its room (the URL
 * path) and does no CRDT work at all. No Yjs server can deliver faster than this.
 *
 *   node dist/bench/relay-server.js --port P [--deflate]
 *
 * `--deflate`: ws's own permessage-deflate (its defaults: context takeover, threshold 1024), which
 * compresses per socket: the comparison for weft's --compression (bench/compression.ts).
 */
import { createServer } from 'node:http'
import { WebSocketServer, type WebSocket } from 'ws'

const portIndex = process.argv.indexOf('--port')
const port = Number(portIndex === -1 ? '0' : process.argv[portIndex + 1])
const rooms = new Map<string, Set<WebSocket>>()

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
