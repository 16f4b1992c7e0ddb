// The Kubernetes manifests in k8s/: schema-valid, renderable by kustomize, and consistent with the
// service they run (routes, ports, config schema, drain timing, metrics, alert rules).
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import ts from 'typescript'
import { buildApp } from '../../src/app.ts'
import { loadConfig } from '../../src/config.ts'
import { createLogger } from '../../src/logger.ts'
import { configEnvNames, kindOf, parseDocs, readDocs, readYaml, ROOT, validateDoc } from './manifests.ts'
import type { Doc } from './manifests.ts'

/** Files in k8s/ that kustomization.yaml leaves out on purpose (templates and alternatives). */
const NOT_IN_KUSTOMIZATION = ['secret.example.yaml', 'ingress-nginx.example.yaml']
/** Up to 10 s for the last turns (CallSession's terminate timeout) and >= 5 s for the last webhook pass (server.ts). */
const AFTER_DRAIN_S = 10 + 5

const files = readdirSync(join(ROOT, 'k8s')).filter((file) => file.endsWith('.yaml') && file !== 'kustomization.yaml').sort()
const docsByFile = new Map(files.map((file) => [file, readDocs(`k8s/${file}`)]))
const allDocs = [...docsByFile.values()].flat()

function one (kind: string, name?: string): Doc {
  const found = allDocs.filter((doc) => doc.kind === kind && (name === undefined || doc.metadata.name === name))
  assert.equal(found.length, 1, `expected exactly one ${kind}${name === undefined ? '' : `/${name}`} in k8s/, found ${found.length}`)
  return found[0] as Doc
}

// Loosely typed views of the documents; the schema test above guarantees their shape.
/* eslint-disable @typescript-eslint/no-explicit-any */
const statefulSet = one('StatefulSet') as any
const podSpec = statefulSet.spec.template.spec
const container = podSpec.containers[0]
const configMap = one('ConfigMap') as any
const secret = one('Secret') as any
const service = one('Service', 'medstream') as any
const headless = one('Service', 'medstream-pods') as any
const scaledObject = one('ScaledObject') as any
const serviceMonitor = one('ServiceMonitor') as any
const httpRoute = one('HTTPRoute') as any
const pdb = one('PodDisruptionBudget') as any
const networkPolicy = one('NetworkPolicy') as any
const prometheusRule = one('PrometheusRule') as any
const kustomization = readYaml('k8s/kustomization.yaml') as any
/* eslint-enable @typescript-eslint/no-explicit-any */

const env: Record<string, string> = { ...configMap.data, ...secret.stringData }

function matches (selector: Record<string, string>, labels: Record<string, string> | undefined): boolean {
  return Object.entries(selector).every(([key, value]) => labels?.[key] === value)
}

function containerPort (name: string): number {
  const port = container.ports.find((candidate: { name: string }) => candidate.name === name)
  assert.ok(port !== undefined, `the container has no port named ${name}`)
  return port.containerPort
}

test('k8s manifests validate against their Kubernetes, KEDA, Gateway API and prometheus-operator schemas when parsed', () => {
  assert.ok(allDocs.length >= 12, `expected the whole set of manifests, found ${allDocs.length} documents`)
  for (const doc of allDocs) validateDoc(doc)
  const kinds = new Set(allDocs.map((doc) => doc.kind))
  for (const kind of ['Namespace', 'ConfigMap', 'Secret', 'Service', 'StatefulSet', 'PodDisruptionBudget', 'NetworkPolicy', 'HTTPRoute', 'ScaledObject', 'ServiceMonitor', 'PrometheusRule']) {
    assert.ok(kinds.has(kind), `k8s/ has no ${kind}`)
  }
})

test('k8s manifests have no field their API types lack when type-checked against the models', () => {
  // JSON-schema validation lets unknown fields through (a misspelt terminationGracePeriodSecond
  // would pass); TypeScript's excess-property check on the models' interfaces does not.
  const virtual = join(ROOT, 'test', 'deploy', '__k8s_manifests__.ts')
  const imports = new Map<string, string>()
  const lines: string[] = []
  allDocs.forEach((doc, index) => {
    const { module, type } = kindOf(doc)
    imports.set(type, module)
    lines.push(`// ${doc.kind}/${doc.metadata.name}\nexport const doc${index}: ${type} = ${JSON.stringify(doc, null, 2)}`)
  })
  const source = [...imports].map(([type, module]) => `import type { ${type} } from '${module}'`).join('\n') + '\n' + lines.join('\n')
  const options: ts.CompilerOptions = { strict: true, noEmit: true, module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, target: ts.ScriptTarget.ES2024, skipLibCheck: true, types: [] }
  const host = ts.createCompilerHost(options)
  const getSourceFile = host.getSourceFile.bind(host)
  host.getSourceFile = (fileName, languageVersion, ...rest) => fileName === virtual ? ts.createSourceFile(fileName, source, languageVersion) : getSourceFile(fileName, languageVersion, ...rest)
  const fileExists = host.fileExists.bind(host)
  host.fileExists = (fileName) => fileName === virtual || fileExists(fileName)
  const program = ts.createProgram([virtual], options, host)
  const diagnostics = ts.getPreEmitDiagnostics(program)
  const sourceFile = program.getSourceFile(virtual)
  const messages = diagnostics.map((diagnostic) => {
    const where = diagnostic.file === sourceFile && diagnostic.start !== undefined ? source.slice(0, diagnostic.start).split('\n').reverse().find((line) => line.startsWith('// ')) ?? '' : ''
    return `${where} ${ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n')}`
  })
  assert.deepEqual(messages, [])
})

