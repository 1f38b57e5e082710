"""Drives one NBD error case against a server and exits non-zero when it misbehaves.

usage: error_cases.py HOST PORT EXPORT CASE

libnbd runs with strict mode off so that the requests a careful client would refuse to send
reach the server; cases libnbd cannot express at all (unknown commands, oversized payloads,
bad magic) use a minimal client on a raw socket.
"""
import errno
import socket
import struct
import sys

import nbd

HOST, PORT, EXPORT, CASE = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
URI = f"nbd://{HOST}:{PORT}/{EXPORT}"

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
OPT_ABORT, OPT_LIST, OPT_STARTTLS, OPT_GO = 2, 3, 5, 7
REP_ACK, REP_SERVER, REP_INFO = 1, 2, 3
REP_ERR_UNSUP, REP_ERR_POLICY, REP_ERR_UNKNOWN = 0x80000001, 0x80000002, 0x80000006
INFO_EXPORT = 0
CMD_READ, CMD_WRITE = 0, 1
FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES = 1, 2


def fail(msg):
    print(f"FAIL {CASE}: {msg}", file=sys.stderr)
    sys.exit(1)


def connect(meta=False):
    h = nbd.NBD()
    h.set_strict_mode(0)
    if meta:
        h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.connect_uri(URI)
    return h


def expect_errno(what, want, fn):
    try:
        fn()
    except nbd.Error as e:
        if e.errnum != want:
            fail(f"{what}: got errno {e.errnum} ({e.string}), want {errno.errorcode[want]}")
        print(f"ok {what}: {errno.errorcode[want]}")
        return
    fail(f"{what}: succeeded, want {errno.errorcode[want]}")


def expect_alive(h, what):
    """The connection still answers a plain read after `what`."""
    try:
        h.pread(512, 0)
    except nbd.Error as e:
        fail(f"connection unusable after {what}: {e}")


def noop_extent(metacontext, offset, entries, err):
    return 0


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def raw_greeting():
    s = socket.create_connection((HOST, PORT), timeout=20)
    magic, opt_magic, _hflags = struct.unpack(">QQH", recv_exact(s, 18))
    if magic != NBDMAGIC or opt_magic != IHAVEOPT:
        fail("bad server greeting")
    s.sendall(struct.pack(">I", FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES))
    return s


def raw_option(s, opt, data=b""):
    """Sends one option; returns its replies [(type, payload)] up to the final one."""
    s.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)
    replies = []
    while True:
        rmagic, ropt, rtype, rlen = struct.unpack(">QIII", recv_exact(s, 20))
        if rmagic != REPLY_MAGIC:
            fail("bad option reply magic")
        if ropt != opt:
            fail(f"reply for option {ropt} to option {opt}")
        replies.append((rtype, recv_exact(s, rlen)))
        if rtype == REP_ACK or rtype & 0x80000000:
            return replies


def go_data(name):
    name = name.encode()
    return struct.pack(">I", len(name)) + name + struct.pack(">H", 0)


def raw_connect():
    """Fixed newstyle handshake with OPT_GO; returns (socket, export size)."""
    s = raw_greeting()
    size = None
    for rtype, payload in raw_option(s, OPT_GO, go_data(EXPORT)):
        if rtype == REP_INFO and struct.unpack(">H", payload[:2])[0] == INFO_EXPORT:
            size = struct.unpack(">Q", payload[2:10])[0]
        elif rtype & 0x80000000:
            fail(f"OPT_GO refused: {rtype:#x} {payload!r}")
    return s, size


def raw_request(s, cmd, cookie, offset, length, flags=0, payload=b""):
    s.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, flags, cmd, cookie, offset, length) + payload)


def raw_reply(s, cookie, read_length=0):
    """A simple reply (structured replies were not negotiated); returns (error, data)."""
    magic, err, got_cookie = struct.unpack(">IIQ", recv_exact(s, 16))
    if magic != SIMPLE_REPLY_MAGIC:
        fail(f"bad reply magic {magic:#x}")
    if got_cookie != cookie:
        fail(f"reply cookie {got_cookie} for request {cookie}")
    data = recv_exact(s, read_length) if err == 0 and read_length else b""
    return err, data


