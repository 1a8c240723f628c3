/**
 * The transcription hand-off, through HANDOFF_QUEUE: the one stem FretWise transcribes (`guitar`, or
 * `instrumental` for a prediction without a guitar stem; input.ts) is handed on once it is in R2 and its
 * figures say it is present. Delivery is at least once: the hook may see a job again (after a retry, or a
 * redelivered message) and the job's `idempotency_key` (`<prediction id>/<stem>`) lets the receiver drop
 * repeats.
 */
import type { Env, HandOffJob } from "./env.js";
import type { StemFigures } from "./figures.js";
import { describeError, retryBaseSeconds, retryDelaySeconds } from "./retry.js";

/** Send one job on; throw to have it tried again. Called at least once per job. */
export type HandOff<E extends Env = Env> = (job: HandOffJob, env: E) => Promise<void>;

/** Whether `terms` is among ACCEPTED_TERMS (comma-separated); unset, empty or `*` accepts all, unknown included. */
export function termsAccepted(terms: string | null, accepted: string | undefined): boolean {
  const labels = (accepted ?? "").split(",").map((label) => label.trim()).filter(Boolean);
  if (labels.length === 0 || labels.includes("*")) return true;
  return terms !== null && labels.includes(terms);
}

/** No more figures can come: stems.json was read (or given up on), or the prediction ended without one. */
const FIGURES_SETTLED = `(p.figures_state IN ('read', 'failed') OR (p.figures_url IS NULL AND p.status_rank >= 2))`;

type Candidate = StemFigures & { name: string; r2_key: string | null; present: number | null };

/**
 * Decide the hand-off of a prediction's transcription stem, if it is due: skipped when its figures say
 * present: false or its terms are not accepted, else queued once it is copied and its figures say present
 * (or can no longer come: it is then handed on with them unknown). Idempotent; a job sent twice is a repeat
 * the idempotency key covers.
 */
export async function queueHandOffs(env: Env, predictionId: string): Promise<void> {
  const { results } = await env.DB.prepare(
    `SELECT s.name, s.r2_key, s.present, s.peak_dbfs, s.loudness_lufs, s.active_fraction, s.model, s.terms
     FROM stems s JOIN predictions p ON p.id = s.prediction_id
     WHERE s.prediction_id = ?1 AND s.name = COALESCE(p.transcribe_stem, 'guitar') AND s.handoff_state IS NULL
       AND (s.present = 0 OR (s.copy_state = 'copied' AND (s.present = 1 OR ${FIGURES_SETTLED})))`,
  )
    .bind(predictionId)
    .all<Candidate>();
  for (const stem of results) {
    const skipped =
      stem.present === 0
        ? "absent: its figures say present: false"
        : termsAccepted(stem.terms, env.ACCEPTED_TERMS)
          ? null
          : `terms ${stem.terms ?? "(unknown)"} not in ACCEPTED_TERMS (${env.ACCEPTED_TERMS})`;
    if (skipped !== null) {
      await env.DB.prepare(
        "UPDATE stems SET handoff_state = 'skipped', handoff_error = ?3 WHERE prediction_id = ?1 AND name = ?2 AND handoff_state IS NULL",
      )
        .bind(predictionId, stem.name, skipped)
        .run();
      continue;
    }
    const job: HandOffJob = {
      prediction_id: predictionId,
      stem: stem.name,
      r2_key: stem.r2_key ?? "",
      figures: {
        present: stem.present === null ? null : stem.present === 1,
        peak_dbfs: stem.peak_dbfs,
        loudness_lufs: stem.loudness_lufs,
        active_fraction: stem.active_fraction,
        model: stem.model,
        terms: stem.terms,
      },
      idempotency_key: `${predictionId}/${stem.name}`,
    };
    await env.HANDOFF_QUEUE.send(job);
    await env.DB.prepare(
      "UPDATE stems SET handoff_state = 'queued' WHERE prediction_id = ?1 AND name = ?2 AND handoff_state IS NULL",
    )
      .bind(predictionId, stem.name)
      .run();
  }
}

/** One HANDOFF_QUEUE message: run the hook, then record it done; a failure is retried with backoff. */
export async function consumeHandOff<E extends Env>(message: Message<HandOffJob>, env: E, handOff: HandOff<E>): Promise<void> {
  const job = message.body;
  try {
    const row = await env.DB.prepare("SELECT handoff_state FROM stems WHERE prediction_id = ?1 AND name = ?2")
      .bind(job.prediction_id, job.stem)
      .first<{ handoff_state: string | null }>();
    if (row?.handoff_state !== "done") {
      await handOff(job, env);
      await env.DB.prepare(
        `UPDATE stems SET handoff_state = 'done', handoff_attempts = ?3, handoff_error = NULL,
           handed_off_at = CURRENT_TIMESTAMP WHERE prediction_id = ?1 AND name = ?2`,
      )
        .bind(job.prediction_id, job.stem, message.attempts)
        .run();
    }
    message.ack();
  } catch (error) {
    const reason = describeError(error);
    console.warn(`hand-off of ${job.idempotency_key} failed (try ${message.attempts}): ${reason}`);
    await env.DB.prepare(
      "UPDATE stems SET handoff_attempts = ?3, handoff_error = ?4 WHERE prediction_id = ?1 AND name = ?2 AND COALESCE(handoff_state, '') != 'done'",
    )
      .bind(job.prediction_id, job.stem, message.attempts, reason)
      .run()
      .catch((noted) => console.error("could not note the failed hand-off:", noted));
    message.retry({ delaySeconds: retryDelaySeconds(message.attempts, retryBaseSeconds(env.RETRY_BASE_SECONDS)) });
  }
}

/** A hand-off that used up its retries, from the dead-letter queue: D1 says handoff_failed, with the last error. */
export async function deadHandOff(message: Message<HandOffJob>, env: Env): Promise<void> {
  const job = message.body;
  await env.DB.prepare(
    `UPDATE stems SET handoff_state = 'handoff_failed',
       handoff_error = COALESCE(handoff_error, 'failed') || ' (gave up after ' || handoff_attempts || ' tries)'
     WHERE prediction_id = ?1 AND name = ?2 AND COALESCE(handoff_state, '') != 'done'`,
  )
    .bind(job.prediction_id, job.stem)
    .run();
  message.ack();
}
