/**
 * The webhooks the real Cog runtime sent, replayed signed into the Worker in workerd with a local D1, R2 and
 * queues: each stem recorded once, copied to R2 byte for byte, and the transcription stem handed on.
 */
import assert from "node:assert/strict";
import { afterEach, beforeEach, test } from "node:test";

import {
  type Body,
  type Probe,
  copiesSettled,
  counts,
  fileBytes,
  nameOf,
  prediction,
  r2Writes,
  recording,
  startProbe,
  stemRow,
  stemRows,
  waitFor,
} from "./helpers.js";

let probe: Probe;
beforeEach(async () => {
  probe = await startProbe();
});
afterEach(async () => {
  await probe.dispose();
});

type Figures = Record<string, number | boolean | null>;

/** The audio files of an event's output (stems.json, once the model writes it, is not a stem). */
const audioFiles = (event: Body) => ((event.output as string[] | undefined) ?? []).filter((url) => /\.(wav|flac|mp3)$/.test(url));

/** Each stem of `events` with the URL and figures of the first event listing it (none after a final status). */
function expectedStems(events: Body[]) {
  const stems = new Map<string, { url: string; figures: Figures | undefined }>();
  for (const event of events) {
    const figures = (event.metrics as { stems?: Record<string, Figures> })?.stems ?? {};
    for (const url of audioFiles(event)) {
      if (!stems.has(nameOf(url))) stems.set(nameOf(url), { url, figures: figures[nameOf(url)] });
    }
    if (["succeeded", "failed", "canceled"].includes(event.status)) break;
  }
  return new Map([...stems].sort(([a], [b]) => a.localeCompare(b)));
}

async function replay(events: Body[], prefix: string) {
  const replies = [];
  for (const [index, event] of events.entries()) replies.push(await probe.deliver(event, `${prefix}-${index}`));
  return replies;
}

/** Every stem of the prediction is in R2 with the bytes served, written once, as a stream. */
async function assertCopied(predictionId: string, names: string[]) {
  const rows = await copiesSettled(probe, predictionId);
  assert.deepEqual(rows.map((row) => row.name), names);
  for (const row of rows) {
    const key = `stems/${predictionId}/${row.name}.flac`;
    const served = fileBytes(row.url);
    assert.equal(row.copy_state, "copied", row.name);
    assert.deepEqual([row.r2_key, row.size_bytes, row.content_type], [key, served.length, "audio/flac"]);
    assert.ok(row.copied_at, "copied_at set");
    assert.deepEqual(await probe.object(key), served, `${key} is the file served`);
    assert.deepEqual(r2Writes(probe, key).map((write) => [write.what, write.body]), [["r2-put", "stream"]], key);
  }
}

test("the recorded guitar prediction: each stem once with its figures, all in R2, the guitar handed on", async () => {
  const events = recording.predictions.guitar;
  const replies = await replay(events, "msg");
  assert.deepEqual(replies.map((reply) => reply.status), events.map(() => 200));
  assert.deepEqual(await prediction(probe, "guitar"), { status: "succeeded", error: null });
  const expected = expectedStems(events);
  for (const row of await stemRows(probe, "guitar")) {
    const { url, figures } = expected.get(row.name)!;
    assert.equal(row.url, url);
    assert.deepEqual(
      [row.present, row.peak_dbfs, row.loudness_lufs, row.active_fraction, row.figures_from],
      [Number(figures!.present), figures!.peak_dbfs, figures!.loudness_lufs, figures!.active_fraction, "metrics"],
      row.name,
    );
  }
  await assertCopied("guitar", [...expected.keys()]);
  // no input in a self-hosted runtime's webhooks: the guitar mode is assumed, so the guitar is transcribed
  await waitFor("the hand-off", async () => (await stemRow(probe, "guitar", "guitar"))?.handoff_state === "done");
  const succeeded = events.find((event) => event.status === "succeeded")!;
  const { file, ...guitarFigures } = (succeeded.metrics as { stems: Record<string, Figures & { file?: string }> })
    .stems.guitar!;
  assert.equal(file, "guitar.flac");
  assert.deepEqual(probe.transcriptions, [
    {
      idempotencyKey: "guitar/guitar",
      job: {
        prediction_id: "guitar",
        stem: "guitar",
        r2_key: "stems/guitar/guitar.flac",
        figures: guitarFigures, // with the model and terms the runtime reported
        idempotency_key: "guitar/guitar",
      },
    },
  ]);
  assert.equal((await counts(probe)).deliveries, events.length);
});

test("every delivery twice: the retries are duplicates, and each stem is fetched and written once", async () => {
  const events = recording.predictions.guitar;
  for (const [index, event] of events.entries()) {
    const first = await probe.deliver(event, `msg-${index}`);
    const retry = await probe.deliver(event, `msg-${index}`);
    assert.equal(first.status, 200);
    assert.deepEqual(retry, { status: 200, json: { prediction: "guitar", outcome: "duplicate", new_stems: [] } });
  }
  await assertCopied("guitar", [...expectedStems(events).keys()]);
  assert.ok([...probe.fileRequests.values()].every((requests) => requests === 1), "one request per file");
  assert.equal((await counts(probe)).deliveries, events.length);
});

