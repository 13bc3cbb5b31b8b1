#!/usr/bin/env python3
"""Watchtower soak test (issue 8): a bounded run, loopback only, Python 3 standard library only.

    python3 benches/tools/soak.py            # normally started by benches/soak.sh
    python3 benches/tools/soak.py backends   # (internal) the backends process

It starts its own backends (a second Python process, so they do not share the load generator's
GIL): three HTTP/1.1 keep-alive servers A, B and C, each naming itself in `X-Backend`, answering
`/data?size=N&off=O` with N bytes of a seeded random buffer (Content-Length or chunked) plus a
CRC-32 header, echoing what it saw (Host, X-Forwarded-*, Via, the request body's length and CRC),
and speaking WebSocket (RFC 6455, by hand) on `/ws`; and a TCP echo server for tunnels. It writes
a temporary watchtower.toml (ports picked free by binding port 0), starts the release binary,
and drives a steady, mixed load through it while a toggler changes the routes and the switch
through the admin API. Every operation is verified end to end; Watchtower's RSS and open file
descriptors are sampled; a summary is printed and written as Markdown and JSON.

Only `*.localhost` names and 127.0.0.1 are ever asked for, so whatever the routes say, every
request stays on this machine: a routed request goes to backend B or C, the same request passed
through goes to `<name>.localhost:<port of A>`, which is backend A. Which one answers is decided
from a model of the admin changes (the time each was sent and acknowledged): an answer must come
from a state the routing table was in at some moment while the request was being routed.

Environment: SOAK_MINUTES (10), RATE (200 operations/s), WT_BIN, OUT (path without extension),
SOAK_THREADS (32), TOGGLE_EVERY (2 s), TOGGLE_BURST (3: every fifth change is a burst of that
many, back to back; 1 = none), SAMPLE_EVERY (10 s, less for short runs), SOAK_IDLE (Watchtower's
[timeouts] idle, 10 s), WT_WORKERS ([proxy] workers; unset = one per core), SOAK_RUST_LOG
(Watchtower's RUST_LOG, info), SOAK_SEED, WORK (temp dir; made if unset).
"""

import base64
import bisect
import hashlib
import json
import math
import os
import platform
import random
import selectors
import signal
import socket
import socketserver
import ssl
import statistics
import struct
import subprocess
import sys
import threading
import time
import zlib
import http.client

BUF_SEED = 0x50A4_7E57
BUF_SIZE = 3 << 20
MAX_RESPONSE = 1 << 20  # response bodies and tunnel payloads: up to 1 MiB
MAX_REQUEST_BODY = 256 << 10
MAX_WS_MESSAGE = 256 << 10
BACKEND_IDLE = 30.0  # backends keep idle connections longer than Watchtower does
OP_TIMEOUT = 30.0
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def make_buf():
    return random.Random(BUF_SEED).randbytes(BUF_SIZE)


def crc(data):
    return "%08x" % (zlib.crc32(data) & 0xFFFFFFFF)


class Closed(Exception):
    pass


