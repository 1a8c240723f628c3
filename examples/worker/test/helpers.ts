/** Shared by the tests: signing as Replicate does, the recorded webhooks, and the probe Worker in workerd. */
import { createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";

import { type Request as MiniflareRequest, Response as MiniflareResponse } from "miniflare";

import { PACKAGE_ROOT, type RunningWorker, startWorker } from "../scripts/miniflare.js";

export const SECRET = `whsec_${Buffer.from("fretwise-test-signing-key-32byte").toString("base64")}`;
export const OTHER_SECRET = `whsec_${Buffer.from("someone-elses-signing-key-32byte").toString("base64")}`;
export const WEBHOOK_URL = "http://worker.test/webhooks/replicate";

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

export interface StemCall {
  prediction: string;
  stem: string;
  present: boolean | null;
}

export interface Probe extends RunningWorker {
  /** Every onStem call, in order. */
  onStem: StemCall[];
  /** Every transcription job the example hook sent. */
  jobs: Record<string, unknown>[];
  /** Sign and POST a body (an object is JSON-encoded); the reply's status and JSON. */
  deliver(body: Body | string, webhookId: string, headers?: Record<string, string>): Promise<Reply>;
  post(body: string, headers: Record<string, string>, init?: { method?: string; url?: string }): Promise<Reply>;
  rows<T = Record<string, unknown>>(sql: string, ...params: unknown[]): Promise<T[]>;
}

export interface Reply {
  status: number;
  json: Record<string, unknown>;
}

/** The probe Worker (the example plus a report of each onStem call), answering once its hooks have run. */
export async function startProbe(): Promise<Probe> {
  const onStem: StemCall[] = [];
  const jobs: Record<string, unknown>[] = [];
  const outbound = async (request: MiniflareRequest) => {
    const url = new URL(request.url);
    if (url.host === "probe.test") onStem.push((await request.json()) as StemCall);
    else if (url.host === "transcribe.test") jobs.push((await request.json()) as Record<string, unknown>);
    else return new MiniflareResponse("unexpected fetch", { status: 502 });
    return new MiniflareResponse(null, { status: 204 });
  };
  const worker = await startWorker({
    entry: "test/worker/probe.js",
    bindings: {
      WEBHOOK_SECRET: SECRET,
      PROBE_URL: "http://probe.test/on-stem",
      TRANSCRIBE_URL: "http://transcribe.test/jobs",
      SETTLE: "1",
    },
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
  return {
    ...worker,
    onStem,
    jobs,
    post,
    deliver(body, webhookId, headers) {
      const text = typeof body === "string" ? body : JSON.stringify(body);
      return post(text, { ...signedHeaders(text, webhookId), ...headers });
    },
    async rows<T>(sql: string, ...params: unknown[]) {
      return (await worker.db.prepare(sql).bind(...params).all<T>()).results;
    },
  };
}

/** A stem row as the tests compare it. */
export interface StemRow {
  name: string;
  url: string;
  present: number | null;
  peak_dbfs: number | null;
  loudness_lufs: number | null;
  active_fraction: number | null;
}

export const stemRows = (probe: Probe, predictionId: string) =>
  probe.rows<StemRow>(
    "SELECT name, url, present, peak_dbfs, loudness_lufs, active_fraction FROM stems WHERE prediction_id = ? ORDER BY name",
    predictionId,
  );

export const prediction = async (probe: Probe, predictionId: string) =>
  (await probe.rows<{ status: string; error: string | null }>("SELECT status, error FROM predictions WHERE id = ?", predictionId))[0];

export const counts = async (probe: Probe) => ({
  predictions: (await probe.rows<{ n: number }>("SELECT count(*) AS n FROM predictions"))[0]?.n,
  stems: (await probe.rows<{ n: number }>("SELECT count(*) AS n FROM stems"))[0]?.n,
  deliveries: (await probe.rows<{ n: number }>("SELECT count(*) AS n FROM webhook_deliveries"))[0]?.n,
});
