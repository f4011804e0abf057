// Validates the custom resources in rendered manifests (YAML on stdin, many documents) against
// the published schemas: KEDA (ScaledObject, ScaledJob, TriggerAuthentication) and Prometheus
// Operator (ServiceMonitor, PodMonitor, PrometheusRule). Prints one line per object; exits 1 on
// any schema error or on a custom resource kind it has no schema for.
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
