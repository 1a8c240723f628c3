/**
 * Serve the Worker locally in workerd with an in-memory D1:
 *
 *   WEBHOOK_SECRET=whsec_... TRANSCRIBE_URL=http://127.0.0.1:9000/jobs npm run dev -- [--port 8787]
 *
 * Prints one line, `listening on <url>`, then serves until stopped. Outgoing fetches (the transcription
 * hand-off) go to the network; PROBE_URL set and `--entry test/worker/probe.js` serve the tests' probe Worker.
 */
import { parseArgs } from "node:util";

import { fetch as miniflareFetch, type Request as MiniflareRequest } from "miniflare";

import { startWorker } from "./miniflare.js";

const { values } = parseArgs({
  options: { port: { type: "string", default: "8787" }, entry: { type: "string", default: "src/index.js" } },
});
const bindings: Record<string, string> = {};
for (const name of ["WEBHOOK_SECRET", "TRANSCRIBE_URL", "PROBE_URL"]) {
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
