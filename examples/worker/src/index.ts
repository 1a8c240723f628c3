/**
 * FretWise's Worker: keeps each prediction's stems (in R2, and their figures in D1) and hands the one it
 * transcribes (`guitar`, or `instrumental` for a prediction that brings no guitar stem) on to the
 * transcription service.
 */
import type { HandOffJob } from "./env.js";
import { type Env, type HandOff, createWorker } from "./worker.js";

export interface FretWiseEnv extends Env {
  /** Where transcription jobs are POSTed: the HandOffJob as JSON, with an Idempotency-Key header. */
  TRANSCRIBE_URL: string;
}

/**
 * The example hand-off: POST the job to TRANSCRIBE_URL. Any answer but a 2xx throws, and the queue tries again
 * with backoff; a job can arrive more than once, so the service keys it by `Idempotency-Key`
 * (`<prediction id>/<stem>`). The service reads the stem from the STEMS bucket at `r2_key`.
 */
export const sendToTranscription: HandOff<FretWiseEnv> = async (job: HandOffJob, env) => {
  const response = await fetch(env.TRANSCRIBE_URL, {
    method: "POST",
    headers: { "content-type": "application/json", "idempotency-key": job.idempotency_key },
    body: JSON.stringify(job),
  });
  await response.body?.cancel();
  if (!response.ok) throw new Error(`transcription service answered ${response.status}`);
};

export default createWorker(sendToTranscription);