test("a late processing after succeeded changes nothing", async () => {
  const events = recording.predictions.guitar;
  const succeeded = events.find((event) => event.status === "succeeded")!;
  await probe.deliver(succeeded, "msg-done");
  const late = { ...events[1]!, logs: "late\n" };
  const reply = await probe.deliver(late, "msg-late");
  assert.deepEqual(reply.json, { prediction: "guitar", outcome: "ignored", new_stems: [] });
  assert.equal((await prediction(probe, "guitar"))?.status, "succeeded");
  assert.equal((await stemRows(probe, "guitar")).length, 6);
});

test("events in any order: the status only moves forward and each stem arrives once", async () => {
  const events = recording.predictions.guitar;
  const half = Math.floor(events.length / 2); // the second half first, each half backwards
  const shuffled = [...events.slice(half).reverse(), ...events.slice(0, half).reverse()];
  const replies = await replay(shuffled, "shuffled");
  assert.deepEqual(await prediction(probe, "guitar"), { status: "succeeded", error: null });
  assert.deepEqual(replies.flatMap((reply) => reply.json.new_stems as string[]).sort(), [...expectedStems(events).keys()]);
  await assertCopied("guitar", [...expectedStems(events).keys()]);
  // events after succeeded bring nothing, even stems succeeded lacked
  const ordered = await startProbe();
  try {
    const done = events.findIndex((event) => event.status === "succeeded");
    await ordered.deliver({ ...events[done]!, output: (events[done]!.output as string[]).slice(0, 2) }, "done");
    await ordered.deliver(events[done - 1]!, "late");
    assert.deepEqual((await stemRows(ordered, "guitar")).map((stem) => stem.name), ["instrumental", "vocals"]);
  } finally {
    await ordered.dispose();
  }
});

test("the recorded canceled prediction keeps and copies the stem it delivered, and only that one", async () => {
  const events = recording.predictions.canceled;
  await replay(events, "msg");
  assert.deepEqual(await prediction(probe, "canceled"), { status: "canceled", error: null });
  const names = [...expectedStems(events).keys()];
  assert.ok(names.length > 0 && names.length < 6, "partial stems");
  await assertCopied("canceled", names);
  assert.deepEqual(probe.transcriptions, [], "the guitar never came");
});

test("the recorded failed prediction stores its error, no stem and nothing in R2", async () => {
  await replay(recording.predictions.failed, "msg");
  const stored = await prediction(probe, "failed");
  assert.equal(stored?.status, "failed");
  assert.match(stored?.error ?? "", /not a supported audio or video file/);
  assert.deepEqual(await stemRows(probe, "failed"), []);
  assert.deepEqual(r2Writes(probe), []);
  assert.deepEqual(probe.transcriptions, []);
});

test("a stem whose figures say present: false is recorded, never copied and never handed on", async () => {
  const events = structuredClone(recording.predictions.guitar);
  for (const event of events) {
    const figures = (event.metrics as { stems?: Record<string, { present: boolean }> }).stems;
    if (figures?.guitar) figures.guitar.present = false;
  }
  await replay(events, "msg");
  const rows = await copiesSettled(probe, "guitar");
  const guitar = rows.find((row) => row.name === "guitar")!;
  assert.deepEqual([guitar.present, guitar.copy_state, guitar.r2_key], [0, "not_copied", null]);
  assert.equal(await probe.object("stems/guitar/guitar.flac"), null);
  assert.equal(probe.fileRequests.get(guitar.url), undefined, "the file was not even fetched");
  assert.deepEqual(rows.filter((row) => row.copy_state === "copied").length, 5);
  await waitFor("the guitar's hand-off decision", async () => (await stemRow(probe, "guitar", "guitar"))?.handoff_state);
  assert.deepEqual([(await stemRow(probe, "guitar", "guitar"))?.handoff_state, (await stemRow(probe, "guitar", "guitar"))?.handoff_error], [
    "skipped",
    "absent: its figures say present: false",
  ]);
  assert.deepEqual(probe.transcriptions, []);
});

test("an unknown prediction id is stored on first sight, with any event", async () => {
  const event = { ...recording.predictions.guitar[2]!, id: "never-created-here" };
  const reply = await probe.deliver(event, "msg-unknown");
  assert.equal(reply.status, 200);
  assert.deepEqual(reply.json.new_stems, audioFiles(event).map(nameOf));
  assert.equal((await prediction(probe, "never-created-here"))?.status, "processing");
  await assertCopied("never-created-here", ["instrumental", "vocals"]);
});

test("concurrent deliveries of the same events apply once and copy each stem once", async () => {
  const events = recording.predictions.guitar;
  const replies = await Promise.all(
    [...events, ...events, ...events].map((event, index) => probe.deliver(event, `msg-${index % events.length}`)),
  );
  assert.ok(replies.every((reply) => reply.status === 200));
  assert.equal(replies.filter((reply) => reply.json.outcome === "duplicate").length, 2 * events.length);
  assert.equal((await prediction(probe, "guitar"))?.status, "succeeded");
  await assertCopied("guitar", [...expectedStems(events).keys()]);
});
