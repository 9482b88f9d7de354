"""The detector package's exception root."""

from __future__ import annotations


class DetectorError(Exception):
    """Root of every error raised by detector/."""


class BackendUnavailable(DetectorError):
    """The requested array backend (e.g. the GPU) cannot be used here."""


class StateVersionError(DetectorError):
    """A saved state has a version this code cannot read."""