class Reader:
    """Buffered reads from a socket, plain or TLS."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def _fill(self, want=262144):
        data = self.sock.recv(want)
        if not data:
            raise Closed("connection closed by the peer")
        self.buf += data

    def read_head(self, limit=128 * 1024):
        start = 0
        while True:
            i = self.buf.find(b"\r\n\r\n", start)
            if i >= 0:
                head = bytes(self.buf[: i + 4])
                del self.buf[: i + 4]
                return head
            if len(self.buf) > limit:
                raise ValueError("head over %d bytes" % limit)
            start = max(0, len(self.buf) - 3)
            self._fill()

    def read_line(self, limit=16384):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[: i + 1])
                del self.buf[: i + 1]
                return line
            if len(self.buf) > limit:
                raise ValueError("line over %d bytes" % limit)
            self._fill()

    def read_exact(self, n):
        if len(self.buf) >= n:
            out = bytes(self.buf[:n])
            del self.buf[:n]
            return out
        parts = [bytes(self.buf)]
        need = n - len(self.buf)
        self.buf.clear()
        while need > 0:
            data = self.sock.recv(min(need, 262144))
            if not data:
                raise Closed("connection closed by the peer with %d of %d bytes missing" % (need, n))
            parts.append(data)
            need -= len(data)
        return b"".join(parts)

    def read_to_eof(self, limit):
        parts = [bytes(self.buf)]
        self.buf.clear()
        total = len(parts[0])
        while True:
            data = self.sock.recv(262144)
            if not data:
                return b"".join(parts)
            parts.append(data)
            total += len(data)
            if total > limit:
                raise ValueError("more than %d bytes before the close" % limit)


def parse_head(raw):
    lines = raw.decode("latin-1").split("\r\n")
    first = lines[0]
    headers = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError("header line without a colon: %r" % line)
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return first, headers


def hget(headers, name, default=None):
    v = headers.get(name)
    return v[-1] if v else default


def read_body(reader, headers, limit):
    """Reads a body framed by Transfer-Encoding: chunked or Content-Length; None = neither."""
    te = hget(headers, "transfer-encoding")
    if te is not None:
        if te.lower() != "chunked":
            raise ValueError("unexpected Transfer-Encoding %r" % te)
        parts = []
        total = 0
        while True:
            line = reader.read_line()
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while reader.read_line() not in (b"\r\n", b"\n"):
                    pass
                return b"".join(parts)
            parts.append(reader.read_exact(size))
            total += size
            if total > limit:
                raise ValueError("chunked body over %d bytes" % limit)
            if reader.read_exact(2) != b"\r\n":
                raise ValueError("chunk not followed by CRLF")
    cl = hget(headers, "content-length")
    if cl is not None:
        n = int(cl)
        if n > limit:
            raise ValueError("Content-Length %d over %d" % (n, limit))
        return reader.read_exact(n)
    return None


def xor_mask(data, mask):
    if not data:
        return data
    n = len(data)
    m = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(m, "big")).to_bytes(n, "big")


def ws_frame(opcode, payload, fin=True, mask=True):
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", b0, (0x80 if mask else 0) | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, (0x80 if mask else 0) | 126, n)
    else:
        head = struct.pack("!BBQ", b0, (0x80 if mask else 0) | 127, n)
    if mask:
        key = os.urandom(4)
        return head + key + xor_mask(payload, key)
    return head + payload


def ws_read_frame(reader, limit):
    b0, b1 = reader.read_exact(2)
    fin, opcode, masked, n = b0 & 0x80, b0 & 0x0F, b1 & 0x80, b1 & 0x7F
    if b0 & 0x70:
        raise ValueError("reserved bits set in a frame")
    if n == 126:
        (n,) = struct.unpack("!H", reader.read_exact(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", reader.read_exact(8))
    if n > limit:
        raise ValueError("frame of %d bytes" % n)
    key = reader.read_exact(4) if masked else None
    payload = reader.read_exact(n)
    if key:
        payload = xor_mask(payload, key)
    return bool(fin), opcode, bool(masked), payload


def ws_accept(key):
    return base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()


# ---------------------------------------------------------------------------------------------
# backends (their own process)


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024
    block_on_close = False


class BackendHandler(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        sock.settimeout(BACKEND_IDLE)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = Reader(sock)
        try:
            while self.one(sock, reader):
                pass
        except (Closed, OSError, ValueError):
            pass

    def one(self, sock, reader):
        name = self.server.name
        buf = self.server.buf
        try:
            raw = reader.read_head()
        except (Closed, OSError):
            return False
        first, h = parse_head(raw)
        method, target, version = first.split(" ")
        body = read_body(reader, h, MAX_REQUEST_BODY) or b""
        path, _, query = target.partition("?")
        q = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        seen = [
            ("X-Backend", name),
            ("X-Seen-Host", hget(h, "host", "-")),
            ("X-Seen-XFF", hget(h, "x-forwarded-for", "-")),
            ("X-Seen-Proto", hget(h, "x-forwarded-proto", "-")),
            ("X-Seen-Via", hget(h, "via", "-")),
            ("X-Seen-Method", method),
        ]
        upgrade = (hget(h, "upgrade", "") or "").lower() == "websocket"
        if path == "/ws" and upgrade and method == "GET":
            key = hget(h, "sec-websocket-key", "")
            head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            head += "Sec-WebSocket-Accept: %s\r\n" % ws_accept(key)
            head += "".join("%s: %s\r\n" % kv for kv in seen) + "\r\n"
            sock.sendall(head.encode("latin-1"))
            self.websocket(sock, reader)
            return False
        keep = version == "HTTP/1.1" and (hget(h, "connection", "") or "").lower() != "close"
        if path != "/data":
            out = b"no such path\n"
            head = "HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n" % len(out)
            sock.sendall(head.encode() + b"\r\n" + out)
            return keep
        size = int(q.get("size", "0"))
        off = int(q.get("off", "0"))
        data = buf[off : off + size]
        hdrs = seen + [
            ("X-Body-Crc", crc(data)),
            ("X-Req-Len", str(len(body))),
            ("X-Req-Crc", crc(body)),
            ("Content-Type", "application/octet-stream"),
        ]
        chunked = q.get("te") == "chunked"
        if chunked:
            hdrs.append(("Transfer-Encoding", "chunked"))
        else:
            hdrs.append(("Content-Length", str(size)))
        if not keep:
            hdrs.append(("Connection", "close"))
        head = ("HTTP/1.1 200 OK\r\n" + "".join("%s: %s\r\n" % kv for kv in hdrs) + "\r\n").encode("latin-1")
        if method == "HEAD":
            sock.sendall(head)
        elif chunked:
            step = 1 + (off % 40000)
            parts = [head]
            for i in range(0, size, step):
                piece = data[i : i + step]
                parts.append(b"%x\r\n" % len(piece) + piece + b"\r\n")
            parts.append(b"0\r\n\r\n")
            sock.sendall(b"".join(parts))
        else:
            sock.sendall(head + data)
        return keep

    def websocket(self, sock, reader):
        """Echoes every message (reassembled) as one frame, pongs pings, echoes the close."""
        message, message_op = [], 0
        while True:
            fin, opcode, masked, payload = ws_read_frame(reader, 4 * MAX_WS_MESSAGE)
            if not masked:
                return  # a client frame must be masked; drop the connection
            if opcode == 0x8:
                sock.sendall(ws_frame(0x8, payload[:125], mask=False))
                return
            if opcode == 0x9:
                sock.sendall(ws_frame(0xA, payload, mask=False))
                continue
            if opcode == 0xA:
                continue
            if opcode in (0x1, 0x2):
                message, message_op = [payload], opcode
            elif opcode == 0x0:
                message.append(payload)
            else:
                return
            if fin:
                sock.sendall(ws_frame(message_op, b"".join(message), mask=False))
                message = []


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        sock.settimeout(BACKEND_IDLE)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                data = sock.recv(262144)
                if not data:
                    sock.shutdown(socket.SHUT_WR)
                    return
                sock.sendall(data)
        except OSError:
            pass


def backends_main():
    buf = make_buf()
    servers = {}
    for name in "ABC":
        srv = Server(("127.0.0.1", 0), BackendHandler)
        srv.name, srv.buf = name, buf
        servers[name] = srv
    servers["echo"] = Server(("127.0.0.1", 0), EchoHandler)
    for srv in servers.values():
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True).start()
    print(json.dumps({k: s.server_address[1] for k, s in servers.items()}), flush=True)
    # Runs until the parent closes our stdin (or dies).
    try:
        sys.stdin.read()
    finally:
        os._exit(0)


# ---------------------------------------------------------------------------------------------
# the load side


class Fail(Exception):
    pass


def mono():
    return time.monotonic()


def logsize(rng, top):
    """0..top, log-uniform: mostly small, some large."""
    return min(top, int(math.exp(rng.uniform(0, math.log(top + 1)))) - 1)


class Stats:
    KINDS = ("forward_http", "reverse_http", "tunnel", "intercept_https", "websocket", "admin")

    def __init__(self):
        self.lock = threading.Lock()
        self.ops = {k: 0 for k in self.KINDS}
        self.fails = {k: 0 for k in self.KINDS}
        self.latency = {k: [] for k in self.KINDS}
        self.counts = {}  # detail counters
        self.failures = []  # (t, kind, message), first ones kept
        self.t0 = mono()

    def done(self, kind, seconds, ok, message=None):
        with self.lock:
            self.ops[kind] += 1
            if ok:
                self.latency[kind].append(seconds)
            else:
                self.fails[kind] += 1
                if len(self.failures) < 50:
                    self.failures.append((round(mono() - self.t0, 2), kind, message))
        if not ok and sum(self.fails.values()) <= 10:
            print("   FAILED %s at %.1fs: %s" % (kind, mono() - self.t0, message), file=sys.stderr, flush=True)

    def count(self, key, n=1):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + n

    def totals(self):
        with self.lock:
            return sum(self.ops.values()), sum(self.fails.values())


class Model:
    """The routing state over time: each admin change with the times it was sent and
    acknowledged. A request routed between t0 and t1 may have seen any state live then."""

    def __init__(self, routing, routes):
        self.lock = threading.Lock()
        self.states = [(routing, tuple(routes))]
        self.sent = [-math.inf]
        self.acked = [-math.inf]
        self.labels = ["initial"]

    def current(self):
        with self.lock:
            return self.states[-1]

    def begin(self, t_send, state, label):
        """A change about to be sent: it may apply at any moment until acknowledged."""
        with self.lock:
            self.states.append(state)
            self.sent.append(t_send)
            self.acked.append(math.inf)
            self.labels.append(label)

    def ack(self, t_ack):
        with self.lock:
            self.acked[-1] = t_ack

    def last_acked(self):
        with self.lock:
            return self.acked[-1]

    def record(self, t_send, t_ack, state, label):
        self.begin(t_send, state, label)
        self.ack(t_ack)

    def window(self, t0, t1, origin):
        """The changes that bound a request routed between t0 and t1, for error messages."""
        with self.lock:
            i = bisect.bisect_right(self.acked, t0) - 1
            j = bisect.bisect_right(self.sent, t1) - 1
            rel = lambda t: "%.3f" % (t - origin) if abs(t) != math.inf else ("start" if t < 0 else "not yet")
            parts = ["%s (sent %s, acknowledged %s)" % (self.labels[k], rel(self.sent[k]), rel(self.acked[k]))
                     for k in range(i, j + 1)]
            nxt = ""
            if j + 1 < len(self.states):
                nxt = "; next change: %s sent at %s" % (self.labels[j + 1], rel(self.sent[j + 1]))
            return "routed between %s and %s; states live then: %s%s" % (rel(t0), rel(t1), " | ".join(parts), nxt)

    def history(self, origin):
        with self.lock:
            return [{"change": l, "sent_s": round(a - origin, 4), "acked_s": round(b - origin, 4)}
                    for l, a, b in zip(self.labels[1:], self.sent[1:], self.acked[1:])]

    def possible(self, t0, t1):
        with self.lock:
            i = bisect.bisect_right(self.acked, t0) - 1
            j = bisect.bisect_right(self.sent, t1) - 1
            return self.states[i : j + 1]


class Ctx:
    pass


def decide(state, listener, host, ports):
    """(backend, routed) for `host` on `listener` ("forward"/"reverse") under `state`."""
    routing, routes = state
    name, _, port = host.rpartition(":")
    name = name.lower()
    pass_to = (ports.get(int(port), "port %s" % port), False)
    if not routing:
        return pass_to
    enabled = [r for r in routes if r[3]]
    for rid, domain, tport, _ in enabled:
        if domain == name:
            return (ports.get(tport, "port %d" % tport), True)
    best = None
    for rid, domain, tport, _ in enabled:
        if domain.startswith("*.") and name.endswith(domain[1:]):
            if best is None or len(domain) > len(best[1]):
                best = (rid, domain, tport)
    if best:
        return (ports.get(best[2], "port %d" % best[2]), True)
    if listener == "reverse" and name in ("localhost", "127.0.0.1"):
        if enabled:
            return (ports.get(enabled[0][2], "?"), True)
    return pass_to


class Possible:
    """The (backend, routed) answers allowed for `host` on `listener` routed between t0 and t1;
    with `pinned`, the window is fixed (requests in an intercepted tunnel go where its CONNECT
    was routed)."""

    def __init__(self, ctx, listener, host, pinned=None):
        self.ctx, self.listener, self.host, self.pinned = ctx, listener, host, pinned

    def __call__(self, t0, t1):
        t0, t1 = self.pinned or (t0, t1)
        return {decide(s, self.listener, self.host, self.ctx.backend_by_port) for s in self.ctx.model.possible(t0, t1)}

    def window(self, t0, t1):
        t0, t1 = self.pinned or (t0, t1)
        return ("CONNECT " if self.pinned else "") + self.ctx.model.window(t0, t1, self.ctx.t_load)


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=OP_TIMEOUT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def new_request(rng, host, absolute, buf):
    roll = rng.random()
    method = "GET" if roll < 0.68 else ("POST" if roll < 0.95 else "HEAD")
    size = logsize(rng, MAX_RESPONSE)
    off = rng.randrange(0, BUF_SIZE - size)
    te = "chunked" if rng.random() < 0.25 else "cl"
    path = "/data?size=%d&off=%d&te=%s" % (size, off, te)
    target = "http://%s%s" % (host, path) if absolute else path
    head = "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: watchtower-soak\r\nAccept: */*\r\n" % (method, target, host)
    body = b""
    if method == "POST":
        n = logsize(rng, MAX_REQUEST_BODY)
        boff = rng.randrange(0, BUF_SIZE - n)
        body = buf[boff : boff + n]
        if rng.random() < 0.3:
            head += "Transfer-Encoding: chunked\r\n\r\n"
            step = 1 + rng.randrange(1, 20000)
            parts = [head.encode()]
            for i in range(0, n, step):
                piece = body[i : i + step]
                parts.append(b"%x\r\n" % len(piece) + piece + b"\r\n")
            parts.append(b"0\r\n\r\n")
            wire = b"".join(parts)
        else:
            head += "Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % n
            wire = head.encode() + body
    else:
        wire = (head + "\r\n").encode()
    return {"method": method, "host": host, "size": size, "off": off, "te": te, "body": body,
            "wire": wire, "line": "%s %s" % (method, target)}


def describe(first, h, body):
    shown = {k: v for k, v in h.items() if k.startswith("x-") or k in ("content-length", "transfer-encoding", "connection")}
    snippet = (body or b"")[:160]
    return "%r %s body[:160]=%r" % (first, json.dumps(shown, sort_keys=True), snippet)


def exchange(ctx, sock, reader, req, listener, proto, possible_fn):
    """Sends one request, reads and verifies the response; returns the (backend, routed)."""
    t0 = mono()
    sock.sendall(req["wire"])
    first, h = parse_head(reader.read_head())
    t1 = mono()
    status = first.split(" ", 2)
    if req["method"] == "HEAD":
        body = b""
    else:
        body = read_body(reader, h, MAX_RESPONSE)
        if body is None:
            raise Fail("%s: response without framing: %s" % (req["line"], describe(first, h, b"")))
    where = "%s (%s)" % (req["line"], listener)
    if len(status) < 2 or status[1] != "200":
        raise Fail("%s: expected 200, got %s" % (where, describe(first, h, body)))
    got = (hget(h, "x-backend", "?"), hget(h, "x-seen-xff", "-") != "-")
    allowed = possible_fn(t0, t1)
    if got not in allowed:
        raise Fail("%s: answered by %s (routed=%s); the routing state allows only %s (%s): %s"
                   % (where, got[0], got[1], sorted(allowed), possible_fn.window(t0, t1), describe(first, h, b"")))
    if got[1] and hget(h, "x-seen-proto") != proto:
        raise Fail("%s: backend saw X-Forwarded-Proto %r, expected %r" % (where, hget(h, "x-seen-proto"), proto))
    if "watchtower-" not in (hget(h, "x-seen-via") or ""):
        raise Fail("%s: backend saw no Via: watchtower-...: %s" % (where, describe(first, h, b"")))
    if hget(h, "x-seen-host") != req["host"]:
        raise Fail("%s: backend saw Host %r, expected %r" % (where, hget(h, "x-seen-host"), req["host"]))
    if hget(h, "x-seen-method") != req["method"]:
        raise Fail("%s: backend saw method %r" % (where, hget(h, "x-seen-method")))
    if hget(h, "x-req-len") != str(len(req["body"])) or hget(h, "x-req-crc") != crc(req["body"]):
        raise Fail("%s: request body of %d bytes (crc %s) arrived as %s bytes (crc %s)"
                   % (where, len(req["body"]), crc(req["body"]), hget(h, "x-req-len"), hget(h, "x-req-crc")))
    expected = ctx.buf[req["off"] : req["off"] + req["size"]]
    if hget(h, "x-body-crc") != crc(expected):
        raise Fail("%s: X-Body-Crc %s, expected %s" % (where, hget(h, "x-body-crc"), crc(expected)))
    if req["method"] != "HEAD" and body != expected:
        diff = next((i for i in range(min(len(body), len(expected))) if body[i] != expected[i]), min(len(body), len(expected)))
        raise Fail("%s: body of %d bytes differs from the %d expected (first difference at byte %d, crc %s)"
                   % (where, len(body), len(expected), diff, crc(body)))
    if "close" in (hget(h, "connection", "") or "").lower():
        raise Fail("%s: Connection: close on a kept-alive exchange: %s" % (where, describe(first, h, b"")))
    ctx.stats.count("%s %s %s" % (listener, got[0], "routed" if got[1] else "pass-through"))
    ctx.stats.count("requests " + ("intercepted" if listener == "intercepted" else "http"))
    return got


def op_http(ctx, rng, listener):
    port = ctx.proxy_port if listener == "forward" else ctx.reverse_port
    hosts = ctx.fwd_hosts if listener == "forward" else ctx.rev_hosts
    sock = connect(port)
    try:
        reader = Reader(sock)
        for _ in range(rng.randint(1, 4)):
            host = rng.choice(hosts)
            req = new_request(rng, host, listener == "forward", ctx.buf)
            exchange(ctx, sock, reader, req, listener, "http", Possible(ctx, listener, host))
    finally:
        sock.close()


def connect_via_proxy(ctx, authority):
    sock = connect(ctx.proxy_port)
    reader = Reader(sock)
    t0 = mono()
    sock.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: watchtower-soak\r\n\r\n" % (authority, authority)).encode())
    first, h = parse_head(reader.read_head())
    t1 = mono()
    if first.split(" ")[1:2] != ["200"]:
        body = read_body(reader, h, 65536) if hget(h, "content-length") else b""
        sock.close()
        raise Fail("CONNECT %s: expected 200, got %s" % (authority, describe(first, h, body)))
    if reader.buf:
        sock.close()
        raise Fail("CONNECT %s: %d unexpected bytes after the 200" % (authority, len(reader.buf)))
    return sock, t0, t1


def echo_check(sock, payload, what):
    """Sends `payload` through an echo path while reading it back; then half-closes and
    expects the echo side to close too."""
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
    view = memoryview(payload)
    sent, got = 0, []
    received = 0
    shut = False
    deadline = mono() + OP_TIMEOUT
    eof = False
    try:
        while not eof:
            if mono() > deadline:
                raise Fail("%s: timed out with %d/%d bytes sent, %d echoed" % (what, sent, len(payload), received))
            if sent == len(payload) and not shut:
                sock.shutdown(socket.SHUT_WR)
                shut = True
                sel.modify(sock, selectors.EVENT_READ)
            for _key, events in sel.select(timeout=1.0):
                if events & selectors.EVENT_WRITE and sent < len(payload):
                    try:
                        sent += sock.send(view[sent : sent + 262144])
                    except BlockingIOError:
                        pass
                if events & selectors.EVENT_READ:
                    try:
                        data = sock.recv(262144)
                    except BlockingIOError:
                        continue
                    if not data:
                        eof = True
                        break
                    got.append(data)
                    received += len(data)
    finally:
        sel.close()
    echoed = b"".join(got)
    if echoed != payload:
        raise Fail("%s: %d bytes sent, %d echoed before the close%s" % (
            what, len(payload), len(echoed),
            "" if len(echoed) != len(payload) else " (contents differ)"))


def op_tunnel(ctx, rng, authority=None):
    authority = authority or rng.choice(ctx.tunnel_targets)
    sock, _, _ = connect_via_proxy(ctx, authority)
    try:
        if rng.random() < 0.7:
            size = logsize(rng, MAX_RESPONSE)
            off = rng.randrange(0, BUF_SIZE - size)
            echo_check(sock, ctx.buf[off : off + size], "tunnel to %s (%d bytes)" % (authority, size))
            ctx.stats.count("tunnel bytes each way", size)
        else:
            reader = Reader(sock)
            for i in range(rng.randint(2, 8)):
                n = rng.randint(1, 4096)
                off = rng.randrange(0, BUF_SIZE - n)
                msg = ctx.buf[off : off + n]
                sock.sendall(msg)
                back = reader.read_exact(n)
                if back != msg:
                    raise Fail("tunnel to %s: round trip %d: %d bytes came back different" % (authority, i, n))
            echo_check(sock, b"", "tunnel to %s (close after round trips)" % authority)
        ctx.stats.count("tunnels blind")
    finally:
        sock.close()


def ws_session(ctx, rng, sock, reader, what):
    """A few messages (some fragmented), a ping, a clean close."""
    for i in range(rng.randint(1, 5)):
        n = logsize(rng, MAX_WS_MESSAGE)
        off = rng.randrange(0, BUF_SIZE - n)
        if rng.random() < 0.5:
            opcode, payload = 0x1, ctx.buf[off : off + n // 2 + 1].hex()[:n].encode()
        else:
            opcode, payload = 0x2, ctx.buf[off : off + n]
        if n > 3 and rng.random() < 0.25:
            a, b = sorted(rng.sample(range(1, n), 2)) if n > 4 else (1, 2)
            sock.sendall(ws_frame(opcode, payload[:a], fin=False) + ws_frame(0x0, payload[a:b], fin=False)
                         + ws_frame(0x0, payload[b:], fin=True))
        else:
            sock.sendall(ws_frame(opcode, payload))
        fin, op, masked, back = ws_read_frame(reader, 2 * MAX_WS_MESSAGE)
        if not fin or op != opcode or masked or back != payload:
            raise Fail("%s: message %d (opcode %d, %d bytes) echoed as opcode %d fin=%s masked=%s, %d bytes%s"
                       % (what, i, opcode, len(payload), op, fin, masked, len(back),
                          "" if len(back) != len(payload) else " (contents differ)"))
        ctx.stats.count("websocket messages")
    ping = os.urandom(rng.randint(0, 125))
    sock.sendall(ws_frame(0x9, ping))
    fin, op, masked, back = ws_read_frame(reader, 1024)
    if op != 0xA or back != ping:
        raise Fail("%s: ping answered with opcode %d, %d bytes" % (what, op, len(back)))
    sock.sendall(ws_frame(0x8, struct.pack("!H", 1000) + b"soak done"))
    fin, op, masked, back = ws_read_frame(reader, 1024)
    if op != 0x8 or back[:2] != struct.pack("!H", 1000):
        raise Fail("%s: close answered with opcode %d %r" % (what, op, back[:20]))
    rest = reader.read_to_eof(65536)
    if rest:
        raise Fail("%s: %d bytes after the close frame" % (what, len(rest)))


def ws_upgrade(ctx, rng, sock, reader, target, host, listener, proto, possible_fn):
    key = base64.b64encode(os.urandom(16)).decode()
    req = ("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nUser-Agent: watchtower-soak\r\n\r\n"
           % (target, host, key))
    t0 = mono()
    sock.sendall(req.encode())
    first, h = parse_head(reader.read_head())
    t1 = mono()
    what = "websocket GET %s (%s)" % (target, listener)
    if first.split(" ")[1:2] != ["101"]:
        body = read_body(reader, h, 65536) if hget(h, "content-length") else b""
        raise Fail("%s: expected 101, got %s" % (what, describe(first, h, body)))
    if hget(h, "sec-websocket-accept") != ws_accept(key):
        raise Fail("%s: wrong Sec-WebSocket-Accept %r" % (what, hget(h, "sec-websocket-accept")))
    got = (hget(h, "x-backend", "?"), hget(h, "x-seen-xff", "-") != "-")
    allowed = possible_fn(t0, t1)
    if got not in allowed:
        raise Fail("%s: answered by %s (routed=%s); the routing state allows only %s (%s)"
                   % (what, got[0], got[1], sorted(allowed), possible_fn.window(t0, t1)))
    if got[1] and hget(h, "x-seen-proto") != proto:
        raise Fail("%s: backend saw X-Forwarded-Proto %r, expected %r" % (what, hget(h, "x-seen-proto"), proto))
    ws_session(ctx, rng, sock, reader, what)
    ctx.stats.count("websocket %s %s %s" % (listener, got[0], "routed" if got[1] else "pass-through"))
    ctx.stats.count("requests " + ("intercepted" if listener == "intercepted" else "http"))


def op_websocket(ctx, rng):
    host = "ws.localhost:%d" % ctx.ports["A"]
    listener = "forward" if rng.random() < 0.6 else "reverse"
    sock = connect(ctx.proxy_port if listener == "forward" else ctx.reverse_port)
    try:
        target = "http://%s/ws" % host if listener == "forward" else "/ws"
        ws_upgrade(ctx, rng, sock, Reader(sock), target, host, listener, "http", Possible(ctx, listener, host))
    finally:
        sock.close()


class Gate:
    """Keeps intercepted tunnels out of the windows where local routing is off (their
    pass-through would be a blind tunnel to port 443 of this machine: nothing to verify)."""

    def __init__(self):
        self.cv = threading.Condition()
        self.closed = False
        self.active = 0

    def enter(self):
        with self.cv:
            if self.closed:
                return False
            self.active += 1
            return True

    def leave(self):
        with self.cv:
            self.active -= 1
            self.cv.notify_all()

    def close(self, timeout):
        with self.cv:
            self.closed = True
            return self.cv.wait_for(lambda: self.active == 0, timeout)

    def open(self):
        with self.cv:
            self.closed = False


def op_intercept(ctx, rng):
    if not ctx.gate.enter():
        ctx.stats.count("intercept ops run as blind tunnels (switch off)")
        return op_tunnel(ctx, rng)
    try:
        name = "s%d.secure.localhost" % rng.randrange(8)
        sock, t0, t1 = connect_via_proxy(ctx, "%s:443" % name)
        # the target is pinned when the CONNECT is routed
        possible = Possible(ctx, "forward", name + ":443", pinned=(t0, t1))
        pinned = []

        try:
            plain = rng.random() < 0.1
            if plain:
                tls = sock
                ctx.stats.count("intercept ops with plain HTTP inside the CONNECT")
            else:
                tls = ctx.tls.wrap_socket(sock, server_hostname=name)
                ctx.stats.count("TLS %s %s" % (tls.version(), tls.selected_alpn_protocol()))
            reader = Reader(tls)
            proto = "http" if plain else "https"
            for _ in range(rng.randint(1, 4)):
                req = new_request(rng, name, False, ctx.buf)
                got = exchange(ctx, tls, reader, req, "intercepted", proto, possible)
                if pinned and got != pinned[0]:
                    raise Fail("CONNECT %s: requests in one tunnel reached %s and then %s" % (name, pinned[0], got))
                pinned.append(got)
            if not plain and rng.random() < 0.3:
                ws_upgrade(ctx, rng, tls, reader, "/ws", name, "intercepted", proto, possible)
                ctx.stats.count("websocket inside TLS (wss)")
        finally:
            sock.close()
        ctx.stats.count("intercept ops")
    finally:
        ctx.gate.leave()


OPS = [
    ("forward_http", 30, lambda c, r: op_http(c, r, "forward")),
    ("reverse_http", 20, lambda c, r: op_http(c, r, "reverse")),
    ("tunnel", 15, op_tunnel),
    ("intercept_https", 20, op_intercept),
    ("websocket", 15, op_websocket),
]


class Scheduler:
    """Hands out start times at a steady rate; a backlog over one second is dropped (counted)."""

    def __init__(self, rate, stop):
        self.lock = threading.Lock()
        self.interval = 1.0 / rate
        self.next = mono()
        self.skipped = 0
        self.stop = stop

    def wait(self):
        with self.lock:
            now = mono()
            if self.next < now - 1.0:
                missed = int((now - self.next) / self.interval)
                self.skipped += missed
                self.next += missed * self.interval
            t = self.next
            self.next += self.interval
        delay = t - mono()
        if delay > 0:
            self.stop.wait(delay)
        return not self.stop.is_set()


def worker(ctx, index):
    rng = random.Random(ctx.seed * 1000 + index)
    kinds = [o[0] for o in OPS]
    weights = [o[1] for o in OPS]
    fns = {o[0]: o[2] for o in OPS}
    while ctx.scheduler.wait():
        kind = rng.choices(kinds, weights)[0]
        t0 = mono()
        try:
            fns[kind](ctx, rng)
            ctx.stats.done(kind, mono() - t0, True)
        except Fail as e:
            ctx.stats.done(kind, mono() - t0, False, str(e))
        except Exception as e:  # socket errors, timeouts, TLS errors, parse errors
            ctx.stats.done(kind, mono() - t0, False, "%s: %s: %s" % (kind, type(e).__name__, e))


# ---------------------------------------------------------------------------------------------
# admin API and toggling


def admin_token(ctx):
    """The token Watchtower wrote beside its CA key (ca_key is in the work dir)."""
    if not getattr(ctx, "token", None):
        with open(os.path.join(ctx.work, "admin.token")) as f:
            ctx.token = f.read().strip()
    return ctx.token


def admin(ctx, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", ctx.admin_port, timeout=10)
    try:
        headers = {"Connection": "close"}
        if path.startswith("/api/"):
            headers["Authorization"] = "Bearer " + admin_token(ctx)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw[:200]
        return resp.status, parsed
    finally:
        conn.close()


def live_state(ctx):
    s1, routing = admin(ctx, "GET", "/api/routing")
    s2, routes = admin(ctx, "GET", "/api/routes")
    if s1 != 200 or s2 != 200:
        raise Fail("GET /api/routing, /api/routes: %s %s" % (s1, s2))
    return (routing["enabled"], tuple((r["id"], r["domain"], r["target_port"], r["enabled"]) for r in routes))


def settle(ctx, what, seen, expected, t_from):
    """The live state was found to be `seen` instead of the acknowledged `expected` (counted as a
    failure by the caller). Waits up to 3 s for `expected` to come back; meanwhile requests may
    see either, so one incident is one failure and not a cascade. If it never comes back, the
    model follows what the API says."""
    ctx.stats.count("admin: live state differed from the acknowledged one")
    ctx.model.record(t_from, mono(), seen, what + " (differing state read back)")
    ctx.model.begin(t_from, expected, what + " (acknowledged state again)")
    deadline = mono() + 3
    while mono() < deadline:
        time.sleep(0.05)
        try:
            if live_state(ctx) == expected:
                ctx.model.ack(mono())
                return
        except Exception:
            pass
    ctx.model.ack(mono())
    try:
        ctx.model.record(mono(), mono(), live_state(ctx), what + " (state read back after 3 s)")
    except Exception:
        pass


def change(ctx, what, method, path, body, expect, new_state):
    t_send = mono()
    ctx.model.begin(t_send, new_state, what)
    try:
        try:
            status, reply = admin(ctx, method, path, body)
        finally:
            ctx.model.ack(mono())
        if status != expect:
            raise Fail("%s: %s %s answered %s %r (expected %d)" % (what, method, path, status, reply, expect))
    except Exception as e:
        msg = str(e) if isinstance(e, Fail) else "%s: %s: %s" % (what, type(e).__name__, e)
        ctx.stats.done("admin", mono() - t_send, False, msg)
        try:  # the change may or may not have been made: the model follows what the API says now
            ctx.model.record(t_send, mono(), live_state(ctx), what + " (state read back after a failure)")
        except Exception:
            pass
        return
    ctx.stats.count("admin changes")
    try:
        back = live_state(ctx)
    except Exception as e:
        ctx.stats.done("admin", mono() - t_send, False, "%s: read-back: %s: %s" % (what, type(e).__name__, e))
        return
    if back != new_state:
        ctx.stats.done("admin", mono() - t_send, False, "%s: acknowledged, but read back right after the change as %r, expected %r"
                       % (what, back, new_state))
        settle(ctx, what, back, new_state, t_send)
    else:
        ctx.stats.done("admin", mono() - t_send, True)


def route_body(route):
    _rid, domain, port, enabled = route
    return {"domain": domain, "target_host": "127.0.0.1", "target_port": port, "enabled": enabled}


def toggle_once(ctx, rng, action):
    # Nothing but this thread changes the routes: they must still be as last acknowledged.
    t = mono()
    try:
        back = live_state(ctx)
        if back != ctx.model.current():
            ctx.stats.done("admin", 0, False, "before the next change, the live routing state %r differs from the last one acknowledged, %r"
                           % (back, ctx.model.current()))
            settle(ctx, "between changes", back, ctx.model.current(), ctx.model.last_acked())
    except Exception as e:
        ctx.stats.done("admin", mono() - t, False, "read-back: %s: %s" % (type(e).__name__, e))
    routing, routes = ctx.model.current()
    by_id = {r[0]: r for r in routes}
    B, C = ctx.ports["B"], ctx.ports["C"]
    if action == "global":
        if not ctx.gate.close(OP_TIMEOUT + 5):
            ctx.gate.open()
            return
        try:
            change(ctx, "switch off", "PUT", "/api/routing", {"enabled": False}, 200, (False, routes))
            ctx.stop.wait(1.0)
            change(ctx, "switch on", "PUT", "/api/routing", {"enabled": True}, 200, (True, ctx.model.current()[1]))
            ctx.stats.count("switch off windows")
        finally:
            ctx.gate.open()
        return
    if action == "tmp":
        if "tmp" in by_id:
            new = tuple(r for r in routes if r[0] != "tmp")
            change(ctx, "remove route tmp", "DELETE", "/api/routes/tmp", None, 204, (routing, new))
        else:
            r = ("tmp", "tmp.localhost", C, True)
            body = dict(route_body(r), id="tmp")
            change(ctx, "add route tmp", "POST", "/api/routes", body, 201, (routing, routes + (r,)))
        return
    rid = action
    old = by_id[rid]
    if rid in ("flip", "ws"):
        new_route = (rid, old[1], old[2], not old[3])
    else:  # retarget between B and C
        new_route = (rid, old[1], C if old[2] == B else B, old[3])
    new = tuple(new_route if r[0] == rid else r for r in routes)
    change(ctx, "route %s -> %s" % (rid, new_route), "PUT", "/api/routes/" + rid, route_body(new_route), 200, (routing, new))


def toggler(ctx):
    rng = random.Random(ctx.seed + 7)
    actions = ["flip", "api", "ws", "secure", "tmp", "global"]
    weights = [3, 2, 2, 2, 2, 1]
    n = 0
    while not ctx.stop.wait(ctx.toggle_every):
        n += 1
        # every fifth time a burst of changes back to back (a user clicking through the dashboard)
        for _ in range(ctx.burst if n % 5 == 0 else 1):
            if ctx.stop.is_set():
                break
            toggle_once(ctx, rng, rng.choices(actions, weights)[0])


# ---------------------------------------------------------------------------------------------
# sampling


def proc_sample(pid):
    rss = threads = None
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    fds = len(os.listdir("/proc/%d/fd" % pid))
    return rss, fds, threads


def sampler(ctx):
    last_print = 0.0
    last_ops = 0
    while not ctx.stop.wait(0.5 - ((mono() - ctx.t_load) % 0.5)):
        t = mono() - ctx.t_load
        if ctx.wt.poll() is not None:
            ctx.died = "watchtower exited with status %s at %.1fs" % (ctx.wt.returncode, t)
            ctx.stats.done("admin", 0, False, ctx.died)
            ctx.stop.set()
            return
        try:
            rss, fds, threads = proc_sample(ctx.wt.pid)
        except OSError:
            continue
        ops, fails = ctx.stats.totals()
        sample = {"t": round(t, 1), "rss_kib": rss, "fds": fds, "threads": threads, "ops": ops, "failed": fails}
        if t - last_print >= ctx.sample_every - 0.5:
            try:
                _, st = admin(ctx, "GET", "/api/stats")
                sample["open_connections"] = sum(st["open_connections"].values())
                sample["exchanges"] = st["exchanges"]
            except Exception as e:
                sample["open_connections"] = None
                ctx.stats.done("admin", 0, False, "GET /api/stats: %s: %s" % (type(e).__name__, e))
            rate = (ops - last_ops) / max(t - last_print, 1e-9)
            print("  %5.0fs %8d %7.1f %5d %9.2f %5d %4d %6s %7d" % (
                t, ops, rate, fails, rss / 1024, fds, threads,
                sample.get("open_connections"), ctx.stats.counts.get("admin changes", 0)), flush=True)
            last_print, last_ops = t, ops
            sample["printed"] = True
        ctx.samples.append(sample)


# ---------------------------------------------------------------------------------------------
# orchestration


def free_ports(n, avoid):
    ports = []
    while len(ports) < n:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        s.close()
        if p not in ports and p not in avoid:
            ports.append(p)
    return ports


def note_pid(ctx, pid):
    with open(os.path.join(ctx.work, "pids"), "a") as f:
        f.write("%d\n" % pid)


def start_backends(ctx):
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "backends"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, start_new_session=True)
    note_pid(ctx, proc.pid)
    ctx.children.append(proc)
    line = proc.stdout.readline()
    if not line:
        raise SystemExit("soak: the backends did not start")
    return proc, json.loads(line)


def write_config(ctx):
    B, C = ctx.ports["B"], ctx.ports["C"]
    routes = [
        ("home", "home.localhost", C, True),  # first: what localhost on the reverse port reaches
        ("flip", "flip.localhost", B, True),  # enabled <-> disabled
        ("api", "api.localhost", B, True),  # target B <-> C
        ("secure", "*.secure.localhost", B, True),  # intercepted; target B <-> C
        ("ws", "ws.localhost", B, True),  # WebSockets; enabled <-> disabled
        ("tmp", "tmp.localhost", C, True),  # removed and added again
    ]
    text = "# written by benches/tools/soak.py\n[proxy]\nlisten = \"127.0.0.1\"\n"
    text += "proxy_port = %d\nreverse_http_port = %d\nlocal_routing = true\n" % (ctx.proxy_port, ctx.reverse_port)
    if os.environ.get("WT_WORKERS"):
        text += "workers = %d\n" % int(os.environ["WT_WORKERS"])
    text += "\n[tls]\nca_cert = \"ca.pem\"\nca_key = \"ca-key.pem\"\n"
    text += "\n[log]\napi_log = \"api.jsonl\"\n"
    text += "\n[timeouts]\nidle = %g\n" % ctx.idle
    text += "\n[admin]\nport = %d\n" % ctx.admin_port
    for rid, domain, port, enabled in routes:
        text += "\n[[route]]\nid = \"%s\"\ndomain = \"%s\"\ntarget_host = \"127.0.0.1\"\ntarget_port = %d\nenabled = %s\n" % (
            rid, domain, port, "true" if enabled else "false")
    with open(ctx.config, "w") as f:
        f.write(text)
    return (True, tuple(routes))


def stderr_reader(ctx, proc, lines):
    """Watchtower's stderr, each line stamped with seconds since the load started."""
    with open(ctx.stderr_path, "a") as out:
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            t0 = getattr(ctx, "t_load", None)
            stamped = "[%8.3f] %s" % (mono() - t0, line) if t0 else "[ start  ] " + line
            lines.append(stamped)
            out.write(stamped + "\n")
            out.flush()
            if t0 and ("config reloaded from" in line or " WARN " in line or " ERROR " in line or "panicked" in line):
                print("   watchtower: %s" % stamped, file=sys.stderr, flush=True)


