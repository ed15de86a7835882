import { mkdir } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium, type Browser } from 'playwright-core'

/** Debian's chromium; `npm test` installs it (scripts/system-packages.mjs) when missing. */
export const CHROMIUM_PATH = process.env.WEFT_CHROMIUM_PATH ?? '/usr/bin/chromium'

/** Where browser tests write screenshots and other artefacts (kept after the run, ignored by git). */
export const ARTIFACTS_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'test', 'artifacts')

// The machine's network is closed: without these, Chromium keeps trying to reach Google's hosts.
const QUIET_FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
]

export interface RunningBrowser {
  browser: Browser
  /** Closes the browser (Playwright removes its temporary profile). Idempotent. */
  close(): Promise<void>
}

/** A real headless Chromium with a fresh temporary profile. */
export async function launchChromium(): Promise<RunningBrowser> {
  const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: QUIET_FLAGS })
  let closed: Promise<void> | null = null
  return {
    browser,
    close: () => {
      closed ??= browser.close()
      return closed
    },
  }
}

/** The path a test's screenshot goes to, creating the artefacts directory. */
export async function artifactPath(name: string): Promise<string> {
  await mkdir(ARTIFACTS_DIR, { recursive: true })
  return join(ARTIFACTS_DIR, name)
}
