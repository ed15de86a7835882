/**
 * deploy/kubernetes/: every manifest validated against the Kubernetes schemas (the
 * kubernetes-models package; no cluster here), and the invariants weft needs checked against
 * the code: the grace period outlasts preStop plus the drain, the probes ask weft's health routes
 * on its port (and a real weft answers them), one volume per instance at WEFT_DATA, non-root
 * with a read-only root filesystem, nginx's configuration is deploy/nginx's, Redis keeps an AOF.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import type { Model } from '@kubernetes-models/base'
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap'
import type { IContainer } from 'kubernetes-models/v1/Container'
import type { IPodSpec } from 'kubernetes-models/v1/PodSpec'
import { Service } from 'kubernetes-models/v1/Service'
import { Deployment } from 'kubernetes-models/apps/v1/Deployment'
import { StatefulSet } from 'kubernetes-models/apps/v1/StatefulSet'
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget'
import { DEFAULTS, SETTINGS } from '../server/config.js'
import { REPO_ROOT, readRepoFile, yamlDocuments } from './harness/repo.js'
import { renderTemplate } from './harness/nginx.js'
import { httpRequest } from './harness/http.js'
import { startServer } from './harness/server.js'

const DIR = 'deploy/kubernetes'

interface Manifest {
  apiVersion: string
  kind: string
  metadata: { name: string; namespace?: string }
}

const kustomization = yamlDocuments(`${DIR}/kustomization.yaml`)[0] as { resources: string[] }
const manifests: Array<{ file: string; doc: Manifest }> = kustomization.resources.flatMap((file) => yamlDocuments(`${DIR}/${file}`).map((doc) => ({ file, doc: doc as Manifest })))

function find<T>(kind: string, name: string, Model: new (data: never) => T): T {
  const found = manifests.filter(({ doc }) => doc.kind === kind && doc.metadata.name === name)
  assert.equal(found.length, 1, `one ${kind} ${name}`)
  return new Model((found[0] as { doc: Manifest }).doc as never)
}

const weft = find('StatefulSet', 'weft', StatefulSet)
const redis = find('StatefulSet', 'redis', StatefulSet)
const nginx = find('Deployment', 'nginx', Deployment)
const nginxConfig = find('ConfigMap', 'nginx-weft', ConfigMap)

function podSpec(workload: StatefulSet | Deployment): IPodSpec {
  const spec = workload.spec?.template.spec
  assert.ok(spec, `${workload.metadata?.name} has a pod spec`)
  return spec
}

function container(workload: StatefulSet | Deployment, name: string): IContainer {
  const found = podSpec(workload).containers.find((c) => c.name === name)
  assert.ok(found, `${workload.metadata?.name} has a container ${name}`)
  return found
}

const weftContainer = container(weft, 'weft')
const weftEnv = new Map((weftContainer.env ?? []).map((e) => [e.name, e.value]))
const setting = (env: string): string | undefined => weftEnv.get(env)

/** The containerPort a probe's or Service's port names (a number or a named port). */
function portNumber(c: IContainer, port: number | string | undefined): number | undefined {
  if (typeof port === 'number') return port
  return c.ports?.find((p) => p.name === port)?.containerPort
}

test('kustomization lists every manifest in deploy/kubernetes, and each is one of its resources', () => {
  const files = readdirSync(join(REPO_ROOT, DIR)).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml')
  assert.deepEqual([...kustomization.resources].sort(), files.sort())
  for (const { file, doc } of manifests) {
    if (doc.kind !== 'Namespace') assert.equal(doc.metadata.namespace, 'weft', `${file}: ${doc.kind} ${doc.metadata.name} is in the weft namespace`)
  }
})

test('every manifest is valid against the Kubernetes schema of its kind', async () => {
  assert.ok(manifests.length >= 9, `${manifests.length} manifests`)
  for (const { file, doc } of manifests) {
    const module = (await import(`kubernetes-models/${doc.apiVersion}/${doc.kind}`)) as Record<string, new (data: unknown) => Model<unknown>>
    const Kind = module[doc.kind]
    assert.ok(Kind, `kubernetes-models knows ${doc.apiVersion} ${doc.kind}`)
    assert.doesNotThrow(() => new Kind(doc).validate(), `${file}: ${doc.kind} ${doc.metadata.name}`)
  }
})

test('the schema check is real: a bad field fails it', () => {
  const broken = structuredClone((manifests.find(({ doc }) => doc.kind === 'StatefulSet' && doc.metadata.name === 'weft') as { doc: Manifest }).doc) as unknown as { spec: { template: { spec: { containers: Array<{ ports: Array<{ containerPort: unknown }> }> } } } }
  ;(broken.spec.template.spec.containers[0] as { ports: Array<{ containerPort: unknown }> }).ports[0] = { containerPort: 'http' }
  assert.throws(() => new StatefulSet(broken as never).validate(), /containerPort/)
})

