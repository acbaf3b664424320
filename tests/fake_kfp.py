"""A small HTTP server on loopback standing in for the KFP v2beta1 API (no cluster exists here).

It answers just what ``kfp.Client`` calls for submit / schedule / list / delete, and records every request body so
tests can assert what reached the API: the pipeline spec, parameters, cron and concurrency.
"""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class FakeKfp:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict]] = []
        self.experiments: dict[str, dict] = {}
        self.recurring: dict[str, dict] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeKfp:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _reply(self, body: dict, code: int = 200) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> dict:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"{}") if length else {}

            def do_GET(self) -> None:  # noqa: N802
                url = urlparse(self.path)
                fake.requests.append(("GET", url.path, {"query": parse_qs(url.query),
                                                        "auth": self.headers.get("Authorization")}))  # fmt: skip
                if url.path.endswith("/healthz"):
                    return self._reply({"multi_user": False})
                if url.path.endswith("/experiments"):
                    flt = json.loads(parse_qs(url.query).get("filter", ["{}"])[0] or "{}")
                    name = next((p.get("stringValue") for p in flt.get("predicates", [])), None)
                    hits = [e for e in fake.experiments.values() if name is None or e["display_name"] == name]
                    return self._reply({"experiments": hits, "total_size": len(hits)} if hits else {})
                if "/experiments/" in url.path:
                    return self._reply(fake.experiments[url.path.rsplit("/", 1)[1]])
                if url.path.endswith("/recurringruns"):
                    runs = list(fake.recurring.values())
                    return self._reply({"recurringRuns": runs, "total_size": len(runs)} if runs else {})
                return self._reply({"error": "not found"}, 404)

            def do_POST(self) -> None:  # noqa: N802
                body = self._body()
                fake.requests.append(("POST", self.path, body))
                if self.path.endswith("/experiments"):
                    exp = {**body, "experiment_id": str(uuid.uuid4()), "storage_state": "AVAILABLE"}
                    fake.experiments[exp["experiment_id"]] = exp
                    return self._reply(exp)
                if self.path.endswith("/runs"):
                    return self._reply({**body, "run_id": str(uuid.uuid4()), "state": "PENDING"})
                if self.path.endswith("/recurringruns"):
                    rid = str(uuid.uuid4())
                    run = {**body, "recurring_run_id": rid, "status": "ENABLED"}
                    fake.recurring[rid] = run
                    return self._reply(run)
                return self._reply({"error": "not found"}, 404)

            def do_DELETE(self) -> None:  # noqa: N802
                fake.requests.append(("DELETE", self.path, {}))
                rid = self.path.rsplit("/", 1)[1]
                if fake.recurring.pop(rid, None) is None:
                    return self._reply({"error": "not found"}, 404)
                return self._reply({})

        return Handler
