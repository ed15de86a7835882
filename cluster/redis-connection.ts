import { Redis, type Command } from 'ioredis'

/** Told each command's name and how long it took to be answered or to fail, in seconds. */
export type CommandObserver = (command: string, seconds: number) => void

/**
 * One ioredis connection with the settings the relay and the shared state both rely on: nothing
 * queues inside ioredis (no offline queue, no resend, no automatic resubscribe), a command fails
 * after one try instead of waiting for a reconnect, and no command may hang forever. Reconnects
 * back off exponentially with jitter, up to `maxRetryDelayMs`. Every connection error goes to
 * `onError` (an 'error' listener is always attached, so ioredis never reports an unhandled one).
 */
export function openRedisConnection(redisUrl: string, connectionName: string, maxRetryDelayMs: number, onError: (err: unknown) => void, onCommand?: CommandObserver): Redis {
  const connection = new Redis(redisUrl, {
    connectionName,
    enableOfflineQueue: false,
    autoResendUnfulfilledCommands: false,
    autoResubscribe: false,
    maxRetriesPerRequest: 1,
    connectTimeout: 2000,
    // No command may hang a reconcile, heal or compaction (each runs one at a time) forever.
    commandTimeout: 3000,
    retryStrategy: (times) => {
      const base = Math.min(maxRetryDelayMs, 50 * 2 ** Math.min(times, 16))
      return Math.round(base / 2 + (Math.random() * base) / 2)
    },
  })
  connection.on('error', onError)
  if (onCommand !== undefined) timeCommands(connection, onCommand)
  return connection
}

/** Every command of `connection` goes through sendCommand (pipelines included); its promise settles when Redis answered. */
function timeCommands(connection: Redis, onCommand: CommandObserver): void {
  const send = connection.sendCommand.bind(connection)
  connection.sendCommand = (command: Command, stream?: Parameters<Redis['sendCommand']>[1]) => {
    const started = performance.now()
    const done = (): void => onCommand(command.name, (performance.now() - started) / 1000)
    command.promise.then(done, done)
    return send(command, stream)
  }
}