test('terminationGracePeriodSeconds outlasts preStop plus the drain window', () => {
  const drain = Number(setting('WEFT_DRAIN_SECONDS') ?? DEFAULTS.drainSeconds)
  const preStop = weftContainer.lifecycle?.preStop
  const command = preStop?.exec?.command ?? []
  assert.equal(command[0], 'sleep', 'preStop sleeps while the endpoints update')
  const sleep = Number(command[1] ?? preStop?.sleep?.seconds)
  assert.ok(Number.isFinite(sleep) && sleep > 0, `preStop sleeps ${sleep} s`)
  const grace = podSpec(weft).terminationGracePeriodSeconds ?? 30
  assert.ok(grace > sleep + drain, `grace ${grace} s > preStop ${sleep} s + drain ${drain} s`)
})

test('probes ask weft health routes on its port, and a real weft answers them', async () => {
  const port = Number(setting('WEFT_PORT') ?? DEFAULTS.port)
  assert.equal(port, DEFAULTS.port)
  assert.equal(portNumber(weftContainer, 'http'), port)
  const readiness = weftContainer.readinessProbe?.httpGet
  const liveness = weftContainer.livenessProbe?.httpGet
  assert.equal(readiness?.path, '/health/ready')
  assert.equal(liveness?.path, '/health/live')
  assert.equal(portNumber(weftContainer, readiness?.port), port)
  assert.equal(portNumber(weftContainer, liveness?.port), port)
  const startup = weftContainer.startupProbe?.httpGet
  if (startup !== undefined) assert.equal(startup.path, '/health/live', 'startup waits for the process, not for readiness')
  const server = await startServer()
  try {
    for (const path of [readiness.path, liveness.path, startup?.path].filter((p) => p !== undefined)) {
      assert.equal((await httpRequest(server.port, path)).status, 200, `GET ${path}`)
    }
    assert.equal((await httpRequest(server.port, '/health/nonexistent')).status, 404, 'an unknown path is no health route')
  } finally {
    await server.stop()
  }
})

test('each weft instance gets its own volume at WEFT_DATA, and a stable instance id', () => {
  const data = setting('WEFT_DATA')
  assert.ok(data !== undefined && data.startsWith('/'))
  const mount = weftContainer.volumeMounts?.find((m) => m.mountPath === data)
  assert.ok(mount, `a volume is mounted at ${data}`)
  assert.ok(weft.spec?.volumeClaimTemplates?.some((t) => t.metadata?.name === mount.name), `${mount.name} is a volumeClaimTemplate (one PVC per pod)`)
  assert.ok(!(podSpec(weft).volumes ?? []).some((v) => v.name === mount.name), 'not a volume shared by all pods')
  assert.ok((weft.spec?.replicas ?? 1) >= 2, 'more than one instance')
  const id = weftContainer.env?.find((e) => e.name === 'WEFT_INSTANCE_ID')
  assert.equal(id?.valueFrom?.fieldRef?.fieldPath, 'metadata.name', 'the instance id is the pod name')
  for (const name of weftEnv.keys()) {
    if (name.startsWith('WEFT_')) assert.ok(SETTINGS.some((s) => s.env === name), `${name} is a setting in server/config.ts`)
  }
})

test('every container runs as non-root with a read-only root filesystem, no privileges, and resource bounds', () => {
  for (const workload of [weft, redis, nginx]) {
    const pod = podSpec(workload)
    assert.equal(pod.securityContext?.runAsNonRoot, true, `${workload.metadata?.name}: runAsNonRoot`)
    assert.ok((pod.securityContext?.runAsUser ?? 0) > 0, `${workload.metadata?.name}: a non-zero uid`)
    assert.equal(pod.automountServiceAccountToken, false, `${workload.metadata?.name}: no API token in the pod`)
    for (const c of pod.containers) {
      const what = `${workload.metadata?.name}/${c.name}`
      assert.equal(c.securityContext?.readOnlyRootFilesystem, true, `${what}: readOnlyRootFilesystem`)
      assert.equal(c.securityContext?.allowPrivilegeEscalation, false, `${what}: allowPrivilegeEscalation false`)
      assert.deepEqual(c.securityContext?.capabilities?.drop, ['ALL'], `${what}: drops every capability`)
      assert.ok(c.resources?.requests?.cpu !== undefined && c.resources.requests.memory !== undefined, `${what}: cpu and memory requests`)
      assert.ok(c.resources?.limits?.memory !== undefined, `${what}: a memory limit`)
      assert.ok(c.readinessProbe !== undefined && c.livenessProbe !== undefined, `${what}: readiness and liveness probes`)
    }
  }
})

