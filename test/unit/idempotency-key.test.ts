import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { commandIdOfKey, maxIdempotencyKeyChars } from '../../src/cluster/idempotency-key.js';
import { maxRequestSession, requestSeqLimit } from '../../src/common/request-id.js';
import { metaFingerprintLimit } from '../../src/cluster/map.js';

test('a key names one map command id per method and path, always the same, always valid', () => {
  fc.assert(
    fc.property(fc.stringMatching(/^[\x21-\x7e]{1,128}$/), (key) => {
      const id = commandIdOfKey(key, 'DELETE', '/v1/volumes/a');
      assert.deepEqual(commandIdOfKey(key, 'DELETE', '/v1/volumes/a'), id);
      assert.ok(Number.isSafeInteger(id.session) && id.session >= 1 && id.session <= maxRequestSession);
      assert.ok(Number.isSafeInteger(id.seq) && id.seq >= 0 && id.seq < requestSeqLimit);
      assert.notDeepEqual(commandIdOfKey(key, 'DELETE', '/v1/volumes/b'), id);
      assert.notDeepEqual(commandIdOfKey(key, 'POST', '/v1/volumes/a'), id);
    }),
  );
});

test('the id carries a fingerprint of the body: the same for the same bytes, another for another body', () => {
  fc.assert(
    fc.property(fc.string(), fc.string(), (a, b) => {
      const idA = commandIdOfKey('k', 'POST', '/v1/volumes', a);
      assert.deepEqual(commandIdOfKey('k', 'POST', '/v1/volumes', a), idA);
      assert.ok(Number.isSafeInteger(idA.fingerprint) && idA.fingerprint! >= 0 && idA.fingerprint! < metaFingerprintLimit);
      const idB = commandIdOfKey('k', 'POST', '/v1/volumes', b);
      // The body changes the fingerprint only: the key still names the same command.
      assert.deepEqual([idB.session, idB.seq], [idA.session, idA.seq]);
      if (a !== b) assert.notEqual(idB.fingerprint, idA.fingerprint);
    }),
  );
  assert.equal(commandIdOfKey('k', 'DELETE', '/v1/volumes/a').fingerprint, commandIdOfKey('k', 'DELETE', '/v1/volumes/a', '').fingerprint);
});

test('an empty, long, spaced or non-ASCII key is refused', () => {
  for (const bad of ['', 'x'.repeat(maxIdempotencyKeyChars + 1), 'a b', 'clé', 'tab\there']) {
    assert.throws(() => commandIdOfKey(bad, 'POST', '/v1/volumes'), (err: Error & { code?: string }) => err.code === 'INVALID_ARGUMENT');
  }
});
