/**
 * Shared by the tests: signing as Replicate does, the recorded webhooks, and the probe Worker in workerd with
 * the file host (what Replicate serves the stems from), the transcription service and the probe's recorder
 * behind its outbound fetches.
 */
import { createHash, createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach } from "node:test";

import { ReadableStream } from "node:stream/web";

import { type Request as MiniflareRequest, Response as MiniflareResponse } from "miniflare";

import { type ConsumerSettings, PACKAGE_ROOT, type RunningWorker, startWorker } from "../scripts/miniflare.js";
import type { CopyJob } from "../src/jobs.js";

export const SECRET = `whsec_${Buffer.from("fretwise-test-signing-key-32byte").toString("base64")}`;
export const OTHER_SECRET = `whsec_${Buffer.from("someone-elses-signing-key-32byte").toString("base64")}`;
export const WEBHOOK_URL = "http://worker.test/webhooks/replicate";
export const TRANSCRIBE_URL = "http://transcribe.test/jobs";

/** Standard Webhooks headers for `body`, signed independently of the Worker's code (node:crypto). */
export function signedHeaders(
  body: string,
  webhookId: string,
  { secret = SECRET, timestamp = Math.floor(Date.now() / 1000) } = {},
): Record<string, string> {
  const key = Buffer.from(secret.slice("whsec_".length), "base64");
  const signature = createHmac("sha256", key).update(`${webhookId}.${timestamp}.${body}`).digest("base64");
  return {
    "content-type": "application/json",
    "webhook-id": webhookId,
    "webhook-timestamp": String(timestamp),
    "webhook-signature": `v1,${signature}`,
  };
}

export type Body = Record<string, unknown> & { id: string; status: string; output?: unknown };

interface Recording {
  input: Record<string, unknown>;
  predictions: { guitar: Body[]; canceled: Body[]; failed: Body[] };
}

/** The webhooks the real Cog runtime sent (scripts/record_webhooks.py at the repo root writes them). */
export const recording: Recording = JSON.parse(
  readFileSync(join(PACKAGE_ROOT, "test", "fixtures", "cog-webhooks.json"), "utf8"),
);

export const nameOf = (url: string) => url.split("/").pop()!.replace(/\.[^.]+$/, "");

/** The bytes the file host serves for `url` unless a test says otherwise: 40-60 kB, different for each URL. */
export function fileBytes(url: string): Uint8Array {
  const seed = createHash("sha256").update(url).digest();
  const size = 40_000 + (seed.readUInt32BE(0) % 20_000);
  const bytes = new Uint8Array(size);
  for (let offset = 0, block = 0; offset < size; block++) {
    const chunk = createHash("sha256").update(seed).update(String(block)).digest();
    bytes.set(chunk.subarray(0, Math.min(chunk.length, size - offset)), offset);
    offset += chunk.length;
  }
  return bytes;
}

/** How the file host answers one request for a URL; `tries` counts the requests for it, this one included. */
export type FileAnswer = (tries: number) => MiniflareResponse | Promise<MiniflareResponse>;

/** `bytes` with their Content-Length (Miniflare sends a body without one chunked). */
export function served(bytes: Uint8Array, headers: Record<string, string> = {}): MiniflareResponse {
  return new MiniflareResponse(bytes, { headers: { "content-length": String(bytes.length), ...headers } });
}

/** `bytes` with a Content-Length, as a stream of `chunkBytes` chunks. */
export function streamed(bytes: Uint8Array, { chunkBytes = 64 * 1024, contentLength = true } = {}): MiniflareResponse {
  let offset = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (offset >= bytes.length) return controller.close();
      controller.enqueue(bytes.slice(offset, offset + chunkBytes));
      offset += chunkBytes;
    },
  });
  return new MiniflareResponse(stream, { headers: contentLength ? { "content-length": String(bytes.length) } : {} });
}

export interface ProbeReport {
  what: string;
  key?: string;
  body?: string;
  part?: number;
  bytes?: number;
  binding?: string;
  count?: number;
}

