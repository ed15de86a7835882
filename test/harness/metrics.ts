// Reading a weft server's Prometheus text on /metrics.

/** The text of `${base}/metrics`; `base` is the server's http://host:port. */
export async function scrapeMetrics(base: string): Promise<string> {
  return (await fetch(`${base}/metrics`)).text()
}

/** The sample `name` with exactly `labels` (e.g. `{code="1013"}`, '' for none) in Prometheus text, or undefined when absent. */
export function sampleIn(text: string, name: string, labels = ''): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `))
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1))
}

/** One sample of the server at `base`, or undefined when it does not report it. */
export async function metricValue(base: string, name: string, labels = ''): Promise<number | undefined> {
  return sampleIn(await scrapeMetrics(base), name, labels)
}

/** Every unlabelled sample of the server at `base`, by name. */
export async function unlabelledSamples(base: string): Promise<Map<string, number>> {
  const text = await scrapeMetrics(base)
  const samples = new Map<string, number>()
  for (const match of text.matchAll(/^([a-z_]+) (\S+)$/gm)) samples.set(match[1] as string, Number(match[2]))
  return samples
}
