/**
 * Run a compiled Worker entry in workerd (Miniflare) with the bindings `wrangler.toml` declares: a local D1
 * with the migrations applied, a local R2 bucket, and the queues with their consumers and dead-letter queues.
 */
import { readFileSync, readdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { Miniflare, type Request as MiniflareRequest, Response as MiniflareResponse } from "miniflare";
import { parse } from "smol-toml";

/** The package root (examples/worker): this file runs as dist/scripts/miniflare.js. */
export const PACKAGE_ROOT = resolve(fileURLToPath(import.meta.url), "../../..");

export type Outbound = (request: MiniflareRequest) => Promise<MiniflareResponse> | MiniflareResponse;

/** A queue consumer's settings, in Miniflare's names. */
export interface ConsumerSettings {
  maxBatchSize?: number;
  maxBatchTimeout?: number;
  maxRetries?: number;
  deadLetterQueue?: string;
  retryDelay?: number;
}

/** The parts of wrangler.toml the Worker needs. */
export interface WranglerConfig {
  compatibilityDate: string;
  vars: Record<string, string>;
  d1: Record<string, string>;
  r2: Record<string, string>;
  /** binding → queue name */
  producers: Record<string, string>;
  /** queue name → settings */
  consumers: Record<string, ConsumerSettings>;
}

export function readWranglerConfig(path = join(PACKAGE_ROOT, "wrangler.toml")): WranglerConfig {
  const toml = parse(readFileSync(path, "utf8")) as Record<string, any>;
  const queues = toml.queues ?? {};
  return {
    compatibilityDate: String(toml.compatibility_date),
    vars: Object.fromEntries(Object.entries(toml.vars ?? {}).map(([name, value]) => [name, String(value)])),
    d1: Object.fromEntries((toml.d1_databases ?? []).map((db: any) => [db.binding, db.database_name])),
    r2: Object.fromEntries((toml.r2_buckets ?? []).map((bucket: any) => [bucket.binding, bucket.bucket_name])),
    producers: Object.fromEntries((queues.producers ?? []).map((producer: any) => [producer.binding, producer.queue])),
    consumers: Object.fromEntries(
      (queues.consumers ?? []).map((consumer: any) => [
        consumer.queue,
        dropUndefined({
          maxBatchSize: consumer.max_batch_size,
          maxBatchTimeout: consumer.max_batch_timeout,
          maxRetries: consumer.max_retries,
          deadLetterQueue: consumer.dead_letter_queue,
          retryDelay: consumer.retry_delay,
        }),
      ]),
    ),
  };
}

export interface WorkerOptions {
  /** Compiled entry, relative to the package root. */
  entry?: string;
  /** Added to (and replacing) wrangler.toml's vars. */
  bindings?: Record<string, string>;
  /** Handles every fetch the Worker makes (the default refuses with 502). */
  outbound?: Outbound;
  /** Serve HTTP on 127.0.0.1:port (0: any free port); without it, only `dispatchFetch`. */
  port?: number;
  /** Merged into every consumer's settings (e.g. `{ maxBatchTimeout: 0 }`); false: no consumers at all. */
  consumers?: ConsumerSettings | false;
}

export interface RunningWorker {
  mf: Miniflare;
  db: D1Like;
  url: URL;
  dispose(): Promise<void>;
}

/** The D1 methods the tests use. */
export interface D1Like {
  prepare(query: string): { bind(...values: unknown[]): D1Stmt; all<T>(): Promise<{ results: T[] }> };
  exec(sql: string): Promise<unknown>;
}
interface D1Stmt {
  all<T>(): Promise<{ results: T[] }>;
  run(): Promise<unknown>;
}

export async function startWorker(options: WorkerOptions = {}): Promise<RunningWorker> {
  const config = readWranglerConfig();
  const entry = join(PACKAGE_ROOT, "dist", options.entry ?? "src/index.js");
  const consumers =
    options.consumers === false
      ? {}
      : Object.fromEntries(
          Object.entries(config.consumers).map(([queue, settings]) => [queue, { ...settings, ...options.consumers }]),
        );
  const mf = new Miniflare({
    modules: true,
    scriptPath: entry,
    modulesRoot: join(PACKAGE_ROOT, "dist"),
    modulesRules: [{ type: "ESModule", include: ["**/*.js"] }],
    compatibilityDate: config.compatibilityDate,
    d1Databases: config.d1,
    r2Buckets: config.r2,
    queueProducers: config.producers,
    queueConsumers: consumers,
    bindings: { ...config.vars, ...options.bindings },
    outboundService: options.outbound ?? (() => new MiniflareResponse("no network in tests", { status: 502 })),
    ...(options.port === undefined ? {} : { host: "127.0.0.1", port: options.port }),
  });
  const url = await mf.ready;
  const db = (await mf.getD1Database("DB")) as unknown as D1Like;
  for (const file of readdirSync(join(PACKAGE_ROOT, "migrations")).sort()) {
    await db.exec(migrationStatements(readFileSync(join(PACKAGE_ROOT, "migrations", file), "utf8")));
  }
  return { mf, db, url, dispose: () => mf.dispose() };
}

/** A migration as D1's `exec` takes it: one statement per line, comments dropped. */
function migrationStatements(sql: string): string {
  const code = sql
    .split("\n")
    .filter((line) => !line.trim().startsWith("--"))
    .join(" ");
  return code
    .split(";")
    .map((statement) => statement.replace(/\s+/g, " ").trim())
    .filter(Boolean)
    .map((statement) => `${statement};`)
    .join("\n");
}

function dropUndefined<T extends object>(object: T): T {
  return Object.fromEntries(Object.entries(object).filter(([, value]) => value !== undefined)) as T;
}
