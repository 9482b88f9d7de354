"""The streams package's exception root."""

from __future__ import annotations


class StreamsError(Exception):
    """Root of every error raised by streams/."""


class BrokerError(StreamsError):
    """The broker could not be started, reached or used."""


class ConfigError(StreamsError):
    """The detector configuration is invalid; the message says which field and why."""
