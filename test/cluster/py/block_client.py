#!/usr/bin/python3
"""Block clients for the cluster tests, over python3-libnbd.

Every operation has a deadline: an NBD command that does not complete in time is abandoned
(the connection is dropped) and reported as unknown, never as done.

  block_client.py ops URI write|read BLOCK_BYTES TIMEOUT_S TAG BLOCK...
      One operation per block, in order, on one connection; prints one JSON line per block:
      {"block": B, "result": "ok"|"error"|"timeout", "value": TAG-or-null (reads), "error": ...}
      After a timeout the connection is gone, so the remaining blocks report "skipped".

  block_client.py jepsen URI PROCESS BLOCK_BYTES TIMEOUT_S DURATION_S SEED BLOCK...
      For DURATION_S, random reads and writes of unique tags to the given blocks; prints the
      history in the `block` format of src/check/README.md (one JSON event a line, times from
      CLOCK_MONOTONIC in ns, shared by every process on the machine). After an unknown outcome
      the client reconnects as a new process id (PROCESS + 1000 * k), as Jepsen does.

A block holds its tag as UTF-8 followed by zero bytes; a block of zeros reads as null.
"""
import json
import random
import sys
import time

import nbd


def encode(tag, block_bytes):
    data = tag.encode() + b"\n"
    assert len(data) < block_bytes
    return data + bytes(block_bytes - len(data))


def decode(data):
    if not any(data):
        return None
    end = data.find(b"\n")
    if end < 0:
        return "<garbage:%s>" % data[:32].hex()
    return data[:end].decode(errors="replace")


class Timeout(Exception):
    pass


class Client:
    def __init__(self, uri, timeout_s):
        self.uri = uri
        self.timeout_s = timeout_s
        self.h = None

    def connect(self):
        self.close()
        h = nbd.NBD()
        h.set_handshake_flags(h.get_handshake_flags())
        deadline = time.monotonic() + self.timeout_s
        h.aio_connect_uri(self.uri)
        while not h.aio_is_ready():
            if h.aio_is_dead() or h.aio_is_closed():
                raise RuntimeError("connection failed")
            left = deadline - time.monotonic()
            if left <= 0:
                h.close()
                raise Timeout("connect")
            h.poll(max(1, int(left * 1000)))
        self.h = h

    def close(self, abrupt=False):
        """abrupt: drop the socket without NBD_CMD_DISC (which waits for commands in flight)."""
        if self.h is not None:
            if not abrupt:
                try:
                    self.h.shutdown()
                except Exception:
                    pass
            try:
                self.h.close()
            except Exception:
                pass
            self.h = None

    def _wait(self, cookie):
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                if self.h.aio_command_completed(cookie):
                    return
            except nbd.Error:
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                self.close(abrupt=True)
                raise Timeout("command")
            self.h.poll(max(1, int(left * 1000)))

    def write(self, offset, data):
        if self.h is None:
            self.connect()
        buf = nbd.Buffer.from_bytearray(bytearray(data))
        self._wait(self.h.aio_pwrite(buf, offset))

    def read(self, offset, length):
        if self.h is None:
            self.connect()
        buf = nbd.Buffer(length)
        self._wait(self.h.aio_pread(buf, offset))
        return bytes(buf.to_bytearray())


def run_ops(argv):
    uri, op, block_bytes, timeout_s, tag = argv[0], argv[1], int(argv[2]), float(argv[3]), argv[4]
    blocks = [int(b) for b in argv[5:]]
    c = Client(uri, timeout_s)
    gone = False
    for b in blocks:
        rec = {"block": b}
        if gone:
            rec["result"] = "skipped"
        else:
            try:
                if op == "write":
                    c.write(b * block_bytes, encode(tag, block_bytes))
                else:
                    rec["value"] = decode(c.read(b * block_bytes, block_bytes))
                rec["result"] = "ok"
            except Timeout as e:
                rec["result"] = "timeout"
                rec["error"] = str(e)
                gone = True
            except Exception as e:
                rec["result"] = "error"
                rec["error"] = str(e)
                c.close(abrupt=True)
        print(json.dumps(rec), flush=True)
    c.close()


def run_jepsen(argv):
    uri, process, block_bytes, timeout_s, duration_s, seed = argv[0], int(argv[1]), int(argv[2]), float(argv[3]), float(argv[4]), int(argv[5])
    blocks = [int(b) for b in argv[6:]]
    rng = random.Random(seed)
    c = Client(uri, timeout_s)
    out = sys.stdout
    generation = 0
    pid = process
    n = 0
    end = time.monotonic() + duration_s

    def emit(kind, f, block, value=None, has_value=False):
        ev = {"process": pid, "type": kind, "f": f, "block": block, "time": time.monotonic_ns()}
        if has_value:
            ev["value"] = value
        out.write(json.dumps(ev) + "\n")

    while time.monotonic() < end:
        if c.h is None:
            # Connect outside any operation: a refused connection is no operation at all.
            try:
                c.connect()
            except Exception:
                c.close(abrupt=True)
                time.sleep(0.2)
                continue
        block = rng.choice(blocks)
        if rng.random() < 0.5:
            n += 1
            tag = "p%d-%d" % (pid, n)
            emit("invoke", "write", block, tag, True)
            try:
                c.write(block * block_bytes, encode(tag, block_bytes))
                emit("ok", "write", block, tag, True)
            except Exception:
                # Timed out or refused mid-flight: it may still take effect.
                emit("info", "write", block)
                generation += 1
                pid = process + 1000 * generation
                c.close(abrupt=True)
                time.sleep(0.05)
        else:
            emit("invoke", "read", block)
            try:
                v = decode(c.read(block * block_bytes, block_bytes))
                emit("ok", "read", block, v, True)
            except Exception:
                emit("fail", "read", block)
                generation += 1
                pid = process + 1000 * generation
                c.close(abrupt=True)
                time.sleep(0.05)
        out.flush()
    c.close()


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "ops":
        run_ops(sys.argv[2:])
    elif mode == "jepsen":
        run_jepsen(sys.argv[2:])
    else:
        sys.exit("unknown mode " + mode)
