"""The sinks package's exception root."""

from __future__ import annotations


class SinkError(Exception):
    """Root of every error raised by sinks/."""


class StorageError(SinkError):
    """A file under the data directory (results, checkpoints, models) could not be written: the
    message names the path and what to do (``sinks.storage``)."""
