/** The typed client: inputs checked against the model's schema, and predictions created the way the Worker needs. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import Replicate from "replicate";

import { PACKAGE_ROOT } from "../scripts/miniflare.js";
import { WEBHOOK_EVENTS, createSeparation, separateNow, stemsByName } from "../src/client.js";
import { INPUT_SPEC, transcriptionStem } from "../src/input.js";

interface SchemaProperty {
  allOf?: { $ref: string }[];
  minimum?: number;
  maximum?: number;
}

test("the input type matches .cog/openapi_schema.json: every input, choice and range", () => {
  const schema = JSON.parse(readFileSync(join(PACKAGE_ROOT, "..", "..", ".cog", "openapi_schema.json"), "utf8"));
  const { Input: input, ...named } = schema.components.schemas;
  const properties = input.properties as Record<string, SchemaProperty>;
  assert.deepEqual(Object.keys(INPUT_SPEC).sort(), Object.keys(properties).sort());
  for (const [name, property] of Object.entries(properties)) {
    const spec: { required?: boolean; choices?: readonly unknown[]; range?: readonly number[] } =
      INPUT_SPEC[name as keyof typeof INPUT_SPEC];
    assert.equal(spec.required ?? false, input.required.includes(name), `${name}: required`);
    const ref = property.allOf?.[0]?.$ref.split("/").pop();
    const choices = ref ? (named[ref].enum as unknown[]) : undefined;
    assert.deepEqual(spec.choices ? [...spec.choices].sort() : undefined, choices?.sort(), `${name}: choices`);
    const range = property.minimum === undefined ? undefined : [property.minimum, property.maximum];
    assert.deepEqual(spec.range ? [...spec.range] : undefined, range, `${name}: range`);
  }
});

test("transcriptionStem: guitar where the prediction brings one, else instrumental", () => {
  assert.equal(transcriptionStem({ stems: "guitar" }), "guitar");
  assert.equal(transcriptionStem({ stems: "all_6" }), "guitar");
  assert.equal(transcriptionStem({ stems: "all_4", extra_stems: "piano, guitar" }), "guitar");
  assert.equal(transcriptionStem({ stems: "all_4", extra_stems: "electric-guitar" }), "instrumental");
  assert.equal(transcriptionStem({}), "instrumental");
});

test("stemsByName: by file name in any order, URL strings and file outputs alike", () => {
  const urls = ["https://replicate.delivery/x/no_guitar.flac?sig=1", "https://replicate.delivery/x/vocals.flac", "https://h/a%20b/lead%20guitar.mp3#t"];
  const expected = { no_guitar: urls[0], vocals: urls[1], "lead guitar": urls[2] };
  assert.deepEqual(stemsByName(urls), expected);
  assert.deepEqual(stemsByName([...urls].reverse()), expected);
  assert.deepEqual(stemsByName(urls.map((url) => ({ url: () => new URL(url) }))), {
    no_guitar: urls[0],
    vocals: urls[1],
    "lead guitar": "https://h/a%20b/lead%20guitar.mp3#t",
  });
  assert.throws(() => stemsByName("https://h/vocals.wav"), /list/);
  assert.throws(() => stemsByName(["data:audio/wav;base64,AAAA"]), /http\(s\)/);
  assert.throws(() => stemsByName(["https://h/a/bass.wav", "https://h/b/bass.flac"]), /two files for stem "bass"/);
  assert.throws(() => stemsByName(["https://h/"]), /no file name/);
  assert.throws(() => stemsByName([42]), /file URL or a file output/);
});

/** A Replicate client whose API answers come from `answer`, recording each request. */
function fakeReplicate(answer: (body: Record<string, unknown>) => Record<string, unknown>) {
  const requests: { url: string; body: Record<string, unknown> }[] = [];
  const replicate = new Replicate({
    auth: "r8_test",
    fetch: async (input, init) => {
      const body = JSON.parse(String(init?.body ?? "{}"));
      requests.push({ url: String(input), body });
      return Response.json(answer(body), { status: 201 });
    },
  });
  return { replicate, requests };
}

test("createSeparation asks for the start, output and completed webhooks", async () => {
  const { replicate, requests } = fakeReplicate((body) => ({ id: "p1", status: "starting", ...body }));
  const prediction = await createSeparation(
    replicate,
    "owner/bs-roformer-cog:abc123",
    { audio: "https://example.com/song.mp3", stems: "guitar", extra_stems: "acoustic-guitar" },
    "https://fretwise.example/webhooks/replicate",
  );
  assert.equal(prediction.id, "p1");
  assert.equal(requests.length, 1);
  assert.match(requests[0]!.url, /\/predictions$/);
  assert.deepEqual(requests[0]!.body, {
    version: "abc123",
    input: { audio: "https://example.com/song.mp3", stems: "guitar", extra_stems: "acoustic-guitar" },
    webhook: "https://fretwise.example/webhooks/replicate",
    webhook_events_filter: [...WEBHOOK_EVENTS],
  });
});

test("separateNow returns the stems by name, whatever the output order", async () => {
  const base = "https://replicate.delivery/xezq/abc";
  const output = ["guitar", "vocals", "no_guitar", "instrumental"].map((stem) => `${base}/${stem}.wav`);
  const { replicate } = fakeReplicate(() => ({ id: "p2", status: "succeeded", output }));
  const stems = await separateNow(replicate, "owner/bs-roformer-cog:abc123", { audio: "https://x/song.mp3", stems: "guitar" });
  assert.deepEqual(stems, {
    guitar: `${base}/guitar.wav`,
    vocals: `${base}/vocals.wav`,
    no_guitar: `${base}/no_guitar.wav`,
    instrumental: `${base}/instrumental.wav`,
  });
  assert.notEqual(output[1], stems.instrumental, "output[1] is not the instrumental");
});
