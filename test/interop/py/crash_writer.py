"""Writes unique tagged 4 KiB blocks and reports which ones are durable.

usage: crash_writer.py URI SEED SLOTS            (write; JSON lines on stdout)
       crash_writer.py URI SEED SLOTS --verify   (reads JSON slot lists on stdin; checks them)

Each slot is written once, in a seeded random order, 32 writes in flight at a time over two
connections, every eighth with FUA. When a batch's replies have all arrived, a "completed"
line lists the whole batch and a "durable" line its FUA writes; after the FLUSH that follows
completes, a "durable" line lists the rest. The FLUSH goes to one connection only, so half of
what it covers was written on the other one: that is the multi-conn promise (a FLUSH covers
writes completed on every connection). A line is printed only after the server's replies
arrived, so every slot in a "durable" line was acknowledged as durable.
"""
import json
import random
import sys

import nbd

BLOCK = 4096
BATCH = 32


def block(seed, slot):
    tag = f"raftblock-crash seed={seed} slot={slot} ".encode()
    body = random.Random(seed * 1_000_003 + slot).randbytes(BLOCK - len(tag))
    return tag + body


def write(uri, seed, slots):
    handles = []
    for _ in range(2):
        h = nbd.NBD()
        h.connect_uri(uri)
        if not h.can_multi_conn():
            print("the export does not advertise multi-conn", file=sys.stderr)
            sys.exit(2)
        handles.append(h)
    order = list(range(slots))
    random.Random(seed).shuffle(order)
    for start in range(0, slots, BATCH):
        batch = order[start:start + BATCH]
        pending = []
        for k, slot in enumerate(batch):
            fua = k % 8 == 0
            h = handles[k % 2]
            cookie = h.aio_pwrite(block(seed, slot), slot * BLOCK, flags=nbd.CMD_FLAG_FUA if fua else 0)
            pending.append((h, cookie, slot, fua))
        for h, cookie, _slot, _fua in pending:
            while not h.aio_command_completed(cookie):
                h.poll(-1)
        print(json.dumps({"completed": [s for _h, _c, s, _f in pending]}), flush=True)
        print(json.dumps({"durable": [s for _h, _c, s, f in pending if f], "how": "fua"}), flush=True)
        handles[(start // BATCH) % 2].flush()
        print(json.dumps({"durable": [s for _h, _c, s, f in pending if not f], "how": "flush"}), flush=True)
    print(json.dumps({"finished": True}), flush=True)


def verify(uri, seed, slots):
    acked = set()
    for line in sys.stdin:
        acked.update(json.loads(line))
    h = nbd.NBD()
    h.connect_uri(uri)
    zero = bytes(BLOCK)
    lost, torn, kept, absent = [], [], 0, 0
    for slot in range(slots):
        got = h.pread(BLOCK, slot * BLOCK)
        want = block(seed, slot)
        if got == want:
            kept += 1
        elif slot in acked:
            lost.append(slot)
        elif got == zero:
            absent += 1
        else:
            torn.append(slot)
    print(json.dumps({"acked": len(acked), "kept": kept, "absent": absent, "lost": lost[:20], "lostCount": len(lost), "torn": torn[:20], "tornCount": len(torn)}))
    sys.exit(1 if lost or torn else 0)


if __name__ == "__main__":
    uri, seed, slots = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if len(sys.argv) > 4 and sys.argv[4] == "--verify":
        verify(uri, seed, slots)
    else:
        write(uri, seed, slots)
