/** Requests the Worker refuses, each with a 4xx and a reason, leaving D1 as it was; and the 2xx comes first. */
import assert from "node:assert/strict";
import { afterEach, beforeEach, test } from "node:test";

import { Response as MiniflareResponse } from "miniflare";

import { startWorker } from "../scripts/miniflare.js";
import { OTHER_SECRET, type Probe, SECRET, WEBHOOK_URL, counts, recording, signedHeaders, startProbe } from "./helpers.js";

let probe: Probe;
beforeEach(async () => {
  probe = await startProbe();
});
afterEach(async () => {
  await probe.dispose();
});

const event = recording.predictions.guitar[2]!;
const body = JSON.stringify(event);
const nothingStored = { predictions: 0, stems: 0, deliveries: 0 };

test("a bad or missing signature is 401 and stores nothing", async () => {
  const forged = await probe.post(body, signedHeaders(body, "msg-1", { secret: OTHER_SECRET }));
  assert.deepEqual(forged, { status: 401, json: { error: "no valid v1 signature in webhook-signature" } });
  const tampered = await probe.post(body.replace("processing", "succeeded"), signedHeaders(body, "msg-1"));
  assert.equal(tampered.status, 401);
  for (const header of ["webhook-id", "webhook-timestamp", "webhook-signature"]) {
    const headers = signedHeaders(body, "msg-1");
    delete headers[header];
    const reply = await probe.post(body, headers);
    assert.equal(reply.status, 401);
    assert.match(String(reply.json.error), /missing/);
  }
  for (const signature of ["garbage", "v1,not*base64", "v2,abc", ""]) {
    const reply = await probe.post(body, { ...signedHeaders(body, "msg-1"), "webhook-signature": signature });
    assert.equal(reply.status, 401, signature);
  }
  assert.deepEqual(await counts(probe), nothingStored);
});

test("a timestamp more than 5 minutes off is 401; 4 minutes is accepted", async () => {
  const now = Math.floor(Date.now() / 1000);
  for (const timestamp of [now - 600, now + 600]) {
    const reply = await probe.post(body, signedHeaders(body, "msg-stale", { timestamp }));
    assert.equal(reply.status, 401);
    assert.match(String(reply.json.error), /webhook-timestamp/);
  }
  assert.equal((await probe.post(body, signedHeaders(body, "msg-x", { timestamp: "soon" as never }))).status, 401);
  assert.deepEqual(await counts(probe), nothingStored);
  const recent = await probe.post(body, signedHeaders(body, "msg-stale", { timestamp: now - 240 }));
  assert.equal(recent.status, 200);
});

test("a signed body that is not a usable prediction is 400 and does not use up its webhook-id", async () => {
  const bad: [string, RegExp][] = [
    ["not json at all", /not JSON/],
    ["[1, 2]", /JSON object/],
    [JSON.stringify({ status: "processing" }), /'id'/],
    [JSON.stringify({ ...event, status: "exploded" }), /'status'/],
    [JSON.stringify({ ...event, output: { vocals: "https://h/vocals.wav" } }), /'output'.*list/],
    [JSON.stringify({ ...event, output: ["data:audio/wav;base64,AAAA"] }), /'output'.*http\(s\)/],
    [JSON.stringify({ ...event, output: ["https://h/a/bass.wav", "https://h/b/bass.wav"] }), /two files for stem "bass"/],
    [JSON.stringify({ ...event, metrics: { stems: [] } }), /'metrics.stems'/],
  ];
  for (const [text, message] of bad) {
    const reply = await probe.deliver(text, "msg-1");
    assert.equal(reply.status, 400, text);
    assert.match(String(reply.json.error), message);
  }
  assert.deepEqual(await counts(probe), nothingStored);
  assert.deepEqual(probe.onStem, []);
  assert.equal((await probe.deliver(event, "msg-1")).json.outcome, "applied");
});

test("wrong path, wrong method, an oversized body or one that is not UTF-8", async () => {
  const headers = signedHeaders(body, "msg-1");
  assert.equal((await probe.post(body, headers, { url: "http://worker.test/elsewhere" })).status, 404);
  assert.equal((await probe.post("", {}, { method: "GET" })).status, 405);
  const huge = " ".repeat(1024 * 1024 + 1);
  const tooLarge = await probe.post(huge, signedHeaders(huge, "msg-1"));
  assert.equal(tooLarge.status, 413);
  const response = await probe.mf.dispatchFetch(WEBHOOK_URL, {
    method: "POST",
    headers: signedHeaders("{}", "msg-1"),
    body: new Uint8Array([0xff, 0xfe, 0x7b, 0x7d]),
  });
  assert.equal(response.status, 400);
  assert.match(await response.text(), /UTF-8/);
  assert.deepEqual(await counts(probe), nothingStored);
});

test("the example answers at once and hands the transcription stem on afterwards", async () => {
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  const jobs: Record<string, unknown>[] = [];
  const worker = await startWorker({
    bindings: { WEBHOOK_SECRET: SECRET, TRANSCRIBE_URL: "http://transcribe.test/jobs" },
    outbound: async (request) => {
      await released; // the transcription service is slow
      jobs.push((await request.json()) as Record<string, unknown>);
      return new MiniflareResponse(null, { status: 202 });
    },
  });
  try {
    // Replicate sends the input: an all_4 prediction brings no guitar, so the instrumental is transcribed
    const withInput = { ...recording.predictions.guitar[2]!, input: { audio: "https://x/song.mp3", stems: "all_4" } };
    const text = JSON.stringify(withInput);
    const response = await worker.mf.dispatchFetch(WEBHOOK_URL, { method: "POST", headers: signedHeaders(text, "m"), body: text });
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json(), { prediction: "guitar", outcome: "applied", new_stems: ["vocals", "instrumental"] });
    assert.equal(jobs.length, 0, "answered before the hand-off finished");
    release();
    for (let tries = 0; jobs.length === 0 && tries < 100; tries++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(jobs.length, 1);
    const [job] = jobs;
    assert.equal(job?.stem, "instrumental");
    assert.equal(job?.prediction_id, "guitar");
    const metrics = recording.predictions.guitar[2]!.metrics as { stems: Record<string, object> };
    assert.deepEqual(job?.figures, metrics.stems.instrumental);
  } finally {
    await worker.dispose();
  }
});