export interface TranscriptionRequest {
  idempotencyKey: string | null;
  job: Record<string, unknown> & { stem: string; r2_key: string; figures: Record<string, unknown> };
}

export interface Probe extends RunningWorker {
  /** The file host's answers by URL; a URL not here gets `fileBytes(url)` with its Content-Length. */
  files: Map<string, FileAnswer>;
  /** Requests the file host got, by URL. */
  fileRequests: Map<string, number>;
  /** R2 writes and queue sends, in order, as the probe reported them. */
  reports: ProbeReport[];
  /** Report kinds ("r2-put", "queue-send", …) that the probe is told to fail. */
  faults: Set<string>;
  /** Every request the transcription service got, in order. */
  transcriptions: TranscriptionRequest[];
  /** The transcription service's status for its n-th request (1-based); 202 unless set. */
  transcribeStatus: (n: number) => number;
  deliver(body: Body | string, webhookId: string, headers?: Record<string, string>): Promise<Reply>;
  post(body: string, headers: Record<string, string>, init?: { method?: string; url?: string }): Promise<Reply>;
  rows<T = Record<string, unknown>>(sql: string, ...params: unknown[]): Promise<T[]>;
  /** An R2 object's bytes, or null. */
  object(key: string): Promise<Uint8Array | null>;
  /** Put a message on COPY_QUEUE, as a redelivery would. */
  sendCopy(job: CopyJob): Promise<void>;
}

export interface Reply {
  status: number;
  json: Record<string, unknown>;
}

export interface ProbeOptions {
  bindings?: Record<string, string>;
  consumers?: ConsumerSettings | false;
}

/**
 * The probe Worker with every queue consumer flushing at once and retrying without delay (RETRY_BASE_SECONDS
 * 0, retry_delay 0) unless `options` say otherwise.
 */
