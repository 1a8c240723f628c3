/**
 * Requests the Worker refuses, each with a 4xx naming the problem and D1 left as it was; a 5xx only when D1
 * or a queue fails, and Replicate's retry then makes up what was missed.
 */
import assert from "node:assert/strict";
import { afterEach, beforeEach, test } from "node:test";

import {
  OTHER_SECRET,
  type Probe,
  WEBHOOK_URL,
  copiesSettled,
  counts,
  recording,
  served,
  signedHeaders,
  snapshot,
  startProbe,
} from "./helpers.js";

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

const url = (file: string) => `https://replicate.delivery/x/${file}`;

test("a signed body that is not a usable prediction is 400 naming the problem, stores nothing, keeps its webhook-id", async () => {
  const bad: [unknown, RegExp][] = [
    ["not json at all", /not JSON/],
    ["[1, 2]", /JSON object/],
    [{ status: "processing" }, /'id'/],
    [{ ...event, id: "../p1" }, /'id' must be a prediction id/],
    [{ ...event, status: "exploded" }, /'status' must be one of/],
    ...["toString", "constructor", "__proto__", "valueOf", "hasOwnProperty"].map(
      (status): [unknown, RegExp] => [{ id: "p1", status, output: [url("guitar.wav")] }, /'status' must be one of/],
    ),
    [{ ...event, output: { vocals: url("vocals.wav") } }, /'output' must be a list/],
    [{ ...event, output: [url("vocals.wav"), 7] }, /'output' must be a list of file URLs, got 7/],
    [{ ...event, output: ["data:audio/wav;base64,AAAA"] }, /'output'.*http\(s\)/],
    [{ ...event, output: ["https://h/a/bass.wav", "https://h/b/bass.wav"] }, /two files for stem "bass"/],
    [{ ...event, output: [url("..%2F..%2Fetc%2Fpasswd.wav")] }, /"..\/..\/etc\/passwd.wav" does not name a stem/],
    [{ ...event, output: [url("Vocals.wav")] }, /"Vocals.wav" does not name a stem/],
    [{ ...event, output: [url("%ZZ.wav")] }, /percent-encoding/],
    [{ ...event, output: [url("stems.json"), url("stems.json")] }, /stems.json twice/],
    [{ ...event, metrics: { stems: [] } }, /'metrics.stems' must be an object/],
    [{ ...event, metrics: [] }, /'metrics' must be an object/],
    [
      { id: "p4", status: "processing", output: [url("present.wav")], metrics: JSON.parse('{"stems":{"__proto__":{"present":true}}}') },
      /'metrics.stems' has a key that is not a stem name: "__proto__"/,
    ],
    [{ ...event, metrics: { stems: { vocals: { present: "false" } } } }, /'metrics.stems.vocals.present' must be true or false, got "false"/],
    [{ ...event, metrics: { stems: { vocals: { present: null } } } }, /'metrics.stems.vocals.present' must be true or false/],
    [{ ...event, metrics: { stems: { vocals: { peak_dbfs: "-3" } } } }, /'metrics.stems.vocals.peak_dbfs' must be a number/],
    [{ ...event, metrics: { stems: { vocals: { active_fraction: 1.5 } } } }, /active_fraction' must be from 0 to 1/],
    [{ ...event, metrics: { stems: { vocals: { terms: "research only!" } } } }, /'metrics.stems.vocals.terms' must be a short label/],
    [{ ...event, metrics: { stems: { vocals: 3 } } }, /'metrics.stems.vocals' must be an object/],
    [{ ...event, input: { audio: "https://x/a.mp3", extra_stems: ["guitar"] } }, /'input.extra_stems' must be a string/],
    [{ ...event, input: { stems: 6 } }, /'input.stems' must be a string/],
    [{ ...event, input: "guitar" }, /'input' must be an object/],
    [{ ...event, created_at: "yesterday" }, /'created_at' must be an ISO 8601 time/],
    [{ ...event, error: { message: "boom" } }, /'error' must be a string or null/],
  ];
  for (const [payload, message] of bad) {
    const text = typeof payload === "string" ? payload : JSON.stringify(payload);
    const reply = await probe.deliver(text, "msg-1");
    assert.equal(reply.status, 400, text);
    assert.match(String(reply.json.error), message, text);
  }
  assert.deepEqual(await counts(probe), nothingStored);
  assert.deepEqual(probe.reports, [], "nothing queued, nothing written");
  assert.equal((await probe.deliver(event, "msg-1")).json.outcome, "applied");
});

test("stems named like Object.prototype members are ordinary stems; other files are not stems", async () => {
  const payload = {
    id: "p5",
    status: "processing",
    output: [url("constructor.wav"), url("valueof.wav"), url("stems.json"), url("notes.txt")],
    metrics: { stems: { constructor: { present: true }, present: { present: false }, hasownproperty: { present: true } } },
  };
  const reply = await probe.deliver(payload, "msg-5");
  assert.deepEqual(reply, { status: 200, json: { prediction: "p5", outcome: "applied", new_stems: ["constructor", "valueof"] } });
  const rows = await copiesSettled(probe, "p5");
  assert.deepEqual(rows.map((row) => [row.name, row.present, row.copy_state]), [
    ["constructor", 1, "copied"],
    ["valueof", null, "copied"],
  ]);
  assert.deepEqual(await probe.rows("SELECT figures_url FROM predictions"), [{ figures_url: url("stems.json") }]);
});

test("a seen webhook-id with another body is 409 and applies nothing; with the same body it is a duplicate", async () => {
  assert.equal((await probe.deliver(event, "msg-1")).status, 200);
  await copiesSettled(probe, "guitar");
  const before = await snapshot(probe);
  const other = { ...recording.predictions.guitar[6]!, output: [...(recording.predictions.guitar[6]!.output as string[])] };
  const conflict = await probe.deliver(other, "msg-1");
  assert.equal(conflict.status, 409);
  assert.match(String(conflict.json.error), /webhook-id msg-1 was delivered before with another body/);
  assert.equal(await snapshot(probe), before, "D1 unchanged");
  const same = await probe.deliver(event, "msg-1");
  assert.deepEqual(same.json, { prediction: "guitar", outcome: "duplicate", new_stems: [] });
  assert.equal((await probe.deliver(other, "msg-2")).json.outcome, "applied");
});

test("D1 failing is a 500 (Replicate retries), and the retry applies once D1 is back", async () => {
  await probe.db.exec("ALTER TABLE webhook_deliveries RENAME TO webhook_deliveries_away;");
  const failed = await probe.post(body, signedHeaders(body, "msg-1"));
  assert.equal(failed.status, 500);
  await probe.db.exec("ALTER TABLE webhook_deliveries_away RENAME TO webhook_deliveries;");
  assert.deepEqual(await counts(probe), nothingStored);
  const retried = await probe.post(body, signedHeaders(body, "msg-1"));
  assert.deepEqual(retried.json, { prediction: "guitar", outcome: "applied", new_stems: ["vocals", "instrumental"] });
  assert.deepEqual((await copiesSettled(probe, "guitar")).map((row) => row.copy_state), ["copied", "copied"]);
});

test("a queue send failing is a 500, and Replicate's retry of the same delivery queues what was missed", async () => {
  probe.faults.add("queue-send");
  const failed = await probe.deliver(event, "msg-1");
  assert.equal(failed.status, 500);
  assert.deepEqual((await probe.rows("SELECT name, copy_state FROM stems ORDER BY name")), [
    { name: "instrumental", copy_state: "pending" },
    { name: "vocals", copy_state: "pending" },
  ]);
  probe.faults.delete("queue-send");
  const retried = await probe.deliver(event, "msg-1");
  assert.deepEqual(retried, { status: 200, json: { prediction: "guitar", outcome: "duplicate", new_stems: [] } });
  assert.deepEqual((await copiesSettled(probe, "guitar")).map((row) => row.copy_state), ["copied", "copied"]);
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

test("the webhook is answered at once; the copy runs afterwards from the queue", async () => {
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  const [vocals] = event.output as string[];
  probe.files.set(vocals!, async () => {
    await released; // the file host is slow
    return served(new Uint8Array([1, 2, 3]));
  });
  const reply = await probe.deliver(event, "m");
  assert.deepEqual(reply, { status: 200, json: { prediction: "guitar", outcome: "applied", new_stems: ["vocals", "instrumental"] } });
  const vocalsRow = async () => (await probe.rows<{ copy_state: string }>("SELECT copy_state FROM stems WHERE name = 'vocals'"))[0];
  assert.equal((await vocalsRow())?.copy_state, "queued", "answered before the copy finished");
  release();
  const rows = await copiesSettled(probe, "guitar");
  assert.deepEqual(rows.find((row) => row.name === "vocals")?.size_bytes, 3);
});
