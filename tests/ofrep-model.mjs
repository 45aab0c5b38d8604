// OFREP's model of bulk answers, event-stream entries and stream events, as OpenFeature
// publishes it in @openfeature/ofrep-core (the version the newest web provider uses, installed
// as `ofrep-model`), compiled to JSON Schema. A wrong type or a missing required field is a
// failure. Answers stay open to fields the model does not name, as OFREP's own schemas are
// (Rollgate adds `ruleIndex` and `bucketKeyMissing`); the event-stream shapes are closed, so a
// stream entry or event may carry nothing the model does not define. The protocol's YAML files
// (open-feature/protocol service/openapi.yaml and event-streams.yaml) are in no package
// registry; this package's types are where OpenFeature's clients read the same shapes from.
import { dirname, join } from "node:path";
import { createRequire } from "node:module";

import Ajv from "ajv";
import { createGenerator } from "ts-json-schema-generator";

const require = createRequire(import.meta.url);
const model = join(dirname(require.resolve("ofrep-model/package.json")), "src/lib/model/index.d.ts");

const schema = createGenerator({ path: model, type: "*", skipTypeCheck: true, additionalProperties: true }).createSchema("*");
for (const closed of ["EventStream", "EventStreamEndpoint", "EventStreamMessage", "BulkEvaluationRefetchMetadata"]) {
  schema.definitions[closed].additionalProperties = false;
}
const ajv = new Ajv({ allErrors: true, strict: false });
ajv.addSchema(schema, "ofrep");

/** The package version the shapes come from. */
export const modelVersion = require("ofrep-model/package.json").version;

/**
 * A checker for the model's type `name`: returns the list of violations (empty when `value`
 * conforms), each naming the path and what the model says.
 */
export function conformsTo(name) {
  if (!schema.definitions[name]) throw new Error(`the OFREP model has no type ${name}`);
  const validate = ajv.getSchema(`ofrep#/definitions/${name}`);
  return (value) =>
    validate(value) ? [] : validate.errors.map((error) => `${error.instancePath || "/"} ${error.message} ${JSON.stringify(error.params)}`);
}
