/**
 * Predictions in Replicate's own shape, and the transcription hand-off through HANDOFF_QUEUE: it waits for
 * the stem's figures (metrics.stems or stems.json), honours ACCEPTED_TERMS, and is retried at least once per
 * job with one idempotency key.
 */
import assert from "node:assert/strict";
import { test } from "node:test";

import { type Probe, copiesSettled, fileBytes, probesOfThisFile, served, stemRow, stemRows, waitFor } from "./helpers.js";

const probeWith = probesOfThisFile();

interface StemSpec {
  name: string;
  model: string;
  terms: string;
  present?: boolean;
}

const figuresOf = (stem: StemSpec, index: number) => ({
  peak_dbfs: -3 - index,
  loudness_lufs: -20 - index,
  active_fraction: stem.present === false ? 0.01 : 0.5 + index / 100,
  present: stem.present ?? true,
  model: stem.model,
  terms: stem.terms,
});

const DELIVERY = "https://replicate.delivery/xezq/7Hc9Qm2";

/**
 * The webhooks Replicate sends for one prediction: `starting`, a `processing` event as each stem is uploaded,
 * then `succeeded` with every stem and stems.json. `metricsStems: false` leaves `metrics.stems` out, as
 * Replicate's API may.
 */
function replicateEvents(id: string, input: Record<string, unknown>, stems: StemSpec[], { metricsStems = true } = {}) {
  const created = new Date(Date.now() - 20_000);
  const at = (seconds: number) => new Date(created.getTime() + seconds * 1000).toISOString();
  const api = `https://api.replicate.com/v1/predictions/${id}`;
  const base = {
    id,
    model: "fretwise/bs-roformer-cog",
    version: "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa",
    input,
    logs: "",
    error: null,
    data_removed: false,
    created_at: at(0),
    urls: { get: api, cancel: `${api}/cancel`, stream: `https://stream.replicate.com/v1/files/${id}` },
  };
  const stemFigures = Object.fromEntries(stems.map((stem, index) => [stem.name, figuresOf(stem, index)]));
  const metrics = (count: number) => (metricsStems ? { stems: Object.fromEntries(Object.entries(stemFigures).slice(0, count)) } : {});
  const output = (count: number) => stems.slice(0, count).map((stem) => `${DELIVERY}/${stem.name}.wav`);
  const events: Record<string, unknown>[] = [{ ...base, status: "starting", output: null, metrics: {}, started_at: null }];
  for (let count = 1; count <= stems.length; count++) {
    events.push({ ...base, status: "processing", started_at: at(2), output: output(count), metrics: metrics(count) });
  }
  events.push({
    ...base,
    status: "succeeded",
    started_at: at(2),
    completed_at: at(18),
    output: [...output(stems.length), `${DELIVERY}/stems.json`],
    metrics: { predict_time: 16.2, total_time: 18.1, ...metrics(stems.length) },
  });
  const stemsJson = Object.fromEntries(stems.map((stem, index) => [stem.name, { file: `${stem.name}.wav`, ...figuresOf(stem, index) }]));
  return { events, stemsJson };
}

async function deliverAll(probe: Probe, events: Record<string, unknown>[], prefix: string) {
  for (const [index, event] of events.entries()) {
    const reply = await probe.deliver(event as never, `${prefix}-${index}`);
    assert.equal(reply.status, 200, JSON.stringify(reply.json));
  }
}

const handOffState = (probe: Probe, id: string, stem: string) =>
  waitFor(`the hand-off of ${id}/${stem}`, async () => {
    const row = await stemRow(probe, id, stem);
    return row?.handoff_state && !["queued"].includes(row.handoff_state) ? row : undefined;
  });

const DEMUCS = { model: "htdemucs_ft", terms: "research-only" };
const VIPERX = { model: "bs_roformer_vocals", terms: "none-stated" };
const MEGA = { model: "bs_roformer_mega53", terms: "mit-reported" };

