"""A small read-only HTTP API over the warehouse, served by the process that owns it.

The embedded ClickHouse (chdb) is locked to one process, so ``kibotos report`` and
``kibotos ledger`` in another shell ask that process. Loopback only. Endpoints:
``GET /health``, ``GET /metrics`` (Prometheus), ``GET /reports/<submission_id>``,
``GET /reports/<submission_id>.html`` (the report as a self-contained page, keyframe images
read from ``store``), ``GET /ledger[?miner=ID]``, ``GET /balances``; with ``datasets_root``,
the dataset routes of ``kibotos.datasets.http`` (``/datasets``, ``/datasets/<name[@vN]>[.html]``,
``/datasets/<name[@vN]>/attribution``); the policy routes of ``kibotos.xmimic.http``
(``/policies``, ``/policies/<id>[.html]``, ``/policies/<id>/checkpoint``): the warehouse,
then the local registry under ``policies_home`` (default: the datasets root's parent).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

from kibotos import warehouse


class QueryServer:
    def __init__(self, client, host: str = "127.0.0.1", port: int = 0, metrics_dir=None, store=None,
                 datasets_root=None, policies_home=None):
        self._lock = threading.Lock()  # one chdb session: serialize queries
        client_ref, lock = client, self._lock
        if policies_home is None and datasets_root is not None:
            from pathlib import Path

            policies_home = Path(datasets_root).parent

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet: the stack prints its own progress
                pass

            def _send(self, status: int, body, content_type: str = "application/json") -> None:
                data = body if isinstance(body, bytes) else body.encode() if isinstance(body, str) else \
                    json.dumps(body, default=str).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urlparse(self.path)
                parts = [unquote(p) for p in url.path.strip("/").split("/") if p]
                if parts == ["metrics"]:  # Prometheus: this process and the stack's children
                    from kibotos.runtime.metrics import render

                    body, content_type = render(metrics_dir)
                    self.send_response(200)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                query = parse_qs(url.query)
                if datasets_root is not None and parts[:1] == ["datasets"]:  # files, not the warehouse
                    from kibotos.datasets.http import dataset_route

                    routed = dataset_route(datasets_root, parts, objects=store)
                    if routed is not None:  # None only for a path outside /datasets
                        return self._send(*routed)
                try:
                    if parts[:1] == ["policies"]:  # warehouse under the lock, then the registry's files
                        from kibotos.xmimic.http import policy_route

                        routed = policy_route(parts, client=client_ref, lock=lock, home=policies_home, store=store)
                        if routed is not None:  # None only for a path outside /policies
                            return self._send(*routed)
                    if len(parts) == 2 and parts[0] == "reports" and parts[1].endswith(".html"):
                        from kibotos.reports.html import render_report_html

                        sid = parts[1][: -len(".html")]
                        with lock:
                            report = warehouse.get_report(client_ref, sid)
                        if report is None:
                            return self._send(404, {"error": "no report", "submission_id": sid})
                        # images come from the object store, outside the warehouse lock
                        return self._send(200, render_report_html(report, store), "text/html; charset=utf-8")
                    with lock:
                        if parts == ["health"]:
                            return self._send(200, {"status": "ok"})
                        if len(parts) == 2 and parts[0] == "reports":
                            report = warehouse.get_report(client_ref, parts[1])
                            if report is None:
                                return self._send(404, {"error": "no report", "submission_id": parts[1]})
                            return self._send(200, report)
                        if parts == ["ledger"]:
                            miners = query.get("miner")
                            miner = miners[0] if miners else None
                            return self._send(200, warehouse.ledger_entries(client_ref, miner))
                        if parts == ["balances"]:
                            return self._send(200, warehouse.balances(client_ref))
                    return self._send(404, {"error": f"no route {url.path}"})
                except Exception as exc:  # the API answers, it does not die
                    return self._send(500, {"error": str(exc)[:500]})

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="query-server", daemon=True)

    def start(self) -> "QueryServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
