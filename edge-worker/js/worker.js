// The Worker's entry module: hands requests and the Durable Object to the Rust code that
// wasm-bindgen generated in ./index.js (see edge-worker/build).
import { DurableObject, WorkerEntrypoint } from "cloudflare:workers";
import * as edge from "./index.js";

export default class Edge extends WorkerEntrypoint {
  fetch(request) {
    return edge.fetch(request, this.env, this.ctx);
  }
}

export class EdgeConfig extends DurableObject {
  constructor(state, env) {
    super(state, env);
    this.inner = new edge.EdgeConfig(state, env);
  }

  fetch(request) {
    return this.inner.fetch(request);
  }

  alarm() {
    return this.inner.alarm();
  }
}
