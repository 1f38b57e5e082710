import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { encodeInfoRequest, encodeMetaContextRequest } from '../../src/nbd/option-codec.js';
import * as P from '../../src/nbd/protocol.js';
import type { TinyClient } from './nbd-client-helper.js';
import { structuredClient } from './nbd-test-backend.js';

/**
 * The spec's `base:` namespace: the bare form `base:` is a wildcard for
 * NBD_OPT_LIST_META_CONTEXT only; during NBD_OPT_SET_META_CONTEXT the server MUST ignore it.
 * A client that selected nothing else then has no context, so BLOCK_STATUS is refused.
 */

async function negotiate(t: TestContext, queries: string[]): Promise<{ setReplies: number[]; client: TinyClient }> {
  const { client: c, structuredReplies } = await structuredClient(t);
  assert.equal(structuredReplies[0].replyType, P.NBD_REP_ACK);
  const set = await c.option(P.NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest('disk', queries));
  const go = await c.option(P.NBD_OPT_GO, encodeInfoRequest('disk', []));
  assert.equal(go.at(-1)!.replyType, P.NBD_REP_ACK);
  return { setReplies: set.map((r) => r.replyType), client: c };
}

test('SET_META_CONTEXT with only the bare base: query selects no context, and BLOCK_STATUS is then refused', async (t) => {
  const { setReplies, client } = await negotiate(t, ['base:']);
  assert.deepEqual(setReplies, [P.NBD_REP_ACK], 'no NBD_REP_META_CONTEXT for base:');
  const r = await client.request(P.NBD_CMD_BLOCK_STATUS, 0, 4096);
  assert.equal(r.error, P.NBD_EINVAL);
});

test('SET_META_CONTEXT with base: and base:allocation selects base:allocation once', async (t) => {
  const { setReplies, client } = await negotiate(t, ['base:', 'base:allocation']);
  assert.deepEqual(setReplies, [P.NBD_REP_META_CONTEXT, P.NBD_REP_ACK]);
  const r = await client.request(P.NBD_CMD_BLOCK_STATUS, 0, 4096);
  assert.equal(r.error, 0);
  assert.deepEqual(r.descriptors, [{ length: 4096, flags: 0 }]);
});

test('LIST_META_CONTEXT still takes base: as a wildcard for base:allocation', async (t) => {
  const { client: c } = await structuredClient(t);
  const list = await c.option(P.NBD_OPT_LIST_META_CONTEXT, encodeMetaContextRequest('disk', ['base:']));
  assert.deepEqual(list.map((r) => r.replyType), [P.NBD_REP_META_CONTEXT, P.NBD_REP_ACK]);
  assert.equal(list[0].payload.subarray(4).toString(), P.NBD_META_CONTEXT_BASE_ALLOCATION);
});
