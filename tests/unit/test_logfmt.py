"""Structured logs: key=value pairs of the house-style messages become JSON fields."""

from __future__ import annotations

import io
import json
import logging

import pytest

from cutstream.logfmt import message_fields, setup_logging


def test_message_fields_lift_pairs_and_types() -> None:
    fields = message_fields("partition revoked topic=events partition=3 lag=1.5 reason='broker down' ok=True")
    assert fields == {"topic": "events", "partition": 3, "lag": 1.5, "reason": "broker down", "ok": "True"}
    assert message_fields("no pairs here, a == b") == {}
    assert message_fields("level=x msg=y") == {"kv_level": "x", "kv_msg": "y"}


def test_json_lines_on_the_root_logger() -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    out = io.StringIO()
    try:
        for h in saved_handlers:  # an entry point starts with a bare root logger
            root.removeHandler(h)
        setup_logging(logging.INFO, "json", stream=out)
        setup_logging(logging.DEBUG, "text", stream=io.StringIO())  # configured already: no effect
        log = logging.getLogger("streams.worker")
        log.info("assigned topic=%s partition=%d", "events", 7)
        log.debug("not shown at INFO")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("flush failed partition=%d", 2)
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved_handlers:
            root.addHandler(h)
        root.setLevel(saved_level)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 2
    first, second = lines
    assert first["level"] == "INFO" and first["logger"] == "streams.worker"
    assert first["msg"] == "assigned topic=events partition=7"
    assert first["topic"] == "events" and first["partition"] == 7
    assert first["ts"].endswith("+00:00")
    assert second["level"] == "ERROR" and "RuntimeError: boom" in second["exc"] and second["partition"] == 2


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="CUTSTREAM_LOG_FORMAT"):
        setup_logging(logging.INFO, "xml")
