/**
 * Reading a prediction's `stems.json` (the model's last output file: every stem's figures, model and terms)
 * into D1, for the stems whose figures the webhooks did not bring (Replicate's API is not known to pass a
 * nested `metrics.stems` on). At most MAX_STEMS_JSON_BYTES are read, and the file is checked as strictly as
 * a webhook body; a file that fails the check is not retried, and the prediction's figures_error says why.
 */
import type { Env, FiguresJob } from "./env.js";
import { FiguresError, MAX_STEMS_JSON_BYTES, parseStemsJson } from "./figures.js";
import { queueHandOffs } from "./handoff.js";
import { PermanentError, tryLimitMs } from "./retry.js";

/** stems.json is small: a try that takes longer than this has stalled. */
const READ_LIMIT_MS = 60_000;

export async function readFigures(env: Env, job: FiguresJob, deadlineMs: number): Promise<void> {
  const row = await env.DB.prepare("SELECT figures_state FROM predictions WHERE id = ?1")
    .bind(job.prediction_id)
    .first<{ figures_state: string | null }>();
  if (row?.figures_state === "read" || row?.figures_state === "failed") return;
  const signal = AbortSignal.timeout(Math.min(READ_LIMIT_MS, tryLimitMs(Date.now(), deadlineMs)));
  const response = await fetch(job.url, { signal });
  if (!response.ok || response.body === null) {
    await response.body?.cancel();
    throw new Error(`${new URL(job.url).host} answered ${response.status} for stems.json`);
  }
  let figures;
  try {
    figures = parseStemsJson(await readText(response, MAX_STEMS_JSON_BYTES));
  } catch (error) {
    if (error instanceof FiguresError) throw new PermanentError(error.message);
    throw error;
  }
  await env.DB.batch([
    ...[...figures].map(([name, stem]) =>
      env.DB.prepare(
        `UPDATE stems SET figures_from = 'stems.json', present = ?3, peak_dbfs = ?4, loudness_lufs = ?5,
           active_fraction = ?6, model = ?7, terms = ?8
         WHERE prediction_id = ?1 AND name = ?2 AND figures_from IS NULL`,
      ).bind(
        job.prediction_id,
        name,
        stem.present === null ? null : Number(stem.present),
        stem.peak_dbfs,
        stem.loudness_lufs,
        stem.active_fraction,
        stem.model,
        stem.terms,
      ),
    ),
    env.DB.prepare("UPDATE predictions SET figures_state = 'read', figures_error = NULL WHERE id = ?1").bind(
      job.prediction_id,
    ),
  ]);
  await queueHandOffs(env, job.prediction_id);
}

/** stems.json cannot be read: its stems' figures stay as the webhooks left them, and their hand-off goes ahead. */
export async function giveUpFigures(env: Env, job: FiguresJob, reason: string | null): Promise<void> {
  await env.DB.prepare(
    `UPDATE predictions SET figures_state = 'failed',
       figures_error = COALESCE(?2, COALESCE(figures_error, 'failed') || ' (gave up after the last retry)')
     WHERE id = ?1 AND figures_state IN ('pending', 'queued')`,
  )
    .bind(job.prediction_id, reason)
    .run();
  await queueHandOffs(env, job.prediction_id);
}

export async function noteFiguresFailure(env: Env, job: FiguresJob, reason: string): Promise<void> {
  await env.DB.prepare("UPDATE predictions SET figures_error = ?2 WHERE id = ?1").bind(job.prediction_id, reason).run();
}

/** The body as UTF-8 text, refusing (PermanentError) one longer than `maxBytes` without reading past it. */
async function readText(response: Response, maxBytes: number): Promise<string> {
  const declared = response.headers.get("content-length");
  if (declared !== null && Number(declared) > maxBytes) {
    await response.body?.cancel();
    throw new PermanentError(`stems.json is ${declared} bytes, more than the ${maxBytes} read`);
  }
  const reader = response.body!.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel();
      throw new PermanentError(`stems.json is more than the ${maxBytes} bytes read`);
    }
    chunks.push(value);
  }
  const bytes = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  try {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    throw new PermanentError("stems.json is not UTF-8 text");
  }
}
