/**
 * The example Worker for the tests, never deployed. It runs src/index.ts unchanged, with two additions:
 *
 * - each R2 write and queue send is first reported to PROBE_URL (the test's recorder), with what kind of body
 *   an R2 write got; a report answered 503 makes that operation fail, so a test can take R2 or a queue down;
 * - test-only routes under /probe/ read what the Worker stored: `GET /probe/r2` lists the R2 objects,
 *   `GET /probe/r2/<key>` returns one, `GET /probe/stems?prediction=<id>` returns the prediction's stem rows,
 *   `GET /probe/d1` every row of the three tables.
 */
import worker, { type FretWiseEnv } from "../../src/index.js";

interface ProbeEnv extends FretWiseEnv {
  PROBE_URL?: string;
}

async function report(env: ProbeEnv, what: string, detail: Record<string, unknown>): Promise<void> {
  if (!env.PROBE_URL) return;
  const response = await fetch(new URL(what, env.PROBE_URL), { method: "POST", body: JSON.stringify(detail) });
  await response.body?.cancel();
  if (response.status === 503) throw new Error(`${what} failed (made to fail by the test)`);
}

function bodyKind(value: unknown): string {
  if (value instanceof ReadableStream) return "stream";
  if (value === null) return "null";
  if (typeof value === "string") return "string";
  if (value instanceof ArrayBuffer || ArrayBuffer.isView(value)) return "bytes";
  if (value instanceof Blob) return "blob";
  return typeof value;
}

/** `target` with `wrap` deciding each property; everything else bound to the target. */
function watched<T extends object>(target: T, wrap: (property: string | symbol) => unknown): T {
  return new Proxy(target, {
    get(object, property) {
      const wrapped = wrap(property);
      if (wrapped !== undefined) return wrapped;
      const value = Reflect.get(object, property);
      return typeof value === "function" ? value.bind(object) : value;
    },
  });
}

function watchedUpload(upload: R2MultipartUpload, env: ProbeEnv): R2MultipartUpload {
  return watched(upload, (property) =>
    property === "uploadPart"
      ? async (part: number, value: ArrayBuffer | ArrayBufferView) => {
          await report(env, "r2-part", { key: upload.key, part, bytes: value.byteLength, body: bodyKind(value) });
          return upload.uploadPart(part, value);
        }
      : undefined,
  );
}

function watchedBucket(bucket: R2Bucket, env: ProbeEnv): R2Bucket {
  return watched(bucket, (property) => {
    if (property === "put") {
      return async (key: string, value: ReadableStream | ArrayBuffer | string | null, options?: R2PutOptions) => {
        await report(env, "r2-put", { key, body: bodyKind(value) });
        return bucket.put(key, value, options);
      };
    }
    if (property === "createMultipartUpload") {
      return async (key: string, options?: R2MultipartOptions) => {
        await report(env, "r2-multipart", { key });
        return watchedUpload(await bucket.createMultipartUpload(key, options), env);
      };
    }
    return undefined;
  });
}

function watchedQueue<Body>(queue: Queue<Body>, binding: string, env: ProbeEnv): Queue<Body> {
  return watched(queue, (property) => {
    if (property === "send") {
      return async (body: Body, options?: QueueSendOptions) => {
        await report(env, "queue-send", { binding, count: 1 });
        return queue.send(body, options);
      };
    }
    if (property === "sendBatch") {
      return async (messages: Iterable<MessageSendRequest<Body>>, options?: QueueSendBatchOptions) => {
        const list = [...messages];
        await report(env, "queue-send", { binding, count: list.length });
        return queue.sendBatch(list, options);
      };
    }
    return undefined;
  });
}

function watchedEnv(env: ProbeEnv): ProbeEnv {
  return {
    ...env,
    STEMS: watchedBucket(env.STEMS, env),
    COPY_QUEUE: watchedQueue(env.COPY_QUEUE, "COPY_QUEUE", env),
    HANDOFF_QUEUE: watchedQueue(env.HANDOFF_QUEUE, "HANDOFF_QUEUE", env),
  };
}

async function probeRoute(url: URL, env: ProbeEnv): Promise<Response> {
  if (url.pathname === "/probe/r2") {
    // include: the types of workers-types' oldest entry point lack it; the runtime takes it
    const listed = await env.STEMS.list({ include: ["httpMetadata"] } as R2ListOptions);
    return Response.json(
      listed.objects.map((object) => ({ key: object.key, size: object.size, content_type: object.httpMetadata?.contentType })),
    );
  }
  if (url.pathname.startsWith("/probe/r2/")) {
    const object = await env.STEMS.get(decodeURIComponent(url.pathname.slice("/probe/r2/".length)));
    return object ? new Response(object.body, { headers: { "content-length": String(object.size) } }) : new Response(null, { status: 404 });
  }
  if (url.pathname === "/probe/stems") {
    const { results } = await env.DB.prepare("SELECT * FROM stems WHERE prediction_id = ?1 ORDER BY name")
      .bind(url.searchParams.get("prediction"))
      .all();
    return Response.json(results);
  }
  if (url.pathname === "/probe/d1") {
    const tables = ["predictions", "stems", "webhook_deliveries"];
    const results = await env.DB.batch(tables.map((table) => env.DB.prepare(`SELECT * FROM ${table} ORDER BY rowid`)));
    return Response.json(Object.fromEntries(tables.map((table, index) => [table, results[index]?.results])));
  }
  return new Response("no such probe route", { status: 404 });
}

export default {
  async fetch(request, env, ctx) {
    const url = new URL(request.url);
    if (request.method === "GET" && url.pathname.startsWith("/probe/")) return probeRoute(url, env);
    return worker.fetch!(request, watchedEnv(env), ctx);
  },
  async queue(batch, env, ctx) {
    return worker.queue!(batch, watchedEnv(env), ctx);
  },
} satisfies ExportedHandler<ProbeEnv, never>;
