import assert from 'node:assert/strict'
import { SIGNATURE_TOLERANCE_SECONDS } from '../../server/webhooks/index.js'
import type { WebhookReceiver } from './webhook-receiver.js'

/**
 * What every webhook test asserts of what one instance sent to `path`: each accepted delivery is
 * signed and fresh; after dedupe by delivery id, the events' sequence numbers are 1..n with none
 * missing (no event lost) and none twice; per room, events arrived in the order they were recorded.
 */
export function assertDeliveryInvariants(receiver: WebhookReceiver, path: string): void {
  const accepted = receiver.accepted.filter((d) => d.path === path)
  for (const d of accepted) {
    assert.ok(d.signatureValid, `delivery ${d.deliveryId} is signed`)
    assert.ok(Math.abs(Date.now() / 1000 - d.timestamp) < SIGNATURE_TOLERANCE_SECONDS)
  }
  const unique = receiver.unique(path)
  const sequences = unique.map((d) => d.event.sequence).sort((a, b) => a - b)
  assert.deepEqual(sequences, Array.from({ length: sequences.length }, (_, i) => i + 1), `${path}: sequences 1..n, none lost or twice`)
  assert.equal(new Set(unique.map((d) => d.event.id)).size, unique.length, 'one event id per delivery id')
  const lastByRoom = new Map<string, number>()
  for (const d of unique) {
    const room = (d.event.data as { room: string }).room
    assert.ok(d.event.sequence > (lastByRoom.get(room) ?? 0), `${path} ${room}: event ${d.event.sequence} arrived after ${lastByRoom.get(room)}`)
    lastByRoom.set(room, d.event.sequence)
  }
}
