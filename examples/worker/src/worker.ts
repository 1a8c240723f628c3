/**
 * The webhook endpoint: verify, record in D1, answer, then hand each newly arrived stem to `onStem`.
 *
 * Replicate POSTs the prediction when it starts, each time its `output` grows (one event may bring several
 * stems) and when it ends; it retries a delivery that gets no 2xx. So the handler answers as soon as the event
 * is in D1 (a few milliseconds) and runs the hooks after the response, through `ctx.waitUntil`.
 */
import { type PredictionEvent, type Stem, PayloadError, parsePredictionEvent } from "./payload.js";
import { SignatureError, importSecret, verifySignature } from "./signature.js";
import { recordEvent } from "./store.js";

export const WEBHOOK_PATH = "/webhooks/replicate";
export const MAX_BODY_BYTES = 1024 * 1024;

export interface Env {
  DB: D1Database;
  /** The account's webhook signing secret, `whsec_…` (`wrangler secret put WEBHOOK_SECRET`). */
  WEBHOOK_SECRET: string;
}

/**
 * Called once for each stem the first time an event brings it, after the response; never for a stem whose
 * figures say `present: false`. At most once: if it throws, the stem is not offered again (it is in D1).
 */
export type OnStem<E extends Env = Env> = (
  stem: Stem,
  prediction: PredictionEvent,
  env: E,
  ctx: ExecutionContext,
) => Promise<void> | void;

class Rejection extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export function createWorker<E extends Env>(onStem: OnStem<E>): ExportedHandler<E> {
  return {
    async fetch(request, env, ctx) {
      try {
        return await receive(request, env, ctx, onStem);
      } catch (error) {
        if (!(error instanceof Rejection)) throw error; // a fault of ours: 500, and Replicate retries
        console.warn(`webhook rejected (${error.status}): ${error.message}`);
        const headers = error.status === 405 ? { allow: "POST" } : undefined;
        return Response.json({ error: error.message }, { status: error.status, headers });
      }
    },
  };
}

async function receive<E extends Env>(
  request: Request,
  env: E,
  ctx: ExecutionContext,
  onStem: OnStem<E>,
): Promise<Response> {
  if (new URL(request.url).pathname !== WEBHOOK_PATH) throw new Rejection(404, "not found");
  if (request.method !== "POST") throw new Rejection(405, "use POST");
  const body = await readBody(request);
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
  const { outcome, newStems } = await recordEvent(env.DB, request.headers.get("webhook-id")!, event);
  for (const stem of newStems) {
    if (stem.present === false) continue; // only bleed of the other instruments
    ctx.waitUntil(
      (async () => onStem(stem, event, env, ctx))().catch((error) =>
        console.error(`onStem failed for ${event.id}/${stem.name}:`, error),
      ),
    );
  }
  return Response.json({ prediction: event.id, outcome, new_stems: newStems.map((stem) => stem.name) });
}

async function readBody(request: Request): Promise<string> {
  if (Number(request.headers.get("content-length") ?? 0) > MAX_BODY_BYTES) {
    throw new Rejection(413, `body larger than ${MAX_BODY_BYTES} bytes`);
  }
  const bytes = await request.arrayBuffer();
  if (bytes.byteLength > MAX_BODY_BYTES) throw new Rejection(413, `body larger than ${MAX_BODY_BYTES} bytes`);
  try {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw new Rejection(400, "body is not UTF-8 text");
  }
}

let cachedKey: { secret: string; key: Promise<CryptoKey> } | undefined;

function signingKey(secret: string): Promise<CryptoKey> {
  if (cachedKey?.secret !== secret) cachedKey = { secret, key: importSecret(secret) };
  return cachedKey.key;
}
