/**
 * The benchmark's relay (bench/relay-server.ts) with `--work-us`: the floor with a price per
 * update, against which issue 19's latency goal is weighed (bench/README.md, "Where the latency
 * goal stands"). A relay that skipped the work would put that price at nothing.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { WebSocket } from 'ws'
import { exited, freePort, stopProcess, waitForPort } from '../bench/processes.js'

const RELAY = fileURLToPath(new URL('../bench/relay-server.js', import.meta.url))

async function startRelay (args: string[]): Promise<{ port: number, stop: () => Promise<boolean> }> {
  const port = await freePort()
  const child = spawn(process.execPath, [RELAY, '--port', String(port), ...args], { stdio: 'ignore' })
  try {
    await waitForPort(port, child, 10_000)
  } catch (err) {
    await stopProcess(child, 1_000)
    throw err
  }
  return { port, stop: () => stopProcess(child, 2_000) }
}

async function open (port: number, room: string): Promise<WebSocket> {
  const socket = new WebSocket(`ws://127.0.0.1:${port}/${room}`)
  await once(socket, 'open')
  return socket
}

test('with --work-us the relay holds every message that long before forwarding it', async (t) => {
  const relay = await startRelay(['--work-us', '40000'])
  t.after(() => relay.stop())
  const writer = await open(relay.port, 'room')
  const reader = await open(relay.port, 'room')
  t.after(() => {
    writer.terminate()
    reader.terminate()
  })
  const arrivals: Array<{ data: string, at: number }> = []
  const both = new Promise<void>((resolve) => {
    reader.on('message', (data: Buffer) => {
      arrivals.push({ data: data.toString(), at: performance.now() })
      if (arrivals.length === 2) resolve()
    })
  })
  const sentAt = performance.now()
  writer.send(Buffer.from('one'))
  writer.send(Buffer.from('two'))
  await both
  assert.deepEqual(arrivals.map((a) => a.data), ['one', 'two'])
  // Each message pays on its own: the second leaves 40 ms after the first did.
  assert.ok((arrivals[0]?.at ?? 0) - sentAt >= 40, `first forwarded after ${(arrivals[0]?.at ?? 0) - sentAt} ms`)
  assert.ok((arrivals[1]?.at ?? 0) - sentAt >= 80, `second forwarded after ${(arrivals[1]?.at ?? 0) - sentAt} ms`)
})

test('a --work-us that is not a number of microseconds stops the relay at start', async () => {
  const child = spawn(process.execPath, [RELAY, '--port', String(await freePort()), '--work-us', '-5'], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
  const code = await exited(child)
  assert.notEqual(code, 0)
  assert.match(stderr, /--work-us/)
})
