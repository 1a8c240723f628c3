/**
 * When a queued job is tried again. Copies race Replicate's clock: it deletes an API prediction's files one
 * hour after the prediction is created, so every try of a copy must end within 45 minutes of the event that
 * listed the file (the prediction's `created_at`, or the webhook's own time when the body has none).
 */

/** How long after the event a copy may still be running. */
export const COPY_DEADLINE_MS = 45 * 60_000;

/** A try is started only with at least this long left before the deadline. */
export const MIN_TRY_MS = 60_000;

/** The longest one try may run: a queue consumer invocation is stopped after 15 minutes. */
export const TRY_LIMIT_MS = 14 * 60_000;

/** The first retry's delay when RETRY_BASE_SECONDS is not set; each later one doubles it. */
export const DEFAULT_RETRY_BASE_SECONDS = 20;

/** No retry waits longer than this. */
export const MAX_RETRY_DELAY_SECONDS = 15 * 60;

/** The delay before the next try, after `attempts` tries (1 after the first): base, 2 × base, 4 × base, … */
export function retryDelaySeconds(attempts: number, baseSeconds: number): number {
  return Math.min(MAX_RETRY_DELAY_SECONDS, Math.ceil(baseSeconds * 2 ** Math.max(0, attempts - 1)));
}

/** RETRY_BASE_SECONDS as configured: a whole number of seconds, else the default. */
export function retryBaseSeconds(configured: string | undefined): number {
  return configured !== undefined && /^\d{1,5}$/.test(configured) ? Number(configured) : DEFAULT_RETRY_BASE_SECONDS;
}

/** Whether a try starting `delaySeconds` from now still has MIN_TRY_MS before `deadlineMs`. */
export function tryFits(nowMs: number, delaySeconds: number, deadlineMs: number): boolean {
  return nowMs + delaySeconds * 1000 + MIN_TRY_MS <= deadlineMs;
}

/** How long a try starting now may run: to the deadline, and never past TRY_LIMIT_MS. */
export function tryLimitMs(nowMs: number, deadlineMs: number): number {
  return Math.max(0, Math.min(TRY_LIMIT_MS, deadlineMs - nowMs));
}

/** A failure no retry can mend (e.g. a stems.json that is not as the model writes it): given up at once. */
export class PermanentError extends Error {}

/** An error as one line for D1. */
export function describeError(error: unknown): string {
  const text = error instanceof Error ? error.message || error.name : String(error);
  return text.replace(/\s+/g, " ").slice(0, 500);
}
