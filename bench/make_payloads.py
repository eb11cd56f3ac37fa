"""Write fixed OTLP/protobuf export requests for HTTP load tests (needs `pip install opentelemetry-proto`).

spans512.pb: 512 server spans with 7 attributes; logs512.pb: 512 log records with
~200-byte bodies from a 24-word vocabulary and 3 attributes. Timestamps are "now".
"""
import os
import random
import sys
import time

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

out = sys.argv[1] if len(sys.argv) > 1 else "."
now = time.time_ns()
rng = random.Random(42)

req = ExportTraceServiceRequest()
rs = req.resource_spans.add()
kv = rs.resource.attributes.add(); kv.key = "service.name"; kv.value.string_value = "bench"
ss = rs.scope_spans.add()
for i in range(512):
    s = ss.spans.add()
    s.trace_id = rng.randbytes(16); s.span_id = rng.randbytes(8); s.parent_span_id = rng.randbytes(8)
    s.name = "GET /api/cart"; s.kind = 2; s.start_time_unix_nano = now; s.end_time_unix_nano = now + 1_000_000
    for k, v in [("http.request.method", "GET"), ("url.path", "/api/cart/123"), ("http.route", "/api/cart/{id}"),
                 ("server.address", "cart"), ("user_agent.original", "Mozilla/5.0"), ("network.protocol.version", "1.1")]:
        a = s.attributes.add(); a.key = k; a.value.string_value = v
    a = s.attributes.add(); a.key = "http.response.status_code"; a.value.int_value = 200
open(os.path.join(out, "spans512.pb"), "wb").write(req.SerializeToString())

words = ("request completed user cart payment declined timeout retry cache miss database query slow "
         "order shipped inventory stock reserved token expired session created upstream error").split()
req = ExportLogsServiceRequest()
rl = req.resource_logs.add()
kv = rl.resource.attributes.add(); kv.key = "service.name"; kv.value.string_value = "bench"
sl = rl.scope_logs.add()
for i in range(512):
    l = sl.log_records.add()
    l.time_unix_nano = now; l.severity_number = 9; l.severity_text = "INFO"
    l.body.string_value = " ".join(rng.choice(words) for _ in range(26)) + f" id={rng.randint(0, 99999)}"
    l.trace_id = rng.randbytes(16); l.span_id = rng.randbytes(8)
    for k, v in [("http.route", "/api/cart"), ("enduser.id", f"user-{rng.randint(0, 9999)}"), ("http.request.method", "GET")]:
        a = l.attributes.add(); a.key = k; a.value.string_value = v
open(os.path.join(out, "logs512.pb"), "wb").write(req.SerializeToString())
