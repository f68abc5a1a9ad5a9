/**
 * TSDoc examples use only the real API: every `@example` block in lib/ is scanned, and each
 * member it touches on a kvsift export (snapkv.scores, Tensor.from, ...) must exist; every other
 * member access must be a real property or method of kvsift's objects (tensors, caches, streams,
 * results) or of the typed arrays they return. This caught `snapkv.scores(q.slice, ...)`.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import * as kvsift from '../lib/index';

const libDir = path.join(__dirname, '..', 'lib');

function examples(): { file: string; code: string }[] {
  const out: { file: string; code: string }[] = [];
  for (const file of fs.readdirSync(libDir).filter((f) => f.endsWith('.ts'))) {
    const text = fs.readFileSync(path.join(libDir, file), 'utf8');
    for (const m of text.matchAll(/@example\s*\n\s*\*\s*```ts\n([\s\S]*?)\n\s*\*\s*```/g)) {
      out.push({ file, code: m[1].replace(/^\s*\* ?/gm, '') });
    }
  }
  return out;
}

/** Property names of the objects (and their prototypes), split into methods and plain properties. */
function membersOf(...objects: object[]): { methods: Set<string>; props: Set<string> } {
  const methods = new Set<string>();
  const props = new Set<string>();
  for (let o of objects) {
    while (o && o !== Object.prototype) {
      for (const n of Object.getOwnPropertyNames(o)) {
        const d = Object.getOwnPropertyDescriptor(o, n)!;
        if (d.get === undefined && typeof d.value === 'function') methods.add(n);
        else props.add(n);
      }
      o = Object.getPrototypeOf(o);
    }
  }
  return { methods, props };
}

describe('TSDoc examples', () => {
  const all = examples();
  it('exist for the public functions', () => {
    expect(all.length).toBeGreaterThan(40);
  });

  it('touch only members that exist', () => {
    const exportsByName = kvsift as unknown as Record<string, object>;
    const t = kvsift.Tensor.zeros([1], 'f32', 'cpu');
    const cache = new kvsift.KvCache({ batch: 1, kvHeads: 1, headDim: 1, capacity: 1, dtype: 'f32', device: 'cpu' });
    const stream = kvsift.Stream.default('cpu');
    const objectMembers = membersOf(t, cache, stream, new Float32Array(1), new Int32Array(1), kvsift.memoryStats('cpu'), kvsift.transferStats('cpu'), kvsift.buildInfo, Promise.resolve(), kvsift.devices()[0], new kvsift.KvsiftError('x', 'ERR_INVALID_ARG'));
    for (const n of ['keys', 'values', 'positions']) objectMembers.props.add(n); // Compacted results
    // RaggedKvCache (made from a selection, so read off its prototype) and Quest's metadata object
    const ragged = membersOf(kvsift.RaggedKvCache.prototype);
    for (const n of ragged.methods) objectMembers.methods.add(n);
    for (const n of ragged.props) objectMembers.props.add(n);
    for (const n of ['min', 'max', 'blockSize']) objectMembers.props.add(n);
    // JS globals the examples use
    for (const n of ['of', 'from', 'ceil', 'floor', 'min', 'max']) objectMembers.methods.add(n);
    for (const n of ['log', 'error', 'assert']) objectMembers.methods.add(n); // console
    t.dispose();
    cache.dispose();
    const bad: string[] = [];
    for (const { file, code } of all) {
      const stripped = code.replace(/\/\/.*$/gm, '').replace(/'[^']*'|`[^`]*`/g, "''");
      for (const m of stripped.matchAll(/\b([A-Za-z_$][\w$]*)\.([A-Za-z_$][\w$]*)(\s*\()?/g)) {
        const [, owner, member, call] = m;
        const exported = exportsByName[owner];
        if (exported !== undefined && (typeof exported === 'object' || typeof exported === 'function')) {
          if (!(member in exported)) bad.push(`${file}: ${owner}.${member}`);
        } else if (!(call ? objectMembers.methods : objectMembers.props).has(member)) {
          bad.push(`${file}: ${owner}.${member}`);
        }
      }
    }
    expect(bad).toEqual([]);
  });
});