def start_watchtower(ctx):
    for attempt in range(5):
        ctx.proxy_port, ctx.reverse_port, ctx.admin_port = free_ports(3, set(ctx.ports.values()))
        initial = write_config(ctx)
        # --quiet: no access lines; RUST_LOG=info: still the admin changes and reloads
        env = dict(os.environ, RUST_LOG=os.environ.get("SOAK_RUST_LOG", "info"))
        proc = subprocess.Popen([ctx.wt_bin, "--config", ctx.config, "--quiet"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ctx.work,
                                start_new_session=True, env=env)
        note_pid(ctx, proc.pid)
        lines = []
        ctx.stderr_lines = lines
        threading.Thread(target=stderr_reader, args=(ctx, proc, lines), daemon=True).start()
        deadline = mono() + 15
        while mono() < deadline:
            ready = [l for l in lines if " ready: " in l]
            if ready:
                ctx.children.append(proc)
                return proc, initial, ready[0]
            if proc.poll() is not None:
                time.sleep(0.2)
                break
            time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        text = "\n".join(lines)
        if "in use" not in text or attempt == 4:
            raise SystemExit("soak: watchtower did not start:\n" + text)
    raise SystemExit("soak: watchtower did not start")


def window_median(samples, lo, hi, key):
    vals = [s[key] for s in samples if lo <= s["t"] <= hi and s.get(key) is not None]
    return (statistics.median(vals), len(vals)) if vals else (None, 0)


def pct(values, q):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def check_api_log(ctx, expected):
    kinds, bad, total = {}, [], 0
    try:
        with open(os.path.join(ctx.work, "api.jsonl")) as f:
            for line in f:
                total += 1
                try:
                    rec = json.loads(line)
                except ValueError:
                    bad.append("not JSON: %r" % line[:120])
                    continue
                k = rec.get("kind")
                kinds[k] = kinds.get(k, 0) + 1
                if rec.get("error") is not None or rec.get("status") not in (200, 101):
                    if len(bad) < 10:
                        bad.append(line.strip()[:300])
    except OSError as e:
        bad.append("cannot read the API log: %s" % e)
    return {"lines": total, "by_kind": kinds, "expected_by_kind": expected, "bad": bad}


def main():
    ctx = Ctx()
    ctx.minutes = float(os.environ.get("SOAK_MINUTES", "10"))
    ctx.duration = ctx.minutes * 60
    ctx.rate = float(os.environ.get("RATE", "200"))
    ctx.threads = int(os.environ.get("SOAK_THREADS", "32"))
    ctx.toggle_every = float(os.environ.get("TOGGLE_EVERY", "2"))
    ctx.sample_every = float(os.environ.get("SAMPLE_EVERY", str(max(2, min(10, round(ctx.duration / 12))))))
    ctx.idle = float(os.environ.get("SOAK_IDLE", "10"))
    ctx.burst = max(1, int(os.environ.get("TOGGLE_BURST", "3")))
    ctx.seed = int(os.environ.get("SOAK_SEED", str(random.randrange(1 << 30))))
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))
    ctx.wt_bin = os.environ.get("WT_BIN") or os.path.join(repo, "target", "release", "watchtower")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out = os.environ.get("OUT") or os.path.join(repo, "benches", "results", "soak-%s" % stamp)
    for ext in (".md", ".json"):
        if out.endswith(ext):
            out = out[: -len(ext)]
    ctx.work = os.environ.get("WORK") or __import__("tempfile").mkdtemp(prefix="watchtower-soak.")
    ctx.config = os.path.join(ctx.work, "watchtower.toml")
    ctx.stderr_path = os.path.join(ctx.work, "watchtower.stderr")
    ctx.children = []
    ctx.stats = Stats()
    ctx.stop = threading.Event()
    ctx.gate = Gate()
    ctx.samples = []
    ctx.died = None
    ctx.buf = make_buf()

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, on_signal)

    try:
        return run(ctx, out, repo)
    finally:
        ctx.stop.set()
        for proc in ctx.children:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                proc.wait()


