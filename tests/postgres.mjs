// A private, throwaway PostgreSQL cluster on loopback for one test file, through
// tests/postgres-cluster. Private, because failure tests stop and start it.
import { execFile, execFileSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { freePort } from "./stack.mjs";

const run = promisify(execFile);
const cluster = join(dirname(fileURLToPath(import.meta.url)), "postgres-cluster");

/**
 * Starts a cluster. Returns { database(name), stop(), start(), remove() }: `database` creates an
 * empty database and returns its URL; `stop` is a fast shutdown that cuts every session.
 */
export async function startPostgres() {
  const dir = mkdtempSync(join(tmpdir(), "rollgate-postgres-"));
  const port = await freePort();
  const url = `postgres://rollgate@127.0.0.1:${port}`;
  // However this process ends, the cluster does not outlive it.
  const removeOnExit = () => execFileSync(cluster, ["remove", dir]);
  process.once("exit", removeOnExit);
  await run(cluster, ["init", dir]);
  const start = () => run(cluster, ["start", dir, String(port)]);
  await start();
  return {
    async database(name) {
      await run("psql", ["-q", `${url}/postgres`, "-c", `CREATE DATABASE ${name}`]);
      return `${url}/${name}`;
    },
    stop: () => run(cluster, ["stop", dir]),
    start,
    async remove() {
      process.off("exit", removeOnExit);
      await run(cluster, ["remove", dir]);
    },
  };
}