test('kustomization lists every manifest except the templates when read with plain fields', () => {
  assert.deepEqual(Object.keys(kustomization).sort(), ['apiVersion', 'images', 'kind', 'namespace', 'resources'])
  const listed = [...kustomization.resources].sort()
  const expected = files.filter((file) => !NOT_IN_KUSTOMIZATION.includes(file))
  assert.deepEqual(listed, expected)
  assert.equal(kustomization.images[0].name, container.image.split(':')[0], 'images: must name the StatefulSet\'s image')
})

test('kubectl kustomize renders k8s/ into valid namespaced objects when kubectl is installed', (t) => {
  const probe = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' })
  if (probe.error !== undefined || probe.status !== 0) {
    t.skip('kubectl is not installed here; the rendering check runs where it is')
    return
  }
  const rendered = spawnSync('kubectl', ['kustomize', join(ROOT, 'k8s')], { encoding: 'utf8', timeout: 60_000 })
  assert.equal(rendered.status, 0, rendered.stderr)
  const docs = parseDocs(rendered.stdout, 'kubectl kustomize k8s/')
  const expected = kustomization.resources.flatMap((file: string) => docsByFile.get(file) ?? [])
  assert.equal(docs.length, expected.length)
  for (const doc of docs) {
    validateDoc(doc)
    if (doc.kind !== 'Namespace') assert.equal(doc.metadata.namespace, kustomization.namespace, `${doc.kind}/${doc.metadata.name} is not in the namespace`)
  }
  // The Gateway lives in its own namespace; kustomize must not rewrite the reference.
  const route = docs.find((doc) => doc.kind === 'HTTPRoute') as { spec: { parentRefs: Array<{ namespace: string }> } } | undefined
  assert.equal(route?.spec.parentRefs[0]?.namespace, httpRoute.spec.parentRefs[0].namespace)
})

test('k8s ConfigMap and Secret hold only config-schema variables and load as a valid configuration', () => {
  const names = configEnvNames()
  for (const key of [...Object.keys(configMap.data), ...Object.keys(secret.stringData)]) {
    assert.ok(names.has(key), `${key} is not an environment variable of src/config.ts`)
  }
  const config = loadConfig(env)
  assert.equal(config.streamTokenSecretSource, 'configured', 'replicas must share STREAM_TOKEN_SECRET')
  assert.deepEqual(container.envFrom, [{ configMapRef: { name: configMap.metadata.name } }, { secretRef: { name: secret.metadata.name } }])
  const secretKeys = new Set(Object.keys(secret.stringData))
  for (const key of ['TWILIO_AUTH_TOKEN', 'ASSEMBLYAI_API_KEY', 'WEBHOOK_SECRET', 'STREAM_TOKEN_SECRET']) {
    assert.ok(secretKeys.has(key), `${key} belongs in the Secret`)
    assert.ok(!(key in configMap.data), `${key} must not be in the ConfigMap`)
  }
})

