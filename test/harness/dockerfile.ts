// Reading the Dockerfile as text (there is no Docker engine on the test machines).
import assert from 'node:assert/strict'

export interface Instruction {
  keyword: string
  args: string
  stage: number
}

/** Dockerfile instructions with continuation lines joined; stage counts FROM lines from 0. */
export function parseDockerfile(text: string): Instruction[] {
  const logical: string[] = []
  let pending = ''
  for (const raw of text.split('\n')) {
    const line = raw.trim()
    if (pending === '' && (line === '' || line.startsWith('#'))) continue
    if (line.startsWith('#')) continue
    if (line.endsWith('\\')) {
      pending += line.slice(0, -1) + ' '
      continue
    }
    logical.push(pending + line)
    pending = ''
  }
  if (pending !== '') logical.push(pending)
  let stage = -1
  return logical.map((line) => {
    const match = /^(\S+)\s*(.*)$/.exec(line)
    assert.ok(match, `unparsable Dockerfile line: ${line}`)
    const keyword = (match[1] as string).toUpperCase()
    if (keyword === 'FROM') stage++
    return { keyword, args: (match[2] as string).trim(), stage }
  })
}

/** `KEY=value KEY2=value2` (or the legacy `KEY value`) of an ENV instruction. */
export function parseEnv(args: string): Map<string, string> {
  const vars = new Map<string, string>()
  if (!args.includes('=')) {
    const [key, ...rest] = args.split(/\s+/)
    vars.set(key as string, rest.join(' '))
    return vars
  }
  for (const pair of args.match(/[A-Za-z_][A-Za-z0-9_]*=("[^"]*"|\S*)/g) ?? []) {
    const eq = pair.indexOf('=')
    vars.set(pair.slice(0, eq), pair.slice(eq + 1).replace(/^"(.*)"$/, '$1'))
  }
  return vars
}
