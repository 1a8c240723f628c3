/**
 * The copy of each stem into R2 through COPY_QUEUE: streamed with its length, in parts without one, retried
 * with backoff within the 45-minute deadline, dead-lettered at the end, and never written twice.
 */
import assert from "node:assert/strict";
import { test } from "node:test";

import { Response as MiniflareResponse } from "miniflare";

import { PART_BYTES, type StemCopyJob } from "../src/jobs.js";
import { copiesSettled, fileBytes, probesOfThisFile, r2Writes, served, stemRow, streamed, waitFor } from "./helpers.js";

const probeWith = probesOfThisFile();

const stemUrl = (id: string, stem: string) => `https://replicate.delivery/pbxt/${id}/${stem}.wav`;

/** A processing event listing `stems` of prediction `id`, in the self-hosted runtime's shape unless `extra` adds more. */
const eventWith = (id: string, stems: string[], extra: Record<string, unknown> = {}) => ({
  id,
  status: "processing",
  output: stems.map((stem) => stemUrl(id, stem)),
  ...extra,
});

const failing = (status: number) => () => new MiniflareResponse("try later", { status });

test("a file host that answers 503 twice, then 200: retried, and the stem written once", async () => {
  const probe = await probeWith();
  const url = stemUrl("p1", "guitar");
  probe.files.set(url, (tries) => (tries <= 2 ? failing(503)() : served(fileBytes(url))));
  assert.equal((await probe.deliver(eventWith("p1", ["guitar"]), "m1")).status, 200);
  const [row] = await copiesSettled(probe, "p1");
  assert.deepEqual([row?.copy_state, row?.copy_attempts, row?.copy_error], ["copied", 3, null]);
  assert.equal(probe.fileRequests.get(url), 3);
  assert.deepEqual(await probe.object("stems/p1/guitar.wav"), fileBytes(url));
  assert.equal(r2Writes(probe).length, 1);
});

test("retries wait RETRY_BASE_SECONDS, then twice that", async () => {
  const probe = await probeWith({ RETRY_BASE_SECONDS: "1" });
  const url = stemUrl("p1", "guitar");
  const times: number[] = [];
  probe.files.set(url, (tries) => {
    times.push(Date.now());
    return tries <= 2 ? failing(502)() : served(fileBytes(url));
  });
  await probe.deliver(eventWith("p1", ["guitar"]), "m1");
  await waitFor("the copy", async () => (await stemRow(probe, "p1", "guitar"))?.copy_state === "copied");
  const gaps = times.slice(1).map((time, index) => time - times[index]!);
  assert.equal(gaps.length, 2);
  assert.ok(gaps[0]! >= 1000 && gaps[0]! < 4000, `first retry after ${gaps[0]} ms`);
  assert.ok(gaps[1]! >= 2000 && gaps[1]! < 5000, `second retry after ${gaps[1]} ms`);
});

test("a file host that always fails: the last retry goes to the dead-letter queue and the row says copy_failed, why", async () => {
  const probe = await probeWith();
  const url = stemUrl("p2", "guitar");
  probe.files.set(url, failing(503));
  await probe.deliver(eventWith("p2", ["guitar"]), "m1");
  const [row] = await copiesSettled(probe, "p2");
  assert.equal(row?.copy_state, "copy_failed");
  assert.equal(row?.copy_error, "replicate.delivery answered 503 for guitar (gave up after 7 tries)");
  assert.equal(probe.fileRequests.get(url), 7, "the first try and max_retries = 6 retries");
  assert.equal(await probe.object("stems/p2/guitar.wav"), null);
  assert.deepEqual(r2Writes(probe), []);
});

test("a body shorter than its Content-Length fails that try, and no short object is kept", async () => {
  const probe = await probeWith();
  const url = stemUrl("p3", "bass");
  const bytes = fileBytes(url);
  probe.files.set(url, (tries) =>
    tries === 1
      ? new MiniflareResponse(bytes.slice(0, 1000), { headers: { "content-length": String(bytes.length) } })
      : served(bytes),
  );
  await probe.deliver(eventWith("p3", ["bass"]), "m1");
  const [row] = await copiesSettled(probe, "p3");
  assert.deepEqual([row?.copy_state, row?.copy_attempts, row?.size_bytes], ["copied", 2, bytes.length]);
  assert.deepEqual(await probe.object("stems/p3/bass.wav"), bytes);
});

test("a redelivered copy message finds the stem in R2 and writes nothing", async () => {
  const probe = await probeWith();
  await probe.deliver(eventWith("p4", ["guitar", "bass"]), "m1");
  await copiesSettled(probe, "p4");
  assert.equal(r2Writes(probe).length, 2);
  const job: StemCopyJob = {
    kind: "stem",
    prediction_id: "p4",
    stem: "guitar",
    url: stemUrl("p4", "guitar"),
    r2_key: "stems/p4/guitar.wav",
    content_type: "audio/wav",
    event_at_ms: Date.now(),
  };
  // D1 says copied: the message is acknowledged without a fetch (a later marker shows it was handled)
  await probe.sendCopy(job);
  await probe.deliver(eventWith("p4", ["piano"]), "m2");
  await waitFor("the marker copy", async () => (await stemRow(probe, "p4", "piano"))?.copy_state === "copied");
  assert.equal(probe.fileRequests.get(job.url), 1);
  // D1 lost the outcome (say the Worker stopped after the put): the object of the same size is kept as it is
  await probe.db.prepare("UPDATE stems SET copy_state = 'queued' WHERE name = 'guitar'").bind().run();
  await probe.sendCopy(job);
  await waitFor("the redelivered copy", async () => (await stemRow(probe, "p4", "guitar"))?.copy_state === "copied");
  assert.equal(probe.fileRequests.get(job.url), 2, "fetched once more, for its length");
  assert.deepEqual(r2Writes(probe, job.r2_key).length, 1, "no second put");
  assert.deepEqual(await probe.object(job.r2_key), fileBytes(job.url));
});

