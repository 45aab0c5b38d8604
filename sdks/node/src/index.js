// Rollgate's in-process OpenFeature provider for Node: flag-core, compiled to WebAssembly,
// evaluates inside the app; the control plane's snapshot stream keeps it current. Options,
// events and metrics: docs/sdks.md.
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { open, rename } from "node:fs/promises";
import { createRequire } from "node:module";

import {
  instantiateErrorByErrorCode,
  OpenFeatureEventEmitter,
  ProviderEvents,
  ProviderNotReadyError,
  TypeMismatchError,
} from "@openfeature/server-sdk";

import { Counts, Reporter } from "./metrics.js";
import { changedFlags, digest, follow } from "./sync.js";

// wasm-bindgen's Node build is CommonJS; `build` copies it into ../wasm.
const { Engine } = createRequire(import.meta.url)("../wasm/flag_core.js");

const DEFAULTS = {
  initializeTimeoutMs: 5000,
  maxBackoffMs: 30000,
  streamIdleTimeoutMs: 45000,
  metricsIntervalMs: 10000,
};

/** What each OpenFeature type's values look like. */
const FITS = {
  boolean: (value) => typeof value === "boolean",
  string: (value) => typeof value === "string",
  number: (value) => typeof value === "number",
  object: (value) => typeof value === "object" && value !== null && !Array.isArray(value),
};

/** The metric names the API takes. */
const METRIC_NAME = /^[a-z0-9_.-]{1,64}$/;

/** The same words as the control plane's OFREP answers. */
const DETAILS = {
  FLAG_NOT_FOUND: "no flag has this key",
  TARGETING_KEY_MISSING: "only a percentage rollout decides this flag, and the context has no targetingKey",
};

export class RollgateProvider {
  metadata = { name: "rollgate" };
  runsOn = "server";
  events = new OpenFeatureEventEmitter();
  hooks = [];

  #options;
  #engine = null;
  #types = new Map();
  #digest = null;
  #status = "NOT_READY";
  /** Events go out once `initialize` has settled; until then its outcome speaks for them. */
  #emitting = false;
  #stop = new AbortController();
  #following = null;
  #counts = new Counts();
  #reporter = null;
  #timer = null;
  #served = [];
  #saving = Promise.resolve();

  /**
   * @param {object} options `url`, `token` (a read token), `environment`; optionally `bootstrap`
   * and `saveTo` (snapshot files), `initializeTimeoutMs`, `maxBackoffMs`, `streamIdleTimeoutMs`,
   * `metricsIntervalMs` (`null`: report nothing), `logger`.
   */
  constructor(options) {
    for (const name of ["url", "token", "environment"]) {
      if (typeof options?.[name] !== "string" || !options[name]) throw new TypeError(`RollgateProvider: \`${name}\` is required`);
    }
    // An option given as undefined takes its default; a time must be a positive number.
    const times = Object.fromEntries(Object.keys(DEFAULTS).map((name) => [name, options[name] === undefined ? DEFAULTS[name] : options[name]]));
    for (const [name, value] of Object.entries(times)) {
      const off = name === "metricsIntervalMs" && value === null;
      if (!off && !(Number.isFinite(value) && value > 0)) throw new TypeError(`RollgateProvider: \`${name}\` must be a positive number of milliseconds`);
    }
    this.#options = { ...options, ...times, url: options.url.replace(/\/+$/, "") };
    if (options.bootstrap) {
      let text;
      try {
        text = readFileSync(options.bootstrap, "utf8");
      } catch (error) {
        throw new Error(`cannot read the bootstrap snapshot ${options.bootstrap}: ${error.message}`);
      }
      const refused = this.#apply(text);
      if (refused) throw new Error(`the bootstrap snapshot ${options.bootstrap} is invalid: ${refused}`);
    }
  }

  /** The version of the snapshot served, if any. */
  get version() {
    return this.#engine?.version;
  }

