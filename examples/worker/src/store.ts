/** Recording one verified webhook in D1: a single batch, so it applies whole or not at all. */
import { type PredictionEvent, type Stem, STATUS_RANK } from "./payload.js";

export type Outcome = "applied" | "ignored" | "duplicate";

export interface Recorded {
  /** applied: the status moved forward or stems arrived; ignored: nothing new; duplicate: webhook-id seen. */
  outcome: Outcome;
  /** The stems this event stored first (each stem is new exactly once per prediction). */
  newStems: Stem[];
}

const FINAL_RANK = 2;

/**
 * Every write is idempotent and monotonic on its own (a stem is inserted once, a status only replaces a
 * lower one), so a retried or concurrent delivery cannot change a result; webhook_deliveries names the
 * retries. Stems are taken only while the prediction is not final: after succeeded, failed or canceled
 * nothing changes.
 */
export async function recordEvent(db: D1Database, webhookId: string, event: PredictionEvent): Promise<Recorded> {
  const rank = STATUS_RANK[event.status];
  const delivery = db
    .prepare(
      `INSERT INTO webhook_deliveries (webhook_id, prediction_id, status) VALUES (?1, ?2, ?3)
       ON CONFLICT DO NOTHING RETURNING webhook_id`,
    )
    .bind(webhookId, event.id, event.status);
  const stems = event.stems.map((stem) =>
    db
      .prepare(
        `INSERT INTO stems (prediction_id, name, url, present, peak_dbfs, loudness_lufs, active_fraction)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7
         WHERE NOT EXISTS (SELECT 1 FROM predictions WHERE id = ?1 AND status_rank >= ${FINAL_RANK})
         ON CONFLICT DO NOTHING RETURNING name`,
      )
      .bind(
        event.id,
        stem.name,
        stem.url,
        stem.present === null ? null : Number(stem.present),
        stem.peak_dbfs,
        stem.loudness_lufs,
        stem.active_fraction,
      ),
  );
  const status = db
    .prepare(
      `INSERT INTO predictions (id, status, status_rank, error) VALUES (?1, ?2, ?3, ?4)
       ON CONFLICT (id) DO UPDATE SET status = excluded.status, status_rank = excluded.status_rank,
         error = excluded.error, updated_at = CURRENT_TIMESTAMP
       WHERE excluded.status_rank > predictions.status_rank
       RETURNING status`,
    )
    .bind(event.id, event.status, rank, event.error);
  const [deliveryResult, ...rest] = await db.batch([delivery, ...stems, status]);
  const statusResult = rest.pop();
  const inserted = new Set(rest.flatMap((result) => (result.results as { name: string }[]).map((row) => row.name)));
  const newStems = event.stems.filter((stem) => inserted.has(stem.name));
  if (!deliveryResult?.results.length) return { outcome: "duplicate", newStems };
  const moved = (statusResult?.results.length ?? 0) > 0;
  return { outcome: moved || newStems.length > 0 ? "applied" : "ignored", newStems };
}
