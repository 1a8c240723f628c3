/** Recording one verified webhook in D1: a single batch, so it applies whole or not at all. */
import type { StemFigures } from "./figures.js";
import { FINAL_RANK, type PredictionEvent } from "./payload.js";

/**
 * applied: something new (status, stems, figures or what the input says); ignored: nothing new; duplicate:
 * this webhook-id was seen with the same body; conflict: it was seen with another body (nothing applied).
 */
export type Outcome = "applied" | "ignored" | "duplicate" | "conflict";

export interface Recorded {
  outcome: Outcome;
  /** The stems this event stored first (each stem is new exactly once per prediction). */
  newStems: string[];
}

export interface Delivery {
  webhookId: string;
  /** The webhook-timestamp header, in ms. */
  timestampMs: number;
  /** Hex SHA-256 of the body as received. */
  bodySha256: string;
}

/** Every statement after the first runs only if this webhook-id was recorded with this body (?1 id, ?2 hash). */
const SAME_DELIVERY = `EXISTS (SELECT 1 FROM webhook_deliveries WHERE webhook_id = ?1
  AND (body_sha256 = ?2 OR body_sha256 IS NULL))`;
const NOT_FINAL = `NOT EXISTS (SELECT 1 FROM predictions WHERE id = ?3 AND status_rank >= ${FINAL_RANK})`;

/**
 * Every write is idempotent and monotonic on its own (a stem is inserted once, figures fill in once, a status
 * only replaces a lower one), so a retried or concurrent delivery of the same body cannot change a result,
 * and one with another body changes nothing. Stems and figures are taken only while the prediction is not
 * final: after succeeded, failed or canceled they stay as they are (stems.json's figures excepted: they are
 * read after the event, see stemsjson.ts).
 */
export async function recordEvent(db: D1Database, delivery: Delivery, event: PredictionEvent): Promise<Recorded> {
  const key = [delivery.webhookId, delivery.bodySha256, event.id] as const;
  const statements: D1PreparedStatement[] = [
    db
      .prepare(
        `INSERT INTO webhook_deliveries (webhook_id, body_sha256, prediction_id, status) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT DO NOTHING RETURNING webhook_id`,
      )
      .bind(...key, event.status),
  ];
  for (const stem of event.stems) {
    const figures = event.figures.get(stem.name);
    statements.push(
      db
        .prepare(
          `INSERT INTO stems (prediction_id, name, url, copy_state, figures_from, present, peak_dbfs, loudness_lufs,
             active_fraction, model, terms)
           SELECT ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13 WHERE ${SAME_DELIVERY} AND ${NOT_FINAL}
           ON CONFLICT DO NOTHING RETURNING name`,
        )
        .bind(
          ...key,
          stem.name,
          stem.url,
          figures?.present === false ? "not_copied" : "pending",
          figures ? "metrics" : null,
          ...figureValues(figures),
        ),
    );
  }
  for (const [name, figures] of event.figures) {
    statements.push(
      db
        .prepare(
          `UPDATE stems SET figures_from = 'metrics', present = ?5, peak_dbfs = ?6, loudness_lufs = ?7,
             active_fraction = ?8, model = ?9, terms = ?10
           WHERE prediction_id = ?3 AND name = ?4 AND figures_from IS NULL AND ${SAME_DELIVERY} AND ${NOT_FINAL}
           RETURNING name`,
        )
        .bind(...key, name, ...figureValues(figures)),
    );
  }
  const sinceMs = event.createdAtMs === null ? delivery.timestampMs : Math.min(event.createdAtMs, delivery.timestampMs);
  statements.push(
    db
      .prepare(
        `INSERT INTO predictions (id, status, status_rank, error) SELECT ?3, ?4, ?5, ?6 WHERE ${SAME_DELIVERY}
         ON CONFLICT (id) DO UPDATE SET status = excluded.status, status_rank = excluded.status_rank,
           error = excluded.error, updated_at = CURRENT_TIMESTAMP
         WHERE excluded.status_rank > predictions.status_rank
         RETURNING status`,
      )
      .bind(...key, event.status, event.rank, event.error),
    db
      .prepare(
        `UPDATE predictions SET transcribe_stem = COALESCE(transcribe_stem, ?4),
           files_since_ms = MIN(COALESCE(files_since_ms, ?5), ?5), figures_url = COALESCE(figures_url, ?6),
           figures_state = CASE WHEN figures_url IS NULL AND ?6 IS NOT NULL THEN 'pending' ELSE figures_state END
         WHERE id = ?3 AND ${SAME_DELIVERY} AND ((transcribe_stem IS NULL AND ?4 IS NOT NULL)
           OR files_since_ms IS NULL OR files_since_ms > ?5 OR (figures_url IS NULL AND ?6 IS NOT NULL))
         RETURNING id`,
      )
      .bind(...key, event.transcribeStem, sinceMs, event.figuresUrl),
    db.prepare("SELECT body_sha256 FROM webhook_deliveries WHERE webhook_id = ?1").bind(delivery.webhookId),
  );
  const results = await db.batch<{ name?: string; body_sha256?: string | null }>(statements);
  const returned = results.map((result) => result.results);
  const [first, stored] = [returned[0] ?? [], returned.at(-1)?.[0]?.body_sha256];
  const stemCount = event.stems.length;
  const newStems = returned.slice(1, 1 + stemCount).flatMap((rows) => rows.map((row) => String(row.name)));
  if (first.length === 0) {
    return { outcome: stored === delivery.bodySha256 || stored === null ? "duplicate" : "conflict", newStems: [] };
  }
  const changed = returned.slice(1, -1).some((rows) => rows.length > 0);
  return { outcome: changed ? "applied" : "ignored", newStems };
}

function figureValues(figures: StemFigures | undefined) {
  if (!figures) return [null, null, null, null, null, null] as const;
  const present = figures.present === null ? null : Number(figures.present);
  return [present, figures.peak_dbfs, figures.loudness_lufs, figures.active_fraction, figures.model, figures.terms] as const;
}
