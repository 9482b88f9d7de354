"""A real webhook receiver for tests and demos: verifies signatures and records de-duplication keys.

It runs ``http.server`` on 127.0.0.1 in a thread and answers from a script (e.g. 500, 500, 429 with
Retry-After, then 200), so that retry behaviour is exercised against a real HTTP server. It verifies
signatures with :func:`sinks.alerts.hooks.verify_signature`, as a receiver would.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sinks.alerts.hooks import DEDUP_HEADER, SIGNATURE_HEADER, SIGNATURE_TOLERANCE_S, verify_signature

#: A response plan: given the 1-based request number, return (status, extra headers).
Plan = Callable[[int], tuple[int, dict[str, str]]]


def always_ok(_: int) -> tuple[int, dict[str, str]]:
    return 200, {}


class WebhookReceiver:
    """A loopback HTTP server that accepts cutstream webhooks.

    Attributes:
        accepted: Counter of de-dup keys answered with 2xx.
        requests: every request seen, in order: (key, status, payload).
        bad_signatures: requests whose signature did not verify, or verified at a time outside
            ``tolerance_s`` of ``clock()`` (answered 401).
        raw: every request seen, in order: (headers, body bytes), to replay one.
    """

    def __init__(
        self,
        secret: str | None = None,
        plan: Plan = always_ok,
        hold: Callable[[dict[str, Any]], bool] | None = None,
        hold_after_accept: bool = False,
        tolerance_s: float = SIGNATURE_TOLERANCE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``hold(payload)`` True: stall that request until ``release`` is set (to kill the sender
        mid-delivery); before answering, or with ``hold_after_accept`` after counting it accepted
        and sending a 200 status line, but not the promised body. ``clock`` is the receiver's
        clock for the signature's timestamp (change it to play a receiver at a later time)."""
        self.secret = secret
        self.tolerance_s = tolerance_s
        self.clock = clock
        self.raw: list[tuple[dict[str, str], bytes]] = []
        self.plan = plan
        self.hold = hold
        self.hold_after_accept = hold_after_accept
        self.release = threading.Event()
        self.held = threading.Event()
        self.accepted: Counter[str] = Counter()
        self.requests: list[tuple[str, int, dict[str, Any]]] = []
        self.times: list[float] = []  # monotonic arrival time of each request in ``requests``
        self.bad_signatures = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver._handle(self, body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="webhook-receiver", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/hook"

    def _handle(self, h: BaseHTTPRequestHandler, body: bytes) -> None:
        arrived = time.monotonic()
        key = h.headers.get(DEDUP_HEADER, "")
        payload = json.loads(body)
        with self._lock:
            self.raw.append((dict(h.headers.items()), body))
        if self.secret is not None:
            signature = h.headers.get(SIGNATURE_HEADER)
            if not verify_signature(
                self.secret, signature, body, tolerance_s=self.tolerance_s, now=self.clock()
            ):
                with self._lock:
                    self.bad_signatures += 1
                    self.requests.append((key, 401, payload))
                    self.times.append(arrived)
                h.send_response(401)
                h.end_headers()
                return
        if self.hold is not None and self.hold(payload):
            release, after_accept = self.release, self.hold_after_accept
            with self._lock:
                # -1: held without an answer (the client will be gone: never accepted).
                self.requests.append((key, 200 if after_accept else -1, payload))
                self.times.append(arrived)
                if after_accept:
                    self.accepted[key] += 1
            if after_accept:
                h.send_response(200)
                h.send_header("Content-Length", "2")
                h.end_headers()  # the status went out; the body never will
            self.held.set()
            release.wait()
            h.close_connection = True
            return
        with self._lock:
            n = len(self.requests) + 1
            status, headers = self.plan(n)
            self.requests.append((key, status, payload))
            self.times.append(arrived)
            if 200 <= status < 300:
                self.accepted[key] += 1
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", "0")
        h.end_headers()

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()


class SmtpReceiver:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 with STARTTLS required and AUTH LOGIN.

    ``tls="implicit"``: TLS from the first byte instead (SMTPS); ``tls="none"``: no TLS at all, and
    AUTH accepted in clear text (a catcher like Mailpit, for ``allow_insecure_auth``).

    Attributes:
        messages: raw bytes of each accepted message, in order.
        logins: (username, accepted) for each AUTH attempt.
        refuse_rcpt: recipient address → the reply that refuses it at RCPT TO (e.g.
            ``"550 5.1.1 No such user"``); change it while the server runs to start accepting.
        refused: (address, reply) for each refused RCPT TO, in order.
    """

    def __init__(
        self,
        cert_file: str,
        key_file: str,
        username: str,
        password: str,
        refuse_rcpt: dict[str, str] | None = None,
        tls: str = "starttls",
    ) -> None:
        import socket
        import ssl

        from aiosmtpd.controller import Controller

        if tls not in ("starttls", "implicit", "none"):
            raise ValueError(f"tls must be starttls, implicit or none, not {tls!r}")
        self.messages: list[bytes] = []
        self.logins: list[tuple[str, bool]] = []
        self.refuse_rcpt: dict[str, str] = dict(refuse_rcpt or {})
        self.refused: list[tuple[str, str]] = []
        self._username, self._password = username, password

        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert_file, key_file)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self._controller = Controller(
            _SmtpHandler(self),
            hostname="127.0.0.1",
            port=self.port,
            ssl_context=ctx if tls == "implicit" else None,
            tls_context=ctx if tls == "starttls" else None,
            require_starttls=tls == "starttls",
            authenticator=self._authenticate,
            auth_required=True,
            # aiosmtpd counts only STARTTLS as TLS for AUTH: with implicit TLS the session is
            # encrypted from the first byte, so its check must be off for AUTH to be offered.
            auth_require_tls=tls == "starttls",
            auth_exclude_mechanism=["PLAIN"],
        )

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        ok = (
            isinstance(data, LoginPassword)
            and data.login.decode() == self._username
            and hmac.compare_digest(data.password.decode(), self._password)
        )
        self.logins.append((data.login.decode() if isinstance(data, LoginPassword) else "?", ok))
        return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535 itself

    def __enter__(self) -> SmtpReceiver:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()


class _SmtpHandler:
    """The aiosmtpd handler of :class:`SmtpReceiver`: refuses the scripted recipients, keeps the mail."""

    def __init__(self, receiver: SmtpReceiver) -> None:
        self.receiver = receiver

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        reply = self.receiver.refuse_rcpt.get(address)
        if reply is not None:
            self.receiver.refused.append((address, reply))
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if not session.authenticated:
            return "530 5.7.0 Authentication required"
        self.receiver.messages.append(bytes(envelope.original_content or envelope.content))
        return "250 OK"
