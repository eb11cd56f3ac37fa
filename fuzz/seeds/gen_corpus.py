#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into fuzz/corpus/<target>/.

Run from anywhere: `python3 fuzz/seeds/gen_corpus.py`. Seeds are small, valid inputs in
each target's input format (see the doc comment of each fuzz target): OTLP protobuf
requests encoded here with a minimal protobuf writer, the OTLP/JSON fixtures of
proto/tests/fixtures, the example configs, WAL and buffer segments with real checksums.
"""
import gzip
import os
import struct
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(ROOT)
CORPUS = os.path.join(ROOT, "corpus")


# --- a minimal protobuf writer ----------------------------------------------------------

def varint(n):
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(field, wire):
    return varint(field << 3 | wire)


def f_varint(field, n):
    return key(field, 0) + varint(n)


def f_fixed64(field, n):
    return key(field, 1) + struct.pack("<Q", n)


def f_double(field, x):
    return key(field, 1) + struct.pack("<d", x)


def f_bytes(field, b):
    if isinstance(b, str):
        b = b.encode()
    return key(field, 2) + varint(len(b)) + b


def msg(field, *parts):
    return f_bytes(field, b"".join(parts))


def any_str(s):
    return f_bytes(1, s)  # AnyValue.string_value


def kv(k, value_parts):
    # KeyValue { key = 1, value = 2 (AnyValue) }
    return f_bytes(1, k) + f_bytes(2, value_parts)


def attr(field, k, v):
    if isinstance(v, bool):
        val = f_varint(2, int(v))
    elif isinstance(v, int):
        val = f_varint(3, v)
    elif isinstance(v, float):
        val = f_double(4, v)
    else:
        val = any_str(v)
    return f_bytes(field, kv(k, val))


T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


def resource(service):
    return msg(1, attr(1, "service.name", service), attr(1, "host.name", "h1"))


def traces_request():
    trace_id = bytes(range(1, 17))
    span = b"".join([
        f_bytes(1, trace_id),
        f_bytes(2, bytes([1, 2, 3, 4, 5, 6, 7, 8])),
        f_bytes(5, "POST /pay"),
        f_varint(6, 2),  # SERVER
        f_fixed64(7, T0),
        f_fixed64(8, T0 + 250_000_000),
        attr(9, "http.route", "/pay"),
        attr(9, "http.status_code", 500),
        msg(11, f_fixed64(1, T0 + 1000), f_bytes(2, "exception"), attr(3, "exception.type", "Declined")),
        msg(15, f_bytes(2, "card declined"), f_varint(3, 2)),  # status ERROR
    ])
    child = b"".join([
        f_bytes(1, trace_id),
        f_bytes(2, bytes([9, 9, 9, 9, 9, 9, 9, 9])),
        f_bytes(4, bytes([1, 2, 3, 4, 5, 6, 7, 8])),
        f_bytes(5, "SELECT stock"),
        f_varint(6, 3),  # CLIENT
        f_fixed64(7, T0 + 10),
        f_fixed64(8, T0 + 200_000_000),
        msg(13, f_bytes(1, bytes(range(16, 32))), f_bytes(2, bytes(8 * [3])), attr(4, "link", "yes")),
    ])
    scope = msg(2, msg(1, f_bytes(1, "my.library"), f_bytes(2, "1.0")), f_bytes(2, span), f_bytes(2, child))
    return msg(1, resource("payment"), scope, f_bytes(3, "https://opentelemetry.io/schemas/1.4.0"))


def logs_request():
    rec = b"".join([
        f_fixed64(1, T0),
        f_varint(2, 17),  # ERROR
        f_bytes(3, "ERROR"),
        f_bytes(5, any_str("payment declined for card 4242")),
        attr(6, "error.type", "CardDeclined"),
        attr(6, "retry", False),
        attr(6, "amount", 12.5),
        f_bytes(9, bytes(range(1, 17))),
        f_bytes(10, bytes([1, 2, 3, 4, 5, 6, 7, 8])),
    ])
    rec2 = b"".join([
        f_fixed64(11, T0 + 5),  # observed time only
        f_bytes(3, "warning"),
        f_bytes(5, f_bytes(6, f_bytes(1, kv("k", any_str("v"))))),  # kvlist body
    ])
    scope = msg(2, msg(1, f_bytes(1, "logger")), f_bytes(2, rec), f_bytes(2, rec2))
    return msg(1, resource("checkout"), scope)


def metrics_request():
    gauge_point = b"".join([attr(7, "cpu", "0"), f_fixed64(3, T0), f_double(4, 0.75)])
    sum_point = b"".join([f_fixed64(2, T0 - 10**9), f_fixed64(3, T0), key(6, 1) + struct.pack("<q", 42)])
    hist_point = b"".join([
        f_fixed64(2, T0 - 10**9), f_fixed64(3, T0), f_fixed64(4, 3), f_double(5, 0.6),
        f_bytes(6, struct.pack("<3Q", 1, 1, 1)), f_bytes(7, struct.pack("<2d", 0.1, 0.5)),
    ])
    metrics = [
        msg(2, f_bytes(1, "system.cpu.utilization"), f_bytes(3, "1"), msg(5, f_bytes(1, gauge_point))),
        msg(2, f_bytes(1, "http.requests"), f_bytes(3, "{request}"),
            msg(7, f_bytes(1, sum_point), f_varint(2, 2), f_varint(3, 1))),
        msg(2, f_bytes(1, "http.server.request.duration"), f_bytes(3, "s"),
            msg(9, f_bytes(1, hist_point), f_varint(2, 2))),
    ]
    scope = msg(2, msg(1, f_bytes(1, "meter")), *metrics)
    return msg(1, resource("inventory"), scope)


PROTO = {0: traces_request(), 1: logs_request(), 2: metrics_request()}


def fixture(name):
    with open(os.path.join(REPO, "proto", "tests", "fixtures", name), "rb") as f:
        return f.read()


JSON = {0: fixture("trace.json"), 1: fixture("logs.json"), 2: fixture("metrics.json")}


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- otlp_protobuf / otlp_json -----------------------------------------------------------

for sig, name in [(0, "traces"), (1, "logs"), (2, "metrics")]:
    write("otlp_protobuf", f"{name}-http", bytes([sig]) + PROTO[sig])
    write("otlp_protobuf", f"{name}-grpc-enrich-tight", bytes([sig | 0x10 | 0x0C]) + PROTO[sig])
    write("otlp_json", name, bytes([sig]) + JSON[sig])
write("otlp_protobuf", "empty-logs", b"\x01")
write("otlp_json", "empty-traces", b"\x00{}")
write("otlp_json", "logs-edge-values", b"\x01" + (
    b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":"1767225600000000000",'
    b'"severityNumber":"SEVERITY_NUMBER_WARN","body":{"arrayValue":{"values":[{"doubleValue":"NaN"},'
    b'{"intValue":"-9223372036854775808"},{"bytesValue":"+/8="},{"kvlistValue":{"values":[{"key":"k",'
    b'"value":{"boolValue":true}}]}}]}},"traceId":"5b8efff798038103d269b633813fc60c"}]}]}]}'))

# --- http_handlers: path, content-type, content-encoding, flags, chunk size, body --------

write("http_handlers", "traces-protobuf", bytes([0, 0, 0, 0x02, 0]) + PROTO[0])
write("http_handlers", "logs-json-gzip", bytes([1, 1, 1, 0x01, 0]) + JSON[1])
write("http_handlers", "metrics-protobuf-zstd-chunked", bytes([2, 2, 2, 0x11, 40]) + PROTO[2])
write("http_handlers", "logs-protobuf-small-limits", bytes([1, 0, 0, 0x08 | 0x80, 0]) + PROTO[1])
write("http_handlers", "traces-raw-gzip-garbage", bytes([0, 4, 4, 0x00, 0]) + gzip.compress(b"\x0a\x00")[:-3])
write("http_handlers", "get-custom-path", bytes([6, 5, 0, 0x40]) + bytes([8]) + b"/v1/logs" + bytes([0]))

# --- log_query: selector, then a query (bit 0 clear) or a URL query string ---------------

for i, q in enumerate([
    b"payment AND attributes.error.type:CardDeclined",
    b"service:inventory OR severity:error",
    b'body:"stock lookup" -resource.host.name:h2',
    b"attributes.http.status_code:[400 TO 499] AND trace_id:*",
]):
    write("log_query", f"q{i}", bytes([i << 1]) + q)
write("log_query", "params", b"\x01q=declined&service=payment&severity=warn&from=15m&to=now&limit=3")
write("log_query", "params-rfc3339", b"\x01q=*&from=2025-12-31T23%3A00%3A00Z&to=2026-01-01T00%3A00%3A00.5%2B01%3A00"
      b"&min_duration=250ms&attr.http.route=%2Fpay&trace_id=0102030405060708090a0b0c0d0e0f10")

# --- wal_reader: segments as the collector's WAL writes them -----------------------------


def wal_record(lsn, tag, payload):
    crc = zlib.crc32(struct.pack("<Q", lsn) + bytes([tag]) + payload)
    return struct.pack("<IIQ", len(payload), crc, lsn) + bytes([tag]) + payload


seg1 = wal_record(1, 1, PROTO[0]) + wal_record(2, 2, PROTO[1]) + wal_record(3, 3, PROTO[2])
seg2 = wal_record(4, 2, PROTO[1]) + wal_record(5, 1, PROTO[0])[:-7]  # torn tail
raw = bytes([0b10, 0, 1, 0]) + struct.pack("<H", len(seg1)) + seg1 + seg2
write("wal_reader", "raw-two-segments-torn", raw)
write("wal_reader", "raw-one-segment", bytes([0, 2, 0, 0]) + seg1)
structured = bytes([1, 0, 0, 0])
for ctl, payload in [(1, PROTO[0]), (2, PROTO[1]), (3 | 8, PROTO[2]), (2 | 4, b"bad crc"), (2, PROTO[1])]:
    structured += bytes([ctl]) + struct.pack("<H", len(payload)) + payload
write("wal_reader", "structured", structured)

# --- buffer_reader: segments as the agent's disk buffer writes them ----------------------


def buf_record(seq, tag, items, positions, payload):
    body = struct.pack("<QQBIH", seq, T0, tag, items, len(positions))
    for file_id, offset in positions:
        body += struct.pack("<QQ", file_id, offset)
    body += payload
    return struct.pack("<II", len(body), zlib.crc32(body)) + body


b1 = buf_record(1, 2, 2, [(7, 100)], PROTO[1]) + buf_record(2, 1, 2, [], PROTO[0])
b2 = buf_record(3, 3, 3, [(7, 200), (8, 5)], PROTO[2])
damaged = bytearray(b2 + buf_record(4, 2, 2, [], PROTO[1]))
damaged[30] ^= 0x40
write("buffer_reader", "raw-two-segments", bytes([0b10, 0, 0, 0]) + struct.pack("<H", len(b1)) + b1 + b2)
write("buffer_reader", "raw-damaged-acked", bytes([0, 1, len(b1) & 0xFF, len(b1) >> 8]) + bytes(damaged)
      + b"\x00" * 40)
structured = bytes([1, 0, 0, 0])
for ctl, items, npos, payload in [(2, 2, 1, PROTO[1]), (1, 2, 0, PROTO[0]), (3 | 8, 3, 2, PROTO[2]),
                                  (2 | 4, 1, 0, b"bad"), (2, 2, 0, PROTO[1])]:
    structured += bytes([ctl, items, npos]) + b"".join(bytes([7]) + struct.pack("<H", 10 * (i + 1))
                                                       for i in range(npos))
    structured += struct.pack("<H", len(payload)) + payload
write("buffer_reader", "structured", structured)

# --- config: selector (0 collector, 1 agent, 2 tui; bit 2 from a file), then TOML --------

for sel, name in [(0, "collector"), (1, "agent"), (2, "tui")]:
    with open(os.path.join(REPO, "config", "examples", f"{name}.toml"), "rb") as f:
        text = f.read()
    write("config", name, bytes([sel]) + text)
write("config", "collector-from-file-alerts", bytes([4]) + b"""
retention = "7d"
[limits]
max_request_size = "4MiB"
max_attributes = 64
[[alerts]]
name = "CheckoutSlow"
service = "checkout"
signal = "latency_p99"
op = ">"
threshold = 500
window = "1m"
for = "30s"
summary = "p99 of {{service}} is {{value}} ms"
receivers = ["oncall"]
[receivers.oncall]
url = "http://10.0.0.1:9000/hook"
allowed_networks = ["10.0.0.0/8"]
""")
write("config", "agent-bad-key", bytes([1]) + b"[buffer]\nmax_size = \"1GiB\"\nwhen_full = \"drop_oldest\"\nbogus = 1\n")

# --- span_block: spans the harness builds into a block, whole or damaged ----------------
# 5 bytes per span: trace, span id, parent choice, start, shape (see the target's doc).
spans = b"".join(bytes([t, i, p, s, shape]) for t, i, p, s, shape in [
    (0, 1, 0, 10, 0x30), (0, 2, 1, 11, 0x21), (0, 3, 2, 12, 0x52),
    (1, 1, 0, 5, 0x13), (1, 9, 4, 4, 0x64), (2, 7, 0, 200, 0x75),
])
write("span_block", "structured", bytes([1]) + spans)
write("span_block", "structured-damaged", bytes([3, 40, 0, 0x10, 0, 0]) + spans)
write("span_block", "structured-cut", bytes([7, 9, 0, 0, 60, 0]) + spans)
write("span_block", "raw-garbage", bytes([0]) + b"LKBLOCK\x01" + b"\x00" * 24 + b"LKBLOCK\x01")

# --- summary_block: summaries the harness builds into a block, whole or damaged ---------
# 4 bytes per summary: trace, version step, start, shape (see the target's doc).
rows = b"".join(bytes(r) for r in [
    (0, 0, 10, 0x31), (0, 1, 9, 0x57), (1, 0, 40, 0x12), (2, 2, 200, 0x8f),
    (1, 3, 41, 0x26), (3, 0, 90, 0xd3),
])
write("summary_block", "structured", bytes([1]) + rows)
write("summary_block", "structured-damaged", bytes([3, 40, 0, 0x10, 0, 0]) + rows)
write("summary_block", "structured-cut", bytes([7, 9, 0, 0, 60, 0]) + rows)
write("summary_block", "raw-garbage", bytes([0]) + b"LKBLOCK\x01" + b"\x00" * 24 + b"LKBLOCK\x01")