  /**
   * Starts following the control plane and reporting counts. Unless a snapshot was
   * bootstrapped, waits up to `initializeTimeoutMs` for one, and fails without: evaluations
   * then answer PROVIDER_NOT_READY until it comes, which sends READY.
   */
  async initialize() {
    if (!this.#following) this.#start();
    try {
      if (!this.#engine) {
        await new Promise((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(
            `no snapshot from ${this.#options.url} within ${this.#options.initializeTimeoutMs} ms; ` +
            "evaluations answer PROVIDER_NOT_READY until one comes")), this.#options.initializeTimeoutMs);
          this.#served.push(() => { clearTimeout(timer); resolve(); });
        });
      }
    } finally {
      this.#emitting = true;
    }
  }

  /** Reports what is counted, then stops following the control plane. */
  async onClose() {
    this.#stop.abort();
    clearInterval(this.#timer);
    await this.#following;
    await this.flush();
    await this.#saving;
  }

  async resolveBooleanEvaluation(flagKey, _defaultValue, context) {
    return this.#resolve(flagKey, context, "boolean");
  }

  async resolveStringEvaluation(flagKey, _defaultValue, context) {
    return this.#resolve(flagKey, context, "string");
  }

  async resolveNumberEvaluation(flagKey, _defaultValue, context) {
    return this.#resolve(flagKey, context, "number");
  }

  async resolveObjectEvaluation(flagKey, _defaultValue, context) {
    return this.#resolve(flagKey, context, "object");
  }

  /**
   * OpenFeature's tracking API: `client.track("errors", context, {flag, variant, value})`
   * counts `value` (default 1) of the metric named by the event, for the units served `variant`
   * of `flag`: what a rollout plan's guardrails compare.
   */
  track(trackingEventName, _context, details = {}) {
    const { flag, variant, value = 1 } = details ?? {};
    // What the API would refuse is not counted, so it cannot sink a whole batch.
    const why = typeof flag !== "string" || typeof variant !== "string" ? "needs the details' flag and variant"
      : !this.#types.has(flag) ? `names a flag the snapshot does not have (${flag})`
        : !METRIC_NAME.test(trackingEventName) ? "is not a metric name (1 to 64 of a-z 0-9 _ . -)"
          : !(Number.isSafeInteger(value) && value > 0) ? "needs a whole, positive value" : null;
    if (why) {
      this.#options.logger?.warn?.(`rollgate: track("${trackingEventName}") ${why}; not counted`);
      return;
    }
    if (this.#reporting) this.#counts.add(flag, variant, trackingEventName, value);
  }

  /** Reports the counts now rather than at the next interval. */
  async flush() {
    await this.#reporter?.report();
  }

  get #reporting() {
    return this.#options.metricsIntervalMs !== null;
  }

  #start() {
    const options = this.#options;
    if (this.#reporting) {
      const url = `${options.url}/api/v1/environments/${encodeURIComponent(options.environment)}/metrics`;
      this.#reporter = new Reporter({ url, token: options.token, counts: this.#counts, logger: options.logger });
      this.#timer = setInterval(() => this.#reporter.report(), options.metricsIntervalMs);
      this.#timer.unref();
    }
    this.#following = follow({
      options,
      signal: this.#stop.signal,
      apply: (text) => this.#apply(text),
      reachable: () => this.#engine && this.#status !== "ERROR" && this.#moveTo("READY"),
      unreachable: (why) => this.#engine && this.#status === "READY" && this.#moveTo("STALE", why),
      version: () => this.#engine?.version,
    });
  }

  #resolve(flagKey, context, type) {
    const engine = this.#engine;
    if (!engine) throw new ProviderNotReadyError("no snapshot yet");
    const actual = this.#types.get(flagKey);
    if (actual !== undefined && actual !== type) throw new TypeMismatchError(`the flag is of type ${actual}`);
    const result = engine.evaluate(flagKey, context ?? {}, Date.now());
    if (result.errorCode) throw instantiateErrorByErrorCode(result.errorCode, DETAILS[result.errorCode] ?? "evaluation failed");
    if (!FITS[type](result.value)) throw new TypeMismatchError(`the flag's value is not a ${type}`);
    if (this.#reporting) {
      this.#counts.add(flagKey, result.variant, "evaluations", 1);
      // What a rollout plan's sample-ratio check compares with the configured split.
      if (result.reason === "SPLIT" && result.ruleIndex === undefined) {
        this.#counts.add(flagKey, result.variant, "rollout_evaluations", 1);
      }
    }
    const flagMetadata = {};
    if (result.ruleIndex !== undefined) flagMetadata.ruleIndex = result.ruleIndex;
    if (result.bucketKeyMissing) flagMetadata.bucketKeyMissing = true;
    if (result.metadata?.prerequisiteFailed) flagMetadata.prerequisiteFailed = true;
    return { value: result.value, variant: result.variant, reason: result.reason, flagMetadata };
  }

  /** Serves `text` if flag-core compiles it and it is newer; returns why not if refused. */
  #apply(text) {
    let engine;
    let snapshot;
    try {
      snapshot = JSON.parse(text);
      engine = new Engine(text);
    } catch (error) {
      return this.#refuse(`a snapshot flag-core refuses: ${error.message}`);
    }
    if (engine.environment !== this.#options.environment) {
      engine.free();
      return this.#refuse(`a snapshot of \`${snapshot.environment}\`, not of \`${this.#options.environment}\``);
    }
    if (this.#engine && engine.version <= this.#engine.version) {
      engine.free();
      return null;
    }
    const now = digest(snapshot);
    const changed = this.#digest ? changedFlags(this.#digest, now) : null;
    const old = this.#engine;
    this.#engine = engine;
    this.#types = new Map((snapshot.flags ?? []).map((flag) => [flag.key, flag.type]));
    this.#digest = now;
    // Evaluation is synchronous, so none is running on the old engine now.
    old?.free();
    for (const served of this.#served.splice(0)) served();
    this.#moveTo("READY");
    if (changed && this.#emitting) {
      this.events.emit(ProviderEvents.ConfigurationChanged, { flagsChanged: changed, metadata: this.#metadata() });
    }
    if (this.#options.saveTo) this.#saving = this.#saving.then(() => this.#save(text));
    return null;
  }

  /** Reports a refused snapshot (each one, even while in error already); returns why. */
  #refuse(why) {
    this.#options.logger?.warn?.(`rollgate: ${why}; the last good one is served`);
    this.#status = "ERROR";
    if (this.#emitting) this.events.emit(ProviderEvents.Error, { message: why, metadata: this.#metadata() });
    return why;
  }

  /**
   * Written beside under a name of its own (processes may share the file), flushed to disk,
   * then renamed over it: a crash or a power cut leaves the old file or the new one, never half.
   */
  async #save(text) {
    const partial = `${this.#options.saveTo}.${process.pid}-${randomBytes(8).toString("hex")}.partial`;
    try {
      const file = await open(partial, "w");
      try {
        await file.writeFile(text);
        await file.sync();
      } finally {
        await file.close();
      }
      await rename(partial, this.#options.saveTo);
    } catch (error) {
      this.#options.logger?.warn?.(`rollgate: cannot save the snapshot to ${this.#options.saveTo}: ${error.message}`);
    }
  }

  /** Moves to `to`; an event goes out only when the status changes. */
  #moveTo(to, message) {
    if (this.#status === to) return;
    this.#status = to;
    if (!this.#emitting) return;
    const event = { READY: ProviderEvents.Ready, STALE: ProviderEvents.Stale }[to];
    if (event) this.events.emit(event, { ...(message ? { message } : {}), metadata: this.#metadata() });
  }

  #metadata() {
    return this.#engine ? { version: this.#engine.version } : {};
  }
}
