// Shared by the deployment tests: the repository root, YAML loading, the config schema's variable
// names and the Kubernetes models (JSON-schema validation) for every kind k8s/ uses.
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { HTTPRoute } from '@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1/HTTPRoute'
import { ScaledObject } from '@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject'
import { PrometheusRule } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule'
import { ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor'
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
