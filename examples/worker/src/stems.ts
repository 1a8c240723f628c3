/**
 * What each output file of a prediction is. The model names each stem file `<stem>.<ext>` (wav, flac or mp3)
 * and writes `stems.json` (every stem's figures) as its last file; the runtime lists them in upload-completion
 * order, so a file is known by its name, never by its position in `output`.
 */

/** A stem name: what the model writes (`vocals`, `no_guitar`, `acoustic-guitar`) and nothing else. */
export const STEM_NAME = /^[a-z0-9][a-z0-9_-]{0,63}$/;

/** The output file with every stem's figures, model and terms; never a stem. */
export const FIGURES_FILE = "stems.json";

/** The audio formats the model writes, by extension: only these files are stems. */
export const AUDIO_CONTENT_TYPES: ReadonlyMap<string, string> = new Map([
  ["wav", "audio/wav"],
  ["flac", "audio/flac"],
  ["mp3", "audio/mpeg"],
]);

export type OutputFile =
  | { kind: "stem"; url: string; name: string; ext: string; contentType: string }
  | { kind: "figures"; url: string }
  | { kind: "other"; url: string; file: string };

/**
 * Classify one output URL by its file name: the last path segment, split off before percent-decoding (so an
 * encoded `/` stays inside the name), decoded, then cut at its last dot. An audio file whose name is not a
 * stem name (e.g. `..%2F..%2Fetc%2Fpasswd.wav`) throws a TypeError naming it; so does anything but an http(s)
 * URL with a file name.
 */
export function classifyOutput(url: string): OutputFile {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new TypeError(`not a URL: ${JSON.stringify(url.slice(0, 80))}`);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new TypeError(`expected an http(s) file URL, got ${JSON.stringify(url.slice(0, 60))}`);
  }
  const segment = parsed.pathname.slice(parsed.pathname.lastIndexOf("/") + 1);
  let file: string;
  try {
    file = decodeURIComponent(segment);
  } catch {
    throw new TypeError(`file name ${JSON.stringify(segment.slice(0, 80))} is not valid percent-encoding`);
  }
  if (!file) throw new TypeError(`file URL has no file name: ${url.slice(0, 120)}`);
  if (file === FIGURES_FILE) return { kind: "figures", url };
  const dot = file.lastIndexOf(".");
  const ext = dot === -1 ? "" : file.slice(dot + 1).toLowerCase();
  const contentType = AUDIO_CONTENT_TYPES.get(ext);
  if (contentType === undefined) return { kind: "other", url, file };
  const name = file.slice(0, dot);
  if (!STEM_NAME.test(name)) {
    throw new TypeError(
      `output file ${JSON.stringify(file.slice(0, 80))} does not name a stem ` +
        `(a stem name is 1 to 64 of a-z, 0-9, _ and -, starting with a letter or digit)`,
    );
  }
  return { kind: "stem", url, name, ext, contentType };
}

/** An output item as the `replicate` client gives it: a URL string, or a file-output object with `url()`. */
export type OutputItem = string | { url(): URL | string };

/**
 * `{stem: url}` for a prediction's output: URL strings and the client's file-output objects alike;
 * `stems.json` and other files that are not audio are left out. Throws when `output` is not a list, an item
 * is no file URL, a stem file's name is not a stem name, or two files give the same stem.
 */
export function stemsByName(output: unknown): Record<string, string> {
  if (!Array.isArray(output)) {
    throw new TypeError(`expected a list of output files, got ${output === null ? "null" : typeof output}`);
  }
  const stems = new Map<string, string>();
  for (const item of output as unknown[]) {
    const file = classifyOutput(fileUrl(item));
    if (file.kind !== "stem") continue;
    const seen = stems.get(file.name);
    if (seen !== undefined) throw new TypeError(`two files for stem "${file.name}": ${seen} and ${file.url}`);
    stems.set(file.name, file.url);
  }
  return Object.fromEntries(stems);
}

function fileUrl(item: unknown): string {
  if (typeof item === "string") return item;
  if (typeof item === "object" && item !== null && typeof (item as { url?: unknown }).url === "function") {
    return String((item as { url(): URL | string }).url());
  }
  throw new TypeError(`expected a file URL or a file output, got ${JSON.stringify(item)?.slice(0, 60)}`);
}
