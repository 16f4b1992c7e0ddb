// Shared by the deployment tests: the repository root, YAML loading, the config schema's variable
// names, the Kubernetes models (JSON-schema validation) for every kind k8s/ uses, and a reader of
// the kustomize subset k8s/ uses, so the overlays are checked where kubectl is not installed.
import { existsSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, posix } from 'node:path'
import { fileURLToPath } from 'node:url'
import { HTTPRoute } from '@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1/HTTPRoute'
import { ScaledObject } from '@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject'
import { PrometheusRule } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule'
import { ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor'
import { Deployment } from 'kubernetes-models/apps/v1/Deployment'
import { StatefulSet } from 'kubernetes-models/apps/v1/StatefulSet'
import { Ingress } from 'kubernetes-models/networking.k8s.io/v1/Ingress'
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy'
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget'
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap'
import { Namespace } from 'kubernetes-models/v1/Namespace'
import { Secret } from 'kubernetes-models/v1/Secret'
import { Service } from 'kubernetes-models/v1/Service'
import { parse, parseAllDocuments } from 'yaml'
import { loadConfig } from '../../src/config.ts'

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..')

/** Reads a repository file, failing with the path when it is missing (e.g. not written yet). */
export function readRepoFile (path: string): string {
  const full = join(ROOT, path)
  if (!existsSync(full)) throw new Error(`${path} does not exist in the repository`)
  return readFileSync(full, 'utf8')
}

export function readYaml (path: string): unknown {
  return parse(readRepoFile(path))
}

export type Doc = Record<string, unknown> & { apiVersion: string, kind: string, metadata: { name: string, namespace?: string, labels?: Record<string, string>, annotations?: Record<string, string> } }

/** Every document of a multi-document YAML text; a YAML syntax error fails with its position. */
export function parseDocs (text: string, source: string): Doc[] {
  return parseAllDocuments(text).map((document) => {
    if (document.errors.length > 0) throw new Error(`${source}: ${document.errors.map((error) => error.message).join('; ')}`)
    return document.toJS() as Doc
  }).filter((doc) => doc !== null)
}

export function readDocs (path: string): Doc[] {
  return parseDocs(readRepoFile(path), path)
}

interface ModelClass { new (data: Record<string, unknown>): { validate (): void } }

interface KindInfo {
  model: ModelClass
  /** Module and interface of the model's type, for the excess-property check. */
  module: string
  type: string
}

function kind (model: unknown, module: string, type: string): KindInfo {
  return { model: model as ModelClass, module, type }
}

/** `apiVersion kind` → the model that validates it against the published schema. */
export const KINDS: Record<string, KindInfo> = {
  'v1 Namespace': kind(Namespace, 'kubernetes-models/v1/Namespace', 'INamespace'),
  'v1 ConfigMap': kind(ConfigMap, 'kubernetes-models/v1/ConfigMap', 'IConfigMap'),
  'v1 Secret': kind(Secret, 'kubernetes-models/v1/Secret', 'ISecret'),
  'v1 Service': kind(Service, 'kubernetes-models/v1/Service', 'IService'),
  'apps/v1 Deployment': kind(Deployment, 'kubernetes-models/apps/v1/Deployment', 'IDeployment'),
  'apps/v1 StatefulSet': kind(StatefulSet, 'kubernetes-models/apps/v1/StatefulSet', 'IStatefulSet'),
  'policy/v1 PodDisruptionBudget': kind(PodDisruptionBudget, 'kubernetes-models/policy/v1/PodDisruptionBudget', 'IPodDisruptionBudget'),
  'networking.k8s.io/v1 NetworkPolicy': kind(NetworkPolicy, 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy', 'INetworkPolicy'),
  'networking.k8s.io/v1 Ingress': kind(Ingress, 'kubernetes-models/networking.k8s.io/v1/Ingress', 'IIngress'),
  'gateway.networking.k8s.io/v1 HTTPRoute': kind(HTTPRoute, '@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1/HTTPRoute', 'IHTTPRoute'),
  'keda.sh/v1alpha1 ScaledObject': kind(ScaledObject, '@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject', 'IScaledObject'),
  'monitoring.coreos.com/v1 ServiceMonitor': kind(ServiceMonitor, '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor', 'IServiceMonitor'),
  'monitoring.coreos.com/v1 PrometheusRule': kind(PrometheusRule, '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule', 'IPrometheusRule')
}

export function kindOf (doc: Doc): KindInfo {
  const info = KINDS[`${doc.apiVersion} ${doc.kind}`]
  if (info === undefined) throw new Error(`no schema for ${doc.apiVersion} ${doc.kind} (${doc.metadata.name}): add its model to test/deploy/manifests.ts`)
  return info
}

/** Validates one document against its JSON schema; throws with the field path on failure. */
export function validateDoc (doc: Doc): void {
  const { model } = kindOf(doc)
  try {
    new model(doc).validate()
  } catch (error) {
    throw new Error(`${doc.kind}/${doc.metadata.name}: ${error instanceof Error ? error.message : String(error)}`, { cause: error })
  }
}

/**
 * The environment variables the config schema reads, found by running `loadConfig` over a valid
 * environment that records every name asked for (so it cannot drift from src/config.ts).
 */
export function configEnvNames (): Set<string> {
  const names = new Set<string>()
  const env: Record<string, string> = {
    PUBLIC_URL: 'https://calls.example.org',
    TWILIO_AUTH_TOKEN: 'token',
    FORWARD_TO: '+15550002222',
    ASSEMBLYAI_API_KEY: 'key'
  }
  const recording = new Proxy(env, {
    get (target, property) {
      if (typeof property === 'string') names.add(property)
      return target[property as string]
    }
  })
  loadConfig(recording)
  return names
}

interface Kustomization {
  resources?: string[]
  components?: string[]
  namespace?: string
  configMapGenerator?: Array<{ name: string, behavior?: 'create' | 'merge' | 'replace', literals?: string[] }>
  patches?: Array<{ target: { group?: string, version?: string, kind?: string, name?: string }, patch: string }>
  images?: Array<{ name: string, newName?: string, newTag?: string, digest?: string }>
}

/** The kustomization fields the reader below understands; any other field fails, never is ignored. */
const KUSTOMIZATION_FIELDS = new Set(['apiVersion', 'kind', 'resources', 'components', 'namespace', 'configMapGenerator', 'patches', 'images'])

interface JsonPatchOperation { op: 'add' | 'remove' | 'replace', path: string, value?: unknown }

/** RFC 6901: the path's tokens, with ~1 and ~0 unescaped. */
function pointer (path: string): string[] {
  if (!path.startsWith('/')) throw new Error(`JSON pointer ${path} does not start with /`)
  return path.slice(1).split('/').map((token) => token.replaceAll('~1', '/').replaceAll('~0', '~'))
}

/** Applies one RFC 6902 operation (add, remove, replace: what k8s/ uses) in place. */
function applyOperation (doc: Doc, operation: JsonPatchOperation): void {
  const tokens = pointer(operation.path)
  const last = tokens.pop() as string
  let parent: unknown = doc
  for (const token of tokens) {
    parent = (parent as Record<string, unknown>)[token]
    if (parent === null || typeof parent !== 'object') throw new Error(`${doc.kind}/${doc.metadata.name}: ${operation.path} has no parent`)
  }
  if (Array.isArray(parent)) {
    const index = last === '-' ? parent.length : Number(last)
    if (operation.op === 'add') parent.splice(index, 0, operation.value)
    else if (index >= parent.length) throw new Error(`${doc.kind}/${doc.metadata.name}: ${operation.path} does not exist`)
    else if (operation.op === 'remove') parent.splice(index, 1)
    else parent[index] = operation.value
    return
  }
  const object = parent as Record<string, unknown>
  if (operation.op !== 'add' && !(last in object)) throw new Error(`${doc.kind}/${doc.metadata.name}: ${operation.path} does not exist`)
  if (operation.op === 'remove') delete object[last]
  else object[last] = operation.value
}

function targets (doc: Doc, target: { group?: string, version?: string, kind?: string, name?: string }): boolean {
  const [group, version] = doc.apiVersion.includes('/') ? doc.apiVersion.split('/') : ['', doc.apiVersion]
  return (target.group === undefined || target.group === group) &&
    (target.version === undefined || target.version === version) &&
    (target.kind === undefined || target.kind === doc.kind) &&
    (target.name === undefined || target.name === doc.metadata.name)
}

/** The image reference without its tag or digest, e.g. `registry.example.org/medstream`. */
export function imageName (image: string): string {
  const withoutDigest = image.split('@')[0] as string
  const slash = withoutDigest.lastIndexOf('/')
  const colon = withoutDigest.lastIndexOf(':')
  return colon > slash ? withoutDigest.slice(0, colon) : withoutDigest
}

/**
 * Renders a kustomization directory (relative to the repository root) the way `kubectl kustomize`
 * does, for the fields k8s/ uses: resources (files and directories), components, configMapGenerator
 * literals (create and merge), JSON 6902 patches with a target, namespace and images. Generated
 * ConfigMaps keep their plain name (kustomize appends a content hash; the kubectl test maps it back).
 * `without` leaves out components, as an operator who lacks that operator or CRD would.
 */
export function renderKustomization (dir: string, options: { without?: string[] } = {}, inherited: Doc[] = []): Doc[] {
  const kustomization = readYaml(posix.join(dir, 'kustomization.yaml')) as Kustomization
  for (const field of Object.keys(kustomization)) {
    if (!KUSTOMIZATION_FIELDS.has(field)) throw new Error(`${dir}/kustomization.yaml: the test reader does not understand \`${field}\`; teach it in test/deploy/manifests.ts`)
  }
  let docs = [...inherited]
  for (const resource of kustomization.resources ?? []) {
    const path = posix.join(dir, resource)
    if (statSync(join(ROOT, path)).isDirectory()) docs.push(...renderKustomization(path, options))
    else docs.push(...readDocs(path))
  }
  for (const component of kustomization.components ?? []) {
    const path = posix.join(dir, component)
    if (!(options.without ?? []).includes(posix.basename(path))) docs = renderKustomization(path, options, docs)
  }
  for (const generator of kustomization.configMapGenerator ?? []) {
    const data = Object.fromEntries((generator.literals ?? []).map((literal) => {
      const equals = literal.indexOf('=')
      return [literal.slice(0, equals), literal.slice(equals + 1)]
    }))
    const existing = docs.find((doc) => doc.kind === 'ConfigMap' && doc.metadata.name === generator.name) as (Doc & { data: Record<string, string> }) | undefined
    if ((generator.behavior ?? 'create') === 'create') {
      if (existing !== undefined) throw new Error(`${dir}: ConfigMap ${generator.name} already exists; use behavior: merge`)
      docs.push({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: generator.name }, data })
    } else {
      if (existing === undefined) throw new Error(`${dir}: no ConfigMap ${generator.name} to ${generator.behavior}`)
      existing.data = generator.behavior === 'merge' ? { ...existing.data, ...data } : data
    }
  }
  for (const { target, patch } of kustomization.patches ?? []) {
    const operations = parse(patch) as JsonPatchOperation[]
    if (!Array.isArray(operations)) throw new Error(`${dir}: only JSON 6902 patches are understood by the test reader`)
    const matched = docs.filter((doc) => targets(doc, target))
    if (matched.length === 0) throw new Error(`${dir}: a patch's target ${JSON.stringify(target)} matches nothing`)
    for (const doc of matched) for (const operation of operations) applyOperation(doc, operation)
  }
  if (kustomization.namespace !== undefined) {
    for (const doc of docs) if (doc.kind !== 'Namespace') doc.metadata.namespace = kustomization.namespace
  }
  for (const image of kustomization.images ?? []) {
    for (const doc of docs) {
      const pod = (doc as { spec?: { template?: { spec?: { containers?: Array<{ image: string }>, initContainers?: Array<{ image: string }> } } } }).spec?.template?.spec
      for (const container of [...(pod?.containers ?? []), ...(pod?.initContainers ?? [])]) {
        if (imageName(container.image) !== image.name) continue
        const name = image.newName ?? image.name
        const tag = container.image.slice(imageName(container.image).length)
        container.image = image.digest !== undefined ? `${name}@${image.digest}` : image.newTag !== undefined ? `${name}:${image.newTag}` : `${name}${tag}`
      }
    }
  }
  return docs
}
