import type { EventEmitter } from 'node:events'

/** Polls `condition` (cheap, synchronous) until it holds or the deadline passes; throws naming `what`. */
export async function until(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

/** Resolves with the event's arguments, or rejects after the deadline. */
export function once<T extends unknown[] = unknown[]>(emitter: Pick<EventEmitter, 'once' | 'off'>, event: string, timeoutMs = 10_000): Promise<T> {
  return withDeadline(
    new Promise<T>((resolve) => {
      emitter.once(event, (...args: unknown[]) => resolve(args as T))
    }),
    `event "${event}"`,
    timeoutMs,
  )
}

/** Rejects when `promise` does not settle within `timeoutMs`. */
export function withDeadline<T>(promise: Promise<T>, what: string, timeoutMs = 10_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/** `until` for a condition that needs asynchronous answers (HTTP, Redis): polls every `intervalMs`. */
export async function eventually(condition: () => Promise<boolean>, what: string, timeoutMs = 10_000, intervalMs = 20): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, intervalMs))
  }
}