def case_read_past_end():
    h = connect()
    size = h.get_size()
    expect_errno("read starting at the end", errno.EINVAL, lambda: h.pread(4096, size))
    expect_errno("read straddling the end", errno.EINVAL, lambda: h.pread(8192, size - 4096))
    expect_alive(h, "reads past the end")


def case_trim_past_end():
    h = connect()
    size = h.get_size()
    expect_errno("trim starting at the end", errno.EINVAL, lambda: h.trim(4096, size))
    expect_errno("trim straddling the end", errno.EINVAL, lambda: h.trim(8192, size - 4096))
    expect_alive(h, "trims past the end")


def case_block_status_past_end():
    h = connect(meta=True)
    if not h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION):
        fail("base:allocation not negotiated")
    size = h.get_size()
    expect_errno("block status at the end", errno.EINVAL, lambda: h.block_status(4096, size, noop_extent))
    expect_errno("block status far past the end", errno.EINVAL, lambda: h.block_status(4096, size + (1 << 30), noop_extent))
    expect_alive(h, "block status past the end")


def case_write_past_end():
    h = connect()
    size = h.get_size()
    expect_errno("write starting at the end", errno.ENOSPC, lambda: h.pwrite(b"\x01" * 4096, size))
    expect_errno("write straddling the end", errno.ENOSPC, lambda: h.pwrite(b"\x01" * 8192, size - 4096))
    expect_errno("write zeroes past the end", errno.ENOSPC, lambda: h.zero(4096, size))
    expect_alive(h, "writes past the end")
    # The part of a straddling write inside the device was not applied either.
    if h.pread(4096, size - 4096) != b"\x00" * 4096:
        fail("a refused straddling write changed data")


def case_readonly_eperm():
    h = connect()
    if not h.is_read_only():
        fail("export is not read-only")
    expect_errno("write on a read-only export", errno.EPERM, lambda: h.pwrite(b"\x01" * 4096, 0))
    expect_errno("trim on a read-only export", errno.EPERM, lambda: h.trim(4096, 0))
    expect_errno("write zeroes on a read-only export", errno.EPERM, lambda: h.zero(4096, 0))
    expect_alive(h, "refused writes")
    if h.pread(4096, 0) != b"\x00" * 4096:
        fail("a refused write changed data")


def case_unknown_flags():
    h = connect()
    unknown = 1 << 9
    expect_errno("read with an unknown flag", errno.EINVAL, lambda: h.pread(4096, 0, flags=unknown))
    expect_errno("write with an unknown flag", errno.EINVAL, lambda: h.pwrite(b"\x02" * 4096, 0, flags=unknown))
    expect_errno("flush with an unknown flag", errno.EINVAL, lambda: h.flush(flags=unknown))
    expect_alive(h, "unknown flags")
    if h.pread(4096, 0) != b"\x00" * 4096:
        fail("a refused write with an unknown flag changed data")


def case_unknown_command():
    s, _size = raw_connect()
    for cookie, cmd in ((1, 0x3F), (2, 0x1234)):
        raw_request(s, cmd, cookie, 0, 0)
        err, _ = raw_reply(s, cookie)
        if err != errno.EINVAL:
            fail(f"unknown command {cmd:#x}: error {err}, want EINVAL")
        print(f"ok unknown command {cmd:#x}: EINVAL")
    raw_request(s, CMD_READ, 3, 0, 512)
    err, data = raw_reply(s, 3, 512)
    if err != 0 or len(data) != 512:
        fail(f"read after unknown commands: error {err}")
    s.close()


