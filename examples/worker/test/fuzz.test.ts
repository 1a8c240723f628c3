/**
 * Signed bodies of every shape, Object.prototype's names in every position: never a 5xx, and D1 exactly as
 * it was after every 4xx.
 */
import assert from "node:assert/strict";
import { test } from "node:test";

import { snapshot, startProbe } from "./helpers.js";

/** Every name Object.prototype has, `__proto__` included. */
const PROTOTYPE_NAMES = [...new Set([...Object.getOwnPropertyNames(Object.prototype), "__proto__"])];

/** mulberry32: a small seeded generator, so a failure can be replayed from its seed. */
function generator(seed: number) {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const pick = <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)]!;
  return { next, pick };
}

/** An object whose keys are all own, enumerable data properties, `__proto__` included. */
function objectOf(entries: [string, unknown][]): Record<string, unknown> {
  const object: Record<string, unknown> = {};
  for (const [key, value] of entries) Object.defineProperty(object, key, { value, enumerable: true, writable: true, configurable: true });
  return object;
}

const STATUSES = ["starting", "processing", "succeeded", "failed", "canceled", "aborted"];
const STEMS = ["vocals", "instrumental", "guitar", "no_guitar", "bass", "acoustic-guitar", "constructor", "valueof"];
const file = (name: string, ext = "wav") => `https://replicate.delivery/xezq/f/${encodeURIComponent(name)}.${ext}`;

function figures(random: ReturnType<typeof generator>): Record<string, unknown> {
  return {
    present: random.pick([true, false, true]),
    peak_dbfs: -random.next() * 40,
    loudness_lufs: -10 - random.next() * 40,
    active_fraction: random.next(),
    model: random.pick(["htdemucs_ft", "bs_roformer_mega53", "bs_roformer_vocals"]),
    terms: random.pick(["research-only", "none-stated", "mit-reported"]),
  };
}

/** A prediction much like the model's, in Replicate's shape or the runtime's. */
function prediction(random: ReturnType<typeof generator>): Record<string, unknown> {
  const stems = STEMS.filter(() => random.next() < 0.4);
  const body: Record<string, unknown> = {
    id: `p${Math.floor(random.next() * 20)}`,
    status: random.pick(STATUSES),
    output: [...stems.map((stem) => file(stem, random.pick(["wav", "flac", "mp3"]))), ...(random.next() < 0.3 ? [file("stems", "json")] : [])],
    metrics: { predict_time: 3.2, stems: Object.fromEntries(stems.map((stem) => [stem, figures(random)])) },
  };
  if (random.next() < 0.5) {
    Object.assign(body, {
      model: "fretwise/bs-roformer-cog",
      input: { audio: "https://x/a.mp3", stems: random.pick(["guitar", "guitar_only", "all_4", "all_6"]), extra_stems: "piano" },
      created_at: new Date().toISOString(),
      urls: { get: "https://api.replicate.com/v1/predictions/x", cancel: "https://api.replicate.com/v1/predictions/x/cancel" },
      data_removed: false,
    });
  }
  return body;
}

const VALUES: unknown[] = [null, true, false, 0, -1, 1.5, "", "x", "false", [], [1], {}, { a: 1 }, "https://h/a.wav"];

/** `body` with one prototype name put in one position. */
function withName(body: Record<string, unknown>, position: string, name: string): Record<string, unknown> {
  const metrics = body.metrics as Record<string, unknown>;
  const stems = metrics.stems as Record<string, unknown>;
  switch (position) {
    case "status":
      return { ...body, status: name };
    case "id":
      return { ...body, id: name };
    case "stem file":
      return { ...body, output: [...(body.output as string[]), file(name)] };
    case "file without extension":
      return { ...body, output: [`https://replicate.delivery/xezq/f/${name}`] };
    case "metrics.stems key":
      return { ...body, metrics: { ...metrics, stems: objectOf([...Object.entries(stems), [name, { present: true }]]) } };
    case "figures key":
      return { ...body, metrics: { ...metrics, stems: { guitar: objectOf([[name, { present: true }], ["present", true]]) } } };
    case "metrics key":
      return { ...body, metrics: objectOf([[name, { stems: {} }], ["stems", stems]]) };
    case "input key":
      return { ...body, input: objectOf([[name, "guitar"], ["stems", "all_4"]]) };
    case "input.stems":
      return { ...body, input: { stems: name } };
    case "input.extra_stems":
      return { ...body, input: { stems: "all_4", extra_stems: name } };
    case "body key":
      return objectOf([...Object.entries(body), [name, { status: "succeeded" }]]);
    case "present":
      return { ...body, metrics: { ...metrics, stems: { guitar: { present: name } } } };
    default:
      throw new Error(position);
  }
}

