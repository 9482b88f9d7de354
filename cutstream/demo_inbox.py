"""The demo's local alert receivers: a webhook endpoint and an SMTP catcher on 127.0.0.1.

Each notification they receive is written to ``<data-dir>/inbox/`` (``webhook-0001.json``,
``email-0001.eml``) so that a demo user can read exactly what an on-call engineer would get.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from streams.broker import free_port


class DemoInbox:
    """A webhook receiver and an SMTP catcher that keep what they receive as files."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.webhooks = 0
        self.emails = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="demo-webhook", daemon=True)
        self._smtp: Any = None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                try:
                    text = json.dumps(json.loads(body), indent=2)
                except ValueError:
                    self.send_response(400)
                    self.end_headers()
                    return
                inbox._keep("webhook", "json", text.encode())
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler

    def _keep(self, kind: str, suffix: str, data: bytes) -> None:
        with self._lock:
            count = (self.webhooks if kind == "webhook" else self.emails) + 1
            if kind == "webhook":
                self.webhooks = count
            else:
                self.emails = count
        (self.directory / f"{kind}-{count:04d}.{suffix}").write_bytes(data)

    @property
    def webhook_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/cutstream-demo"

    @property
    def smtp_port(self) -> int:
        return int(self._smtp.port) if self._smtp is not None else 0

    def start(self) -> DemoInbox:
        from aiosmtpd.controller import Controller

        self.directory.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        inbox = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                inbox._keep("email", "eml", bytes(envelope.original_content or envelope.content))
                return "250 OK"

        # aiosmtpd's start() connects to the port it was given to check the server: name a free one
        self._smtp = Controller(Handler(), hostname="127.0.0.1", port=free_port())
        self._smtp.start()
        return self

    def stop(self) -> None:
        if self._smtp is not None:
            self._smtp.stop()
        self._server.shutdown()
        self._server.server_close()

    def alerts_config(self, dashboard_url: str) -> dict[str, Any]:
        """The ``alerts`` section of a detector that notifies this inbox (no TLS, no login: loopback)."""
        return {
            "dashboard_url": dashboard_url,
            "webhooks": [{"url": self.webhook_url}],
            "emails": [
                {
                    "host": "127.0.0.1",
                    "port": self.smtp_port,
                    "starttls": False,
                    "sender": "cutstream-demo@localhost",
                    "recipients": ["oncall@localhost"],
                }
            ],
        }
