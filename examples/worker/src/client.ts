/**
 * Creating predictions of the stem-separation model with the `replicate` npm client.
 *
 * The output is a list of files named `<stem>.<ext>` in no reliable order, then `stems.json` (the figures):
 * read it with `stemsByName`, never as `output[1]`.
 */
import type Replicate from "replicate";
import type { Prediction } from "replicate";

import type { SeparationInput } from "./input.js";
import { stemsByName } from "./stems.js";

export type { SeparationInput } from "./input.js";
export { stemsByName } from "./stems.js";

/** The events the Worker needs: `output` brings each stem as soon as it is uploaded, long before `completed`. */
export const WEBHOOK_EVENTS = ["start", "output", "completed"] as const;

/**
 * What FretWise asks for when it needs only the guitar: `guitar_only` returns `guitar` and `no_guitar` (the
 * song without it, to play along) from Mega-53 alone, without the vocals model the `guitar` mode also runs.
 */
export function guitarOnlyInput(audio: string): SeparationInput {
  return { audio, stems: "guitar_only" };
}

/** `owner/name:version`, or a version id for `createSeparation`. */
export type ModelVersion = `${string}/${string}:${string}`;

/**
 * Start an async prediction whose webhooks go to `webhook` (the Worker's URL, e.g.
 * `https://fretwise.example/webhooks/replicate`). Returns the prediction as created (`status: "starting"`).
 */
export function createSeparation(
  replicate: Replicate,
  version: string,
  input: SeparationInput,
  webhook: string,
): Promise<Prediction> {
  return replicate.predictions.create({
    version: version.includes(":") ? version.slice(version.indexOf(":") + 1) : version,
    input,
    webhook,
    webhook_events_filter: [...WEBHOOK_EVENTS],
  });
}

/**
 * Separate a short song and wait for it: `{stem: url}`, e.g. `{vocals: "https://…/vocals.wav", …}`.
 * A request waits at most a minute or so; use `createSeparation` and the Worker for full songs.
 */
export async function separateNow(
  replicate: Replicate,
  model: ModelVersion,
  input: SeparationInput,
): Promise<Record<string, string>> {
  return stemsByName(await replicate.run(model, { input }));
}
