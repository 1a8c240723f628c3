/**
 * FretWise's Worker: stores the stems of each prediction in D1 and sends the one it transcribes (`guitar`, or
 * `instrumental` for a prediction that brings no guitar stem) to the transcription service.
 */
import { transcriptionStem } from "./input.js";
import { type Env, type OnStem, createWorker } from "./worker.js";

export interface FretWiseEnv extends Env {
  /** Where transcription jobs are POSTed: `{prediction_id, stem, url, figures}`. */
  TRANSCRIBE_URL: string;
}

/**
 * The example `onStem`: POSTs the transcription stem to TRANSCRIBE_URL as soon as it arrives. The input comes
 * with Replicate's webhooks; without it (a self-hosted runtime sends none) the guitar mode is assumed. A Queue
 * binding (`env.TRANSCRIBE.send(job)`) does the same with retries.
 */
export const sendToTranscription: OnStem<FretWiseEnv> = async (stem, prediction, env) => {
  if (stem.name !== transcriptionStem(prediction.input ?? { stems: "guitar" })) return;
  const { name, url, ...figures } = stem;
  const response = await fetch(env.TRANSCRIBE_URL, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ prediction_id: prediction.id, stem: name, url, figures }),
  });
  if (!response.ok) throw new Error(`transcription service answered ${response.status}`);
};

export default createWorker(sendToTranscription);
