import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { verifySignatureHeader, type WebhookEvent } from '../../server/webhooks/index.js'

/** What the receiver does with one request: answer 2xx, answer 500, reset the connection, or never answer. */
export type ReceiverAnswer = 'ok' | 'error' | 'reset' | 'hang'

/** One request the receiver took. */
export interface ReceivedDelivery {
  path: string
  deliveryId: string
  timestamp: number
  signatureValid: boolean
  event: WebhookEvent
  answer: ReceiverAnswer
}

/**
 * A real webhook receiver on a loopback port (node:http, port 0). `behave` decides each answer.
 * `accepted` holds the deliveries it answered 2xx, in arrival order, duplicates included.
 */
export interface WebhookReceiver {
  /** http://127.0.0.1:PORT */
  base: string
  received: ReceivedDelivery[]
  accepted: ReceivedDelivery[]
  behave: (delivery: ReceivedDelivery) => ReceiverAnswer
  /** The accepted deliveries without repeats of a delivery id (what an idempotent receiver keeps). */
  unique(path?: string): ReceivedDelivery[]
  close(): Promise<void>
}

export async function startWebhookReceiver(secret: string): Promise<WebhookReceiver> {
  const sockets = new Set<Socket>()
  const receiver: WebhookReceiver = {
    base: '',
    received: [],
    accepted: [],
    behave: () => 'ok',
    unique(path?: string) {
      const seen = new Set<string>()
      return this.accepted.filter((d) => (path === undefined || d.path === path) && !seen.has(d.deliveryId) && (seen.add(d.deliveryId), true))
    },
    close: () => Promise.resolve(),
  }
  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8')
      const delivery: ReceivedDelivery = {
        path: req.url ?? '/',
        deliveryId: String(req.headers['weft-delivery']),
        timestamp: Number(req.headers['weft-timestamp']),
        signatureValid: verifySignatureHeader(secret, String(req.headers['weft-signature']), body),
        event: JSON.parse(body) as WebhookEvent,
        answer: 'ok',
      }
      delivery.answer = receiver.behave(delivery)
      receiver.received.push(delivery)
      switch (delivery.answer) {
        case 'ok':
          receiver.accepted.push(delivery)
          res.writeHead(204).end()
          return
        case 'error':
          res.writeHead(500).end()
          return
        case 'reset':
          req.socket.destroy()
          return
        case 'hang':
          return
      }
    })
  }
  const server = createServer(handle)
  server.on('connection', (socket: Socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  receiver.base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  receiver.close = async () => {
    const closed = new Promise<void>((resolve) => server.close(() => resolve()))
    for (const socket of sockets) socket.destroy()
    await closed
  }
  return receiver
}
