"""Alerts: incidents from anomalous windows, a durable outbox, webhook and email hooks."""

from __future__ import annotations

from sinks.alerts.service import STATE_SUBDIR, AlertService, state_dir_for

__all__ = ["STATE_SUBDIR", "AlertService", "state_dir_for"]
