/** Deterministic randomness and byte helpers shared by the fuzz suites. */

export interface Rng {
  next(): number
  int(n: number): number
  pick<T>(items: readonly T[]): T
  chance(p: number): boolean
}

/** mulberry32, a small seeded PRNG in [0, 1): the same seed replays the same sequence. */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/**
 * mulberry32 seeded from (seed, index): every case is rebuilt from those two numbers alone, so one
 * failing case replays without the others. `salt` keeps suites sharing a seed on different streams.
 */
export function rngFor(seed: number, index: number, salt: number): Rng {
  const next = mulberry32(Math.imul(seed ^ salt, 0x85ebca6b) ^ Math.imul(index + 1, 0xc2b2ae35))
  return {
    next,
    int: (n) => Math.floor(next() * n),
    pick: <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)] as T,
    chance: (p) => next() < p,
  }
}

/** A non-negative whole number from the environment (seeds, case counts), or the fallback. */
export function envNumber(name: string, fallback: number): number {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  const value = Number(raw)
  if (!Number.isSafeInteger(value) || value < 0) throw new Error(`${name} must be a non-negative integer, got ${JSON.stringify(raw)}`)
  return value
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts))
}

/** lib0's varuint encoding, written independently of the codec under test. */
export function varUint(n: number): Uint8Array {
  const out: number[] = []
  while (n >= 0x80) {
    out.push((n % 128) | 0x80)
    n = Math.floor(n / 128)
  }
  out.push(n)
  return Uint8Array.from(out)
}

export function randomBytes(rng: Rng, length: number): Uint8Array {
  const out = new Uint8Array(length)
  for (let i = 0; i < length; i++) out[i] = rng.int(256)
  return out
}
