# SPDX-License-Identifier: GPL-3.0-or-later
"""An OTLP/HTTP receiver of traces: python -m bench.otlp is bench.timings' sink; Receiver, the tracing tests'.

`python -m bench.otlp` serves on a loopback port, which it prints, and
answers 200 to every export, counting its spans without keeping them (the
sink of the benchmark's traced runs); a GET answers how many spans came.
Receiver(), in a thread of the caller's, decodes each export request with
opentelemetry-proto (installed with the OTLP exporter) and keeps its spans
as plain dictionaries (tests/engine/test_tracing_helper.py).
"""

from __future__ import annotations

import gzip
import http.server
import sys
import threading
from typing import Any


class Receiver:
    """Receiver is an OTLP/HTTP server on a loopback port: every export is answered 200, and kept when decoding."""

    def __init__(self, *, keep: bool = True) -> None:
        self._keep = keep
        self._mu = threading.Lock()
        self._cv = threading.Condition(self._mu)
        self._spans: list[dict[str, Any]] = []
        #: requests counts the export requests received, and count their spans; sizes are the spans of each request.
        self.requests = 0
        self.count = 0
        self.sizes: list[int] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding", "") == "gzip":
                    body = gzip.decompress(body)
                receiver.received(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                body = str(receiver.count).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        #: endpoint is what OTEL_EXPORTER_OTLP_ENDPOINT names (the exporter adds /v1/traces).
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread: threading.Thread | None = None

    def start(self) -> Receiver:
        """start serves in a thread of this process."""
        self._thread = threading.Thread(target=self.server.serve_forever, name="otlp-receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """stop ends the server."""
        self.server.shutdown()
        self.server.server_close()

    def received(self, body: bytes) -> None:
        """received counts the spans of one export request, and keeps them (decoded) if asked to."""
        spans = decode(body) if self._keep else []
        count = len(spans) if self._keep else count_spans(body)
        with self._mu:
            self.requests += 1
            self.count += count
            self.sizes.append(count)
            self._spans += spans
            self._cv.notify_all()

    def wait_for(self, count: int, timeout: float) -> bool:
        """wait_for waits until count spans were received, timeout seconds at most; whether they were."""
        with self._cv:
            return self._cv.wait_for(lambda: self.count >= count, timeout)

    def spans(self) -> list[dict[str, Any]]:
        """spans are the spans received so far, in the order they came."""
        with self._mu:
            return list(self._spans)


def decode(body: bytes) -> list[dict[str, Any]]:
    """decode is the spans of an OTLP ExportTraceServiceRequest, each a dictionary: trace_id, span_id and
    parent_span_id (hex, "" for none), name, kind (the OTLP enum's name), start and end (ns), attributes, status
    (code's name, message), resource (its attributes) and scope (its name)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

    out = []
    for rs in ExportTraceServiceRequest.FromString(body).resource_spans:
        resource = _attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append({
                    "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(), "parent_span_id": s.parent_span_id.hex(),
                    "name": s.name, "kind": Span.SpanKind.Name(s.kind), "start": s.start_time_unix_nano,
                    "end": s.end_time_unix_nano, "attributes": _attributes(s.attributes),
                    "status": (Status.StatusCode.Name(s.status.code), s.status.message),
                    "resource": resource, "scope": ss.scope.name})
    return out


def count_spans(body: bytes) -> int:
    """count_spans is how many spans an OTLP ExportTraceServiceRequest holds."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    return sum(len(ss.spans) for rs in ExportTraceServiceRequest.FromString(body).resource_spans
               for ss in rs.scope_spans)


def received(endpoint: str) -> int:
    """received is how many spans the receiver at endpoint has counted so far."""
    import urllib.request

    with urllib.request.urlopen(endpoint, timeout=60) as answer:
        return int(answer.read())


def _attributes(kvs: Any) -> dict[str, Any]:
    out = {}
    for kv in kvs:
        which = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, which) if which else None
    return out


def main() -> int:
    """main serves until killed, its port on the first line of its output."""
    receiver = Receiver(keep=False)
    sys.stdout.write(f"{receiver.server.server_address[1]}\n")
    sys.stdout.flush()
    receiver.server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
