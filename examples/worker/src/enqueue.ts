/**
 * Queue what a prediction's recorded stems still need: a copy for each stem not yet queued (none for a stem
 * whose figures say present: false) and one read of stems.json. Runs after every webhook, duplicates
 * included, so a send that failed (answered 500, and retried by Replicate) is made up by the retry.
 */
import type { CopyJob, Env } from "./env.js";
import { r2Key } from "./env.js";
import { classifyOutput } from "./stems.js";

/** Cloudflare's most messages in one sendBatch. */
const MAX_BATCH_MESSAGES = 100;

interface PendingStem {
  name: string;
  url: string;
}

interface PredictionRow {
  files_since_ms: number;
  figures_url: string | null;
  figures_state: string | null;
}

export async function queueCopies(env: Env, predictionId: string): Promise<void> {
  const [, pendingResult, predictionResult] = await env.DB.batch([
    env.DB.prepare(
      "UPDATE stems SET copy_state = 'not_copied' WHERE prediction_id = ?1 AND copy_state = 'pending' AND present = 0",
    ).bind(predictionId),
    env.DB.prepare("SELECT name, url FROM stems WHERE prediction_id = ?1 AND copy_state = 'pending'").bind(predictionId),
    env.DB.prepare("SELECT files_since_ms, figures_url, figures_state FROM predictions WHERE id = ?1").bind(predictionId),
  ]);
  const pending = (pendingResult?.results ?? []) as PendingStem[];
  const prediction = predictionResult?.results[0] as PredictionRow | undefined;
  if (!prediction) return;
  const jobs: CopyJob[] = pending.map(({ name, url }) => {
    const file = classifyOutput(url); // stored only after the same check passed
    const ext = file.kind === "stem" ? file.ext : "bin";
    const contentType = file.kind === "stem" ? file.contentType : "application/octet-stream";
    return {
      kind: "stem",
      prediction_id: predictionId,
      stem: name,
      url,
      r2_key: r2Key(predictionId, name, ext),
      content_type: contentType,
      event_at_ms: prediction.files_since_ms,
    };
  });
  if (prediction.figures_state === "pending" && prediction.figures_url !== null) {
    jobs.push({ kind: "figures", prediction_id: predictionId, url: prediction.figures_url, event_at_ms: prediction.files_since_ms });
  }
  if (jobs.length === 0) return;
  for (let start = 0; start < jobs.length; start += MAX_BATCH_MESSAGES) {
    await env.COPY_QUEUE.sendBatch(jobs.slice(start, start + MAX_BATCH_MESSAGES).map((body) => ({ body })));
  }
  await env.DB.batch([
    env.DB.prepare(
      `UPDATE stems SET copy_state = 'queued'
       WHERE prediction_id = ?1 AND copy_state = 'pending' AND name IN (SELECT value FROM json_each(?2))`,
    ).bind(predictionId, JSON.stringify(pending.map((stem) => stem.name))),
    env.DB.prepare("UPDATE predictions SET figures_state = 'queued' WHERE id = ?1 AND figures_state = 'pending'").bind(
      predictionId,
    ),
  ]);
}
