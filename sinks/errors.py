"""The sinks package's exception root."""

from __future__ import annotations


class SinkError(Exception):
    """Root of every error raised by sinks/."""