test("Replicate's shape with metrics.stems: an all_4 prediction hands the instrumental on, with model and terms", async () => {
  const probe = await probeWith();
  const stems = [
    { name: "vocals", ...VIPERX },
    { name: "instrumental", ...VIPERX },
    { name: "drums", ...DEMUCS },
    { name: "bass", ...DEMUCS },
    { name: "other", ...DEMUCS, present: false },
  ];
  const { events, stemsJson } = replicateEvents("gm3qorzdhgbfurvjtvhg6dckhu", { audio: "https://x/song.mp3", stems: "all_4" }, stems);
  probe.files.set(`${DELIVERY}/stems.json`, () => served(new TextEncoder().encode(JSON.stringify(stemsJson))));
  await deliverAll(probe, events, "r");
  const rows = await copiesSettled(probe, "gm3qorzdhgbfurvjtvhg6dckhu");
  assert.deepEqual(
    rows.map((row) => [row.name, row.copy_state, row.present, row.model, row.terms, row.figures_from]),
    [
      ["bass", "copied", 1, "htdemucs_ft", "research-only", "metrics"],
      ["drums", "copied", 1, "htdemucs_ft", "research-only", "metrics"],
      ["instrumental", "copied", 1, "bs_roformer_vocals", "none-stated", "metrics"],
      ["other", "not_copied", 0, "htdemucs_ft", "research-only", "metrics"],
      ["vocals", "copied", 1, "bs_roformer_vocals", "none-stated", "metrics"],
    ],
  );
  for (const row of rows.filter((row) => row.copy_state === "copied")) {
    assert.deepEqual(await probe.object(row.r2_key!), fileBytes(row.url), row.name);
    assert.equal(row.content_type, "audio/wav");
  }
  await handOffState(probe, "gm3qorzdhgbfurvjtvhg6dckhu", "instrumental");
  assert.deepEqual(probe.transcriptions, [
    {
      idempotencyKey: "gm3qorzdhgbfurvjtvhg6dckhu/instrumental",
      job: {
        prediction_id: "gm3qorzdhgbfurvjtvhg6dckhu",
        stem: "instrumental",
        r2_key: "stems/gm3qorzdhgbfurvjtvhg6dckhu/instrumental.wav",
        figures: figuresOf(stems[1]!, 1),
        idempotency_key: "gm3qorzdhgbfurvjtvhg6dckhu/instrumental",
      },
    },
  ]);
  assert.doesNotMatch(JSON.stringify(probe.transcriptions), /replicate\.delivery/, "never Replicate's URL");
});

test("without metrics.stems the stems are copied at once, and the hand-off waits for stems.json's figures", async () => {
  const probe = await probeWith();
  const stems = [{ name: "guitar", ...MEGA }, { name: "no_guitar", ...MEGA }];
  const { events, stemsJson } = replicateEvents("p-guitar-only", { audio: "https://x/song.mp3", stems: "guitar_only" }, stems, {
    metricsStems: false,
  });
  probe.files.set(`${DELIVERY}/stems.json`, () => served(new TextEncoder().encode(JSON.stringify(stemsJson))));
  await deliverAll(probe, events.slice(0, -1), "r");
  const copied = await copiesSettled(probe, "p-guitar-only");
  assert.deepEqual(copied.map((row) => [row.name, row.copy_state, row.present, row.handoff_state]), [
    ["guitar", "copied", null, null],
    ["no_guitar", "copied", null, null],
  ]);
  assert.equal(probe.transcriptions.length, 0, "figures unknown: nothing handed on yet");
  await probe.deliver(events.at(-1) as never, "r-done");
  const guitar = await handOffState(probe, "p-guitar-only", "guitar");
  assert.deepEqual([guitar.handoff_state, guitar.figures_from, guitar.model, guitar.terms], ["done", "stems.json", "bs_roformer_mega53", "mit-reported"]);
  assert.deepEqual(probe.transcriptions.map((request) => request.job), [
    {
      prediction_id: "p-guitar-only",
      stem: "guitar",
      r2_key: "stems/p-guitar-only/guitar.wav",
      figures: figuresOf(stems[0]!, 0),
      idempotency_key: "p-guitar-only/guitar",
    },
  ]);
  assert.equal(await probe.object("stems/p-guitar-only/stems.json"), null, "stems.json is not a stem");
  assert.deepEqual(await probe.rows("SELECT figures_state, figures_error FROM predictions"), [{ figures_state: "read", figures_error: null }]);
});

test("ACCEPTED_TERMS: a research-only guitar is not handed on, a mit-reported one is", async () => {
  const probe = await probeWith({ ACCEPTED_TERMS: "mit-reported, none-stated" });
  const all6 = [{ name: "vocals", ...VIPERX }, { name: "guitar", ...DEMUCS }];
  const demucs = replicateEvents("p-all6", { audio: "https://x/a.mp3", stems: "all_6" }, all6);
  const mega = replicateEvents("p-mega", { audio: "https://x/a.mp3", stems: "guitar" }, [{ name: "guitar", ...MEGA }]);
  await deliverAll(probe, demucs.events.slice(0, -1), "a");
  await deliverAll(probe, mega.events.slice(0, -1), "b");
  const refused = await handOffState(probe, "p-all6", "guitar");
  assert.deepEqual([refused.handoff_state, refused.handoff_error, refused.copy_state], [
    "skipped",
    "terms research-only not in ACCEPTED_TERMS (mit-reported, none-stated)",
    "copied",
  ]);
  await handOffState(probe, "p-mega", "guitar");
  assert.deepEqual(probe.transcriptions.map((request) => request.idempotencyKey), ["p-mega/guitar"]);
});