export async function startProbe(options: ProbeOptions = {}): Promise<Probe> {
  const files = new Map<string, FileAnswer>();
  const fileRequests = new Map<string, number>();
  const reports: ProbeReport[] = [];
  const faults = new Set<string>();
  const transcriptions: TranscriptionRequest[] = [];
  const probe = { transcribeStatus: (_n: number) => 202 };
  const outbound = async (request: MiniflareRequest) => {
    const url = new URL(request.url);
    if (url.host === "probe.test") {
      const what = url.pathname.slice(1);
      reports.push({ what, ...((await request.json()) as object) });
      return new MiniflareResponse(null, { status: faults.has(what) ? 503 : 204 });
    }
    if (request.url === TRANSCRIBE_URL) {
      transcriptions.push({
        idempotencyKey: request.headers.get("idempotency-key"),
        job: (await request.json()) as TranscriptionRequest["job"],
      });
      return new MiniflareResponse(null, { status: probe.transcribeStatus(transcriptions.length) });
    }
    const tries = (fileRequests.get(request.url) ?? 0) + 1;
    fileRequests.set(request.url, tries);
    const answer = files.get(request.url);
    return answer ? answer(tries) : served(fileBytes(request.url));
  };
  const worker = await startWorker({
    entry: "test/worker/probe.js",
    bindings: {
      WEBHOOK_SECRET: SECRET,
      PROBE_URL: "http://probe.test/",
      TRANSCRIBE_URL,
      RETRY_BASE_SECONDS: "0",
      ...options.bindings,
    },
    consumers: options.consumers ?? { maxBatchTimeout: 0, retryDelay: 0 },
    outbound,
  });
  const post = async (body: string, headers: Record<string, string>, init: { method?: string; url?: string } = {}) => {
    const method = init.method ?? "POST";
    const response = await worker.mf.dispatchFetch(init.url ?? WEBHOOK_URL, {
      method,
      headers,
      ...(method === "GET" ? {} : { body }),
    });
    const text = await response.text();
    return { status: response.status, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
  };
  return Object.assign(probe, {
    ...worker,
    files,
    fileRequests,
    reports,
    faults,
    transcriptions,
    post,
    deliver(body: Body | string, webhookId: string, headers?: Record<string, string>) {
      const text = typeof body === "string" ? body : JSON.stringify(body);
      return post(text, { ...signedHeaders(text, webhookId), ...headers });
    },
    async rows<T>(sql: string, ...params: unknown[]) {
      return (await worker.db.prepare(sql).bind(...params).all<T>()).results;
    },
    async object(key: string) {
      const object = await (await worker.mf.getR2Bucket("STEMS")).get(key);
      return object ? new Uint8Array(await object.arrayBuffer()) : null;
    },
    async sendCopy(job: CopyJob) {
      await (await worker.mf.getQueueProducer<CopyJob>("COPY_QUEUE")).send(job);
    },
  });
}

/**
 * A starter of probe Workers for one test file: `probeWith(bindings)` starts one with these bindings, and every
 * probe it started is disposed after each test. Call it once, at the top of the file.
 */
export function probesOfThisFile(): (bindings?: Record<string, string>) => Promise<Probe> {
  const running: Probe[] = [];
  afterEach(async () => {
    await Promise.all(running.splice(0).map((probe) => probe.dispose()));
  });
  return async (bindings = {}) => {
    const probe = await startProbe({ bindings });
    running.push(probe);
    return probe;
  };
}

/** Wait until `check` returns a value that is not undefined/false (polled every 20 ms), at most `timeoutMs`. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined | false>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** A stem row as the tests compare it. */
export interface StemRow {
  name: string;
  url: string;
  present: number | null;
  peak_dbfs: number | null;
  loudness_lufs: number | null;
  active_fraction: number | null;
  model: string | null;
  terms: string | null;
  figures_from: string | null;
  copy_state: string;
  copy_attempts: number;
  copy_error: string | null;
  r2_key: string | null;
  size_bytes: number | null;
  content_type: string | null;
  copied_at: string | null;
  handoff_state: string | null;
  handoff_attempts: number;
  handoff_error: string | null;
}

export const stemRows = (probe: Probe, predictionId: string) =>
  probe.rows<StemRow>("SELECT * FROM stems WHERE prediction_id = ? ORDER BY name", predictionId);

export const stemRow = async (probe: Probe, predictionId: string, name: string) =>
  (await probe.rows<StemRow>("SELECT * FROM stems WHERE prediction_id = ? AND name = ?", predictionId, name))[0];

export const prediction = async (probe: Probe, predictionId: string) =>
  (await probe.rows<{ status: string; error: string | null }>("SELECT status, error FROM predictions WHERE id = ?", predictionId))[0];

/** Wait until no stem of the prediction is still pending or queued for its copy. */
export const copiesSettled = (probe: Probe, predictionId: string) =>
  waitFor(`the copies of ${predictionId}`, async () => {
    const rows = await stemRows(probe, predictionId);
    return rows.every((row) => !["pending", "queued"].includes(row.copy_state)) && rows;
  });

export const counts = async (probe: Probe) => ({
  predictions: (await probe.rows<{ n: number }>("SELECT count(*) AS n FROM predictions"))[0]?.n,
  stems: (await probe.rows<{ n: number }>("SELECT count(*) AS n FROM stems"))[0]?.n,
  deliveries: (await probe.rows<{ n: number }>("SELECT count(*) AS n FROM webhook_deliveries"))[0]?.n,
});

/** Every row of D1's three tables as one JSON text, for comparing before and after. */
export async function snapshot(probe: Probe): Promise<string> {
  return (await probe.mf.dispatchFetch("http://worker.test/probe/d1")).text();
}

/** The R2 puts (whole objects) and multipart starts the probe saw, by key. */
export const r2Writes = (probe: Probe, key?: string) =>
  probe.reports.filter((report) => ["r2-put", "r2-multipart"].includes(report.what) && (key === undefined || report.key === key));
