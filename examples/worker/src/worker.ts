/**
 * The Worker: the webhook endpoint and the consumers of its queues.
 *
 * The endpoint verifies a delivery, records it in D1 in one batch and queues what it brought (a copy of each
 * new stem, the read of stems.json, the transcription hand-off when it is due), then answers 200. A client
 * mistake is a 4xx naming it, with nothing stored; a 5xx means our side failed (D1 or a queue), and
 * Replicate's retry of the same delivery makes up what was not queued.
 */
import { consumeCopy, deadCopy } from "./copy.js";
import { queueCopies } from "./enqueue.js";
import { type CopyJob, type Env, type HandOffJob, QUEUES } from "./env.js";
import { type HandOff, consumeHandOff, deadHandOff, queueHandOffs } from "./handoff.js";
import { type PredictionEvent, PayloadError, parsePredictionEvent } from "./payload.js";
import { SignatureError, importSecret, verifySignature } from "./signature.js";
import { recordEvent } from "./store.js";

export type { Env } from "./env.js";
export type { HandOff } from "./handoff.js";

export const WEBHOOK_PATH = "/webhooks/replicate";
export const MAX_BODY_BYTES = 1024 * 1024;

class Rejection extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export function createWorker<E extends Env>(handOff: HandOff<E>): ExportedHandler<E, CopyJob | HandOffJob> {
  return {
    async fetch(request, env) {
      try {
        return await receive(request, env);
      } catch (error) {
        if (!(error instanceof Rejection)) {
          // our side failed (D1, a queue): 500, and Replicate retries the delivery
          console.error("webhook not recorded:", error);
          return Response.json({ error: "the delivery could not be recorded; retry it" }, { status: 500 });
        }
        console.warn(`webhook rejected (${error.status}): ${error.message}`);
        const headers = error.status === 405 ? { allow: "POST" } : undefined;
        return Response.json({ error: error.message }, { status: error.status, headers });
      }
    },
    async queue(batch, env) {
      for (const message of batch.messages) {
        if (batch.queue === QUEUES.copy) await consumeCopy(message as Message<CopyJob>, env);
        else if (batch.queue === QUEUES.copyDead) await deadCopy(message as Message<CopyJob>, env);
        else if (batch.queue === QUEUES.handOff) await consumeHandOff(message as Message<HandOffJob>, env, handOff);
        else if (batch.queue === QUEUES.handOffDead) await deadHandOff(message as Message<HandOffJob>, env);
        else throw new Error(`no consumer for queue ${batch.queue}`);
      }
    },
  };
}

async function receive(request: Request, env: Env): Promise<Response> {
  if (new URL(request.url).pathname !== WEBHOOK_PATH) throw new Rejection(404, "not found");
  if (request.method !== "POST") throw new Rejection(405, "use POST");
  const bytes = await readBody(request);
  const body = decodeUtf8(bytes);
  try {
    await verifySignature(await signingKey(env.WEBHOOK_SECRET), request.headers, body);
  } catch (error) {
    if (error instanceof SignatureError) throw new Rejection(401, error.message);
    throw error;
  }
  let event: PredictionEvent;
  try {
    event = parsePredictionEvent(body);
  } catch (error) {
    if (error instanceof PayloadError) throw new Rejection(400, error.message);
    throw error;
  }
  const webhookId = request.headers.get("webhook-id")!;
  const delivery = {
    webhookId,
    timestampMs: Number(request.headers.get("webhook-timestamp")) * 1000,
    bodySha256: await sha256Hex(bytes),
  };
  const { outcome, newStems } = await recordEvent(env.DB, delivery, event);
  if (outcome === "conflict") {
    throw new Rejection(409, `webhook-id ${webhookId} was delivered before with another body; nothing applied`);
  }
  await queueCopies(env, event.id);
  await queueHandOffs(env, event.id);
  return Response.json({ prediction: event.id, outcome, new_stems: newStems });
}

async function readBody(request: Request): Promise<ArrayBuffer> {
  if (Number(request.headers.get("content-length") ?? 0) > MAX_BODY_BYTES) {
    throw new Rejection(413, `body larger than ${MAX_BODY_BYTES} bytes`);
  }
  const bytes = await request.arrayBuffer();
  if (bytes.byteLength > MAX_BODY_BYTES) throw new Rejection(413, `body larger than ${MAX_BODY_BYTES} bytes`);
  return bytes;
}

function decodeUtf8(bytes: ArrayBuffer): string {
  try {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw new Rejection(400, "body is not UTF-8 text");
  }
}

async function sha256Hex(bytes: ArrayBuffer): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

let cachedKey: { secret: string; key: Promise<CryptoKey> } | undefined;

function signingKey(secret: string): Promise<CryptoKey> {
  if (cachedKey?.secret !== secret) cachedKey = { secret, key: importSecret(secret) };
  return cachedKey.key;
}
