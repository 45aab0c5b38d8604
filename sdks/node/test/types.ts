// Compiled (not run) by types.test.mjs: the package's types, used as an app would.
import { OpenFeature } from "@openfeature/server-sdk";
import { RollgateProvider, type RollgateProviderOptions } from "../src/index.js";

const options: RollgateProviderOptions = {
  url: "http://127.0.0.1:8080",
  token: "rg_...",
  environment: "production",
  saveTo: "flags.json",
  metricsIntervalMs: null,
};
const provider = new RollgateProvider(options);
await OpenFeature.setProviderAndWait(provider);
const client = OpenFeature.getClient();
const details = await client.getBooleanDetails("checkout-v2", false, { targetingKey: "user-42" });
const on: boolean = details.value;
client.track("requests", { targetingKey: "user-42" }, { flag: "checkout-v2", variant: details.variant ?? "off" });
const version: number | undefined = provider.version;
await provider.flush();
console.log(on, version);

// @ts-expect-error: a token is required.
new RollgateProvider({ url: "http://127.0.0.1:8080", environment: "production" });
// @ts-expect-error: times are numbers of milliseconds.
new RollgateProvider({ ...options, maxBackoffMs: "30s" });