test('k8s probes and ports match the routes and listeners of the real app when it is built from the ConfigMap', async (t) => {
  const config = loadConfig(env)
  assert.equal(containerPort('http'), config.port, 'container port http must be PORT')
  assert.equal(containerPort('metrics'), config.metricsPort, 'container port metrics must be METRICS_PORT')
  const dataMount = container.volumeMounts.find((mount: { name: string }) => mount.name === 'data')
  assert.equal(dataMount?.mountPath, config.dataDir, 'the data volume must be mounted at DATA_DIR')

  const dataDir = mkdtempSync(join(tmpdir(), 'medstream-k8s-'))
  const app = await buildApp({ config: { ...config, dataDir }, logger: createLogger({ level: 'silent', logPii: false }), version: '0.0.0-test', processMetrics: false })
  t.after(async () => { await app.close(); rmSync(dataDir, { recursive: true, force: true }) })
  const probes = { startupProbe: '/healthz', livenessProbe: '/healthz', readinessProbe: '/readyz' }
  for (const [probe, path] of Object.entries(probes)) {
    const get = container[probe].httpGet
    assert.equal(get.path, path, `${probe} path`)
    assert.equal(get.port, 'http', `${probe} must use the http port`)
    const response = await app.inject({ method: 'GET', url: get.path })
    assert.equal(response.statusCode, 200, `${probe}: GET ${get.path} answered ${response.statusCode}`)
  }
  // Every path the HTTPRoute sends to the service is a route the app serves.
  for (const rule of httpRoute.spec.rules) {
    for (const match of rule.matches) {
      assert.equal(match.path.type, 'Exact')
      assert.ok(app.hasRoute({ method: match.method ?? 'GET', url: match.path.value }), `HTTPRoute sends ${match.method ?? 'GET'} ${match.path.value}, which the app does not serve`)
    }
  }
  for (const path of ['/twilio/media', '/twilio/voice', '/twilio/stream-status']) {
    assert.ok(httpRoute.spec.rules.some((rule: { matches: Array<{ path: { value: string } }> }) => rule.matches.some((match) => match.path.value === path)), `HTTPRoute does not route ${path}`)
  }
  assert.ok(app.metricsRegistry.getSingleMetric('medstream_calls_active') !== undefined, 'the scaling metric must exist')
})

test('k8s termination grace period covers preStop, DRAIN_TIMEOUT_MS and the last webhook pass when summed', () => {
  const preStop = container.lifecycle.preStop.exec.command
  assert.equal(preStop[0], 'sleep', 'preStop must be a sleep (node:24-slim has coreutils sleep)')
  const preStopS = Number(preStop[1])
  assert.ok(preStopS >= 5 && preStopS <= 30, `preStop sleep ${preStopS}s`)
  const drainS = Number(configMap.data.DRAIN_TIMEOUT_MS) / 1000
  const grace = podSpec.terminationGracePeriodSeconds
  assert.ok(grace >= preStopS + drainS + AFTER_DRAIN_S + 5, `terminationGracePeriodSeconds ${grace} < preStop ${preStopS} + drain ${drainS} + ${AFTER_DRAIN_S} + 5 margin`)
  assert.ok(grace <= preStopS + drainS + AFTER_DRAIN_S + 60, `terminationGracePeriodSeconds ${grace} is far above what draining needs`)
})

test('k8s pod meets the restricted Pod Security Standard when its security contexts are read', () => {
  const pod = podSpec.securityContext
  assert.equal(pod.runAsNonRoot, true)
  assert.ok(pod.runAsUser > 0, 'runAsUser must not be 0')
  assert.equal(pod.seccompProfile.type, 'RuntimeDefault')
  for (const field of ['hostNetwork', 'hostPID', 'hostIPC']) assert.notEqual(podSpec[field], true, field)
  for (const c of [...podSpec.containers, ...(podSpec.initContainers ?? [])]) {
    const sc = c.securityContext
    assert.equal(sc.allowPrivilegeEscalation, false, `${c.name}: allowPrivilegeEscalation`)
    assert.equal(sc.readOnlyRootFilesystem, true, `${c.name}: readOnlyRootFilesystem`)
    assert.deepEqual(sc.capabilities.drop, ['ALL'], `${c.name}: capabilities.drop`)
    assert.equal(sc.capabilities.add, undefined, `${c.name}: no added capabilities`)
    assert.notEqual(sc.privileged, true)
    assert.ok(sc.runAsUser === undefined || sc.runAsUser > 0)
  }
  const allowedVolumes = ['configMap', 'csi', 'downwardAPI', 'emptyDir', 'ephemeral', 'persistentVolumeClaim', 'projected', 'secret']
  for (const volume of podSpec.volumes ?? []) {
    const type = Object.keys(volume).find((key) => key !== 'name')
    assert.ok(type !== undefined && allowedVolumes.includes(type), `volume ${volume.name} of type ${type} is not allowed by the restricted profile`)
  }
  assert.equal(one('Namespace').metadata.labels?.['pod-security.kubernetes.io/enforce'], 'restricted')
  assert.equal(podSpec.automountServiceAccountToken, false)
  assert.ok(container.resources.requests.cpu !== undefined && container.resources.requests.memory !== undefined && container.resources.limits.memory !== undefined, 'cpu and memory requests and a memory limit')
})

