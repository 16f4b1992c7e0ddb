// Rewrites k8s/components/prometheus-operator/prometheusrule.yaml from observability/prometheus/alerts.yml: the PrometheusRule's
// spec.groups are a copy of that file's groups (kustomize cannot wrap a file into a custom resource).
// test/deploy/k8s.test.ts fails until this is run after a change to alerts.yml.
//   node scripts/k8s-prometheusrule.ts
import { readFileSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parse, stringify } from 'yaml'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const alerts = parse(readFileSync(join(root, 'observability/prometheus/alerts.yml'), 'utf8')) as { groups: unknown[] }
const header = `# The alert rules of observability/prometheus/alerts.yml for prometheus-operator: spec.groups is a
# copy of that file's groups (kustomize cannot wrap a file into a custom resource), written by
# \`node scripts/k8s-prometheusrule.ts\`; test/deploy/k8s.test.ts fails when the two differ.
# The kube-prometheus-stack \`release\` label is added by this component's kustomization.yaml.
`
const rule = {
  apiVersion: 'monitoring.coreos.com/v1',
  kind: 'PrometheusRule',
  metadata: { name: 'medstream', labels: { 'app.kubernetes.io/name': 'medstream' } },
  spec: { groups: alerts.groups }
}
writeFileSync(join(root, 'k8s/components/prometheus-operator/prometheusrule.yaml'), header + stringify(rule, { lineWidth: 0 }))
