"""Alert hooks: a signed JSON webhook (httpx) and email (smtplib, STARTTLS or implicit TLS + login).

A hook makes one delivery attempt and says whether the endpoint accepted it and, if not, whether the
refusal is permanent (retrying the same request will not help: HTTP 4xx other than 408/425/429, an SMTP
5xx reply) or transient (everything else: connection errors, timeouts, HTTP 408/425/429/5xx, SMTP 4xx),
and whether the failure is the notification's own (it cannot be built or encoded, whatever the
endpoint's state: ``Attempt.own``); retries, back-off, dead letters and the outbox are the service's
business. Values from the data never reach a header with a line break in it (:func:`header_safe`).
Secrets and webhook URLs (which often embed a token) are never logged nor put into error messages:
hooks are named by a short hash and the endpoint's host.

Webhook signatures (``X-Cutstream-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``)
carry the time of the attempt, so that a receiver refuses a captured request replayed later:
:func:`verify_signature` is what a receiver runs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import hashlib
import hmac
import html
import json
import logging
import re
import smtplib
import ssl
import time
import unicodedata
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from io import BytesIO
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from sinks.config import EmailConfig, WebhookConfig

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Cutstream-Signature"
DEDUP_HEADER = "X-Cutstream-Dedup-Key"
EVENT_HEADER = "X-Cutstream-Event"


@dataclasses.dataclass(frozen=True)
class Attempt:
    """The outcome of one delivery attempt.

    ``permanent``: the endpoint refused this notification in a way that retrying will not fix
    (see :func:`is_permanent_http` and :func:`is_permanent_smtp`); the service dead-letters such a
    row after ``max_permanent_rejections`` of them. Transient failures are retried with back-off.

    ``own``: the failure is the notification's own (it could not be built, encoded or handed over,
    whatever the endpoint's state): it holds back only the later notices of the same series for the
    same hook, never the hook's other series (an endpoint failure holds back the whole hook).
    """

    accepted: bool
    error: str | None = None
    retry_after_s: float | None = None
    permanent: bool = False
    own: bool = False


#: 4xx statuses that say "not now" rather than "never": request timeout, too early, too many requests.
_TRANSIENT_4XX = frozenset({408, 425, 429})


def is_permanent_http(status: int) -> bool:
    """True for a webhook answer that retrying will not change: 4xx except 408, 425 and 429.

    5xx, 408/425/429 and anything else not 2xx (an unfollowed 3xx, say) count as transient: an
    endpoint that is down or overloaded gets retries, never silence.
    """
    return 400 <= status < 500 and status not in _TRANSIENT_4XX


def is_permanent_smtp(code: int) -> bool:
    """True for an SMTP permanent negative reply (5yz, RFC 5321 §4.2.1); 4yz is transient."""
    return 500 <= code < 600


class AlertHook(Protocol):
    """Where notifications go. ``hook_id`` is stable across restarts (outbox rows refer to it)."""

    hook_id: str
    label: str

    def send(self, payload: dict[str, Any]) -> Attempt: ...

    def close(self) -> None: ...


def body_bytes(payload: dict[str, Any]) -> bytes:
    """The exact bytes POSTed (and signed): compact JSON with sorted keys."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