const POSITIONS = [
  "status",
  "id",
  "stem file",
  "file without extension",
  "metrics.stems key",
  "figures key",
  "metrics key",
  "input key",
  "input.stems",
  "input.extra_stems",
  "body key",
  "present",
];

/** A body with random values at random places of a plausible prediction. */
function mangled(random: ReturnType<typeof generator>): Record<string, unknown> {
  const body = prediction(random);
  const metrics = () => (typeof body.metrics === "object" && body.metrics !== null ? body.metrics : {}) as Record<string, unknown>;
  const places: ((value: unknown) => void)[] = [
    (value) => (body.status = value),
    (value) => (body.id = value),
    (value) => (body.output = value),
    (value) => (body.output = [value]),
    (value) => (body.metrics = value),
    (value) => (body.metrics = { ...metrics(), stems: value }),
    (value) => (body.metrics = { ...metrics(), stems: { guitar: value } }),
    (value) => (body.metrics = { ...metrics(), stems: { guitar: { present: value, peak_dbfs: value } } }),
    (value) => (body.input = value),
    (value) => (body.input = { stems: value, extra_stems: value }),
    (value) => (body.created_at = value),
    (value) => (body.error = value),
  ];
  const times = 1 + Math.floor(random.next() * 3);
  for (let index = 0; index < times; index++) random.pick(places)(random.pick([...VALUES, random.pick(PROTOTYPE_NAMES)]));
  return body;
}

test("fuzz: no signed body gets a 5xx, and D1 is unchanged after every 4xx", async () => {
  const seed = Number(process.env.FUZZ_SEED ?? 20261207);
  const random = generator(seed);
  const bodies: { body: Record<string, unknown>; webhookId: string }[] = [];
  for (const name of PROTOTYPE_NAMES) {
    for (const position of POSITIONS) bodies.push({ body: withName(prediction(random), position, name), webhookId: `${position}-${name}` });
    bodies.push({ body: prediction(random), webhookId: name }); // a prototype name as the webhook-id
  }
  for (let index = 0; index < 160; index++) bodies.push({ body: mangled(random), webhookId: `random-${index}` });
  const statuses = new Map<number, number>();
  const probe = await startProbe({ consumers: false });
  try {
    let before = await snapshot(probe);
    for (const [index, { body, webhookId }] of bodies.entries()) {
      const text = JSON.stringify(body);
      const reply = await probe.deliver(text, webhookId);
      statuses.set(reply.status, (statuses.get(reply.status) ?? 0) + 1);
      const context = `seed ${seed}, body ${index}: ${text.slice(0, 300)} → ${reply.status} ${JSON.stringify(reply.json)}`;
      assert.ok(reply.status < 500, context);
      if (reply.status >= 400) {
        assert.equal(typeof reply.json.error, "string", context);
        assert.equal(await snapshot(probe), before, `D1 changed after a ${reply.status}: ${context}`);
      } else {
        before = await snapshot(probe);
      }
    }
  } finally {
    await probe.dispose();
  }
  // the bodies reached both sides of the check
  assert.ok((statuses.get(200) ?? 0) > 50, JSON.stringify([...statuses]));
  assert.ok((statuses.get(400) ?? 0) > 100, JSON.stringify([...statuses]));
});
