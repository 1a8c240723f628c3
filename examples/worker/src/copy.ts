/**
 * The COPY_QUEUE consumer: copy a stem from Replicate's URL into R2, streamed (a 30-minute 24-bit WAV stem is
 * about 480 MB, a Worker has 128 MB), or read stems.json (stemsjson.ts). A failed try is retried with backoff
 * as long as the next try still ends before the copy deadline (retry.ts); after that, or after the queue's
 * last retry (the dead-letter queue), D1 says copy_failed with the reason.
 */
import type { CopyJob, Env, StemCopyJob } from "./env.js";
import { PART_BYTES } from "./jobs.js";
import { queueHandOffs } from "./handoff.js";
import {
  COPY_DEADLINE_MS,
  PermanentError,
  describeError,
  retryBaseSeconds,
  retryDelaySeconds,
  tryFits,
  tryLimitMs,
} from "./retry.js";
import { giveUpFigures, noteFiguresFailure, readFigures } from "./stemsjson.js";

export async function consumeCopy(message: Message<CopyJob>, env: Env): Promise<void> {
  const job = message.body;
  const deadlineMs = job.event_at_ms + COPY_DEADLINE_MS;
  const deadline = `the deadline, 45 minutes after ${new Date(job.event_at_ms).toISOString()}`;
  try {
    if (!tryFits(Date.now(), 0, deadlineMs)) {
      await giveUp(env, job, `not tried: less than a minute was left before ${deadline}`, message.attempts);
    } else {
      try {
        await (job.kind === "stem" ? copyStem(env, job, deadlineMs, message.attempts) : readFigures(env, job, deadlineMs));
      } catch (error) {
        const reason = describeError(error);
        const delaySeconds = retryDelaySeconds(message.attempts, retryBaseSeconds(env.RETRY_BASE_SECONDS));
        if (error instanceof PermanentError) {
          await giveUp(env, job, reason, message.attempts);
        } else if (!tryFits(Date.now(), delaySeconds, deadlineMs)) {
          await giveUp(env, job, `${reason}; not retried: the next try would not end before ${deadline}`, message.attempts);
        } else {
          console.warn(`copy of ${job.url} failed (try ${message.attempts}, next in ${delaySeconds} s): ${reason}`);
          await noteFailure(env, job, reason, message.attempts);
          message.retry({ delaySeconds });
          return;
        }
      }
    }
    message.ack();
  } catch (error) {
    // D1 or the queue failed while recording: try again later; the dead-letter queue records it at the end
    console.error(`copy of ${job.url}: could not record the outcome:`, error);
    message.retry({ delaySeconds: retryDelaySeconds(message.attempts, retryBaseSeconds(env.RETRY_BASE_SECONDS)) });
  }
}

/** A copy that used up its retries, from the dead-letter queue: D1 says so, with the last error. */
export async function deadCopy(message: Message<CopyJob>, env: Env): Promise<void> {
  const job = message.body;
  if (job.kind === "figures") {
    await giveUpFigures(env, job, null);
  } else {
    await env.DB.prepare(
      `UPDATE stems SET copy_state = 'copy_failed',
         copy_error = COALESCE(copy_error, 'failed') || ' (gave up after ' || copy_attempts || ' tries)'
       WHERE prediction_id = ?1 AND name = ?2 AND copy_state IN ('pending', 'queued')`,
    )
      .bind(job.prediction_id, job.stem)
      .run();
  }
  message.ack();
}

async function copyStem(env: Env, job: StemCopyJob, deadlineMs: number, attempts: number): Promise<void> {
  const row = await env.DB.prepare("SELECT copy_state, present FROM stems WHERE prediction_id = ?1 AND name = ?2")
    .bind(job.prediction_id, job.stem)
    .first<{ copy_state: string; present: number | null }>();
  if (!row) throw new PermanentError(`no stem ${job.stem} recorded for prediction ${job.prediction_id}`);
  if (row.copy_state === "copy_failed" || row.copy_state === "not_copied") return;
  if (row.copy_state !== "copied") {
    if (row.present === 0) {
      await env.DB.prepare("UPDATE stems SET copy_state = 'not_copied' WHERE prediction_id = ?1 AND name = ?2")
        .bind(job.prediction_id, job.stem)
        .run();
      return;
    }
    const sizeBytes = await streamToR2(env.STEMS, job, AbortSignal.timeout(tryLimitMs(Date.now(), deadlineMs)));
    await env.DB.prepare(
      `UPDATE stems SET copy_state = 'copied', r2_key = ?3, size_bytes = ?4, content_type = ?5,
         copied_at = CURRENT_TIMESTAMP, copy_attempts = ?6, copy_error = NULL
       WHERE prediction_id = ?1 AND name = ?2`,
    )
      .bind(job.prediction_id, job.stem, job.r2_key, sizeBytes, job.content_type, attempts)
      .run();
  }
  await queueHandOffs(env, job.prediction_id);
}

