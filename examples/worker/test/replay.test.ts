/** The webhooks the real Cog runtime sent, replayed signed into the Worker in workerd with a local D1. */
import assert from "node:assert/strict";
import { afterEach, beforeEach, test } from "node:test";

import {
  type Body,
  type Probe,
  type StemRow,
  counts,
  prediction,
  recording,
  startProbe,
  stemRows,
} from "./helpers.js";

let probe: Probe;
beforeEach(async () => {
  probe = await startProbe();
});
afterEach(async () => {
  await probe.dispose();
});

const nameOf = (url: string) => url.split("/").pop()!.replace(/\.[^.]+$/, "");

/** What D1 should hold: each stem from the first event listing it, with that event's figures. */
function expectedStems(events: Body[]): StemRow[] {
  const stems = new Map<string, StemRow>();
  for (const event of events) {
    const figures = ((event.metrics as { stems?: Record<string, Record<string, unknown>> })?.stems ?? {});
    for (const url of (event.output as string[] | undefined) ?? []) {
      const name = nameOf(url);
      if (stems.has(name)) continue;
      const f = figures[name] ?? {};
      stems.set(name, {
        name,
        url,
        present: f.present === undefined ? null : Number(f.present),
        peak_dbfs: (f.peak_dbfs as number) ?? null,
        loudness_lufs: (f.loudness_lufs as number) ?? null,
        active_fraction: (f.active_fraction as number) ?? null,
      });
    }
    if (["succeeded", "failed", "canceled"].includes(event.status)) break; // final: later events bring nothing
  }
  return [...stems.values()].sort((a, b) => a.name.localeCompare(b.name));
}

/** Stem names in the order the events first listed them. */
function arrivalOrder(events: Body[]): string[] {
  const seen: string[] = [];
  for (const event of events) {
    for (const url of (event.output as string[] | undefined) ?? []) if (!seen.includes(nameOf(url))) seen.push(nameOf(url));
  }
  return seen;
}

async function replay(events: Body[], prefix: string) {
  const replies = [];
  for (const [index, event] of events.entries()) replies.push(await probe.deliver(event, `${prefix}-${index}`));
  return replies;
}

test("the recorded guitar prediction: status, each stem once with its event's figures, onStem in arrival order", async () => {
  const events = recording.predictions.guitar;
  assert.equal(events.at(-1)?.status, "processing", "the runtime sent a late processing after succeeded");
  const replies = await replay(events, "msg");
  assert.deepEqual(replies.map((reply) => reply.status), events.map(() => 200));
  assert.equal(replies.at(-1)?.json.outcome, "ignored");
  assert.deepEqual(await prediction(probe, "guitar"), { status: "succeeded", error: null });
  const stems = await stemRows(probe, "guitar");
  assert.deepEqual(stems, expectedStems(events));
  assert.deepEqual(
    stems.map((stem) => stem.name),
    ["guitar", "instrumental", "kick", "no_guitar", "piano", "vocals"],
  );
  assert.deepEqual(probe.onStem.map((call) => call.stem), arrivalOrder(events));
  assert.ok(probe.onStem.every((call) => call.prediction === "guitar" && call.present === true));
  // no input in a self-hosted runtime's webhooks: the guitar mode is assumed, so the guitar is transcribed
  assert.deepEqual(probe.jobs.map((job) => job.stem), ["guitar"]);
  assert.deepEqual((await counts(probe)).deliveries, events.length);
});

test("every delivery twice: retries are duplicates and change nothing", async () => {
  const events = recording.predictions.guitar;
  for (const [index, event] of events.entries()) {
    const first = await probe.deliver(event, `msg-${index}`);
    const retry = await probe.deliver(event, `msg-${index}`);
    assert.equal(first.status, 200);
    assert.deepEqual(retry, { status: 200, json: { prediction: "guitar", outcome: "duplicate", new_stems: [] } });
  }
  assert.deepEqual(await stemRows(probe, "guitar"), expectedStems(events));
  assert.deepEqual(probe.onStem.map((call) => call.stem), arrivalOrder(events));
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
  const shuffled = [events[3]!, events[6]!, events[0]!, events[1]!, events[5]!, events[2]!, events[4]!];
  await replay(shuffled, "shuffled");
  assert.deepEqual(await prediction(probe, "guitar"), { status: "succeeded", error: null });
  assert.deepEqual(probe.onStem.map((call) => call.stem).sort(), ["guitar", "instrumental", "kick", "no_guitar", "piano", "vocals"]);
  // events after succeeded bring nothing, even stems succeeded lacked
  const ordered = await startProbe();
  try {
    await ordered.deliver({ ...events[6]!, output: (events[6]!.output as string[]).slice(0, 2) }, "done");
    await ordered.deliver(events[5]!, "late");
    assert.deepEqual((await stemRows(ordered, "guitar")).map((stem) => stem.name), ["instrumental", "vocals"]);
  } finally {
    await ordered.dispose();
  }
});

test("the recorded canceled prediction keeps the stem it delivered, and only that one", async () => {
  const events = recording.predictions.canceled;
  await replay(events, "msg");
  assert.deepEqual(await prediction(probe, "canceled"), { status: "canceled", error: null });
  const stems = await stemRows(probe, "canceled");
  assert.deepEqual(stems, expectedStems(events));
  assert.ok(stems.length > 0 && stems.length < 6, "partial stems");
  assert.deepEqual(probe.onStem.map((call) => call.stem), stems.map((stem) => stem.name));
});

test("the recorded failed prediction stores its error and no stem", async () => {
  await replay(recording.predictions.failed, "msg");
  const stored = await prediction(probe, "failed");
  assert.equal(stored?.status, "failed");
  assert.match(stored?.error ?? "", /not a supported audio or video file/);
  assert.deepEqual(await stemRows(probe, "failed"), []);
  assert.deepEqual(probe.onStem, []);
});

test("a stem whose figures say present: false is stored but never handed to onStem", async () => {
  const events = structuredClone(recording.predictions.guitar);
  for (const event of events) {
    const figures = (event.metrics as { stems?: Record<string, { present: boolean }> }).stems;
    if (figures?.guitar) figures.guitar.present = false;
  }
  await replay(events, "msg");
  const guitar = (await stemRows(probe, "guitar")).find((stem) => stem.name === "guitar");
  assert.equal(guitar?.present, 0);
  assert.ok(!probe.onStem.some((call) => call.stem === "guitar"));
  assert.equal(probe.onStem.length, 5);
  assert.deepEqual(probe.jobs, [], "no guitar to transcribe");
});

test("an unknown prediction id is stored on first sight, with any event", async () => {
  const event = { ...recording.predictions.guitar[2]!, id: "never-created-here" };
  const reply = await probe.deliver(event, "msg-unknown");
  assert.equal(reply.status, 200);
  assert.deepEqual(reply.json.new_stems, (event.output as string[]).map(nameOf));
  assert.equal((await prediction(probe, "never-created-here"))?.status, "processing");
});

test("concurrent deliveries of the same events apply once", async () => {
  const events = recording.predictions.guitar;
  const replies = await Promise.all(
    [...events, ...events, ...events].map((event, index) => probe.deliver(event, `msg-${index % events.length}`)),
  );
  assert.ok(replies.every((reply) => reply.status === 200));
  assert.equal(replies.filter((reply) => reply.json.outcome === "duplicate").length, 2 * events.length);
  assert.deepEqual(probe.onStem.map((call) => call.stem).sort(), ["guitar", "instrumental", "kick", "no_guitar", "piano", "vocals"]);
  assert.equal((await prediction(probe, "guitar"))?.status, "succeeded");
});
