/** The pieces that need no workerd: wrangler.toml against the code, retry timing, figures and payload checks. */
import assert from "node:assert/strict";
import { test } from "node:test";

import { readWranglerConfig } from "../scripts/miniflare.js";
import { FiguresError, parseFiguresByStem, parseStemsJson } from "../src/figures.js";
import { QUEUES } from "../src/jobs.js";
import { PayloadError, parsePredictionEvent } from "../src/payload.js";
import {
  COPY_DEADLINE_MS,
  DEFAULT_RETRY_BASE_SECONDS,
  MAX_RETRY_DELAY_SECONDS,
  MIN_TRY_MS,
  TRY_LIMIT_MS,
  retryBaseSeconds,
  retryDelaySeconds,
  tryFits,
  tryLimitMs,
} from "../src/retry.js";

test("wrangler.toml declares the bindings the Worker uses, each queue with a consumer and a dead-letter queue", () => {
  const config = readWranglerConfig();
  assert.deepEqual(config.d1, { DB: "fretwise-stems" });
  assert.deepEqual(config.r2, { STEMS: "fretwise-stems" });
  assert.deepEqual(config.producers, { COPY_QUEUE: QUEUES.copy, HANDOFF_QUEUE: QUEUES.handOff });
  assert.deepEqual(Object.keys(config.consumers).sort(), Object.values(QUEUES).sort());
  assert.equal(config.consumers[QUEUES.copy]?.deadLetterQueue, QUEUES.copyDead);
  assert.equal(config.consumers[QUEUES.handOff]?.deadLetterQueue, QUEUES.handOffDead);
  assert.equal(config.consumers[QUEUES.copy]?.maxBatchSize, 1, "one copy per invocation");
  assert.ok((config.consumers[QUEUES.copy]?.maxRetries ?? 0) >= 3);
  assert.equal(config.consumers[QUEUES.copy]?.retryDelay, retryBaseSeconds(config.vars.RETRY_BASE_SECONDS));
  assert.deepEqual(Object.keys(config.vars).sort(), ["ACCEPTED_TERMS", "RETRY_BASE_SECONDS", "TRANSCRIBE_URL"]);
  assert.equal(retryBaseSeconds(config.vars.RETRY_BASE_SECONDS), Number(config.vars.RETRY_BASE_SECONDS));
});

test("the copy queue's retries, at their configured delays, fit in the copy deadline", () => {
  const config = readWranglerConfig();
  const base = retryBaseSeconds(config.vars.RETRY_BASE_SECONDS);
  const retries = config.consumers[QUEUES.copy]!.maxRetries!;
  let waitedSeconds = 0;
  for (let attempts = 1; attempts <= retries; attempts++) waitedSeconds += retryDelaySeconds(attempts, base);
  assert.ok(waitedSeconds * 1000 < COPY_DEADLINE_MS / 2, `${waitedSeconds} s of waiting leaves time for the tries`);
});

test("retry delays double from the base, capped; the base falls back to the default", () => {
  assert.deepEqual([1, 2, 3, 4].map((attempts) => retryDelaySeconds(attempts, 20)), [20, 40, 80, 160]);
  assert.equal(retryDelaySeconds(30, 20), MAX_RETRY_DELAY_SECONDS);
  assert.equal(retryDelaySeconds(3, 0), 0);
  assert.deepEqual(["7", undefined, "", "-3", "1.5", "soon"].map(retryBaseSeconds), [7, ...Array(5).fill(DEFAULT_RETRY_BASE_SECONDS)]);
});

test("a try fits while a minute is left before the deadline, and runs at most to it", () => {
  const deadline = 1_000_000_000;
  assert.equal(tryFits(deadline - MIN_TRY_MS, 0, deadline), true);
  assert.equal(tryFits(deadline - MIN_TRY_MS + 1, 0, deadline), false);
  assert.equal(tryFits(deadline - MIN_TRY_MS - 20_000, 20, deadline), true);
  assert.equal(tryFits(deadline - MIN_TRY_MS - 20_000, 21, deadline), false);
  assert.equal(tryLimitMs(deadline - 5_000, deadline), 5_000);
  assert.equal(tryLimitMs(deadline - COPY_DEADLINE_MS, deadline), TRY_LIMIT_MS);
  assert.equal(tryLimitMs(deadline + 1, deadline), 0);
});

test("figures: own properties only, strict types; stems.json entries name their own file", () => {
  const parsed = parseFiguresByStem(JSON.parse('{"guitar": {"present": true, "peak_dbfs": null, "model": "htdemucs_6s", "terms": "research-only", "toString": 1}}'), "metrics.stems");
  assert.deepEqual([...parsed], [
    ["guitar", { present: true, peak_dbfs: null, loudness_lufs: null, active_fraction: null, model: "htdemucs_6s", terms: "research-only" }],
  ]);
  assert.deepEqual([...parseFiguresByStem({ constructor: {} }, "x").keys()], ["constructor"]);
  assert.throws(() => parseFiguresByStem(JSON.parse('{"__proto__": {"present": true}}'), "metrics.stems"), FiguresError);
  assert.throws(() => parseFiguresByStem({ guitar: { present: 1 } }, "m"), /'m.guitar.present' must be true or false, got 1/);
  assert.throws(() => parseFiguresByStem({ guitar: { model: 5 } }, "m"), /'m.guitar.model' must be a short label/);
  const json = parseStemsJson('{"no_guitar": {"file": "no_guitar.flac", "present": false, "model": "bs_roformer_mega53", "terms": "mit-reported"}}');
  assert.equal(json.get("no_guitar")?.present, false);
  assert.throws(() => parseStemsJson('{"guitar": {"present": true}}'), /'stems.json.guitar.file' must be the stem's file name/);
  assert.throws(() => parseStemsJson('{"guitar": {"file": "piano.wav"}}'), /stem's file name/);
  assert.throws(() => parseStemsJson("[]"), /'stems.json' must be an object/);
  assert.throws(() => parseStemsJson("{"), /not JSON/);
});

test("parsePredictionEvent: stems by decoded file name, stems.json apart, the input's transcription stem", () => {
  const event = parsePredictionEvent(
    JSON.stringify({
      id: "p1",
      status: "succeeded",
      created_at: "2026-01-02T03:04:05.678Z",
      input: { stems: "guitar_only" },
      output: ["https://r.d/x/no%5Fguitar.FLAC?t=1", "https://r.d/x/stems.json", "https://r.d/x/log.txt"],
      metrics: { predict_time: 1, stems: { no_guitar: { present: true } } },
    }),
  );
  assert.deepEqual(event.stems, [{ name: "no_guitar", url: "https://r.d/x/no%5Fguitar.FLAC?t=1", ext: "flac", contentType: "audio/flac" }]);
  assert.equal(event.figuresUrl, "https://r.d/x/stems.json");
  assert.equal(event.createdAtMs, Date.UTC(2026, 0, 2, 3, 4, 5, 678));
  assert.equal(event.transcribeStem, "guitar");
  assert.equal(event.figures.get("no_guitar")?.present, true);
  assert.equal(parsePredictionEvent('{"id": "p1", "status": "processing"}').transcribeStem, null);
  assert.throws(() => parsePredictionEvent('{"id": "p1", "status": "hasOwnProperty"}'), PayloadError);
  assert.throws(() => parsePredictionEvent('{"id": "p1", "status": "processing", "output": ["https://h/a%2Fb.wav"]}'), /"a\/b.wav" does not name a stem/);
});
