/**
 * The parts of issue 17's metrics that need no server: message-type classification (byte
 * vectors from weft's own codecs), the fixed-series histogram as Prometheus renders it, the
 * 5-minute SLO window with a controlled clock, and the storage writer's metric events on a
 * memory store.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { DocumentWriter, MemoryStore } from '../persistence/index.js'
import {
  encodeAwareness,
  encodeHocuspocusAwareness,
  encodeHocuspocusClientAuthToken,
  encodeHocuspocusClose,
  encodeHocuspocusPing,
  encodeHocuspocusStateless,
  encodeHocuspocusSyncStep1,
  encodeHocuspocusSyncStatus,
  encodeHocuspocusSyncUpdate,
  encodeQueryAwareness,
  encodeSyncStep1,
  encodeSyncStep2,
  encodeSyncUpdate,
} from '../protocol/index.js'
import { FastHistogram } from '../server/fast-histogram.js'
import { MESSAGE_TYPES, hocuspocusMessageType, yWebsocketMessageType } from '../server/metrics.js'
import { SloWindow, bucketQuantile } from '../server/slo-window.js'
import { textUpdate } from './harness/clients.js'
import { until } from './harness/wait.js'

const typeOf = (index: number): string => MESSAGE_TYPES[index] as string

describe('message types for weft_messages_total', () => {
  it('classifies y-websocket frames', () => {
    const update = textUpdate('x')
    assert.equal(typeOf(yWebsocketMessageType(encodeSyncStep1(Uint8Array.of(0)))), 'sync_step1')
    assert.equal(typeOf(yWebsocketMessageType(encodeSyncStep2(update))), 'sync_step2')
    assert.equal(typeOf(yWebsocketMessageType(encodeSyncUpdate(update))), 'update')
    assert.equal(typeOf(yWebsocketMessageType(encodeAwareness(Uint8Array.of(0)))), 'awareness')
    assert.equal(typeOf(yWebsocketMessageType(encodeQueryAwareness())), 'query_awareness')
    assert.equal(typeOf(yWebsocketMessageType(Uint8Array.of(9))), 'other')
    assert.equal(typeOf(yWebsocketMessageType(new Uint8Array())), 'other')
    assert.equal(typeOf(yWebsocketMessageType(Uint8Array.of(0x80))), 'other', 'a varuint cut short')
  })

  it('classifies Hocuspocus frames past the document name, whatever its length', () => {
    const long = 'd'.repeat(300) // a two-byte varuint length
    for (const name of ['doc', long]) {
      assert.equal(typeOf(hocuspocusMessageType(encodeHocuspocusSyncStep1(name, Uint8Array.of(0)))), 'sync_step1')
      assert.equal(typeOf(hocuspocusMessageType(encodeHocuspocusSyncUpdate(name, textUpdate('y')))), 'update')
      assert.equal(typeOf(hocuspocusMessageType(encodeHocuspocusAwareness(name, Uint8Array.of(0)))), 'awareness')
      assert.equal(typeOf(hocuspocusMessageType(encodeHocuspocusClientAuthToken(name, 'token'))), 'auth')
      assert.equal(typeOf(hocuspocusMessageType(encodeHocuspocusStateless(name, 'hi'))), 'stateless')
      assert.equal(typeOf(hocuspocusMessageType(encodeHocuspocusSyncStatus(name, true))), 'sync_status')
      assert.equal(typeOf(hocuspocusMessageType(encodeHocuspocusClose(name, 'bye'))), 'close')
    }
    assert.equal(typeOf(hocuspocusMessageType(encodeHocuspocusPing())), 'ping')
    assert.equal(typeOf(hocuspocusMessageType(Uint8Array.of(5, 0x61))), 'other', 'a name longer than the frame')
  })
})

describe('FastHistogram', () => {
  it('renders cumulative buckets, sum and count for each series as prom-client does', async () => {
    const registry = new Registry()
    const histogram = new FastHistogram('test_seconds', 'a test', [0.1, 1], registry)
    const a = histogram.series({ kind: 'a' })
    histogram.series({ kind: 'b' })
    a.observe(0.05)
    a.observe(0.5)
    a.observe(5)
    const text = await registry.metrics()
    assert.match(text, /^# TYPE test_seconds histogram$/m)
    assert.match(text, /^test_seconds_bucket\{le="0.1",kind="a"\} 1$/m)
    assert.match(text, /^test_seconds_bucket\{le="1",kind="a"\} 2$/m)
    assert.match(text, /^test_seconds_bucket\{le="\+Inf",kind="a"\} 3$/m)
    assert.match(text, /^test_seconds_sum\{kind="a"\} 5.55$/m)
    assert.match(text, /^test_seconds_count\{kind="a"\} 3$/m)
    assert.match(text, /^test_seconds_count\{kind="b"\} 0$/m, 'a series without samples is there, at zero')
  })
})

describe('the 5-minute SLO window', () => {
  it('estimates quantiles like histogram_quantile', () => {
    assert.equal(bucketQuantile([1, 2], [0, 0, 0], 0.99), null)
    assert.equal(bucketQuantile([1, 2], [10, 0, 0], 0.5), 0.5)
    assert.equal(bucketQuantile([1, 2], [0, 10, 0], 0.5), 1.5)
    assert.equal(bucketQuantile([1, 2], [0, 0, 10], 0.99), 2, 'the +Inf bucket answers the highest bound')
  })

  it('counts success, disconnects and delivery of the last five minutes only', () => {
    let now = 0
    const window = new SloWindow(() => now)
    now = 1_000
    for (let i = 0; i < 999; i++) window.upgrade(true)
    window.upgrade(false)
    window.connections(100)
    window.close(1006)
    window.close(1000)
    window.delivery(0.004)
    let figures = window.figures()
    assert.equal(figures.connectionSuccess, 0.999)
    assert.equal(figures.upgrades, 1000)
    assert.equal(figures.disconnects, 1, '1000 is a normal close, 1006 is not')
    assert.deepEqual(figures.closesByCode, { '1000': 1, '1006': 1 })
    assert.ok(figures.deliveryP99Seconds !== null && figures.deliveryP99Seconds > 0.0025 && figures.deliveryP99Seconds <= 0.005)
    assert.equal(figures.series.at(-1)?.connections, 100)
    // 1 disconnect among 100 connections over 1 s (the window is as old as the server): scaled to an hour.
    assert.equal(figures.disconnectsPerHour, (1 / 100) * 3600)

    now = 200_000
    window.connections(50)
    window.delivery(0.3)
    figures = window.figures()
    assert.equal(figures.upgrades, 1000, 'still in the window')
    assert.equal(figures.deliverySamples, 2)

    now = 310_000 // the first slot (0-5 s) is now older than 5 minutes
    figures = window.figures()
    assert.equal(figures.upgrades, 0)
    assert.equal(figures.connectionSuccess, null)
    assert.equal(figures.deliverySamples, 1)
    assert.ok(figures.deliveryP99Seconds !== null && figures.deliveryP99Seconds > 0.2, 'only the slow sample is left')
    assert.equal(figures.windowSeconds, 300)
    assert.deepEqual(figures.closesByCode, {})
  })
})

describe('storage writer metric events', () => {
  it('reports each stored batch with its size and its oldest wait, and each compaction', async () => {
    const batches: Array<{ updates: number; waitMs: number }> = []
    let compactions = 0
    const writer = new DocumentWriter(new MemoryStore(), {
      persistWindowMs: 20,
      compactEntries: 2,
      logger: pino({ level: 'silent' }),
      onBatchStored: (updates, waitMs) => batches.push({ updates, waitMs }),
      onCompacted: () => compactions++,
    })
    try {
      await Promise.all([writer.write('room', textUpdate('a')), writer.write('room', textUpdate('b'))])
      assert.equal(batches.length, 1)
      assert.equal(batches[0]?.updates, 2)
      assert.ok((batches[0]?.waitMs ?? 0) >= 0)
      await writer.write('room', textUpdate('c'))
      await writer.write('room', textUpdate('d'))
      await until(() => compactions >= 1, 'a compaction once the log has more than 2 entries')
      assert.equal(batches.length, 3)
    } finally {
      await writer.close({ deadlineMs: 5_000 })
    }
  })
})