test('Services: a headless one naming each instance, a client one, both on weft port', () => {
  const headless = find('Service', 'weft-headless', Service)
  const client = find('Service', 'weft', Service)
  assert.equal(weft.spec?.serviceName, 'weft-headless')
  assert.equal(headless.spec?.clusterIP, 'None')
  assert.equal(headless.spec?.publishNotReadyAddresses, true, 'nginx resolves draining and starting instances too (they answer 503)')
  const labels = weft.spec?.template.metadata?.labels ?? {}
  for (const service of [headless, client]) {
    for (const [key, value] of Object.entries(service.spec?.selector ?? {})) assert.equal(labels[key], value, `${service.metadata?.name} selects the weft pods`)
    const target = service.spec?.ports?.[0]?.targetPort
    assert.equal(portNumber(weftContainer, target), DEFAULTS.port, `${service.metadata?.name} targets weft port`)
  }
})

test('PodDisruptionBudgets select their pods and leave instances up', () => {
  const budget = find('PodDisruptionBudget', 'weft', PodDisruptionBudget)
  const labels = weft.spec?.template.metadata?.labels ?? {}
  const selector = budget.spec?.selector?.matchLabels ?? {}
  assert.ok(Object.keys(selector).length > 0)
  for (const [key, value] of Object.entries(selector)) assert.equal(labels[key], value)
  assert.equal(budget.spec?.maxUnavailable, 1)
  const nginxBudget = find('PodDisruptionBudget', 'nginx', PodDisruptionBudget)
  for (const [key, value] of Object.entries(nginxBudget.spec?.selector?.matchLabels ?? {})) assert.equal(nginx.spec?.template.metadata?.labels?.[key], value)
})

test('Redis keeps an AOF on its own volume, and weft reaches it by its pod name', () => {
  const c = container(redis, 'redis')
  const args = [...(c.command ?? []), ...(c.args ?? [])]
  assert.equal(args[args.indexOf('--appendonly') + 1], 'yes', 'AOF on')
  const dir = args[args.indexOf('--dir') + 1]
  const mount = c.volumeMounts?.find((m) => m.mountPath === dir)
  assert.ok(mount && redis.spec?.volumeClaimTemplates?.some((t) => t.metadata?.name === mount.name), `the AOF directory ${dir} is a persistent volume`)
  const url = new URL(setting('WEFT_REDIS_URL') ?? '')
  assert.equal(url.hostname, `${redis.metadata?.name}-0.${redis.spec?.serviceName}.${redis.metadata?.namespace}.svc.cluster.local`)
  assert.equal(Number(url.port), portNumber(c, 'redis'))
  find('Service', redis.spec?.serviceName ?? '', Service)
})

test("nginx runs deploy/nginx's configuration, rendered for the StatefulSet's instances", () => {
  assert.equal(nginxConfig.data?.['nginx.conf'], readRepoFile('deploy/nginx/nginx.conf'), 'nginx.conf is deploy/nginx/nginx.conf as it is')
  const c = container(nginx, 'nginx')
  const listen = portNumber(c, 'http')
  const replicas = weft.spec?.replicas ?? 1
  const domain = `${weft.spec?.serviceName}.${weft.metadata?.namespace}.svc.cluster.local`
  const upstreams = [
    'resolver kube-dns.kube-system.svc.cluster.local valid=10s;',
    ...Array.from({ length: replicas }, (_, i) => `server ${weft.metadata?.name}-${i}.${domain}:${DEFAULTS.port} resolve max_fails=0;`),
  ].join('\n    ')
  const expected = renderTemplate(readRepoFile('deploy/nginx/weft.conf.template'), {
    WEFT_UPSTREAMS: upstreams,
    LISTEN_PORT: String(listen),
    WEFT_HOCUSPOCUS_PATH: setting('WEFT_HOCUSPOCUS_PATH') ?? DEFAULTS.hocuspocusPath,
  })
  assert.equal(nginxConfig.data?.['weft.conf'], expected, 'weft.conf is the template rendered with one server line per instance')
  // The files land where nginx.conf includes them from, and nginx is started on that file.
  const volume = podSpec(nginx).volumes?.find((v) => v.configMap?.name === nginxConfig.metadata?.name)
  const mount = c.volumeMounts?.find((m) => m.name === volume?.name)
  assert.ok(volume && mount)
  const paths = new Map((volume.configMap?.items ?? []).map((item) => [item.key, item.path]))
  assert.equal(paths.get('nginx.conf'), 'nginx.conf')
  assert.ok(readRepoFile('deploy/nginx/nginx.conf').includes(`include ${paths.get('weft.conf')};`), 'nginx.conf includes the rendered file by its path')
  const command = c.command ?? []
  assert.equal(command[command.indexOf('-c') + 1], `${mount.mountPath}/nginx.conf`)
  const prefix = command[command.indexOf('-p') + 1] ?? ''
  assert.ok(c.volumeMounts?.some((m) => prefix.startsWith(m.mountPath) && m.name !== volume.name), `the prefix ${prefix} (pid, temp files) is a writable volume`)
  const service = find('Service', 'nginx', Service)
  assert.equal(portNumber(c, service.spec?.ports?.[0]?.targetPort), listen)
})