test('k8s Services, ServiceMonitor, PodDisruptionBudget and NetworkPolicy select the pods and name real ports', () => {
  const podLabels = statefulSet.spec.template.metadata.labels
  assert.ok(matches(statefulSet.spec.selector.matchLabels, podLabels))
  assert.equal(statefulSet.spec.serviceName, headless.metadata.name)
  assert.equal(headless.spec.clusterIP, 'None')
  for (const svc of [service, headless]) {
    assert.ok(matches(svc.spec.selector, podLabels), `${svc.metadata.name} does not select the pods`)
    for (const port of svc.spec.ports) containerPort(port.targetPort)
  }
  assert.deepEqual(service.spec.ports.map((port: { name: string }) => port.name).sort(), ['http', 'metrics'])
  assert.ok(matches(serviceMonitor.spec.selector.matchLabels, service.metadata.labels), 'the ServiceMonitor must select the medstream Service')
  assert.ok(!matches(serviceMonitor.spec.selector.matchLabels, headless.metadata.labels), 'the ServiceMonitor must not also select the headless Service (double scrape)')
  assert.deepEqual(serviceMonitor.spec.endpoints.map((endpoint: { port: string, path: string }) => [endpoint.port, endpoint.path]), [['metrics', '/metrics']])
  // The alert rules and the scaling query select job="medstream": the ServiceMonitor's job is the Service's name.
  assert.equal(service.metadata.name, 'medstream')
  assert.equal(serviceMonitor.spec.jobLabel, undefined)
  assert.ok(matches(pdb.spec.selector.matchLabels, podLabels))
  assert.equal(pdb.spec.maxUnavailable, 1)
  assert.ok(matches(networkPolicy.spec.podSelector.matchLabels, podLabels))
  for (const rule of networkPolicy.spec.ingress) {
    for (const port of rule.ports) containerPort(port.port)
  }
  const metricsRule = networkPolicy.spec.ingress.find((rule: { ports: Array<{ port: string }> }) => rule.ports.some((port) => port.port === 'metrics'))
  assert.ok(metricsRule?.from !== undefined, 'the metrics port must not be open to everyone')
  for (const rule of httpRoute.spec.rules) {
    for (const backend of rule.backendRefs) {
      assert.equal(backend.name, service.metadata.name)
      assert.ok(service.spec.ports.some((port: { port: number, name: string }) => port.port === backend.port && port.name === 'http'), `HTTPRoute backend port ${backend.port} is not the Service's http port`)
    }
  }
})

test('k8s HTTPRoute keeps the media WebSocket open for the whole call when timeouts are read', () => {
  const media = httpRoute.spec.rules.find((rule: { matches: Array<{ path: { value: string } }> }) => rule.matches.some((match) => match.path.value === '/twilio/media'))
  assert.equal(media.timeouts.request, '0s', '0s disables the request timeout (Gateway API GEP-1742)')
  assert.equal(media.timeouts.backendRequest, '0s')
})

test('k8s ScaledObject scales the StatefulSet on the sum of live calls and scales down slowly', () => {
  assert.deepEqual(scaledObject.spec.scaleTargetRef, { apiVersion: 'apps/v1', kind: 'StatefulSet', name: statefulSet.metadata.name })
  assert.equal(statefulSet.spec.replicas, undefined, 'KEDA owns replicas; a fixed value would fight it on every apply')
  const [trigger] = scaledObject.spec.triggers
  assert.equal(trigger.type, 'prometheus')
  assert.match(trigger.metadata.query, /^sum\(medstream_calls_active(\{[^}]*\})?\)$/)
  assert.match(trigger.metadata.query, /job="medstream"/)
  const threshold = Number(trigger.metadata.threshold)
  assert.ok(threshold > 0 && threshold < Number(configMap.data.MAX_CALLS), 'the per-pod target must leave headroom below MAX_CALLS')
  assert.ok(scaledObject.spec.minReplicaCount >= 2, 'at least two replicas: one can drain while the other takes calls')
  const scaleDown = scaledObject.spec.advanced.horizontalPodAutoscalerConfig.behavior.scaleDown
  assert.ok(scaleDown.stabilizationWindowSeconds >= 600, 'scale-down must wait out call-volume dips')
  for (const policy of scaleDown.policies) assert.ok(policy.type === 'Pods' && policy.value === 1 && policy.periodSeconds >= Number(configMap.data.DRAIN_TIMEOUT_MS) / 1000, 'at most one pod per drain period')
})

test('k8s PrometheusRule carries exactly the alert groups of observability/prometheus/alerts.yml when compared', () => {
  const alerts = readYaml('observability/prometheus/alerts.yml') as { groups: unknown[] }
  assert.ok(Array.isArray(alerts.groups) && alerts.groups.length > 0, 'alerts.yml has no groups')
  assert.deepEqual(prometheusRule.spec.groups, alerts.groups, 'k8s/prometheusrule.yaml is out of date with observability/prometheus/alerts.yml: run node scripts/k8s-prometheusrule.ts')
})
