import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { encodeInfoRequest, encodeMetaContextRequest } from '../../src/nbd/option-codec.js';
import * as P from '../../src/nbd/protocol.js';
import type { TinyClient } from './nbd-client-helper.js';
import { structuredClient } from './nbd-test-backend.js';

/**
 * NBD_OPT_SET_META_CONTEXT "replaces all previously-set metadata contexts (including when this
 * command fails)": after a SET that selected base:allocation, a SET that fails leaves nothing
 * selected, so the export entered with GO refuses BLOCK_STATUS.
 */

async function goAfterGoodThenFailedSet(t: TestContext, failing: Buffer): Promise<{ failedReply: number; client: TinyClient }> {
  const { client: c } = await structuredClient(t);
  const good = await c.option(P.NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest('disk', ['base:allocation']));
  assert.deepEqual(good.map((r) => r.replyType), [P.NBD_REP_META_CONTEXT, P.NBD_REP_ACK]);
  const failed = await c.option(P.NBD_OPT_SET_META_CONTEXT, failing);
  assert.equal(failed.length, 1);
  const go = await c.option(P.NBD_OPT_GO, encodeInfoRequest('disk', []));
  assert.equal(go.at(-1)!.replyType, P.NBD_REP_ACK);
  return { failedReply: failed[0].replyType, client: c };
}

test('a SET_META_CONTEXT naming an unknown export clears the earlier selection', async (t) => {
  const { failedReply, client } = await goAfterGoodThenFailedSet(t, encodeMetaContextRequest('nope', ['base:allocation']));
  assert.equal(failedReply, P.NBD_REP_ERR_UNKNOWN);
  assert.equal((await client.request(P.NBD_CMD_BLOCK_STATUS, 0, 4096)).error, P.NBD_EINVAL);
});

test('a malformed SET_META_CONTEXT clears the earlier selection', async (t) => {
  // The query count says one query, but the data ends before it.
  const truncated = encodeMetaContextRequest('disk', ['base:allocation']).subarray(0, 4 + 4 + 4 + 2);
  const { failedReply, client } = await goAfterGoodThenFailedSet(t, truncated);
  assert.equal(failedReply, P.NBD_REP_ERR_INVALID);
  assert.equal((await client.request(P.NBD_CMD_BLOCK_STATUS, 0, 4096)).error, P.NBD_EINVAL);
});

test('a SET_META_CONTEXT refused as too big clears the earlier selection', async (t) => {
  const huge = encodeMetaContextRequest('disk', ['base:allocation', `x-pad:${'p'.repeat(P.maxOptionBytes)}`]);
  const { failedReply, client } = await goAfterGoodThenFailedSet(t, huge);
  assert.equal(failedReply, P.NBD_REP_ERR_TOO_BIG);
  assert.equal((await client.request(P.NBD_CMD_BLOCK_STATUS, 0, 4096)).error, P.NBD_EINVAL);
});

test('a good SET_META_CONTEXT after a failed one selects again', async (t) => {
  const { client: c } = await structuredClient(t);
  assert.equal((await c.option(P.NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest('nope', ['base:allocation'])))[0].replyType, P.NBD_REP_ERR_UNKNOWN);
  await c.option(P.NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest('disk', ['base:allocation']));
  await c.option(P.NBD_OPT_GO, encodeInfoRequest('disk', []));
  const r = await c.request(P.NBD_CMD_BLOCK_STATUS, 0, 4096);
  assert.equal(r.error, 0);
  assert.deepEqual(r.descriptors, [{ length: 4096, flags: 0 }]);
});