def case_oversized_payload():
    h = connect()
    advertised = h.get_block_size(nbd.SIZE_MAXIMUM)
    maximum = advertised or (32 << 20)
    if h.get_size() < maximum + 8192:
        fail("export too small: an oversized write must still lie inside the device")
    h.shutdown()
    length = maximum + 4096
    s, _size = raw_connect()
    marker = b"\x7e" * 4096
    try:
        raw_request(s, CMD_WRITE, 7, 0, length, payload=marker * (length // 4096))
    except (BrokenPipeError, ConnectionResetError) as e:
        fail(f"the server did not read the oversized payload off the socket: {e}")
    try:
        err, _ = raw_reply(s, 7)
    except EOFError:
        print(f"ok oversized write ({length} > {maximum}): disconnected after reading the payload")
        err = None
    except ConnectionResetError as e:
        fail(f"connection reset (payload left unread?): {e}")
    if err == 0 and not advertised:
        print(f"ok oversized write ({length} > {maximum}): accepted (no maximum advertised)")
        err = None
    if err is not None:
        if err not in (errno.EINVAL, errno.EOVERFLOW, errno.ENOMEM):
            fail(f"oversized write: error {err}, want EINVAL, EOVERFLOW or ENOMEM")
        print(f"ok oversized write ({length} > {maximum}): error {errno.errorcode[err]}")
        # The payload was consumed: the stream is still in sync.
        raw_request(s, CMD_READ, 8, 0, 4096)
        err, data = raw_reply(s, 8, 4096)
        if err != 0:
            fail(f"read after an oversized write: error {err}")
        if data == marker:
            fail("the refused oversized write was applied")
    s.close()
    h2 = connect()
    expect_alive(h2, "another client's oversized write")


def case_zero_length():
    h = connect(meta=True)

    def allowed(what, fn):
        try:
            fn()
            print(f"ok zero-length {what}: success")
        except nbd.Error as e:
            # The spec leaves the answer open (no-op or an error); only a disconnect is wrong.
            print(f"ok zero-length {what}: {errno.errorcode.get(e.errnum, e.errnum)}")
        expect_alive(h, f"zero-length {what}")

    allowed("read", lambda: h.pread(0, 0))
    allowed("write", lambda: h.pwrite(b"", 0))
    allowed("trim", lambda: h.trim(0, 0))
    allowed("write zeroes", lambda: h.zero(0, 0))
    allowed("cache", lambda: h.cache(0, 0))
    allowed("block status", lambda: h.block_status(0, 0, noop_extent))
    allowed("read at the end", lambda: h.pread(0, h.get_size()))


def case_bad_magic():
    good = connect()
    good.pwrite(b"\x33" * 4096, 8192)
    bad, _size = raw_connect()
    bad.sendall(struct.pack(">IHHQQI", 0xDEADBEEF, 0, CMD_READ, 1, 0, 512))
    bad.settimeout(10)
    try:
        leftover = bad.recv(64)
    except ConnectionResetError:
        leftover = b""
    except socket.timeout:
        fail("bad magic did not disconnect the client")
    if leftover:
        fail(f"bad magic got a reply instead of a disconnect: {leftover!r}")
    print("ok bad magic: disconnected")
    # The other connection never noticed.
    if good.pread(4096, 8192) != b"\x33" * 4096:
        fail("another connection lost data")
    good.pwrite(b"\x44" * 4096, 8192)
    good.flush()
    if good.pread(4096, 8192) != b"\x44" * 4096:
        fail("another connection cannot write after a bad client")
    fresh = connect()
    expect_alive(fresh, "a bad client")
    print("ok other connections keep working")


def case_handshake_options():
    s = raw_greeting()
    (rtype, _), = raw_option(s, 0x4242)
    if rtype != REP_ERR_UNSUP:
        fail(f"unknown option: reply {rtype:#x}, want NBD_REP_ERR_UNSUP")
    print("ok unknown option: ERR_UNSUP")
    rtype, _ = raw_option(s, OPT_STARTTLS)[-1]
    if rtype not in (REP_ERR_UNSUP, REP_ERR_POLICY):
        fail(f"STARTTLS without TLS: reply {rtype:#x}, want ERR_UNSUP or ERR_POLICY")
    print(f"ok STARTTLS without TLS: {rtype:#x}")
    listed = raw_option(s, OPT_LIST)
    names = [p[4:4 + struct.unpack(">I", p[:4])[0]].decode() for t, p in listed if t == REP_SERVER]
    if listed[-1][0] != REP_ACK or EXPORT not in names:
        fail(f"OPT_LIST: {listed!r}")
    print(f"ok OPT_LIST: {names}")
    rtype, _ = raw_option(s, OPT_GO, go_data(EXPORT + "-no-such-export"))[-1]
    if rtype != REP_ERR_UNKNOWN:
        fail(f"OPT_GO of an unknown export: reply {rtype:#x}, want NBD_REP_ERR_UNKNOWN")
    print("ok OPT_GO of an unknown export: ERR_UNKNOWN")
    # After all that, the same connection still negotiates and serves.
    rtype, _ = raw_option(s, OPT_GO, go_data(EXPORT))[-1]
    if rtype != REP_ACK:
        fail(f"OPT_GO after refused options: reply {rtype:#x}")
    raw_request(s, CMD_READ, 1, 0, 512)
    err, data = raw_reply(s, 1, 512)
    if err != 0 or len(data) != 512:
        fail(f"read after the handshake: error {err}")
    print("ok the handshake goes on after refused options")
    s.close()
    # OPT_ABORT ends the handshake cleanly (an ACK, or the server just closes).
    a = raw_greeting()
    a.sendall(struct.pack(">QII", IHAVEOPT, OPT_ABORT, 0))
    a.settimeout(10)
    try:
        got = a.recv(20)
    except ConnectionResetError:
        got = b""
    if got and struct.unpack(">QIII", got[:20])[2] != REP_ACK:
        fail(f"OPT_ABORT: {got!r}")
    print("ok OPT_ABORT")


def case_garbage_clients():
    """Clients that send garbage, or hang up mid-handshake, mid-header or mid-payload."""
    import random
    rng = random.Random(20240601)
    good = connect()
    good.pwrite(b"\x5c" * 4096, 4096)
    good.flush()
    for i in range(60):
        phase = i % 5
        try:
            if phase == 0:  # garbage instead of client flags
                s = socket.create_connection((HOST, PORT), timeout=10)
                s.sendall(rng.randbytes(rng.randrange(1, 300)))
            elif phase == 1:  # garbage options
                s = raw_greeting()
                s.sendall(struct.pack(">Q", IHAVEOPT) + rng.randbytes(rng.randrange(0, 300)))
            elif phase == 2:  # an option whose length promises more than arrives
                s = raw_greeting()
                s.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, 1 << 30) + b"\x00" * 10)
            elif phase == 3:  # a request header cut short
                s, _ = raw_connect()
                s.sendall(struct.pack(">IHH", REQUEST_MAGIC, 0, CMD_WRITE) + rng.randbytes(rng.randrange(0, 20)))
            else:  # a write whose payload never fully arrives
                s, _ = raw_connect()
                raw_request(s, CMD_WRITE, 9, 4096, 65536, payload=b"\xee" * rng.randrange(0, 65536))
            s.close()
        except (ConnectionResetError, BrokenPipeError, EOFError):
            pass
    if good.pread(4096, 4096) != b"\x5c" * 4096:
        fail("data changed by garbage clients (a truncated write was applied?)")
    good.pwrite(b"\x6d" * 4096, 4096)
    if good.pread(4096, 4096) != b"\x6d" * 4096:
        fail("the good connection stopped working")
    fresh = connect()
    expect_alive(fresh, "garbage clients")
    print("ok 60 garbage clients; the good connection kept working")


CASES = {
    "garbage-clients": case_garbage_clients,
    "handshake-options": case_handshake_options,
    "read-past-end": case_read_past_end,
    "trim-past-end": case_trim_past_end,
    "block-status-past-end": case_block_status_past_end,
    "write-past-end": case_write_past_end,
    "readonly-eperm": case_readonly_eperm,
    "unknown-flags": case_unknown_flags,
    "unknown-command": case_unknown_command,
    "oversized-payload": case_oversized_payload,
    "zero-length": case_zero_length,
    "bad-magic": case_bad_magic,
}

if CASE not in CASES:
    fail(f"unknown case; known: {', '.join(CASES)}")
CASES[CASE]()
print(f"PASS {CASE}")
