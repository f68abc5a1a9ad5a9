/**
 * Spawning the child processes of the reliability tests (test/fuzz, leaks, faults): a fresh Node
 * that loads lib/ through test/scripts/register-ts.cjs (the project's own TypeScript transpiles
 * each file on require, so no build step and no dist/ that could be stale), optionally with
 * --expose-gc and extra environment. A crash (signal, abort, V8 fatal error) in the child fails
 * only the one test, with the child's output in the message.
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

export const REPO_ROOT = path.resolve(__dirname, '..', '..');
export const SCRIPTS_DIR = __dirname;
const REGISTER_TS = path.join(__dirname, 'register-ts.cjs');

export interface ChildResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** The last stdout line parsed as JSON, when it is JSON. */
  json: unknown;
  ms: number;
}

export interface ChildOptions {
  args?: string[];
  env?: Record<string, string | undefined>;
  exposeGc?: boolean;
  timeoutMs?: number;
  /** Extra node flags, e.g. ['--max-old-space-size=256']. */
  nodeFlags?: string[];
  /** Runs the child under `ulimit -v` (KiB of address space), through /bin/sh. */
  ulimitVirtualKb?: number;
}

/** Runs test/scripts/<script> (a .ts file) in a child Node process and waits for it. */
export function runChild(script: string, options: ChildOptions = {}): ChildResult {
  const started = Date.now();
  const flags = [...(options.exposeGc ? ['--expose-gc'] : []), ...(options.nodeFlags ?? []), '-r', REGISTER_TS];
  const env: Record<string, string | undefined> = { ...process.env, ...options.env };
  // vitest's own loader hooks must not leak into the plain child
  delete env.NODE_OPTIONS;
  const argv = [...flags, path.join(SCRIPTS_DIR, script), ...(options.args ?? [])];
  const [command, commandArgs] =
    options.ulimitVirtualKb === undefined
      ? [process.execPath, argv]
      : ['/bin/sh', ['-c', `ulimit -v ${Math.floor(options.ulimitVirtualKb)} && exec "$0" "$@"`, process.execPath, ...argv]];
  const r = spawnSync(command, commandArgs, {
    cwd: REPO_ROOT,
    env: env as NodeJS.ProcessEnv,
    encoding: 'utf8',
    timeout: options.timeoutMs ?? 60_000,
    maxBuffer: 64 << 20,
  });
  const stdout = r.stdout ?? '';
  const lines = stdout.trim().split('\n');
  let json: unknown;
  try {
    json = JSON.parse(lines[lines.length - 1] ?? '');
  } catch {
    json = undefined;
  }
  return { status: r.status, signal: r.signal, stdout, stderr: r.stderr ?? '', json, ms: Date.now() - started };
}

/** A one-paragraph account of a child run for assertion messages. */
export function describeChild(r: ChildResult): string {
  const tail = (s: string) => s.trim().split('\n').slice(-30).join('\n');
  return `child exited with status ${r.status}, signal ${r.signal} after ${r.ms} ms\n--- stdout (tail)\n${tail(r.stdout)}\n--- stderr (tail)\n${tail(r.stderr)}`;
}
