/** Run a compiled Worker entry in workerd (Miniflare) with a local D1 that has the migrations applied. */
import { readFileSync, readdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { Miniflare, type Request as MiniflareRequest, Response as MiniflareResponse } from "miniflare";

/** The package root (examples/worker): this file runs as dist/scripts/miniflare.js. */
export const PACKAGE_ROOT = resolve(fileURLToPath(import.meta.url), "../../..");

export type Outbound = (request: MiniflareRequest) => Promise<MiniflareResponse> | MiniflareResponse;

export interface WorkerOptions {
  /** Compiled entry, relative to the package root. */
  entry?: string;
  bindings?: Record<string, string>;
  /** Handles every fetch the Worker makes (the default refuses with 502). */
  outbound?: Outbound;
  /** Serve HTTP on 127.0.0.1:port (0: any free port); without it, only `dispatchFetch`. */
  port?: number;
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
}
interface D1Stmt {
  all<T>(): Promise<{ results: T[] }>;
}

export async function startWorker(options: WorkerOptions = {}): Promise<RunningWorker> {
  const entry = join(PACKAGE_ROOT, "dist", options.entry ?? "src/index.js");
  const mf = new Miniflare({
    modules: true,
    scriptPath: entry,
    modulesRoot: join(PACKAGE_ROOT, "dist"),
    modulesRules: [{ type: "ESModule", include: ["**/*.js"] }],
    compatibilityDate: "2025-04-01",
    d1Databases: { DB: "fretwise-stems" },
    bindings: options.bindings ?? {},
    outboundService: options.outbound ?? (() => new MiniflareResponse("no network in tests", { status: 502 })),
    ...(options.port === undefined ? {} : { host: "127.0.0.1", port: options.port }),
  });
  const url = await mf.ready;
  const db = (await mf.getD1Database("DB")) as unknown as D1Like & { exec(sql: string): Promise<unknown> };
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