#: How far (seconds) a signature's timestamp may be from the receiver's clock, by default.
SIGNATURE_TOLERANCE_S = 300.0


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """``t=<timestamp>,v1=<hex HMAC-SHA256 of b"<timestamp>." + body>``: the X-Cutstream-Signature value.

    The timestamp (unix seconds, the time of the attempt) is inside the signed bytes, so it cannot be
    changed without the secret; a receiver refuses a signature older than its tolerance
    (:func:`verify_signature`), so a captured request cannot be replayed later.
    """
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(
    secret: str,
    header: str | None,
    body: bytes,
    *,
    tolerance_s: float = SIGNATURE_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """What a receiver runs: True if ``header`` signs ``body`` with ``secret`` at a time within
    ``tolerance_s`` of ``now`` (default: the clock), either way.

    ``header`` is the X-Cutstream-Signature value as received; ``body`` the exact bytes of the
    request body (before any JSON parsing). Every ``v1=`` entry is tried (more than one may come
    while a secret is rotated); digests are compared in constant time. After a True, drop a
    de-duplication key (``X-Cutstream-Dedup-Key``) already seen: a retry carries the same key.

    Example:
        >>> body = b'{"dedupKey":"k"}'
        >>> verify_signature("s3cr3t", sign("s3cr3t", body, 1_700_000_000), body, now=1_700_000_100)
        True
        >>> verify_signature("s3cr3t", sign("s3cr3t", body, 1_700_000_000), body, now=1_700_000_301)
        False
    """
    if not header:
        return False
    stamp: int | None = None
    digests: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            stamp = int(value)
        elif name == "v1":
            digests.append(value)
    if stamp is None or not digests:
        return False
    if abs((time.time() if now is None else now) - stamp) > tolerance_s:
        return False
    want = sign(secret, body, stamp).rpartition("v1=")[2]
    return any(hmac.compare_digest(want, d) for d in digests)


def _header_unsafe(c: str) -> bool:
    """A character that ends a line somewhere (str.splitlines, the email package, HTTP parsers), any
    other control character, or a lone surrogate (never encodable): none may reach a header value."""
    return unicodedata.category(c) in ("Cc", "Zl", "Zp", "Cs")


def header_safe(value: str) -> str:
    r"""``value`` fit for one header line: CR, LF, the other line separators (VT, FF, FS/GS/RS,
    NEL, U+2028/2029), every other control character and lone surrogates become visible escapes
    (``\r``, ``\n``, ``\u2028``, ...), so that data can never add or end a header.

    >>> header_safe("item\r\nBcc: x@example.com")
    'item\\r\\nBcc: x@example.com'
    """
    if not any(_header_unsafe(c) for c in value):
        return value
    return "".join(
        c.encode("unicode_escape", "backslashreplace").decode("ascii") if _header_unsafe(c) else c
        for c in value
    )


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - (now or dt.datetime.now(dt.UTC))).total_seconds())


_URL_TAIL = re.compile(r"(https?://[^/\s\"'?#]+)[^\s\"']*")


