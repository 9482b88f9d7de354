"""Alert hooks: a signed JSON webhook (httpx) and email (smtplib, STARTTLS + login).

A hook makes one delivery attempt and says whether the endpoint accepted it and, if not, whether the
refusal is permanent (retrying the same request will not help: HTTP 4xx other than 408/425/429, an SMTP
5xx reply) or transient (everything else: connection errors, timeouts, HTTP 408/425/429/5xx, SMTP 4xx);
retries, back-off, dead letters and the outbox are the service's business. Secrets and webhook URLs
(which often embed a token) are never logged nor put into error messages: hooks are named by a short
hash and the endpoint's host.
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
from email.message import EmailMessage
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
    """

    accepted: bool
    error: str | None = None
    retry_after_s: float | None = None
    permanent: bool = False


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


def sign(secret: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of the body>``, the value of the X-Cutstream-Signature header."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


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
        body = body_bytes(payload)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "cutstream-alerts",
            DEDUP_HEADER: str(payload["dedupKey"]),
            EVENT_HEADER: str(payload.get("event", "")),
        }
        if self.config.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.config.secret.get_secret_value(), body)
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
    return f"[cutstream] {word}: {p.get('detector')}/{p.get('measure')} {dims} (score {_fmt(p.get('score'))})"


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
    msg = EmailMessage()
    msg["Subject"] = subject(p)
    msg["From"] = config.sender
    msg["To"] = ", ".join(config.recipients)
    msg["Message-ID"] = message_id(str(p["dedupKey"]))
    msg[DEDUP_HEADER] = str(p["dedupKey"])
    msg["Date"] = email.utils.formatdate(usegmt=True)
    msg.set_content(render_text(p))
    msg.add_alternative(render_html(p), subtype="html")
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
        msg = build_message(c, payload)
        try:
            with smtplib.SMTP(c.host, c.port, timeout=c.timeout_s) as smtp:
                smtp.ehlo()
                if c.starttls:
                    ctx = ssl.create_default_context(cafile=str(c.ca_file) if c.ca_file else None)
                    smtp.starttls(context=ctx)
                    smtp.ehlo()
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

    def close(self) -> None:
        return None
