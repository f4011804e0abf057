// Validates the custom resources in rendered manifests (YAML on stdin, many documents) against
// the published schemas: KEDA (ScaledObject, ScaledJob, TriggerAuthentication) and Prometheus
// Operator (ServiceMonitor, PodMonitor, PrometheusRule). Prints one line per object; exits 1 on
// any schema error or on a custom resource kind it has no schema for.
// CELERIAC_BUILTIN_ONLY=1: any custom resource fails (a base that applies on a bare cluster).
// CELERIAC_MONITOR_LABEL=key=value: monitors and rules without that label fail (the label
// kube-prometheus-stack's serviceMonitorSelector / podMonitorSelector / ruleSelector match).
// ES module: deploy/validate copies it beside the node_modules it imports from.
import fs from "node:fs";
import YAML from "yaml";
import * as keda from "@kubernetes-models/keda/keda.sh/v1alpha1";
import * as monitoring from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const models = {
  "keda.sh/v1alpha1": keda,
  "monitoring.coreos.com/v1": monitoring,
};
// Kinds checked elsewhere (kubernetes-validate) or by their own CRD only.
const builtin = /^(v1|apps\/v1|batch\/v1|policy\/v1|networking\.k8s\.io\/v1|autoscaling\/v2|rbac\.authorization\.k8s\.io\/v1)$/;
const noSchemaHere = new Set(["secrets-store.csi.x-k8s.io/v1"]);

const builtinOnly = process.env.CELERIAC_BUILTIN_ONLY === "1";
const [labelKey, labelValue] = (process.env.CELERIAC_MONITOR_LABEL || "").split("=");
const selected = new Set(["ServiceMonitor", "PodMonitor", "PrometheusRule"]);

const docs = YAML.parseAllDocuments(fs.readFileSync(0, "utf8"));
let failed = 0;
let checked = 0;
for (const doc of docs) {
  if (doc.errors.length) {
    console.error(`YAML error: ${doc.errors[0].message}`);
    failed++;
    continue;
  }
  const obj = doc.toJS();
  if (!obj) continue;
  const id = `${obj.apiVersion} ${obj.kind}/${obj.metadata && obj.metadata.name}`;
  if (builtin.test(obj.apiVersion) || noSchemaHere.has(obj.apiVersion)) continue;
  if (builtinOnly) {
    console.error(`FAIL ${id}: a custom resource in a kustomization that must apply without CRDs`);
    failed++;
    continue;
  }
  if (labelKey && selected.has(obj.kind)) {
    const labels = (obj.metadata && obj.metadata.labels) || {};
    if (labels[labelKey] !== labelValue) {
      console.error(`FAIL ${id}: no label ${labelKey}: ${labelValue} (Prometheus would not select it)`);
      failed++;
      continue;
    }
  }
  const group = models[obj.apiVersion];
  const Model = group && group[obj.kind];
  if (!Model) {
    console.error(`FAIL ${id}: no schema for this custom resource kind`);
    failed++;
    continue;
  }
  try {
    new Model(obj).validate();
    checked++;
    console.log(`ok   ${id}`);
  } catch (e) {
    failed++;
    console.error(`FAIL ${id}: ${e.message}`);
  }
}
console.log(`${checked} custom resources valid, ${failed} failed`);
process.exit(failed ? 1 : 0);