def run(ctx, out, repo):
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load_start = open("/proc/loadavg").read().split()[0]
    print("== Watchtower soak test (%s): %g min at %g operations/s, %d client threads, a route change every %g s"
          " (every fifth a burst of %d)" % (started, ctx.minutes, ctx.rate, ctx.threads, ctx.toggle_every, ctx.burst), flush=True)
    if not os.access(ctx.wt_bin, os.X_OK):
        raise SystemExit("soak: no Watchtower binary at %s" % ctx.wt_bin)
    version = subprocess.run([ctx.wt_bin, "--version"], capture_output=True, text=True).stdout.strip()
    _, ctx.ports = start_backends(ctx)
    ctx.backend_by_port = {ctx.ports[k]: k for k in "ABC"}
    ctx.wt, initial, ready = start_watchtower(ctx)
    ctx.model = Model(*initial)
    A, E = ctx.ports["A"], ctx.ports["echo"]
    ctx.fwd_hosts = ["flip.localhost:%d" % A, "api.localhost:%d" % A, "tmp.localhost:%d" % A, "home.localhost:%d" % A]
    ctx.rev_hosts = ctx.fwd_hosts + ["localhost:%d" % A]
    ctx.tunnel_targets = ["127.0.0.1:%d" % E, "echo.localhost:%d" % E]
    ctx.tls = ssl.create_default_context(cafile=os.path.join(ctx.work, "ca.pem"))
    ctx.tls.set_alpn_protocols(["http/1.1"])
    print("   %s (%s), pid %d, seed %d; load average %s" % (version, ctx.wt_bin, ctx.wt.pid, ctx.seed, load_start))
    print("   %s" % ready)
    print("   backends A:%d B:%d C:%d echo:%d; work dir %s" % (A, ctx.ports["B"], ctx.ports["C"], E, ctx.work))
    st = admin(ctx, "GET", "/healthz")
    if st != (200, {"status": "ok"}):
        raise SystemExit("soak: /healthz answered %r" % (st,))
    if live_state(ctx) != ctx.model.current():
        raise SystemExit("soak: the admin API's routes differ from the config written: %r" % (live_state(ctx),))
    time.sleep(0.5)
    idle_rss, idle_fds, idle_threads = proc_sample(ctx.wt.pid)
    print("   before the load: RSS %.2f MiB, %d fds, %d threads" % (idle_rss / 1024, idle_fds, idle_threads))
    print("   %5s %8s %7s %5s %9s %5s %4s %6s %7s" % ("time", "ops", "ops/s", "fail", "RSS MiB", "fds", "thr", "conns", "changes"),
          flush=True)

    ctx.t_load = mono()
    ctx.stats.t0 = ctx.t_load
    ctx.scheduler = Scheduler(ctx.rate, ctx.stop)
    threads = [threading.Thread(target=worker, args=(ctx, i), daemon=True) for i in range(ctx.threads)]
    threads.append(threading.Thread(target=toggler, args=(ctx,), daemon=True))
    sampler_thread = threading.Thread(target=sampler, args=(ctx,), daemon=True)
    for t in threads:
        t.start()
    sampler_thread.start()
    ctx.stop.wait(ctx.duration)
    ctx.stop.set()
    t_end = mono() - ctx.t_load
    for t in threads:
        t.join(OP_TIMEOUT + 15)
    sampler_thread.join(5)
    hung = sum(t.is_alive() for t in threads)
    if hung:
        ctx.stats.done("admin", 0, False, "%d client threads still busy %ds after the end" % (hung, OP_TIMEOUT + 15))

    # Drain: with the load stopped, Watchtower closes its idle upstream connections after
    # [timeouts] idle; its descriptors must come back to where they were before the load.
    drain = {"waited_s": None, "fds": None, "rss_kib": None}
    t_drain = mono()
    alive = ctx.wt.poll() is None
    while alive:
        rss, fds, _ = proc_sample(ctx.wt.pid)
        drain.update(fds=fds, rss_kib=rss, waited_s=round(mono() - t_drain, 1))
        if fds <= idle_fds or mono() - t_drain > ctx.idle + 6:
            break
        time.sleep(0.25)
    stats_end = None
    if alive:
        try:
            _, stats_end = admin(ctx, "GET", "/api/stats")
        except Exception as e:
            stats_end = {"error": str(e)}
    # SIGTERM: in-flight exchanges finish, the log is flushed, exit 0.
    exit_code = None
    if alive:
        ctx.wt.send_signal(signal.SIGTERM)
        try:
            exit_code = ctx.wt.wait(15)
        except subprocess.TimeoutExpired:
            exit_code = "still running 15 s after SIGTERM"
    else:
        exit_code = ctx.wt.returncode
    time.sleep(0.2)
    stderr_lines = list(ctx.stderr_lines)

    s = ctx.stats
    counts = dict(s.counts)
    expected_log = {
        "http": counts.get("requests http", 0),
        "intercepted": counts.get("requests intercepted", 0),
        "tunnel": counts.get("tunnels blind", 0),
    }
    api_log = check_api_log(ctx, expected_log)
    total_ops, total_fails = s.totals()

    # Flatness: medians over a window after the baseline point and over the end of the run.
    base_t = 120.0 if ctx.duration >= 180 else ctx.duration / 5
    win = min(30.0, max(3.0, ctx.duration / 10))
    base_rss, n_b = window_median(ctx.samples, base_t, base_t + win, "rss_kib")
    end_rss, n_e = window_median(ctx.samples, t_end - win, t_end, "rss_kib")
    base_fds, _ = window_median(ctx.samples, base_t, base_t + win, "fds")
    end_fds, _ = window_median(ctx.samples, t_end - win, t_end, "fds")
    rss_allow = max(2048, 0.10 * base_rss) if base_rss else None
    checks = []

    def check(name, ok, detail):
        checks.append({"check": name, "pass": bool(ok), "detail": detail})

    check("zero failed operations", total_fails == 0,
          "%d failed of %d (admin changes and read-backs included)" % (total_fails, total_ops))
    achieved = total_ops / max(t_end, 1e-9)
    check("steady rate", achieved >= 0.9 * ctx.rate,
          "%.1f operations/s of the %g asked (at least 90 %% needed; %d start times dropped because the client was behind)"
          % (achieved, ctx.rate, ctx.scheduler.skipped))
    check("Watchtower ran to the end", ctx.died is None and alive, ctx.died or "alive until SIGTERM")
    if base_rss is None or end_rss is None:
        check("RSS flat", False, "not enough samples (baseline %d, end %d)" % (n_b, n_e))
        check("fds flat", False, "not enough samples")
    else:
        check("RSS flat", end_rss <= base_rss + rss_allow,
              "median %.2f MiB in [%.0fs, %.0fs] -> %.2f MiB in [%.0fs, %.0fs]: %+.2f MiB, allowed +%.2f MiB (the larger of 10 %% and 2 MiB)"
              % (base_rss / 1024, base_t, base_t + win, end_rss / 1024, t_end - win, t_end,
                 (end_rss - base_rss) / 1024, rss_allow / 1024))
        check("fds flat", end_fds <= base_fds + 16,
              "median %g in [%.0fs, %.0fs] -> %g at the end: %+g, allowed +16"
              % (base_fds, base_t, base_t + win, end_fds, end_fds - base_fds))
    if drain["fds"] is not None:
        check("fds back after the load", drain["fds"] <= idle_fds + 2,
              "%d before the load, %d after %.1f s without load (idle connections close after %g s); allowed +2"
              % (idle_fds, drain["fds"], drain["waited_s"], ctx.idle))
    check("clean exit on SIGTERM", exit_code == 0, "exit status %s" % exit_code)
    # The soak never edits the config file: a reload that applies anything overrides the admin API.
    reloads = [l for l in stderr_lines if "config reloaded from" in l]
    check("no reload overrode an admin change", not reloads,
          "%d times the file watcher applied the file over the admin API's state%s" % (
              len(reloads), (": " + "; ".join(reloads[:3])) if reloads else ""))
    warnings = [l for l in stderr_lines if " WARN " in l or " ERROR " in l]
    panics = [l for l in stderr_lines if "panicked" in l or "RUST_BACKTRACE" in l]
    check("no panics on stderr", not panics, "; ".join(panics[:3]) or "%d stderr lines, none a panic" % len(stderr_lines))
    dropped = (stats_end or {}).get("log_records_dropped")
    log_ok = (not api_log["bad"] and dropped == 0 and
              all(api_log["by_kind"].get(k, 0) == v for k, v in expected_log.items()) and
              api_log["lines"] == sum(expected_log.values()))
    check("API log has every exchange", log_ok or total_fails > 0 and not api_log["bad"],
          "%d lines %s; the client counted %s; dropped %s%s" % (
              api_log["lines"], json.dumps(api_log["by_kind"], sort_keys=True), json.dumps(expected_log, sort_keys=True),
              dropped, ("; bad: " + " | ".join(api_log["bad"][:3])) if api_log["bad"] else ""))
    verdict = "PASS" if all(c["pass"] for c in checks) else "FAIL"

    kinds = {}
    for k in Stats.KINDS:
        lat = s.latency[k]
        kinds[k] = {"ops": s.ops[k], "failed": s.fails[k],
                    "p50_ms": round(pct(lat, 0.5) * 1000, 2) if lat else None,
                    "p99_ms": round(pct(lat, 0.99) * 1000, 2) if lat else None,
                    "max_ms": round(max(lat) * 1000, 2) if lat else None}
    git_rev = subprocess.run(["git", "-C", repo, "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
    result = {
        "verdict": verdict,
        "started": started,
        "settings": {"minutes": ctx.minutes, "rate": ctx.rate, "threads": ctx.threads, "toggle_every_s": ctx.toggle_every,
                     "sample_every_s": ctx.sample_every, "burst": ctx.burst, "idle_timeout_s": ctx.idle, "seed": ctx.seed,
                     "wt_workers": os.environ.get("WT_WORKERS") or "default (one per core)"},
        "environment": {"watchtower": version, "binary": ctx.wt_bin, "git": git_rev, "uname": " ".join(platform.uname()),
                        "nproc": os.cpu_count(), "python": platform.python_version(), "openssl": ssl.OPENSSL_VERSION,
                        "load_average_start": load_start, "load_average_end": open("/proc/loadavg").read().split()[0]},
        "duration_s": round(t_end, 1),
        "ops_total": total_ops, "failed_total": total_fails,
        "achieved_rate": round(achieved, 1), "skipped_slots": ctx.scheduler.skipped,
        "by_kind": kinds, "counts": counts,
        "failures": [{"t": t, "kind": k, "message": m} for t, k, m in s.failures],
        "memory": {"idle_before": {"rss_kib": idle_rss, "fds": idle_fds, "threads": idle_threads},
                   "baseline": {"from_s": base_t, "to_s": base_t + win, "rss_kib": base_rss, "fds": base_fds},
                   "end": {"from_s": round(t_end - win, 1), "to_s": round(t_end, 1), "rss_kib": end_rss, "fds": end_fds},
                   "after_drain": drain,
                   "rss_max_kib": max((x["rss_kib"] for x in ctx.samples), default=None),
                   "fds_max": max((x["fds"] for x in ctx.samples), default=None)},
        "changes": ctx.model.history(ctx.t_load),
        "api_log": api_log, "stats_at_end": stats_end, "exit_code": exit_code,
        "stderr_reloads": reloads, "stderr_warnings": warnings[:50],
        "stderr_tail": stderr_lines[-20:],
        "checks": checks,
        "samples": ctx.samples,
    }
    md = render_md(result)
    print()
    print(md)
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out + ".json", "w") as f:
        json.dump(result, f, indent=1)
    with open(out + ".md", "w") as f:
        f.write(md)
    print("written: %s.md, %s.json" % (out, out))
    return 0 if verdict == "PASS" else 1


def render_md(r):
    m = r["memory"]
    lines = ["# Watchtower soak test: %s" % r["verdict"], ""]
    st = r["settings"]
    env = r["environment"]
    lines.append("%s, %s min at %g operations/s (achieved %.1f/s, %d slots skipped), %d client threads, "
                 "a route change every %g s (every fifth a burst of %d), Watchtower workers: %s, [timeouts] idle = %g s, seed %d."
                 % (r["started"], st["minutes"], st["rate"], r["achieved_rate"], r["skipped_slots"], st["threads"],
                    st["toggle_every_s"], st["burst"], st["wt_workers"], st["idle_timeout_s"], st["seed"]))
    lines.append("%s (git %s), %s cores, load average %s at the start, %s at the end." % (
        env["watchtower"], env["git"], env["nproc"], env["load_average_start"], env["load_average_end"]))
    lines += ["", "| check | result | detail |", "|---|---|---|"]
    for c in r["checks"]:
        lines.append("| %s | %s | %s |" % (c["check"], "pass" if c["pass"] else "**FAIL**", c["detail"].replace("|", "/")))
    lines += ["", "| operation | ops | failed | p50 ms | p99 ms | max ms |", "|---|---:|---:|---:|---:|---:|"]
    for k, v in r["by_kind"].items():
        lines.append("| %s | %d | %d | %s | %s | %s |" % (k, v["ops"], v["failed"], v["p50_ms"], v["p99_ms"], v["max_ms"]))
    lines += ["", "| memory and descriptors | RSS MiB | fds |", "|---|---:|---:|"]
    f = lambda kib: "%.2f" % (kib / 1024) if kib is not None else "-"
    lines.append("| before the load | %s | %s |" % (f(m["idle_before"]["rss_kib"]), m["idle_before"]["fds"]))
    lines.append("| baseline (median %gs-%gs) | %s | %s |" % (m["baseline"]["from_s"], m["baseline"]["to_s"],
                                                             f(m["baseline"]["rss_kib"]), m["baseline"]["fds"]))
    lines.append("| end (median %gs-%gs) | %s | %s |" % (m["end"]["from_s"], m["end"]["to_s"], f(m["end"]["rss_kib"]), m["end"]["fds"]))
    lines.append("| peak | %s | %s |" % (f(m["rss_max_kib"]), m["fds_max"]))
    lines.append("| %s s after the load | %s | %s |" % (m["after_drain"]["waited_s"], f(m["after_drain"]["rss_kib"]), m["after_drain"]["fds"]))
    lines += ["", "Details:", ""]
    for k in sorted(r["counts"]):
        lines.append("- %s: %d" % (k, r["counts"][k]))
    if r["failures"]:
        lines += ["", "First failures:", ""]
        for fl in r["failures"][:10]:
            lines.append("- %.1fs %s: %s" % (fl["t"], fl["kind"], fl["message"]))
    if r["stderr_reloads"] or r["stderr_warnings"]:
        lines += ["", "Watchtower's stderr (seconds since the load started):", ""]
        for l in (r["stderr_reloads"][:10] + r["stderr_warnings"][:10]):
            lines.append("- `%s`" % l)
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["backends"]:
        backends_main()
    else:
        sys.exit(main())
