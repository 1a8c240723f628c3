/**
 * Stem names from output file URLs. The model names each file `<stem>.<ext>` and the runtime lists them in
 * upload-completion order, so a stem is found by its file name, never by its position in `output`.
 */

/** An output item as the `replicate` client gives it: a URL string, or a file-output object with `url()`. */
export type OutputFile = string | { url(): URL | string };

/**
 * The stem name of one file URL: its last path segment, percent-decoded, without the extension.
 * `https://replicate.delivery/xezq/abc/no_guitar.flac?sig=1` → `no_guitar`. Throws on anything but an
 * http(s) URL with a file name (a `data:` URL has none).
 */
export function stemName(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new TypeError(`not a URL: ${JSON.stringify(url.slice(0, 80))}`);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new TypeError(`expected an http(s) file URL, got ${JSON.stringify(url.slice(0, 60))}`);
  }
  const file = decodeURIComponent(parsed.pathname.split("/").pop() ?? "");
  const name = file.includes(".") ? file.slice(0, file.lastIndexOf(".")) : file;
  if (!name) throw new TypeError(`file URL has no file name: ${url}`);
  return name;
}

/**
 * `{stem: url}` for a prediction's output: URL strings and the client's file-output objects alike.
 * Throws when `output` is not a list, an item is no file URL, or two files give the same stem.
 */
export function stemsByName(output: unknown): Record<string, string> {
  if (!Array.isArray(output)) {
    throw new TypeError(`expected a list of output files, got ${output === null ? "null" : typeof output}`);
  }
  const stems: Record<string, string> = {};
  for (const item of output as unknown[]) {
    const url = fileUrl(item);
    const name = stemName(url);
    if (name in stems) throw new TypeError(`two files for stem "${name}": ${stems[name]} and ${url}`);
    stems[name] = url;
  }
  return stems;
}

function fileUrl(item: unknown): string {
  if (typeof item === "string") return item;
  if (typeof item === "object" && item !== null && typeof (item as { url?: unknown }).url === "function") {
    return String((item as { url(): URL | string }).url());
  }
  throw new TypeError(`expected a file URL or a file output, got ${JSON.stringify(item)?.slice(0, 60)}`);
}
