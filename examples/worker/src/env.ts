/** The Worker's bindings, as `wrangler.toml` declares them. */
import type { CopyJob, HandOffJob } from "./jobs.js";

export interface Env {
  DB: D1Database;
  /** The R2 bucket the stems are copied to, as `stems/<prediction id>/<stem>.<ext>`. */
  STEMS: R2Bucket;
  COPY_QUEUE: Queue<CopyJob>;
  HANDOFF_QUEUE: Queue<HandOffJob>;
  /** The account's webhook signing secret, `whsec_…` (`wrangler secret put WEBHOOK_SECRET`). */
  WEBHOOK_SECRET: string;
  /** Comma-separated terms labels to hand on (e.g. `mit-reported,none-stated`); unset, empty or `*`: all. */
  ACCEPTED_TERMS?: string;
  /** The first retry's delay in seconds (default 20), doubled at each retry. */
  RETRY_BASE_SECONDS?: string;
}

export { type CopyJob, type FiguresJob, type HandOffJob, QUEUES, type StemCopyJob, r2Key } from "./jobs.js";
