/**
 * A small typed event emitter. Listeners are application code called from socket events: one
 * that throws must not stop the others or the provider's own state change, so its error goes to
 * `report`: by default rethrown on a fresh microtask, where the host reports it like any uncaught error.
 */
export class Emitter<Events extends { [event: string]: unknown[] }> {
  // Listener types differ per event; `on` and `emit` pair them up by key.
  private readonly listeners = new Map<keyof Events, Set<unknown>>()

  constructor(private readonly report: (error: unknown) => void = rethrowLater) {}

  on<E extends keyof Events>(event: E, fn: (...args: Events[E]) => void): void {
    let set = this.listeners.get(event)
    if (set === undefined) this.listeners.set(event, (set = new Set()))
    set.add(fn)
  }

  off<E extends keyof Events>(event: E, fn: (...args: Events[E]) => void): void {
    this.listeners.get(event)?.delete(fn)
  }

  emit<E extends keyof Events>(event: E, ...args: Events[E]): void {
    const set = this.listeners.get(event)
    if (set === undefined) return
    for (const fn of [...set]) {
      try {
        (fn as (...args: Events[E]) => void)(...args)
      } catch (err) {
        this.report(err)
      }
    }
  }

  clear(): void {
    this.listeners.clear()
  }
}

function rethrowLater(error: unknown): void {
  queueMicrotask(() => {
    throw error
  })
}
