// Counts per flag, variant and metric, and their reporting in batches to
// POST /api/v1/environments/{env}/metrics. Each batch has an id, so a batch sent again after a
// lost answer counts once. The same rules as the Rust provider (sdks/rust/src/metrics.rs).
import { randomBytes } from "node:crypto";

/** The API's limits on a batch (docs/api.md, Limits). */
const COUNTERS_PER_BATCH = 1000;
const METRICS_PER_COUNTER = 32;
const MAX_COUNT = 1_000_000_000;
/** How long a batch may take, and the longest Retry-After heeded. */
const SEND_TIMEOUT_MS = 30000;
const LONGEST_RETRY_AFTER_MS = 3600000;

export class Counts {
  /** flag → variant → metric → count */
  #counts = new Map();

  add(flag, variant, metric, count) {
    if (!(count > 0)) return;
    let variants = this.#counts.get(flag);
    if (!variants) this.#counts.set(flag, (variants = new Map()));
    let metrics = variants.get(variant);
    if (!metrics) variants.set(variant, (metrics = new Map()));
    metrics.set(metric, (metrics.get(metric) ?? 0) + count);
  }

  /** Up to a batch's worth of counters, taken out; a count over the API's limit leaves the rest. */
  take() {
    const taken = [];
    for (const [flag, variants] of this.#counts) {
      for (const [variant, metrics] of variants) {
        if (taken.length === COUNTERS_PER_BATCH) return taken;
        const counts = {};
        for (const [metric, n] of [...metrics].slice(0, METRICS_PER_COUNTER)) {
          counts[metric] = Math.min(n, MAX_COUNT);
          if (n > MAX_COUNT) metrics.set(metric, n - MAX_COUNT);
          else metrics.delete(metric);
        }
        if (!metrics.size) variants.delete(variant);
        taken.push({ flag, variant, counts });
      }
      if (!variants.size) this.#counts.delete(flag);
    }
    return taken;
  }
}

/** Sends counts in batches; a batch that could not be counted is sent again, the same, next time. */
export class Reporter {
  #pending = null;
  #sender = randomBytes(8).toString("hex");
  #sequence = 0;
  #sending = Promise.resolve();
  /** After a 429, nothing is sent before this time (ms since the epoch). */
  #notBefore = 0;

  constructor({ url, token, counts, logger }) {
    Object.assign(this, { url, token, counts, logger });
  }

  /** Reports everything counted so far, a batch at a time, until one must wait. */
  report() {
    this.#sending = this.#sending.then(() => this.#report());
    return this.#sending;
  }

  async #report() {
    while (Date.now() >= this.#notBefore) {
      if (!this.#pending) {
        const counters = this.counts.take();
        if (!counters.length) return;
        this.#pending = { batch: `${this.#sender}:${++this.#sequence}`, counters };
      }
      if (!(await this.#send(this.#pending))) return;
      this.#pending = null;
    }
  }

  /** True when counted, or refused for good (it would be refused again). */
  async #send(batch) {
    try {
      const response = await fetch(this.url, {
        method: "POST",
        headers: { authorization: `Bearer ${this.token}`, "content-type": "application/json" },
        body: JSON.stringify(batch),
        signal: AbortSignal.timeout(SEND_TIMEOUT_MS),
      });
      const text = await response.text();
      if (response.ok) return true;
      if (response.status === 429) {
        const seconds = Number(response.headers.get("retry-after"));
        this.#notBefore = Date.now() + Math.min(LONGEST_RETRY_AFTER_MS, (Number.isFinite(seconds) && seconds > 0 ? seconds : 1) * 1000);
        return false;
      }
      if (response.status >= 500) return false;
      this.logger?.warn?.(`rollgate: the control plane refused a metrics batch (${response.status}); dropped: ${text}`);
      return true;
    } catch {
      return false;
    }
  }
}
