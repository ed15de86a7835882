import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client'

/**
 * The server's Prometheus metrics. Each server has its own registry, so several servers in one
 * process (tests, embedding) never share counters.
 */
export class ServerMetrics {
  readonly registry = new Registry()
  readonly connections = new Gauge({ name: 'weft_connections', help: 'Open WebSocket connections', registers: [this.registry] })
  readonly upgrades = new Counter({
    name: 'weft_upgrades_total',
    help: 'WebSocket upgrade requests by result',
    labelNames: ['result'] as const,
    registers: [this.registry],
  })
  readonly closes = new Counter({
    name: 'weft_closes_total',
    help: 'Closed connections by close code',
    labelNames: ['code'] as const,
    registers: [this.registry],
  })
  readonly heartbeatTerminations = new Counter({
    name: 'weft_heartbeat_terminations_total',
    help: 'Connections terminated for showing no sign of life',
    registers: [this.registry],
  })
  readonly roomsLoaded = new Gauge({ name: 'weft_rooms_loaded', help: 'Rooms loaded in memory', registers: [this.registry] })
  readonly storageUp = new Gauge({ name: 'weft_storage_up', help: '1 when storage writes succeed, 0 while they fail', registers: [this.registry] })
  readonly malformedMessages = new Counter({
    name: 'weft_malformed_messages_total',
    help: 'Connections closed for a malformed frame or payload',
    labelNames: ['code'] as const,
    registers: [this.registry],
  })

  constructor() {
    // Event-loop lag, heap and CPU come from prom-client's default collectors.
    collectDefaultMetrics({ register: this.registry, prefix: 'weft_' })
  }
}
