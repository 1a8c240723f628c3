/**
 * The messages the Worker's queues carry, and their names. No Workers types here: the Node tests import it.
 */
import type { StemFigures } from "./figures.js";

/** Queue names, as `wrangler.toml` declares them; a test checks that the two agree. */
export const QUEUES = {
  copy: "fretwise-stem-copies",
  copyDead: "fretwise-stem-copies-dlq",
  handOff: "fretwise-handoffs",
  handOffDead: "fretwise-handoffs-dlq",
} as const;

/** Copy one stem file from Replicate's URL into R2. */
export interface StemCopyJob {
  kind: "stem";
  prediction_id: string;
  stem: string;
  url: string;
  r2_key: string;
  content_type: string;
  /** The copy deadline runs from here (ms since the epoch): see retry.ts. */
  event_at_ms: number;
}

/** Read `stems.json` (every stem's figures) from Replicate's URL into D1. */
export interface FiguresJob {
  kind: "figures";
  prediction_id: string;
  url: string;
  event_at_ms: number;
}

export type CopyJob = StemCopyJob | FiguresJob;

/** One stem handed on to transcription: what the example POSTs to TRANSCRIBE_URL. */
export interface HandOffJob {
  prediction_id: string;
  stem: string;
  /** Where the stem is in the STEMS bucket; never Replicate's URL, which expires. */
  r2_key: string;
  figures: StemFigures;
  /** `<prediction id>/<stem>`: the same for every delivery of this job. */
  idempotency_key: string;
}

/**
 * The part size of a copy from a file host that sends no Content-Length (R2 multipart uploads take equal
 * parts of at least 5 MiB, the last one shorter): the most of a stem a copy holds in memory.
 */
export const PART_BYTES = 8 * 1024 * 1024;

/** The R2 key of a stem file. */
export function r2Key(predictionId: string, stem: string, ext: string): string {
  return `stems/${predictionId}/${stem}.${ext}`;
}