/** A stream of `bytes` that holds its second half back until `release` resolves (or 5 s pass: `held` says so). */
function heldBack(bytes: Uint8Array, release: () => Promise<unknown>, contentLength: boolean) {
  const state = { held: false };
  const half = Math.floor(bytes.length / 2);
  const chunkBytes = 64 * 1024;
  let offset = 0;
  const stream = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (offset >= bytes.length) return controller.close();
      if (offset >= half && offset < half + chunkBytes) {
        const released = await Promise.race([release().then(() => true), new Promise((r) => setTimeout(() => r(false), 5000))]);
        if (!released) {
          state.held = true;
          return controller.error(new Error("the Worker never started writing"));
        }
      }
      controller.enqueue(bytes.slice(offset, offset + chunkBytes));
      offset += chunkBytes;
    },
  });
  const response = new MiniflareResponse(stream as never, {
    headers: contentLength ? { "content-length": String(bytes.length) } : {},
  });
  return { response, state };
}

const randomBytes = (size: number) => {
  const bytes = new Uint8Array(size);
  for (let offset = 0; offset < size; offset += 65536) crypto.getRandomValues(bytes.subarray(offset, offset + 65536));
  return bytes;
};

test("a stem with a Content-Length is streamed into one put: writing starts before the file has arrived", async () => {
  const probe = await probeWith();
  const url = stemUrl("big", "guitar");
  const bytes = randomBytes(6 * 1024 * 1024 + 12345);
  const putStarted = () => waitFor("the put", async () => r2Writes(probe, "stems/big/guitar.wav").length > 0, 5000);
  const held = heldBack(bytes, putStarted, true);
  probe.files.set(url, () => held.response);
  await probe.deliver(eventWith("big", ["guitar"]), "m1");
  const [row] = await copiesSettled(probe, "big");
  assert.equal(held.state.held, false, "the Worker waited for the whole file before writing it");
  assert.deepEqual([row?.copy_state, row?.copy_attempts, row?.size_bytes], ["copied", 1, bytes.length]);
  assert.deepEqual(r2Writes(probe).map((write) => [write.what, write.body]), [["r2-put", "stream"]]);
  assert.deepEqual(await probe.object("stems/big/guitar.wav"), bytes);
});

test("a stem without a Content-Length goes up in equal parts, one part held at a time", async () => {
  const probe = await probeWith();
  const url = stemUrl("chunked", "guitar");
  const bytes = randomBytes(2 * PART_BYTES + 3 * 1024 * 1024 + 7);
  const firstPart = () => waitFor("the first part", async () => probe.reports.some((report) => report.what === "r2-part"), 5000);
  const held = heldBack(bytes, firstPart, false);
  probe.files.set(url, () => held.response);
  await probe.deliver(eventWith("chunked", ["guitar"]), "m1");
  const [row] = await copiesSettled(probe, "chunked");
  assert.equal(held.state.held, false, "the Worker waited for the whole file before writing it");
  assert.deepEqual([row?.copy_state, row?.size_bytes], ["copied", bytes.length]);
  const parts = probe.reports.filter((report) => report.what === "r2-part");
  assert.deepEqual(parts.map((part) => [part.part, part.bytes]), [
    [1, PART_BYTES],
    [2, PART_BYTES],
    [3, bytes.length - 2 * PART_BYTES],
  ]);
  assert.deepEqual(r2Writes(probe).map((write) => write.what), ["r2-multipart"]);
  assert.deepEqual(await probe.object("stems/chunked/guitar.wav"), bytes);
});

test("a copy is given up when its next try could not end within 45 minutes of the prediction's creation", async () => {
  const probe = await probeWith({ RETRY_BASE_SECONDS: "60" });
  const minutesAgo = (minutes: number) => new Date(Date.now() - minutes * 60_000).toISOString();
  // created 50 minutes ago: no try at all
  const late = stemUrl("late", "guitar");
  await probe.deliver(eventWith("late", ["guitar"], { created_at: minutesAgo(50) }), "m1");
  const [lateRow] = await copiesSettled(probe, "late");
  assert.equal(lateRow?.copy_state, "copy_failed");
  assert.match(lateRow?.copy_error ?? "", /^not tried: less than a minute was left before the deadline, 45 minutes after /);
  assert.equal(probe.fileRequests.get(late), undefined);
  // created 43 minutes ago: one try fails; a retry 60 s later would leave under a minute
  const close = stemUrl("close", "guitar");
  probe.files.set(close, failing(503));
  await probe.deliver(eventWith("close", ["guitar"], { created_at: minutesAgo(43) }), "m2");
  const [closeRow] = await copiesSettled(probe, "close");
  assert.equal(closeRow?.copy_state, "copy_failed");
  assert.match(
    closeRow?.copy_error ?? "",
    /^replicate.delivery answered 503 for guitar; not retried: the next try would not end before the deadline/,
  );
  assert.equal(probe.fileRequests.get(close), 1);
});
