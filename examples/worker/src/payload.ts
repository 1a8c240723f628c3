/** The part of a webhook body (a prediction object) the Worker keeps, checked field by field. */
import type { SeparationInput } from "./input.js";
import { stemsByName } from "./stems.js";

export const STATUS_RANK = {
  starting: 0,
  processing: 1,
  succeeded: 2,
  failed: 2,
  canceled: 2,
  aborted: 2,
} as const;

export type Status = keyof typeof STATUS_RANK;

/** A stem's figures as the model measures them (README: "Stem figures"). */
export interface StemFigures {
  present: boolean | null;
  peak_dbfs: number | null;
  loudness_lufs: number | null;
  active_fraction: number | null;
}

export interface Stem extends StemFigures {
  name: string;
  url: string;
}

export interface PredictionEvent {
  id: string;
  status: Status;
  error: string | null;
  /** The stems listed in this event's output, each with the figures of this event's `metrics.stems`. */
  stems: Stem[];
  /** The prediction's input: Replicate sends it, a self-hosted runtime does not. */
  input: Partial<SeparationInput> | null;
}

/** A body that is not a usable prediction: answered 400 with `message`. */
export class PayloadError extends Error {}

const NO_FIGURES: StemFigures = { present: null, peak_dbfs: null, loudness_lufs: null, active_fraction: null };

/** Parse a verified body; throws PayloadError naming the first bad field. */
export function parsePredictionEvent(body: string): PredictionEvent {
  let payload: unknown;
  try {
    payload = JSON.parse(body);
  } catch {
    throw new PayloadError("body is not JSON");
  }
  if (!isObject(payload)) throw new PayloadError("body must be a JSON object (a prediction)");
  const { id, status, error, output, metrics, input } = payload;
  if (typeof id !== "string" || id === "") throw new PayloadError("'id' must be a non-empty string");
  if (typeof status !== "string" || !(status in STATUS_RANK)) {
    throw new PayloadError(`'status' must be one of ${Object.keys(STATUS_RANK).join(", ")}`);
  }
  let urls: Record<string, string> = {};
  if (output !== undefined && output !== null) {
    try {
      urls = stemsByName(output);
    } catch (cause) {
      throw new PayloadError(`'output': ${(cause as Error).message}`);
    }
  }
  const figures = metrics === undefined || metrics === null ? {} : stemFigures(metrics);
  return {
    id,
    status: status as Status,
    error: error === undefined || error === null ? null : String(error),
    stems: Object.entries(urls).map(([name, url]) => ({ name, url, ...(figures[name] ?? NO_FIGURES) })),
    input: isObject(input) ? (input as Partial<SeparationInput>) : null,
  };
}

function stemFigures(metrics: unknown): Record<string, StemFigures> {
  if (!isObject(metrics)) throw new PayloadError("'metrics' must be an object");
  const stems = metrics.stems ?? {};
  if (!isObject(stems)) throw new PayloadError("'metrics.stems' must be an object");
  const figures: Record<string, StemFigures> = {};
  for (const [name, values] of Object.entries(stems)) {
    if (!isObject(values)) throw new PayloadError(`'metrics.stems.${name}' must be an object`);
    figures[name] = {
      present: typeof values.present === "boolean" ? values.present : null,
      peak_dbfs: numberOrNull(values.peak_dbfs),
      loudness_lufs: numberOrNull(values.loudness_lufs),
      active_fraction: numberOrNull(values.active_fraction),
    };
  }
  return figures;
}

function numberOrNull(value: unknown): number | null {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
