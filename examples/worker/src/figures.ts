/**
 * A stem's figures (README: "Stem figures") with the model that made it and that model's terms, read strictly
 * from the two places the model puts them: the prediction's `metrics.stems` and its last output file
 * `stems.json`. Every object is read through its own properties only, so a key such as `__proto__` or
 * `constructor` is data, never something inherited.
 */
import { STEM_NAME } from "./stems.js";

export interface StemFigures {
  /** Audible for at least 5 % of the track; null while unknown. */
  present: boolean | null;
  peak_dbfs: number | null;
  loudness_lufs: number | null;
  /** Share of the track in which the stem is audible, 0 to 1. */
  active_fraction: number | null;
  /** The model that made the stem, e.g. `bs_roformer_mega53`. */
  model: string | null;
  /** That model's terms as a short label, e.g. `research-only`, `none-stated`, `mit-reported`. */
  terms: string | null;
}

export const UNKNOWN_FIGURES: StemFigures = Object.freeze({
  present: null,
  peak_dbfs: null,
  loudness_lufs: null,
  active_fraction: null,
  model: null,
  terms: null,
});

/** The most of `stems.json` that is read: 53 extra stems and 7 more take well under 32 KiB. */
export const MAX_STEMS_JSON_BYTES = 256 * 1024;

/** A model name or a terms label. */
const LABEL = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Figures that are not as the model writes them; `message` names the field. */
export class FiguresError extends Error {}

export type JsonObject = { readonly [key: string]: unknown };

export function isJsonObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** `object[key]` if it is the object's own property, else undefined. */
export function own(object: JsonObject, key: string): unknown {
  return Object.hasOwn(object, key) ? object[key] : undefined;
}

/** One stem's figures; `where` names the object in messages, e.g. `metrics.stems.guitar`. */
export function parseFigures(value: unknown, where: string): StemFigures {
  if (!isJsonObject(value)) throw new FiguresError(`'${where}' must be an object`);
  const present = own(value, "present");
  if (present !== undefined && typeof present !== "boolean") {
    throw new FiguresError(`'${where}.present' must be true or false, got ${JSON.stringify(present)}`);
  }
  const activeFraction = number(value, "active_fraction", where);
  if (activeFraction !== null && (activeFraction < 0 || activeFraction > 1)) {
    throw new FiguresError(`'${where}.active_fraction' must be from 0 to 1, got ${activeFraction}`);
  }
  return {
    present: present ?? null,
    peak_dbfs: number(value, "peak_dbfs", where),
    loudness_lufs: number(value, "loudness_lufs", where),
    active_fraction: activeFraction,
    model: label(value, "model", where),
    terms: label(value, "terms", where),
  };
}

/** `{<stem>: figures}` (the shape of `metrics.stems`), keyed by stem names only. */
export function parseFiguresByStem(value: unknown, where: string): Map<string, StemFigures> {
  if (!isJsonObject(value)) throw new FiguresError(`'${where}' must be an object keyed by stem name`);
  const figures = new Map<string, StemFigures>();
  for (const [name, entry] of Object.entries(value)) {
    if (!STEM_NAME.test(name)) throw new FiguresError(`'${where}' has a key that is not a stem name: ${JSON.stringify(name.slice(0, 80))}`);
    figures.set(name, parseFigures(entry, `${where}.${name}`));
  }
  return figures;
}

/**
 * The figures in `stems.json`: an object keyed by stem name whose entries also name their file
 * (`{"guitar": {"file": "guitar.flac", "present": true, …}}`). Throws FiguresError for anything else.
 */
export function parseStemsJson(text: string): Map<string, StemFigures> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new FiguresError("stems.json is not JSON");
  }
  const figures = parseFiguresByStem(parsed, "stems.json");
  for (const [name, entry] of Object.entries(parsed as JsonObject)) {
    const file = own(entry as JsonObject, "file");
    if (typeof file !== "string" || file.slice(0, file.lastIndexOf(".")) !== name) {
      throw new FiguresError(`'stems.json.${name}.file' must be the stem's file name (${name}.<ext>), got ${JSON.stringify(file)}`);
    }
  }
  return figures;
}

function number(object: JsonObject, key: string, where: string): number | null {
  const value = own(object, key);
  if (value === undefined || value === null) return null;
  if (typeof value !== "number") throw new FiguresError(`'${where}.${key}' must be a number or null, got ${JSON.stringify(value)?.slice(0, 40)}`);
  return value;
}

function label(object: JsonObject, key: string, where: string): string | null {
  const value = own(object, key);
  if (value === undefined || value === null) return null;
  if (typeof value !== "string" || !LABEL.test(value)) {
    throw new FiguresError(`'${where}.${key}' must be a short label (letters, digits, '.', '_', '-'), got ${JSON.stringify(value)?.slice(0, 40)}`);
  }
  return value;
}