test("the transcription service failing once: the job is retried and recorded done once", async () => {
  const probe = await probeWith();
  probe.transcribeStatus = (n) => (n === 1 ? 503 : 202);
  const { events } = replicateEvents("p-retry", { audio: "https://x/a.mp3", stems: "guitar" }, [{ name: "guitar", ...MEGA }]);
  await deliverAll(probe, events.slice(0, 2), "r");
  const row = await handOffState(probe, "p-retry", "guitar");
  assert.deepEqual([row.handoff_state, row.handoff_attempts, row.handoff_error], ["done", 2, null]);
  assert.deepEqual(probe.transcriptions.map((request) => request.idempotencyKey), ["p-retry/guitar", "p-retry/guitar"]);
  assert.deepEqual(probe.transcriptions[0]!.job, probe.transcriptions[1]!.job, "the same job both times");
  await deliverAll(probe, events.slice(2), "more");
  await copiesSettled(probe, "p-retry");
  assert.equal(probe.transcriptions.length, 2, "a later event does not hand it on again");
});

test("the transcription service always failing: dead-letter queue, and D1 says handoff_failed with the reason", async () => {
  const probe = await probeWith();
  probe.transcribeStatus = () => 500;
  const { events } = replicateEvents("p-down", { audio: "https://x/a.mp3", stems: "guitar" }, [{ name: "guitar", ...MEGA }]);
  await deliverAll(probe, events.slice(0, 2), "r");
  const row = await handOffState(probe, "p-down", "guitar");
  assert.deepEqual([row.handoff_state, row.handoff_error], [
    "handoff_failed",
    "transcription service answered 500 (gave up after 9 tries)",
  ]);
  assert.equal(probe.transcriptions.length, 9, "the first try and max_retries = 8 retries");
  assert.ok(probe.transcriptions.every((request) => request.idempotencyKey === "p-down/guitar"));
});

test("a stems.json that is not as the model writes it, or too large: recorded as failed, the hand-off goes on without figures", async () => {
  for (const [id, content, reason] of [
    ["p-bad", JSON.stringify({ guitar: { file: "guitar.wav", present: "yes" } }), /'stems.json.guitar.present' must be true or false/],
    ["p-file", JSON.stringify({ guitar: { file: "../guitar.wav", present: true } }), /'stems.json.guitar.file' must be the stem's file name/],
    ["p-big", JSON.stringify({ guitar: { file: "guitar.wav", pad: "x".repeat(300 * 1024) } }), /stems.json is \d+ bytes, more than the 262144 read/],
  ] as const) {
    const probe = await probeWith();
    const { events } = replicateEvents(id, { audio: "https://x/a.mp3", stems: "guitar_only" }, [{ name: "guitar", ...MEGA }], {
      metricsStems: false,
    });
    probe.files.set(`${DELIVERY}/stems.json`, () => served(new TextEncoder().encode(content)));
    await deliverAll(probe, events, "r");
    const row = await handOffState(probe, id, "guitar");
    const [stored] = await probe.rows<{ figures_state: string; figures_error: string }>("SELECT figures_state, figures_error FROM predictions");
    assert.equal(stored?.figures_state, "failed", id);
    assert.match(stored?.figures_error ?? "", reason, id);
    assert.deepEqual([row.handoff_state, row.present, row.figures_from], ["done", null, null], id);
    assert.equal(probe.fileRequests.get(`${DELIVERY}/stems.json`), 1, `${id}: not retried`);
  }
});

test("the probe's test-only route lists what is in R2 and returns a stem row set", async () => {
  const probe = await probeWith();
  const { events } = replicateEvents("p-list", { audio: "https://x/a.mp3", stems: "guitar_only" }, [
    { name: "guitar", ...MEGA },
    { name: "no_guitar", ...MEGA },
  ]);
  await deliverAll(probe, events.slice(0, -1), "r");
  await copiesSettled(probe, "p-list");
  const listed = await (await probe.mf.dispatchFetch("http://worker.test/probe/r2")).json();
  assert.deepEqual(listed, [
    { key: "stems/p-list/guitar.wav", size: fileBytes(`${DELIVERY}/guitar.wav`).length, content_type: "audio/wav" },
    { key: "stems/p-list/no_guitar.wav", size: fileBytes(`${DELIVERY}/no_guitar.wav`).length, content_type: "audio/wav" },
  ]);
  const object = await probe.mf.dispatchFetch("http://worker.test/probe/r2/stems/p-list/guitar.wav");
  assert.deepEqual(new Uint8Array(await object.arrayBuffer()), fileBytes(`${DELIVERY}/guitar.wav`));
  const rows = (await (await probe.mf.dispatchFetch("http://worker.test/probe/stems?prediction=p-list")).json()) as unknown[];
  assert.deepEqual(rows, await stemRows(probe, "p-list"));
});
