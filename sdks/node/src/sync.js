// Following the control plane: its snapshot stream (docs/api.md, Stream), resumed with
// Last-Event-ID, and between attempts a poll of the snapshot with If-None-Match, which also
// serves where a proxy does not pass the stream through. Reconnections back off exponentially
// with jitter. The same rules as the Rust provider (sdks/rust/src/sync.rs).
import { createHash } from "node:crypto";

/** From 250 ms, doubling up to `max`; each wait drawn between half of it and all of it. */
export class Backoff {
  constructor(maxMs) {
    this.maxMs = maxMs;
    this.reset();
  }

  reset() {
    this.nextMs = 250;
  }

  next() {
    const ceiling = Math.min(this.nextMs, this.maxMs);
    this.nextMs = Math.min(this.nextMs * 2, this.maxMs);
    return ceiling * (0.5 + Math.random() / 2);
  }
}

const hash = (value) => createHash("sha256").update(JSON.stringify(value)).digest("base64");

/** A snapshot's flags and segments in a few bytes each: enough to tell what a newer one changes. */
export function digest(snapshot) {
  return {
    flags: new Map((snapshot.flags ?? []).map((flag) => [flag.key, {
      hash: hash(flag),
      segments: (flag.rules ?? []).flatMap((rule) => rule.segments ?? []),
      prerequisites: (flag.prerequisites ?? []).map((p) => p.flag),
    }])),
    segments: new Map((snapshot.segments ?? []).map((segment) => [segment.key, hash(segment)])),
  };
}

/**
 * Flags added, removed or changed from `old` to `now`, and flags whose answers follow them:
 * through a changed segment they target, or a prerequisite that changed, all the way down.
 */
export function changedFlags(old, now) {
  const differ = (a, b, value) => [...new Set([...a.keys(), ...b.keys()])].filter((key) => value(a.get(key)) !== value(b.get(key)));
  const segments = new Set(differ(old.segments, now.segments, (h) => h));
  const changed = new Set(differ(old.flags, now.flags, (f) => f?.hash));
  for (const [key, flag] of now.flags) if (flag.segments.some((s) => segments.has(s))) changed.add(key);
  for (let before = -1; before !== changed.size;) {
    before = changed.size;
    for (const [key, flag] of now.flags) if (flag.prerequisites.some((p) => changed.has(p))) changed.add(key);
  }
  return [...changed].sort();
}

/**
 * Server-Sent Events from a fetch body: yields `{id, event, data}`; `onBytes` sees every chunk.
 * Line ends are made `\n` as they arrive, and each chunk is searched once, so a large event
 * arriving in many chunks costs time in proportion to its size.
 */
export async function* serverSentEvents(body, onBytes) {
  const decoder = new TextDecoder();
  let buffer = "";
  let searched = 0;
  let carriageReturn = false;
  for await (const chunk of body) {
    onBytes();
    let text = decoder.decode(chunk, { stream: true });
    // A `\r` at a chunk's end may be the first half of `\r\n`.
    if (carriageReturn) text = `\r${text}`;
    carriageReturn = text.endsWith("\r");
    if (carriageReturn) text = text.slice(0, -1);
    buffer += text.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n", Math.max(0, searched - 1))) !== -1) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      searched = 0;
      const event = { id: undefined, event: "message", data: [] };
      for (const line of block.split("\n")) {
        if (line === "" || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const [field, value] = colon === -1 ? [line, ""] : [line.slice(0, colon), line.slice(colon + 1).replace(/^ /, "")];
        if (field === "data") event.data.push(value);
        else if (field === "event") event.event = value;
        else if (field === "id") event.id = value;
      }
      if (event.data.length) yield { ...event, data: event.data.join("\n") };
    }
    searched = buffer.length;
  }
}

/**
 * Follows the control plane until `signal` aborts. `apply(json)` is given each snapshot's
 * text; `reachable()` and `unreachable(why)` say whether what is served is current;
 * `version()` is the version served.
 */
export async function follow({ options, signal, apply, reachable, unreachable, version }) {
  const base = `${options.url}/api/v1/environments/${encodeURIComponent(options.environment)}`;
  const headers = { authorization: `Bearer ${options.token}` };
  const backoff = new Backoff(options.maxBackoffMs);
  const sleep = (ms) => new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    timer.unref?.();
    signal.addEventListener("abort", done, { once: true });
  });

  async function stream() {
    const connection = new AbortController();
    const stop = () => connection.abort();
    signal.addEventListener("abort", stop, { once: true });
    let idle;
    let opened = false;
    const quiet = () => {
      clearTimeout(idle);
      idle = setTimeout(() => connection.abort(new Error(`nothing for ${options.streamIdleTimeoutMs / 1000} s`)), options.streamIdleTimeoutMs);
      idle.unref?.();
    };
    try {
      const served = version();
      // A connection that died silently must not hold the follower: the answer's head comes
      // within the idle timeout, or the attempt fails.
      quiet();
      const response = await fetch(`${base}/stream`, {
        headers: { ...headers, accept: "text/event-stream", ...(served === undefined ? {} : { "last-event-id": String(served) }) },
        signal: connection.signal,
      });
      if (!response.ok) {
        await response.body?.cancel();
        return { opened: false, ended: `the stream answered ${response.status}` };
      }
      // Connected: what is served is current, and whatever is newer comes next.
      opened = true;
      reachable();
      quiet();
      for await (const event of serverSentEvents(response.body, quiet)) {
        if (event.event === "snapshot") apply(event.data);
      }
      return { opened: true, ended: "the control plane closed the stream" };
    } catch (error) {
      const why = connection.signal.reason?.message ?? error.cause?.message ?? error.message;
      return { opened, ended: `the stream broke: ${why}` };
    } finally {
      clearTimeout(idle);
      signal.removeEventListener("abort", stop);
      connection.abort();
    }
  }

  async function poll() {
    const served = version();
    const response = await fetch(`${base}/snapshot`, {
      headers: { ...headers, ...(served === undefined ? {} : { "if-none-match": `"${served}"` }) },
      signal: AbortSignal.any([signal, AbortSignal.timeout(options.streamIdleTimeoutMs)]),
    });
    if (response.status === 304) return;
    if (response.status !== 200) {
      await response.body?.cancel();
      throw new Error(`the snapshot answered ${response.status}`);
    }
    apply(await response.text());
  }

  while (!signal.aborted) {
    const streamed = await stream();
    if (signal.aborted) return;
    if (streamed.opened) backoff.reset();
    try {
      await poll();
      reachable();
    } catch (error) {
      if (signal.aborted) return;
      unreachable(`${streamed.ended}; ${error.cause?.message ?? error.message}`);
    }
    await sleep(backoff.next());
  }
}
