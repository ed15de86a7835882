import { randomBytes } from 'node:crypto'
import type { Grant } from './access.js'

/** How long a ticket may wait before it is redeemed (the contract: 30 s). */
export const TICKET_TTL_MS = 30_000

/** Where single-use tickets live: this process, or Redis so any instance can redeem them. */
export interface TicketBackend {
  issueTicket(ticket: string, payload: string, ttlMs: number): Promise<void>
  /** The payload, once; null when unknown, expired or already used. */
  redeemTicket(ticket: string): Promise<string | null>
}

export class MemoryTickets implements TicketBackend {
  private readonly tickets = new Map<string, { payload: string; expiresAt: number }>()

  async issueTicket(ticket: string, payload: string, ttlMs: number): Promise<void> {
    const now = Date.now()
    // Expired entries are dropped as new ones come in: the map never outgrows 30 s of issuance.
    for (const [key, entry] of this.tickets) if (entry.expiresAt <= now) this.tickets.delete(key)
    this.tickets.set(ticket, { payload, expiresAt: now + ttlMs })
  }

  async redeemTicket(ticket: string): Promise<string | null> {
    const entry = this.tickets.get(ticket)
    if (entry === undefined) return null
    this.tickets.delete(ticket)
    return entry.expiresAt > Date.now() ? entry.payload : null
  }
}

/**
 * Tickets let browsers, which cannot set headers on a WebSocket, connect with `?ticket=`: a
 * single-use stand-in for an access token, valid 30 s, with the same scope (never outliving it).
 */
export class Tickets {
  constructor(private readonly backend: TicketBackend) {}

  async issue(grant: Grant): Promise<{ ticket: string; expiresAt: number }> {
    const ticket = randomBytes(24).toString('base64url')
    const expiresAt = Math.min(Date.now() + TICKET_TTL_MS, grant.expiresAt ?? Infinity)
    await this.backend.issueTicket(ticket, JSON.stringify(grant), Math.max(1, expiresAt - Date.now()))
    return { ticket, expiresAt }
  }

  async redeem(ticket: string): Promise<Grant | null> {
    const payload = await this.backend.redeemTicket(ticket)
    if (payload === null) return null
    const grant = JSON.parse(payload) as Grant
    if (grant.expiresAt !== null && grant.expiresAt <= Date.now()) return null
    return grant
  }
}
