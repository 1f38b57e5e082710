import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Slab } from '../../src/common/slab.js';

test('slab: pieces never overlap, have the asked length, start 8-byte aligned, and big ones stand alone', () => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 0, max: 5000 }), { maxLength: 120 }), (sizes) => {
      const slab = new Slab(16 * 1024, 4 * 1024);
      const pieces = sizes.map((n) => slab.alloc(n));
      pieces.forEach((p, i) => {
        assert.equal(p.length, sizes[i]);
        if (sizes[i] > 4 * 1024) assert.equal(p.byteOffset === 0 && p.buffer.byteLength, sizes[i], 'a big piece has its own buffer');
        else assert.equal(p.byteOffset % 8, 0);
        p.fill(i % 251);
      });
      // Every piece still holds its own fill: no other piece wrote over it.
      pieces.forEach((p, i) => assert.ok(p.every((b) => b === i % 251), `piece ${i} was overwritten`));
    }),
  );
});
