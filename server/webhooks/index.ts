export { WebhookOutbox, type DeadLetter, type WebhookSettings, type WebhookStats } from './outbox.js'
export { LevelOutboxStore, MemoryOutboxStore, type OutboxStore } from './outbox-store.js'
export { signatureHeader, verifySignatureHeader, SIGNATURE_TOLERANCE_SECONDS } from './signature.js'
export type { WebhookEvent, WebhookEventType } from './events.js'
