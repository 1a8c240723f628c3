/**
 * The example Worker for the tests: reports each `onStem` call to PROBE_URL (the test's recorder) before doing
 * what the example does. With SETTLE set it answers only once the hooks have run, so a test sees them all.
 */
import { type FretWiseEnv, sendToTranscription } from "../../src/index.js";
import { createWorker } from "../../src/worker.js";

interface ProbeEnv extends FretWiseEnv {
  PROBE_URL: string;
  SETTLE?: string;
}

const worker = createWorker<ProbeEnv>(async (stem, prediction, env, ctx) => {
  await fetch(env.PROBE_URL, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ prediction: prediction.id, stem: stem.name, present: stem.present }),
  });
  await sendToTranscription(stem, prediction, env, ctx);
});

export default {
  async fetch(request, env, ctx) {
    if (!env.SETTLE) return worker.fetch!(request, env, ctx);
    const hooks: Promise<unknown>[] = [];
    const settling = { waitUntil: (hook: Promise<unknown>) => hooks.push(hook), passThroughOnException() {} };
    const response = await worker.fetch!(request, env, settling as unknown as ExecutionContext);
    await Promise.all(hooks);
    return response;
  },
} satisfies ExportedHandler<ProbeEnv>;
