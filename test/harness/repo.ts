// The repository's own files, for the tests that check deployment files against the code.
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseAllDocuments } from 'yaml'

/** The repository root: the nearest folder above this file with a package.json (tests run from dist/test). */
function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir)
    if (parent === dir) throw new Error('no package.json above the test harness')
    dir = parent
  }
  return dir
}

export const REPO_ROOT = findRoot()

/** A file of the repository as text; `name` is relative to the root. */
export function readRepoFile(name: string): string {
  return readFileSync(join(REPO_ROOT, name), 'utf8')
}

/** Every YAML document of a repository file (`---` separated), parsed; a syntax error throws. */
export function yamlDocuments(name: string): unknown[] {
  return parseAllDocuments(readRepoFile(name)).map((doc) => {
    if (doc.errors.length > 0) throw new Error(`${name}: ${doc.errors.map((e) => e.message).join('; ')}`)
    return doc.toJS() as unknown
  }).filter((doc) => doc !== null)
}
