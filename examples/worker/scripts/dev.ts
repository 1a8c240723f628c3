/**
 * Serve the Worker locally in workerd with an in-memory D1, R2 bucket and queues (wrangler.toml's):
 *
 *   WEBHOOK_SECRET=whsec_... TRANSCRIBE_URL=http://127.0.0.1:9000/jobs npm run dev -- [--port 8787]
 *
 * Prints one line, `listening on <url>`, then serves until stopped. Outgoing fetches (the stem files, the
 * transcription hand-off) go to the network. ACCEPTED_TERMS and RETRY_BASE_SECONDS, when set, replace
 * wrangler.toml's vars; `--entry test/worker/probe.js` serves the tests' probe Worker (its /probe/ routes list
 * what is in R2 and D1; PROBE_URL, when set, gets a report of each R2 write and queue send).
 */
import { parseArgs } from "node:util";

import { fetch as miniflareFetch, type Request as MiniflareRequest } from "miniflare";

import { startWorker } from "./miniflare.js";

const { values } = parseArgs({
  options: { port: { type: "string", default: "8787" }, entry: { type: "string", default: "src/index.js" } },
});
const bindings: Record<string, string> = {};
for (const name of ["WEBHOOK_SECRET", "TRANSCRIBE_URL", "PROBE_URL", "ACCEPTED_TERMS", "RETRY_BASE_SECONDS"]) {
  const value = process.env[name];
  if (value) bindings[name] = value;
}
if (!bindings.WEBHOOK_SECRET) {
  console.error("set WEBHOOK_SECRET=whsec_... (the secret the webhooks are signed with)");
  process.exit(2);
}
const worker = await startWorker({
  entry: values.entry,
  port: Number(values.port),
  bindings,
  outbound: (request: MiniflareRequest) => miniflareFetch(request),
});
console.log(`listening on ${new URL("/webhooks/replicate", worker.url)}`);
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => void worker.dispose().then(() => process.exit(0)));
}
