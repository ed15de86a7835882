/**
 * @hocuspocus/server as its documentation sets it up: `new Server({...}).listen()`, on loopback,
 * quiet. Storage, when asked for, is the official Database extension over LevelDB (the `level`
 * package): Hocuspocus stores the whole document state on its debounced `onStoreDocument`.
 *
 * With `--redis redis://HOST:PORT` it joins a cluster through the official Redis extension
 * (`@hocuspocus/extension-redis` 3.x, `identifier` from `--instance-id`).
 *
 *   node dist/bench/peers/hocuspocus-server.js --port P --data DIR|memory [--redis URL --instance-id ID]
 */
import { Database } from '@hocuspocus/extension-database'
import { Redis } from '@hocuspocus/extension-redis'
import { Server, type Extension } from '@hocuspocus/server'
import { Level } from 'level'

function flag (name: string, fallback: string): string {
  const i = process.argv.indexOf(name)
  return i === -1 ? fallback : (process.argv[i + 1] ?? fallback)
}

const port = Number(flag('--port', '1234'))
const data = flag('--data', 'memory')
const extensions: Extension[] = []

if (data !== 'memory') {
  const db = new Level<string, Uint8Array>(data, { valueEncoding: 'view' })
  await db.open()
  extensions.push(new Database({
    fetch: async ({ documentName }) => (await db.get(documentName)) ?? null,
    store: async ({ documentName, state }) => {
      await db.put(documentName, state)
    },
  }))
}

const redisUrl = flag('--redis', '')
if (redisUrl !== '') {
  const url = new URL(redisUrl)
  extensions.push(new Redis({ host: url.hostname, port: Number(url.port || '6379'), identifier: flag('--instance-id', `hocuspocus-${port}`) }))
}

const server = new Server({ port, address: '127.0.0.1', quiet: true, extensions })
await server.listen()
process.stdout.write(JSON.stringify({ msg: 'listening', port }) + '\n')