/**
 * Fetch the stem and write it to R2 without holding it: with a Content-Length the body goes to `put` as a
 * stream of that length; without one it goes up in PART_BYTES parts (one part in memory at a time). An object
 * already at the key with the source's length is kept as it is (a redelivered message). Returns the size.
 */
async function streamToR2(bucket: R2Bucket, job: StemCopyJob, signal: AbortSignal): Promise<number> {
  const response = await fetch(job.url, { signal });
  if (!response.ok || response.body === null) {
    await response.body?.cancel();
    throw new Error(`${new URL(job.url).host} answered ${response.status} for ${job.stem}`);
  }
  const lengthBytes = contentLength(response.headers);
  const existing = await bucket.head(job.r2_key);
  if (existing !== null && lengthBytes !== null && existing.size === lengthBytes) {
    await response.body.cancel();
    return existing.size;
  }
  const options = {
    httpMetadata: { contentType: job.content_type },
    customMetadata: { prediction_id: job.prediction_id, stem: job.stem },
  };
  if (lengthBytes !== null) {
    await bucket.put(job.r2_key, response.body.pipeThrough(new FixedLengthStream(lengthBytes)), options);
    return lengthBytes;
  }
  return putInParts(bucket, job.r2_key, response.body, options);
}

async function putInParts(
  bucket: R2Bucket,
  key: string,
  body: ReadableStream<Uint8Array>,
  options: R2MultipartOptions,
): Promise<number> {
  const upload = await bucket.createMultipartUpload(key, options);
  try {
    const parts: R2UploadedPart[] = [];
    let sizeBytes = 0;
    for await (const part of inParts(body, PART_BYTES)) {
      parts.push(await upload.uploadPart(parts.length + 1, part));
      sizeBytes += part.byteLength;
    }
    if (parts.length === 0) parts.push(await upload.uploadPart(1, new Uint8Array(0)));
    await upload.complete(parts);
    return sizeBytes;
  } catch (error) {
    await upload.abort().catch(() => undefined);
    throw error;
  }
}

/** The stream cut into parts of exactly `partBytes` (the last one shorter). */
async function* inParts(body: ReadableStream<Uint8Array>, partBytes: number): AsyncGenerator<Uint8Array> {
  const reader = body.getReader();
  let part = new Uint8Array(partBytes);
  let filled = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    for (let offset = 0; offset < value.byteLength; ) {
      const take = Math.min(partBytes - filled, value.byteLength - offset);
      part.set(value.subarray(offset, offset + take), filled);
      filled += take;
      offset += take;
      if (filled === partBytes) {
        yield part;
        part = new Uint8Array(partBytes);
        filled = 0;
      }
    }
  }
  if (filled > 0) yield part.subarray(0, filled);
}

/** The Content-Length header as a number of bytes; null when absent or not a plain number. */
export function contentLength(headers: Headers): number | null {
  const value = headers.get("content-length");
  return value !== null && /^\d{1,15}$/.test(value) ? Number(value) : null;
}

async function noteFailure(env: Env, job: CopyJob, reason: string, attempts: number): Promise<void> {
  if (job.kind === "figures") return noteFiguresFailure(env, job, reason);
  await env.DB.prepare("UPDATE stems SET copy_attempts = ?3, copy_error = ?4 WHERE prediction_id = ?1 AND name = ?2")
    .bind(job.prediction_id, job.stem, attempts, reason)
    .run();
}

async function giveUp(env: Env, job: CopyJob, reason: string, attempts: number): Promise<void> {
  console.warn(`giving up on ${job.url}: ${reason}`);
  if (job.kind === "figures") return giveUpFigures(env, job, reason);
  await env.DB.prepare(
    `UPDATE stems SET copy_state = 'copy_failed', copy_error = ?3, copy_attempts = ?4
     WHERE prediction_id = ?1 AND name = ?2 AND copy_state IN ('pending', 'queued')`,
  )
    .bind(job.prediction_id, job.stem, reason, attempts)
    .run();
}
