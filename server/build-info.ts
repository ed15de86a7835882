import { readFileSync } from 'node:fs'

/** What `npm run build` wrote into dist/build-info.json (scripts/build-info.mjs). */
export interface BuildInfo {
  version: string
  commit: string
  buildTime: string
}

let cached: BuildInfo | null = null

/** This build's version, commit and build time; `dev`/`unknown` when the file is missing (not built by npm). */
export function buildInfo(): BuildInfo {
  if (cached !== null) return cached
  try {
    const info = JSON.parse(readFileSync(new URL('../build-info.json', import.meta.url), 'utf8')) as Partial<BuildInfo>
    cached = { version: info.version ?? 'dev', commit: info.commit ?? 'unknown', buildTime: info.buildTime ?? 'unknown' }
  } catch {
    cached = { version: 'dev', commit: 'unknown', buildTime: 'unknown' }
  }
  return cached
}
