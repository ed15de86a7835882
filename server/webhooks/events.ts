import { randomBytes } from 'node:crypto'
import type { UpdateOrigin } from '../hooks.js'

/** What a webhook tells (README, Webhooks). */
export type WebhookEventType = 'document.changed' | 'document.deleted' | 'version.created'

export interface DocumentChangedData {
  room: string
  /** The room's Yjs state vector when the event was made, base64 (null when it could not be read). */
  stateVector: string | null
  firstChangeAt: string
  lastChangeAt: string
  /** Who changed the document in this batch (token `sub`); empty in open mode. */
  subjects: string[]
}

export interface DocumentDeletedData {
  room: string
  subject: string | null
}

export interface VersionCreatedData {
  room: string
  version: { id: string; name: string; createdAt: string }
  subject: string | null
}

/** The JSON body of one delivery. `sequence` grows by one per event this instance records. */
export interface WebhookEvent {
  id: string
  type: WebhookEventType
  time: string
  sequence: number
  data: DocumentChangedData | DocumentDeletedData | VersionCreatedData
}

export function newEventId(): string {
  return `evt_${randomBytes(12).toString('base64url')}`
}

export function newDeliveryId(): string {
  return `dlv_${randomBytes(12).toString('base64url')}`
}

/** The subject behind an update, or undefined when it is not recorded here (storage, the cluster). */
export function changeSubject(origin: UpdateOrigin): string | null | undefined {
  switch (origin.kind) {
    case 'client':
    case 'http':
      return origin.subject
    case 'storage':
    case 'cluster':
      return undefined
  }
}
