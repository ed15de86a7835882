/**
 * The benchmark's rounds (BENCH_ROUNDS): a target's column is each metric's median over its
 * rounds, the table shows their range, and the ratios weft/peer pair the rounds that ran side by
 * side. Issue 19 judges latency on such medians, so a wrong median would mislead every decision.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { summariseRounds, toMarkdown, type Results } from '../bench/report.js'

test('a column is the median of the rounds that did not fail, with their count', () => {
  const summary = summariseRounds([
    { p99Ms: 9, sent: 200, note: 'first' },
    { error: 'connect timed out' },
    { p99Ms: 7, sent: 200, note: 'second' },
    { p99Ms: 30, sent: 200, note: 'third' },
    { p99Ms: 8, sent: 200, note: 'fourth' },
  ])
  // 7, 8, 9, 30: the mean of the middle two; one bad round does not move it the way a mean would.
  assert.equal(summary.p99Ms, 8.5)
  assert.equal(summary.sent, 200)
  assert.equal(summary.note, 'first')
  assert.equal(summary.rounds, 4)
  assert.equal(summary.failedRounds, 1)
})

test('a target whose every round failed keeps its error', () => {
  assert.deepEqual(summariseRounds([{ error: 'a' }, { error: 'b' }]), { error: 'b' })
})

test('the report prints medians with their range and the per-round ratio range', () => {
  const rounds = {
    weft: [{ p99Ms: 10 }, { p99Ms: 12 }, { p99Ms: 11 }],
    'ws-relay': [{ p99Ms: 10 }, { p99Ms: 8 }, { p99Ms: 11 }],
  }
  const results: Results = {
    machine: { cpuModel: 'test', cores: 2, node: 'v20', os: 'Linux', date: '2026-12-04' },
    command: 'npm run bench -- 1',
    config: {},
    scenarios: [{
      id: 1,
      name: 'big-room',
      title: 'One big room',
      targets: { weft: summariseRounds(rounds.weft), 'ws-relay': summariseRounds(rounds['ws-relay']) },
      rounds,
    }],
  }
  const markdown = toMarkdown(results)
  assert.match(markdown, /\| p99Ms \| 11 \(10–12\) \| 10 \(8–11\) \|/)
  // Medians 11/10; per round 10/10, 12/8, 11/11.
  assert.match(markdown, /\| big-room \| p99 latency \(lower is better for weft\) \| ws-relay \| 11 \| 10 \| 1\.10 \| 1\.00–1\.50 \|/)
})
