// Validates KEDA ScaledJobs against KEDA's CRD schema, as packaged in
// @kubernetes-models/keda (generated from KEDA's CRDs; scripts/test installs it into
// .tools/npm). Reads a JSON array of objects on stdin; prints one line per problem and exits
// 1 when there is any. Usage: node validate_keda.mjs NODE_MODULES_DIR < objects.json
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const modules = process.argv[2];
if (!modules) {
  console.error("usage: node validate_keda.mjs NODE_MODULES_DIR < objects.json");
  process.exit(2);
}
const file = join(modules, "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledJob.js");
const { ScaledJob } = await import(pathToFileURL(file).href);
const version = JSON.parse(readFileSync(join(modules, "@kubernetes-models/keda/package.json"), "utf8")).version;
const objects = JSON.parse(readFileSync(0, "utf8"));
let bad = 0;
for (const obj of objects) {
  const name = `${obj.kind}/${obj.metadata?.name}`;
  try {
    new ScaledJob(obj).validate();
    console.log(`valid ${name} (@kubernetes-models/keda ${version})`);
  } catch (e) {
    bad += 1;
    console.log(`invalid ${name}: ${e.message}`);
  }
}
process.exit(bad ? 1 : 0);
