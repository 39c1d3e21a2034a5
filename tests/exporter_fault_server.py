"""A small Pay-i-like ingest server on 127.0.0.1 that fails on purpose (for exporter tests).

It answers ``POST /api/v1/ingest`` (``?id=``, attribution in ``xProxy-*`` headers) and
``POST /api/v1/ingest/bulk`` (a JSON array), records every event by id, counts re-deliveries
of an id separately, and can be told to fail: queued faults (status, ``Retry-After``, delay) are
applied to the next requests, events whose resource is ``REJECT_RESOURCE`` are refused for good
(400 single; a per-item error in bulk), and the whole server can be stopped and started again on
the same port.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

REJECT_RESOURCE = "rejected-model"


@dataclass
class Fault:
    status: int = 500
    retry_after: str | None = None
    delay: float = 0.0  # seconds to wait before answering (a slow server)


class FaultServer:
    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.events: dict[str, dict] = {}  # id -> body as received (single) or item (bulk)
        self.headers: dict[str, dict[str, str]] = {}  # id -> xProxy-* headers (single)
        self.duplicates: collections.Counter[str] = collections.Counter()
        self.requests = 0
        self.request_times: list[float] = []
        self.faults: collections.deque[Fault] = collections.deque()
        self.slow_all: float = 0.0
        self.poison_ids: set[str] = set()  # a request holding one of these events always gets a 500
        self.max_bulk_items: int | None = None  # a bulk request with more items gets a 413
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    # -- control --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stalls

            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                server._handle(self)

        httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        httpd.daemon_threads = True
        self.port = httpd.server_address[1]
        self._httpd = httpd
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def fail_next(self, count: int, status: int = 500, retry_after: str | None = None, delay: float = 0.0) -> None:
        for _ in range(count):
            self.faults.append(Fault(status, retry_after, delay))

    def ids(self) -> set[str]:
        with self._lock:
            return set(self.events)

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.events) >= count:
                return True
            time.sleep(0.02)
        return len(self.events) >= count

    # -- serving --------------------------------------------------------------------------

    def _reply(self, handler: BaseHTTPRequestHandler, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                handler.send_header(k, v)
            handler.end_headers()
            handler.wfile.write(data)
        except OSError:
            pass  # the client gave up (timeout)

    def _record(self, event_id: str, event: dict, headers: dict[str, str] | None = None) -> None:
        with self._lock:
            if event_id in self.events:
                self.duplicates[event_id] += 1
            else:
                self.events[event_id] = event
                if headers is not None:
                    self.headers[event_id] = headers

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length)
        with self._lock:
            self.requests += 1
            self.request_times.append(time.monotonic())
            fault = self.faults.popleft() if self.faults else None
        delay = fault.delay if fault else self.slow_all
        if delay:
            time.sleep(delay)
        if fault is not None and fault.status != 200:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            self._reply(handler, fault.status, {"statusCode": fault.status, "message": "injected fault"}, headers)
            return
        url = urlsplit(handler.path)
        body = json.loads(raw or b"null")
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        sent_ids = {parse_qs(url.query).get("id", [None])[0]}
        if isinstance(body, list):
            sent_ids = {item.get("provider_response_id") for item in body}
            if self.max_bulk_items is not None and len(body) > self.max_bulk_items:
                self._reply(
                    handler,
                    413,
                    {
                        "statusCode": 413,
                        "message": "too large",
                        "xproxy_error": {"code": "request_too_large", "message": "too large"},
                    },
                )
                return
        if sent_ids & self.poison_ids:
            self._reply(
                handler,
                500,
                {
                    "statusCode": 500,
                    "message": "poisoned",
                    "xproxy_error": {"code": "unexpected_error", "message": "integer overflow"},
                },
            )
            return
        if url.path == "/api/v1/ingest":
            event_id = parse_qs(url.query).get("id", [None])[0]
            if body.get("resource") == REJECT_RESOURCE:
                self._reply(
                    handler,
                    400,
                    {
                        "statusCode": 400,
                        "message": "bad",
                        "xproxy_error": {"code": "invalid_resource", "message": "unknown resource"},
                    },
                )
                return
            headers = {k: v for k, v in handler.headers.items() if k.lower().startswith("xproxy-")}
            self._record(event_id, body, headers)
            self._reply(
                handler,
                200,
                {
                    "request_id": event_id,
                    "event_timestamp": body.get("event_timestamp"),
                    "ingest_timestamp": now,
                    "xproxy_result": {},
                },
            )
        elif url.path == "/api/v1/ingest/bulk":
            errors = []
            for index, item in enumerate(body):
                if item.get("resource") == REJECT_RESOURCE:
                    errors.append(
                        {
                            "item_index": index,
                            "xproxy_result": {
                                "statusCode": 400,
                                "message": "bad",
                                "xproxy_error": {"code": "invalid_resource", "message": "unknown resource"},
                            },
                        }
                    )
                    continue
                self._record(item["provider_response_id"], item)
            self._reply(
                handler,
                200,
                {
                    "request_id": "bulk",
                    "ingest_timestamp": now,
                    "ingest_count": len(body) - len(errors),
                    "error_count": len(errors),
                    "errors": errors,
                    "total_count": len(body),
                },
            )
        else:
            self._reply(handler, 404, {"statusCode": 404, "message": "not found"})
