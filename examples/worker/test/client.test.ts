/** The typed client: inputs checked against the model's schema, and predictions created the way the Worker needs. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import Replicate from "replicate";

import { PACKAGE_ROOT } from "../scripts/miniflare.js";
import { WEBHOOK_EVENTS, createSeparation, guitarOnlyInput, separateNow, stemsByName } from "../src/client.js";
import { EXTRA_STEM_NAMES, EXTRA_STEMS_MAX_LENGTH, INPUT_SPEC, type ModeInput, transcriptionStem } from "../src/input.js";

interface SchemaProperty {
  allOf?: { $ref: string }[];
  default?: unknown;
  minimum?: number;
  maximum?: number;
  maxLength?: number;
}

type SpecEntry = {
  required?: boolean;
  default?: unknown;
  choices?: readonly unknown[];
  range?: readonly number[];
  maxLength?: number;
};

test("the input type matches .cog/openapi_schema.json: every input, choice, range, default and length limit", () => {
  const schema = JSON.parse(readFileSync(join(PACKAGE_ROOT, "..", "..", ".cog", "openapi_schema.json"), "utf8"));
  const { Input: input, ...named } = schema.components.schemas;
  const properties = input.properties as Record<string, SchemaProperty>;
  assert.deepEqual(Object.keys(INPUT_SPEC).sort(), Object.keys(properties).sort());
  for (const [name, property] of Object.entries(properties)) {
    const spec: SpecEntry = INPUT_SPEC[name as keyof typeof INPUT_SPEC];
    assert.equal(spec.required ?? false, input.required.includes(name), `${name}: required`);
    assert.equal(spec.default, property.default, `${name}: default`);
    const ref = property.allOf?.[0]?.$ref.split("/").pop();
    const choices = ref ? (named[ref].enum as unknown[]) : undefined;
    assert.deepEqual(spec.choices ? [...spec.choices].sort() : undefined, choices?.sort(), `${name}: choices`);
    const range = property.minimum === undefined ? undefined : [property.minimum, property.maximum];
    assert.deepEqual(spec.range ? [...spec.range] : undefined, range, `${name}: range`);
    assert.equal(spec.maxLength, property.maxLength, `${name}: maxLength`);
  }
});

test("extra_stems: the 53 Mega-53 names, all of them together exactly as long as the limit", () => {
  assert.equal(EXTRA_STEM_NAMES.length, 53);
  assert.equal(new Set(EXTRA_STEM_NAMES).size, 53);
  assert.deepEqual([...EXTRA_STEM_NAMES], [...EXTRA_STEM_NAMES].sort());
  assert.equal(EXTRA_STEMS_MAX_LENGTH, EXTRA_STEM_NAMES.join(", ").length); // with a space after each comma
  const readme = readFileSync(join(PACKAGE_ROOT, "..", "..", "README.md"), "utf8");
  const listed = readme.slice(readme.indexOf("The 53 `extra_stems` names"));
  for (const name of EXTRA_STEM_NAMES) assert.match(listed.slice(0, 1200), new RegExp(`[ \\n]${name}[,.]`), name);
});

test("transcriptionStem: the cases the Python receiver is tested against too", () => {
  const { cases } = JSON.parse(readFileSync(join(PACKAGE_ROOT, "test", "fixtures", "transcription-stem.json"), "utf8")) as {
    cases: { input: ModeInput | null; stem: string }[];
  };
  assert.ok(cases.length >= 10);
  for (const { input, stem } of cases) assert.equal(transcriptionStem(input), stem, JSON.stringify(input));
  assert.equal(transcriptionStem(guitarOnlyInput("https://x/song.mp3")), "guitar");
});

test("stemsByName: by file name in any order; stems.json and other files are not stems", () => {
  const urls = [
    "https://replicate.delivery/x/no_guitar.flac?sig=1",
    "https://replicate.delivery/x/vocals.flac",
    "https://h/a%20b/acoustic-guitar.mp3#t",
    "https://replicate.delivery/x/stems.json",
    "https://replicate.delivery/x/notes.txt",
  ];
  const expected = { no_guitar: urls[0], vocals: urls[1], "acoustic-guitar": urls[2] };
  assert.deepEqual(stemsByName(urls), expected);
  assert.deepEqual(stemsByName([...urls].reverse()), expected);
  assert.deepEqual(stemsByName(urls.map((url) => ({ url: () => new URL(url) }))), {
    no_guitar: urls[0],
    vocals: urls[1],
    "acoustic-guitar": "https://h/a%20b/acoustic-guitar.mp3#t",
  });
  // a stem named like an Object.prototype member is an ordinary stem (no "two files for stem" mix-up)
  assert.deepEqual(Object.entries(stemsByName(["https://h/constructor.wav", "https://h/valueof.flac"])), [
    ["constructor", "https://h/constructor.wav"],
    ["valueof", "https://h/valueof.flac"],
  ]);
});

test("stemsByName refuses what is not a list of stem files, naming the problem", () => {
  assert.throws(() => stemsByName("https://h/vocals.wav"), /list/);
  assert.throws(() => stemsByName(["data:audio/wav;base64,AAAA"]), /http\(s\)/);
  assert.throws(() => stemsByName(["https://h/a/bass.wav", "https://h/b/bass.flac"]), /two files for stem "bass"/);
  assert.throws(() => stemsByName(["https://h/"]), /no file name/);
  assert.throws(() => stemsByName([42]), /file URL or a file output/);
  assert.throws(() => stemsByName(["https://replicate.delivery/x/..%2F..%2Fetc%2Fpasswd.wav"]), /"..\/..\/etc\/passwd.wav" does not name a stem/);
  assert.throws(() => stemsByName(["https://h/lead%20guitar.wav"]), /"lead guitar.wav" does not name a stem/);
  assert.throws(() => stemsByName(["https://h/Vocals.wav"]), /does not name a stem/);
  assert.throws(() => stemsByName(["https://h/%E0%A4%A.wav"]), /percent-encoding/);
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

test("createSeparation asks for the start, output and completed webhooks, guitar_only for a guitar alone", async () => {
  const { replicate, requests } = fakeReplicate((body) => ({ id: "p1", status: "starting", ...body }));
  const prediction = await createSeparation(
    replicate,
    "owner/bs-roformer-cog:abc123",
    guitarOnlyInput("https://example.com/song.mp3"),
    "https://fretwise.example/webhooks/replicate",
  );
  assert.equal(prediction.id, "p1");
  assert.equal(requests.length, 1);
  assert.match(requests[0]!.url, /\/predictions$/);
  assert.deepEqual(requests[0]!.body, {
    version: "abc123",
    input: { audio: "https://example.com/song.mp3", stems: "guitar_only" },
    webhook: "https://fretwise.example/webhooks/replicate",
    webhook_events_filter: [...WEBHOOK_EVENTS],
  });
});

test("separateNow returns the stems by name, whatever the output order, without stems.json", async () => {
  const base = "https://replicate.delivery/xezq/abc";
  const output = ["guitar", "vocals", "no_guitar", "instrumental"].map((stem) => `${base}/${stem}.wav`);
  output.push(`${base}/stems.json`);
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
