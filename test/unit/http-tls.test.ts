import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { httpTlsFromFlags, readCaFile, readHttpTls } from '../../src/cluster/http-tls.js';
import { selfSignedCert } from '../helpers/certs.js';
import { requireTools, tempDir } from '../helpers/tools.js';

const invalid = (pattern: RegExp) => (err: Error & { code?: string }) => err.code === 'INVALID_ARGUMENT' && pattern.test(err.message);

test('a certificate and its key are read; a key of another certificate, or no PEM, is refused', (t) => {
  if (!requireTools(t, 'openssl')) return;
  const dir = tempDir(t);
  const a = selfSignedCert(dir, 'a');
  const b = selfSignedCert(dir, 'b');
  assert.ok(readHttpTls(a.cert, a.key).cert.includes('BEGIN CERTIFICATE'));
  assert.throws(() => readHttpTls(a.cert, b.key), invalid(/are not a PEM certificate and its private key/));
  const junk = join(dir, 'junk.pem');
  writeFileSync(junk, 'not a certificate\n');
  assert.throws(() => readHttpTls(junk, a.key), invalid(/not a PEM certificate/));
  assert.throws(() => readHttpTls(join(dir, 'missing.crt'), a.key), invalid(/cannot read the HTTPS certificate/));
  assert.ok(readCaFile(a.cert).length > 0);
  assert.throws(() => readCaFile(junk), invalid(/holds no PEM certificate|not a PEM certificate/));
  assert.throws(() => httpTlsFromFlags(a.cert, undefined), invalid(/go together/));
  assert.equal(httpTlsFromFlags(undefined, undefined), undefined);
});
