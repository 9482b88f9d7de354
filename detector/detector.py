"""The Detector facade: forest + normalization + threshold, for many series at once.

This is the one scoring code path: the worker (live and replay), backfill and ``cutstream score``
all call ``Detector.process_many``.

Example:
    >>> import numpy as np
    >>> from detector.config import ModelConfig
    >>> from detector.detector import Detector
    >>> det = Detector(ModelConfig())
    >>> values = np.r_[np.sin(np.arange(400) / 8.0), 9.0]
    >>> out = det.process_many(["cpu"] * 401, values, np.arange(401, dtype=np.int64) * 60_000)
    >>> bool(out.inference[-1]), bool(out.anomaly_score[-1] > out.anomaly_score[-2])
    (True, True)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from detector.config import ModelConfig
from detector.errors import DetectorError, StateVersionError
from detector.forest import Forest
from detector.normalize import (
    DIRECTION_CODES,
    NormalizerParams,
    NormalizerState,
    normalize,
    profile_expected,
)
from detector.normalize import STATE_VERSION as SCORES_STATE_VERSION

#: Version of the dict written by ``Detector.to_state``: 2 holds all series in a few arrays (a
#: checkpoint of thousands of series is a handful of array copies); 1, one dict per series, stays
#: readable and writable (``to_state(keys, version=1)``).
STATE_VERSION = 2
#: The normalizer's per-series arrays, as ``NormalizerState`` names them (state version 2).
_SCORE_FIELDS = (
    "recent",
    "mean",
    "var",
    "n_seen",
    "since_alert",
    "missing_rate",
    "value_mean",
    "value_var",
    "tod_mean",
    "tod_count",
    "level",
    "level_n",
)


@dataclass(frozen=True)
class ScoreBatch:
    """Per-point results of ``Detector.process_many``, every array aligned with the input (length n)."""

    raw_score: np.ndarray  # float64: the forest's raw score (CoDisp averaged over trees)
    anomaly_score: np.ndarray  # float64: 0–100; 0.0 while LEARNING
    threshold: np.ndarray  # float64: the threshold in force
    decision: np.ndarray  # int8: 1 = anomaly
    confidence: np.ndarray  # float64: 0–100
    inference: np.ndarray  # bool: True = INFERENCE stage, False = LEARNING
    processed_points: np.ndarray  # int64: points this series' model has processed, this one included
    expected_value: np.ndarray  # float64: the model's expected value for the point
    missing: np.ndarray  # bool: the point is a filled-in missing window
    warm_started: np.ndarray  # bool: the series' model was bootstrapped from history (warm start)

    def __len__(self) -> int:
        return int(self.raw_score.shape[0])

    def take(self, index: np.ndarray) -> ScoreBatch:
        """The rows at ``index`` (an int or bool array), as a new batch."""
        return ScoreBatch(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


def _params(config: ModelConfig) -> NormalizerParams:
    s = config.scoring
    return NormalizerParams(
        threshold=s.threshold,
        learning_points=s.learning_points,
        direction=DIRECTION_CODES[s.direction],
        min_relative_change=s.min_relative_change,
        avg_points=s.avg_points,
        raw_log_offset=s.raw_log_offset,
        history_points=s.history_points,
        value_weight=s.value_weight,
        value_history_points=s.value_history_points,
        surprise_at_100=s.surprise_at_100,
        suppress_points=s.suppress_points,
        suppress_cap=s.suppress_cap,
        suppress_break_sigma=s.suppress_break_sigma,
        spike_weight=s.spike_weight,
        confidence_points=s.confidence_points,
        missing_confidence=s.missing_confidence,
    )


class Detector:
    """Scores points of many series (keyed by timeseriesId) with one model configuration.

    Each key gets its own forest slot and normalizer state on first sight. The detector is pure: no
    I/O and no clock; timestamps are passed in.

    Args:
        config: forest and scoring settings, shared by every series of this detector.
        backend: the forest's array backend (``"cpu"`` or ``"gpu"``).
        capacity: series the forest preallocates room for (it grows beyond).
    """

    def __init__(self, config: ModelConfig, backend: str = "cpu", capacity: int = 1024) -> None:
        self.config = config
        self.backend = backend
        self._forest = Forest(config.forest, capacity=capacity, backend=backend)
        self._params = _params(config)
        source = config.scoring.expected_value
        self._use_profile = source == "time_of_day" or (source == "auto" and config.forest.shingle_size == 1)
        self._norm = NormalizerState(config.scoring.avg_points, capacity=min(capacity, 1024))
        self._slots: dict[str, int] = {}
        self._warm = np.zeros(self._norm.capacity, dtype=np.bool_)

    # ------------------------------------------------------------------------------------------
    def keys(self) -> list[str]:
        """The keys (timeseriesIds) this detector holds a model for."""
        return list(self._slots)

    def __len__(self) -> int:
        return len(self._slots)

    def _ensure(self, capacity: int) -> None:
        self._norm.ensure(capacity)
        if self._warm.shape[0] < self._norm.capacity:
            warm = np.zeros(self._norm.capacity, dtype=np.bool_)
            warm[: self._warm.shape[0]] = self._warm
            self._warm = warm

    def _slots_for(self, keys: Sequence[str]) -> np.ndarray:
        """Slots of ``keys`` (int64[n]); unseen keys get fresh series. Python work is per distinct key."""
        arr = np.asarray(keys, dtype=object)
        uniq, first, inverse = np.unique(arr.astype(str), return_index=True, return_inverse=True)
        # New keys in order of first appearance, so that slot assignment is deterministic.
        new = [str(uniq[i]) for i in np.argsort(first, kind="stable") if str(uniq[i]) not in self._slots]
        if new:
            slots = np.asarray(self._forest.add_series(len(new), uids=_uids(new)), dtype=np.int64)
            self._ensure(int(slots.max()) + 1)
            self._norm.reset(slots)
            self._warm[slots] = False
            for k, s in zip(new, slots.tolist(), strict=True):
                self._slots[k] = s
        uniq_slots = np.fromiter((self._slots[str(k)] for k in uniq), dtype=np.int64, count=len(uniq))
        return uniq_slots[inverse.reshape(-1)]

    # ------------------------------------------------------------------------------------------
    def process_many(
        self,
        keys: Sequence[str],
        values: np.ndarray,
        timestamps_ms: np.ndarray,
        missing: np.ndarray | None = None,
    ) -> ScoreBatch:
        """Update and score a batch of points, in input order (a key may repeat, in time order).

        Args:
            keys: n timeseriesIds.
            values: float64[n] the points' values (missing windows already filled by the caller).
            timestamps_ms: int64[n] event times (epoch ms); they place a point in its series'
                time-of-day profile (the expected value without shingle context).
            missing: bool[n] the point is a filled-in missing window (default: none).

        Returns:
            The per-point results, aligned with the input.

        Raises:
            DetectorError: mismatched lengths or a value that is not a finite number.
        """
        n = len(keys)
        vals = np.array(values, dtype=np.float64, copy=True).reshape(-1)
        ts = np.asarray(timestamps_ms).reshape(-1)
        miss = (
            np.zeros(n, dtype=np.bool_)
            if missing is None
            else np.array(missing, dtype=np.bool_, copy=True).reshape(-1)
        )
        if not (vals.shape[0] == ts.shape[0] == miss.shape[0] == n):
            raise DetectorError(
                f"process_many needs aligned inputs: {n} keys, {vals.shape[0]} values, "
                f"{ts.shape[0]} timestamps, {miss.shape[0]} missing flags"
            )
        if n == 0:
            return _empty_batch()
        if not np.all(np.isfinite(vals)):
            bad = int(np.flatnonzero(~np.isfinite(vals))[0])
            raise DetectorError(
                f"value at position {bad} is {vals[bad]!r}; fill or drop non-finite values before scoring"
            )
        slots = self._slots_for(keys)
        # Missing points are fed to the forest too: the shingle is a run of consecutive windows and
        # must stay aligned in time (see docs/ARCHITECTURE.md, "Missing windows").
        out = self._forest.update(slots, vals)
        raw = np.asarray(out.raw_score, dtype=np.float64).reshape(-1)
        if self._use_profile:
            # The profile learns every point, before normalize (which reads the expectation).
            expected = profile_expected(
                self._norm, slots, vals, ts.astype(np.int64), self.config.scoring.value_history_points, 100.0
            )
        else:
            expected = np.asarray(out.expected, dtype=np.float64).reshape(-1)
            expected = np.where(np.isfinite(expected), expected, vals)
        norm = normalize(self._norm, self._params, slots, raw, vals, expected, miss)
        return ScoreBatch(
            raw_score=raw,
            anomaly_score=norm.anomaly_score,
            threshold=np.full(n, float(self.config.scoring.threshold)),
            decision=norm.decision,
            confidence=norm.confidence,
            inference=norm.inference,
            processed_points=norm.processed_points,
            expected_value=expected,
            missing=miss,
            warm_started=self._warm[slots].copy(),
        )

    # ------------------------------------------------------------------------------------------
    def to_state(self, keys: Sequence[str] | None = None, *, version: int = STATE_VERSION) -> dict[str, Any]:
        """Versioned state of ``keys`` (default: all): plain values and numpy arrays.

        Version 2 (the default) takes every series at once with array operations: ``keys`` (the
        order of the arrays), ``forest`` (``Forest.to_state_many``), ``scores`` (the normalizer's
        arrays, one row per key) and ``warm_started`` (bool[n]). Version 1 is one dict per series
        under ``series``, for a reader that predates version 2. The arrays are copies: the caller
        may encode them while this detector goes on scoring.

        Raises:
            DetectorError: a key this detector does not hold, or an unknown version.
        """
        keys = self.keys() if keys is None else list(keys)
        missing = [k for k in keys if k not in self._slots]
        if missing:
            raise DetectorError(f"no model for series {missing[0]!r}; it was never scored or was evicted")
        config = self.config.model_dump(mode="json")
        if version == 1:
            series = {}
            for k in keys:
                s = self._slots[k]
                series[k] = {
                    "forest": self._forest.to_state(s),
                    "scores": self._norm.get(s),
                    "warm_started": bool(self._warm[s]),
                }
            return {"version": 1, "config": config, "series": series}
        if version != STATE_VERSION:
            raise DetectorError(f"cannot write detector state version {version}: choose 1 or {STATE_VERSION}")
        slots = np.fromiter((self._slots[k] for k in keys), dtype=np.int64, count=len(keys))
        scores: dict[str, Any] = {"version": SCORES_STATE_VERSION}
        for name in _SCORE_FIELDS:
            scores[name] = getattr(self._norm, name)[slots]
        return {
            "version": STATE_VERSION,
            "config": config,
            "keys": keys,
            "forest": self._forest.to_state_many(slots),
            "scores": scores,
            "warm_started": self._warm[slots],
        }

    def from_state(self, state: dict[str, Any], *, warm_start: bool = False) -> list[str]:
        """Restore the series in ``state`` (replacing models of the same keys); returns their keys.

        Reads versions 1 and 2. A restored series keeps the ``warm_started`` mark it was saved
        with (a checkpoint restore is not a warm start); ``warm_start=True`` marks every restored
        series as bootstrapped from history (``cutstream worker --warm-start``).

        Raises:
            StateVersionError: a state version this code cannot read.
        """
        version = state.get("version")
        if version == 1:
            return self._from_state_v1(state, warm_start)
        if version != STATE_VERSION:
            raise StateVersionError(
                f"detector state version {version!r} is not 1 or {STATE_VERSION}; "
                "drop the checkpoint to start these series fresh"
            )
        keys = [str(k) for k in state["keys"]]
        n = len(keys)
        scores = state["scores"]
        if scores.get("version") != SCORES_STATE_VERSION:
            raise StateVersionError(
                f"normalizer state version {scores.get('version')!r} is not {SCORES_STATE_VERSION}; "
                "start the series fresh (drop its checkpoint)"
            )
        recent = np.asarray(scores["recent"])
        if recent.shape != (n, self.config.scoring.avg_points):
            raise StateVersionError(
                f"normalizer state has recent scores of shape {recent.shape}, this config keeps "
                f"({n}, {self.config.scoring.avg_points}); scoring.avg_points changed since the checkpoint"
            )
        warm = np.asarray(state["warm_started"], dtype=np.bool_).reshape(-1)
        if warm.shape[0] != n or any(np.shape(scores[name])[:1] != (n,) for name in _SCORE_FIELDS):
            raise DetectorError(f"corrupt detector state: arrays do not all hold {n} series")
        slots = self._forest.from_state_many(state["forest"])
        if slots.shape[0] != n:
            self._forest.remove_series(slots)
            raise DetectorError(f"corrupt detector state: {n} keys but {slots.shape[0]} forest series")
        self.evict(keys)  # only now: a state that fails to load leaves the current models alone
        if n:
            self._ensure(int(slots.max()) + 1)
        self._norm.reset(slots)
        for name in _SCORE_FIELDS:
            getattr(self._norm, name)[slots] = scores[name]
        self._warm[slots] = warm | warm_start
        self._slots.update(zip(keys, slots.tolist(), strict=True))
        return keys

    def _from_state_v1(self, state: dict[str, Any], warm_start: bool) -> list[str]:
        restored = []
        for k, entry in state["series"].items():
            if k in self._slots:
                self.evict([k])
            slot = int(self._forest.from_state(entry["forest"]))
            self._ensure(slot + 1)
            self._norm.reset(np.array([slot]))
            self._norm.put(slot, entry["scores"])
            self._warm[slot] = warm_start or bool(entry.get("warm_started", False))
            self._slots[k] = slot
            restored.append(k)
        return restored

    def evict(self, keys: Sequence[str]) -> int:
        """Drop the models of ``keys`` (unknown keys are ignored); returns how many were dropped."""
        slots = [self._slots.pop(k) for k in keys if k in self._slots]
        if slots:
            arr = np.asarray(slots, dtype=np.int64)
            self._forest.remove_series(arr)
            self._norm.reset(arr)
            self._warm[arr] = False
        return len(slots)

    @property
    def bytes_per_series(self) -> int:
        """Model memory per series: the forest's plus the normalizer's."""
        per_norm = 8 * (self.config.scoring.avg_points + 9 + 2 * 24)
        return int(self._forest.bytes_per_series) + per_norm


def _uids(keys: Sequence[str]) -> np.ndarray:
    """Stable uint64 identities of keys (they seed each series' random cuts, whatever its slot)."""
    return np.array(
        [int.from_bytes(hashlib.sha256(k.encode("utf-8")).digest()[:8], "little") for k in keys],
        dtype=np.uint64,
    )


def _empty_batch() -> ScoreBatch:
    f = np.zeros(0)
    return ScoreBatch(
        raw_score=f,
        anomaly_score=f.copy(),
        threshold=f.copy(),
        decision=np.zeros(0, dtype=np.int8),
        confidence=f.copy(),
        inference=np.zeros(0, dtype=np.bool_),
        processed_points=np.zeros(0, dtype=np.int64),
        expected_value=f.copy(),
        missing=np.zeros(0, dtype=np.bool_),
        warm_started=np.zeros(0, dtype=np.bool_),
    )
