"""Hook details: signature, Retry-After parsing, back-off bounds, URL redaction in logs."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
from pathlib import Path

import pytest

from sinks.alerts import AlertService
from sinks.alerts.hooks import (
    EmailHook,
    RedactUrls,
    WebhookHook,
    body_bytes,
    header_safe,
    is_permanent_http,
    is_permanent_smtp,
    message_id,
    parse_retry_after,
    sign,
    subject,
    verify_signature,
)
from sinks.config import AlertsConfig, DeliveryConfig, EmailConfig, WebhookConfig


def test_signature_is_hmac_sha256_of_the_timestamp_and_the_exact_body() -> None:
    body = body_bytes({"b": 1, "a": "é"})
    assert body == '{"a":"é","b":1}'.encode()
    mac = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("k", body, 1_700_000_000) == f"t=1700000000,v1={mac}"
    assert sign("k", body, 1_700_000_000) != sign("k2", body, 1_700_000_000)
    assert sign("k", body, 1_700_000_000) != sign("k", body, 1_700_000_001)


def test_retry_after_seconds_and_http_date() -> None:
    now = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_backoff_doubles_with_jitter_and_is_capped(tmp_path: Path) -> None:
    svc = AlertService(
        {"shop": AlertsConfig()}, tmp_path, DeliveryConfig(backoff_initial_s=1, backoff_max_s=8), seed=3
    )
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 8), (20, 8)]:
        delays = [svc._backoff(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)  # never near zero: no busy loop
        assert max(delays) - min(delays) > 0.05 * ceiling  # jittered


def test_message_id_carries_the_key() -> None:
    assert message_id("abc-123:update:1714521600000") == "<abc-123.update.1714521600000@cutstream>"


def test_url_redaction_filter(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.redact")
    log.addFilter(RedactUrls())
    try:
        with caplog.at_level(logging.INFO, logger="test.redact"):
            log.info(
                'HTTP Request: POST %s "%s"', "https://h.example:8443/hooks/T0K3N?sig=abc", "HTTP/1.1 200 OK"
            )
    finally:
        log.filters.clear()
    assert "T0K3N" not in caplog.text and "sig=abc" not in caplog.text
    assert "https://h.example:8443/…" in caplog.text and "200 OK" in caplog.text


def test_permanent_and_transient_failures_are_told_apart() -> None:
    # Permanent: retrying the same request will not help.
    assert all(is_permanent_http(s) for s in (400, 401, 403, 404, 405, 409, 410, 413, 415, 422))
    # Transient: the endpoint is down, overloaded or asks to come back later.
    assert not any(is_permanent_http(s) for s in (408, 425, 429, 500, 502, 503, 504, 302, 307))
    assert all(is_permanent_smtp(c) for c in (535, 550, 553, 554))
    assert not any(is_permanent_smtp(c) for c in (421, 450, 451, 452, 250))


def test_dead_letter_defaults() -> None:
    d = DeliveryConfig()
    assert (d.max_permanent_rejections, d.give_up_after_s) == (3, 0.0)
    with pytest.raises(ValueError, match="greater than or equal"):
        DeliveryConfig(max_permanent_rejections=-1)


@pytest.mark.parametrize(
    "breaker",
    ["\r", "\n", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\x00"],
)
def test_no_line_break_or_control_character_survives_into_a_header(breaker: str) -> None:
    value = f"item{breaker}Bcc: x@example.com"
    safe = header_safe(value)
    assert safe.splitlines() == [safe] and "\r" not in safe and "\n" not in safe
    assert safe.startswith("item\\") and safe.endswith("Bcc: x@example.com")
    assert header_safe("plain é value") == "plain é value"
    assert "\n" not in subject({"event": "open", "detector": "d", "measure": "m", "dimensions": {"k": value}})


def test_a_payload_that_cannot_be_built_fails_permanently_and_on_its_own() -> None:
    mail = EmailHook(EmailConfig(host="127.0.0.1", port=1, sender="a@example", recipients=("b@example",)))
    got = mail.send({"dedupKey": "k"})  # no window: never an email, whatever the server
    assert (got.accepted, got.permanent, got.own, got.error) == (
        False,
        True,
        True,
        "cannot build the email: KeyError",
    )
    hook = WebhookHook(WebhookConfig(url="http://127.0.0.1:1/x"))
    got = hook.send({"dedupKey": "k", "dimensions": {"k": "\ud800"}})  # a lone surrogate: never UTF-8
    assert (got.accepted, got.permanent, got.own) == (False, True, True)
    assert got.error == "cannot build the request: UnicodeEncodeError"
    # An endpoint that is not there is the endpoint's failure (transient), not the notification's.
    got = hook.send({"dedupKey": "k"})
    assert (got.accepted, got.permanent, got.own) == (False, False, False)
    hook.close()


@pytest.mark.parametrize(
    "header",
    [None, "", "sha256=abc", "t=1700000000", "v1=abc", "t=soon,v1=abc", "t=1700000000,v1="],
)
def test_malformed_signature_headers_never_verify(header: str | None) -> None:
    assert not verify_signature("k", header, b"{}", now=1_700_000_000)


def test_a_signature_verifies_within_the_tolerance_and_with_any_of_several_digests() -> None:
    body = b'{"dedupKey":"k"}'
    good = sign("k", body, 1_700_000_000)
    assert verify_signature("k", good, body, now=1_700_000_000 + 300)
    assert not verify_signature("k", good, body, now=1_700_000_000 + 300.5)
    assert verify_signature("k", good, body, now=1_700_000_010, tolerance_s=10)
    other = sign("old-key", body, 1_700_000_000).split(",")[1]
    assert verify_signature("k", f"{good},{other}", body, now=1_700_000_000)  # rotating keys
