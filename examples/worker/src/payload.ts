/**
 * The part of a webhook body (a prediction object, in Replicate's shape or the self-hosted runtime's) the
 * Worker keeps, checked field by field. Only own properties are read, so no field name or value can reach
 * something inherited from `Object.prototype`.
 */
import { FiguresError, type JsonObject, type StemFigures, isJsonObject, own, parseFiguresByStem } from "./figures.js";
import { transcriptionStem } from "./input.js";
import { classifyOutput } from "./stems.js";

export type Status = "starting" | "processing" | "succeeded" | "failed" | "canceled" | "aborted";

/** starting (0) < processing (1) < the final statuses (2): a status only moves up. */
export const STATUS_RANK: ReadonlyMap<string, number> = new Map<Status, number>([
  ["starting", 0],
  ["processing", 1],
  ["succeeded", 2],
  ["failed", 2],
  ["canceled", 2],
  ["aborted", 2],
]);
export const FINAL_RANK = 2;

/** A prediction id as Replicate and the runtime make them; it becomes part of R2 keys. */
export const PREDICTION_ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;

/** A stem file in `output`. */
export interface OutputStem {
  name: string;
  url: string;
  /** The file's extension, lower case: wav, flac or mp3. */
  ext: string;
  contentType: string;
}

export interface PredictionEvent {
  id: string;
  status: Status;
  rank: number;
  error: string | null;
  /** `created_at` in ms since the epoch (Replicate sends it, the runtime does not). */
  createdAtMs: number | null;
  /** The stem files in this event's `output`. */
  stems: OutputStem[];
  /** The URL of `stems.json` when `output` lists it. */
  figuresUrl: string | null;
  /** `metrics.stems`, by stem name; empty when the event has none. */
  figures: Map<string, StemFigures>;
  /** The stem to transcribe, from `input`; null when the event has no input. */
  transcribeStem: "guitar" | "instrumental" | null;
}

/** A body that is not a usable prediction: answered 400 with `message`. */
export class PayloadError extends Error {}

/** Parse a verified body; throws PayloadError naming the first bad field. */
export function parsePredictionEvent(body: string): PredictionEvent {
  let payload: unknown;
  try {
    payload = JSON.parse(body);
  } catch {
    throw new PayloadError("body is not JSON");
  }
  if (!isJsonObject(payload)) throw new PayloadError("body must be a JSON object (a prediction)");
  const id = own(payload, "id");
  if (typeof id !== "string" || !PREDICTION_ID.test(id)) {
    throw new PayloadError("'id' must be a prediction id: 1 to 128 of A-Z, a-z, 0-9, _ and -, not starting with _ or -");
  }
  const status = own(payload, "status");
  const rank = typeof status === "string" ? STATUS_RANK.get(status) : undefined;
  if (rank === undefined) throw new PayloadError(`'status' must be one of ${[...STATUS_RANK.keys()].join(", ")}`);
  const error = own(payload, "error");
  if (error !== undefined && error !== null && typeof error !== "string") {
    throw new PayloadError("'error' must be a string or null");
  }
  const { stems, figuresUrl } = outputFiles(own(payload, "output"));
  return {
    id,
    status: status as Status,
    rank,
    error: typeof error === "string" ? error : null,
    createdAtMs: createdAt(own(payload, "created_at")),
    stems,
    figuresUrl,
    figures: metricsFigures(own(payload, "metrics")),
    transcribeStem: inputStem(own(payload, "input")),
  };
}

function outputFiles(output: unknown): { stems: OutputStem[]; figuresUrl: string | null } {
  const stems = new Map<string, OutputStem>();
  let figuresUrl: string | null = null;
  if (output === undefined || output === null) return { stems: [], figuresUrl };
  if (!Array.isArray(output)) throw new PayloadError("'output' must be a list of file URLs");
  for (const item of output as unknown[]) {
    if (typeof item !== "string") throw new PayloadError(`'output' must be a list of file URLs, got ${JSON.stringify(item)?.slice(0, 60)}`);
    let file;
    try {
      file = classifyOutput(item);
    } catch (cause) {
      throw new PayloadError(`'output': ${(cause as Error).message}`);
    }
    if (file.kind === "figures") {
      if (figuresUrl !== null) throw new PayloadError("'output' lists stems.json twice");
      figuresUrl = file.url;
    } else if (file.kind === "stem") {
      const seen = stems.get(file.name);
      if (seen) throw new PayloadError(`'output': two files for stem "${file.name}": ${seen.url} and ${file.url}`);
      stems.set(file.name, { name: file.name, url: file.url, ext: file.ext, contentType: file.contentType });
    } // any other file is not a stem, and not kept
  }
  return { stems: [...stems.values()], figuresUrl };
}

function metricsFigures(metrics: unknown): Map<string, StemFigures> {
  if (metrics === undefined || metrics === null) return new Map();
  if (!isJsonObject(metrics)) throw new PayloadError("'metrics' must be an object");
  const stems = own(metrics, "stems");
  if (stems === undefined || stems === null) return new Map();
  try {
    return parseFiguresByStem(stems, "metrics.stems");
  } catch (error) {
    if (error instanceof FiguresError) throw new PayloadError(error.message);
    throw error;
  }
}

function createdAt(value: unknown): number | null {
  if (value === undefined || value === null) return null;
  const ms = typeof value === "string" ? Date.parse(value) : Number.NaN;
  if (Number.isNaN(ms)) throw new PayloadError("'created_at' must be an ISO 8601 time, e.g. 2026-01-02T03:04:05.678Z");
  return ms;
}

function inputStem(input: unknown): "guitar" | "instrumental" | null {
  if (input === undefined || input === null) return null;
  if (!isJsonObject(input)) throw new PayloadError("'input' must be an object");
  return transcriptionStem({ stems: optionalString(input, "stems"), extra_stems: optionalString(input, "extra_stems") });
}

function optionalString(input: JsonObject, key: string): string | null {
  const value = own(input, key);
  if (value === undefined || value === null) return null;
  if (typeof value !== "string") throw new PayloadError(`'input.${key}' must be a string`);
  return value;
}