class RedactUrls(logging.Filter):
    """Cuts URLs in log records down to scheme://host:port: webhook URLs often carry a token.

    httpx logs every request's full URL at INFO; this filter is attached to its loggers the first
    time a webhook hook is built (the entry point configures levels; this only removes secrets).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if "://" in msg:
            record.msg, record.args = _URL_TAIL.sub(r"\1/…", msg), None
        return True


_REDACTOR = RedactUrls()


def _install_redactor() -> None:
    for name in ("httpx", "httpcore"):
        lg = logging.getLogger(name)
        if _REDACTOR not in lg.filters:
            lg.addFilter(_REDACTOR)


class WebhookHook:
    """POSTs the notification as JSON, signed with HMAC-SHA256 when a secret is configured."""

    def __init__(self, config: WebhookConfig, client: httpx.Client | None = None) -> None:
        _install_redactor()
        self.config = config
        self.hook_id = "webhook:" + hashlib.sha256(config.url.encode("utf-8")).hexdigest()[:12]
        parts = urlsplit(config.url)
        self.label = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"
        self._client = client
        self._own_client = client is None

    def send(self, payload: dict[str, Any]) -> Attempt:
        try:
            body = body_bytes(payload)
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "cutstream-alerts",
                DEDUP_HEADER: header_safe(str(payload["dedupKey"])),
                EVENT_HEADER: header_safe(str(payload.get("event", ""))),
            }
        except (KeyError, TypeError, ValueError) as exc:
            # The same payload will never encode: a permanent failure of this notification only.
            return Attempt(False, f"cannot build the request: {type(exc).__name__}", permanent=True, own=True)
        if self.config.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.config.secret.get_secret_value(), body, int(time.time()))
        if self._client is None:
            self._client = httpx.Client(follow_redirects=False)
        try:
            resp = self._client.post(
                self.config.url, content=body, headers=headers, timeout=self.config.timeout_s
            )
        except httpx.HTTPError as exc:
            # str(exc) may contain the URL (and its token): report the type and the host only.
            return Attempt(False, f"{type(exc).__name__} talking to {self.label}")
        if 200 <= resp.status_code < 300:
            return Attempt(True)
        retry_after = None
        if resp.status_code in (429, 503):
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        return Attempt(
            False,
            f"HTTP {resp.status_code} from {self.label}",
            retry_after,
            permanent=is_permanent_http(resp.status_code),
        )

    def close(self) -> None:
        if self._own_client and self._client is not None:
            self._client.close()
            self._client = None


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _fact_rows(p: dict[str, Any]) -> list[tuple[str, str]]:
    inc = p.get("incident") or {}
    dims = ", ".join(f"{k}={v}" for k, v in sorted((p.get("dimensions") or {}).items())) or "(none)"
    return [
        ("Event", str(p.get("event", "")).upper()),
        ("Detector", str(p.get("detector"))),
        ("Measure", str(p.get("measure"))),
        ("Series", dims),
        ("Series id", str(p.get("timeseriesId"))),
        ("Window", f"{p['window']['start']} – {p['window']['end']} UTC"),
        ("Actual", _fmt(p.get("actual"))),
        ("Expected", _fmt(p.get("expected"))),
        ("Score", _fmt(p.get("score"))),
        ("Threshold", _fmt(p.get("threshold"))),
        ("Confidence", _fmt(p.get("confidence"))),
        (
            "Incident",
            f"{inc.get('id')} ({inc.get('status')}, since {inc.get('openedAt')} UTC, "
            f"{inc.get('anomalousWindows')} anomalous windows, peak score {_fmt(inc.get('peakScore'))})",
        ),
        ("Dashboard", str(p.get("dashboardUrl"))),
        ("De-duplication key", str(p.get("dedupKey"))),
    ]


def subject(p: dict[str, Any]) -> str:
    dims = ", ".join(f"{k}={v}" for k, v in sorted((p.get("dimensions") or {}).items()))
    word = {"open": "Anomaly", "update": "Anomaly continues", "resolve": "Resolved"}.get(
        str(p.get("event")), "Alert"
    )
    text = f"[cutstream] {word}: {p.get('detector')}/{p.get('measure')} {dims} (score {_fmt(p.get('score'))})"
    return header_safe(text)


def render_text(p: dict[str, Any]) -> str:
    width = max(len(k) for k, _ in _fact_rows(p))
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in _fact_rows(p)) + "\n"


def render_html(p: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><th align='left'>{html.escape(k)}</th><td>"
        + (f'<a href="{html.escape(v)}">{html.escape(v)}</a>' if k == "Dashboard" else html.escape(v))
        + "</td></tr>"
        for k, v in _fact_rows(p)
    )
    return f"<html><body><h3>{html.escape(subject(p))}</h3><table>{rows}</table></body></html>"


def message_id(dedup_key: str) -> str:
    """A Message-ID carrying the de-duplication key (mail systems drop repeats of one Message-ID)."""
    safe = "".join(c if c.isalnum() or c in "-_.:" else "_" for c in dedup_key).replace(":", ".")
    return f"<{safe}@cutstream>"


def build_message(config: EmailConfig, p: dict[str, Any]) -> EmailMessage:
    """The email of notification ``p``; every header built from data goes through :func:`header_safe`
    (the bodies show the values as they are, HTML-escaped in the HTML part).

    Raises ``ValueError`` (or ``UnicodeError``, ``KeyError``, ``TypeError``) if ``p`` cannot become an
    email; the message is serialized once here, so that nothing about it can fail later mid-SMTP.
    """
    msg = EmailMessage()
    msg["Subject"] = subject(p)
    msg["From"] = header_safe(config.sender)
    msg["To"] = header_safe(", ".join(config.recipients))
    msg["Message-ID"] = message_id(str(p["dedupKey"]))
    msg[DEDUP_HEADER] = header_safe(str(p["dedupKey"]))
    msg["Date"] = email.utils.formatdate(usegmt=True)
    msg.set_content(render_text(p))
    msg.add_alternative(render_html(p), subtype="html")
    BytesGenerator(BytesIO(), policy=SMTP_POLICY.clone(utf8=True)).flatten(msg)
    return msg


class EmailHook:
    """Sends a text + HTML email through SMTP (STARTTLS and login when configured)."""

    def __init__(self, config: EmailConfig) -> None:
        self.config = config
        ident = f"{config.host}:{config.port}:{config.username}:{config.sender}:{','.join(config.recipients)}"
        self.hook_id = "email:" + hashlib.sha256(ident.encode("utf-8")).hexdigest()[:12]
        self.label = f"smtp://{config.host}:{config.port}"

    def send(self, payload: dict[str, Any]) -> Attempt:
        c = self.config
        try:
            msg = build_message(c, payload)
        except (KeyError, TypeError, ValueError) as exc:  # UnicodeError and email's errors are ValueErrors
            # The same notification will never become an email: permanent, and its own failure.
            return Attempt(False, f"cannot build the email: {type(exc).__name__}", permanent=True, own=True)
        if c.username and not c.tls and not c.allow_insecure_auth:
            # EmailConfig refuses this already; kept here so that no code path sends a password in clear.
            return Attempt(False, f"{c.insecure_auth_error()} ({self.label})", permanent=True)
        try:
            with self._connect() as smtp:
                if c.username:
                    smtp.login(c.username, c.password.get_secret_value() if c.password else "")
                refused = smtp.send_message(msg)
        except smtplib.SMTPResponseException as exc:
            code = int(exc.smtp_code)
            return Attempt(False, f"SMTP {code} from {self.label}", permanent=is_permanent_smtp(code))
        except smtplib.SMTPRecipientsRefused as exc:
            # Every recipient refused (some refused and others accepted is a delivery: see below).
            # Permanent only when every refusal is; the addresses stay out of the error (personal data).
            codes = sorted({int(code) for code, _ in exc.recipients.values()})
            return Attempt(
                False,
                f"SMTP {'/'.join(map(str, codes))} from {self.label}: "
                f"{len(exc.recipients)} recipient(s) refused",
                permanent=bool(codes) and all(is_permanent_smtp(c) for c in codes),
            )
        except (smtplib.SMTPException, OSError) as exc:
            # Never str(exc) of an auth error verbatim: keep to the type.
            return Attempt(False, f"{type(exc).__name__} talking to {self.label}")
        if refused:
            logger.warning("email recipients refused hook=%s refused=%d", self.hook_id, len(refused))
        return Attempt(True)

    def _connect(self) -> smtplib.SMTP:
        """An SMTP session after EHLO: TLS from the first byte (``implicit_tls``), or upgraded with
        STARTTLS (``starttls``; smtplib raises if the server does not offer it: no clear-text fallback)."""
        c = self.config
        ctx = ssl.create_default_context(cafile=str(c.ca_file) if c.ca_file else None) if c.tls else None
        smtp = (
            smtplib.SMTP_SSL(c.host, c.port, timeout=c.timeout_s, context=ctx)
            if c.implicit_tls
            else smtplib.SMTP(c.host, c.port, timeout=c.timeout_s)
        )
        try:
            smtp.ehlo()
            if c.starttls and not c.implicit_tls:
                smtp.starttls(context=ctx)
                smtp.ehlo()
        except BaseException:
            smtp.close()
            raise
        return smtp

    def close(self) -> None:
        return None
