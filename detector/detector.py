"""The Detector facade: forest + scoring stage + threshold, for many series at once.

This is the one scoring code path: the worker (live and replay), backfill, ``cutstream score``
and ``cutstream evaluate`` all score through ``Detector.process_slots`` (``process_many`` is the
same step for callers that hold keys: it looks their slots up first; a caller that names its series
by dense integers keeps a :class:`SlotMap` and skips the per-key lookup).

Example:
    >>> import numpy as np
    >>> from detector.config import ModelConfig
    >>> from detector.detector import Detector
    >>> det = Detector(ModelConfig())
    >>> values = np.r_[10 + np.sin(np.arange(400) / 8.0), 30.0]
    >>> minutes = np.arange(401, dtype=np.int64) * 60_000
    >>> out = det.process_many(["cpu"] * 401, values, minutes * 5)  # 5-minute points: 33 hours
    >>> bool(out.inference[-1]), bool(out.decision[-1]), out.reason_names[-1]
    (True, True, 'value')
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from itertools import repeat
from typing import Any

import numba
import numpy as np

from detector.config import ModelConfig
from detector.errors import DetectorError
from detector.forest import Forest
from detector.normalize import (
    DIRECTION_CODES,
    REASONS,
    NormalizerParams,
    NormalizerState,
    judge,
    prepare,
)
from detector.state import DETECTOR_STATE, NORMALIZER_STATE

#: Version of the dict written by ``Detector.to_state`` (see detector/state.py for the table).
STATE_VERSION = DETECTOR_STATE.current


@dataclass(frozen=True)
class ScoreBatch:
    """Per-point results of ``Detector.process_many``, every array aligned with the input (length n)."""

    raw_score: np.ndarray  # float64: the forest's raw score (isolation score averaged over trees)
    anomaly_score: np.ndarray  # float64: 0-100; 0.0 while LEARNING
    threshold: np.ndarray  # float64: the threshold in force
    decision: np.ndarray  # int8: 1 = anomaly
    confidence: np.ndarray  # float64: 0-100
    inference: np.ndarray  # bool: True = INFERENCE stage, False = LEARNING
    processed_points: np.ndarray  # int64: points this series' model has processed, this one included
    expected_value: np.ndarray  # float64: the model's expected value for the point
    missing: np.ndarray  # bool: the point is a filled-in missing window
    warm_started: np.ndarray  # bool: the series' model was bootstrapped from history (warm start)
    expected_low: np.ndarray  # float64: the band of values judged normal for the point ...
    expected_high: np.ndarray  # float64: ... (in the value's units)
    reason: np.ndarray  # int8: which channel carried the score (``normalize.REASONS``), 0 = none
    value_score: np.ndarray  # float64: the value channels' score, 0-100
    forest_score: np.ndarray  # float64: the forest channel's score (gated, weighted), 0-100

    def __len__(self) -> int:
        return int(self.raw_score.shape[0])

    def take(self, index: np.ndarray) -> ScoreBatch:
        """The rows at ``index`` (an int or bool array), as a new batch."""
        return ScoreBatch(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @property
    def reason_names(self) -> list[str]:
        """``reason`` as words (anomalyReason): ``value``, ``sustained``, ``forest``, ``shift`` or ``""``."""
        return [REASONS[r] for r in self.reason.tolist()]


def _params(config: ModelConfig) -> NormalizerParams:
    s = config.scoring
    return NormalizerParams(
        threshold=s.threshold,
        learning_points=s.learning_points,
        learning_ms=float(s.learning_ms),
        learning_max_points=s.learning_max_points,
        direction=DIRECTION_CODES[s.direction],
        min_relative_change=s.min_relative_change,
        surprise_at_100=s.surprise_at_100,
        suppress_points=s.suppress_points,
        suppress_cap=s.suppress_cap,
        confidence_points=s.confidence_points,
        missing_confidence=s.missing_confidence,
        seasonal=s.seasonal,
        forest_weight=s.forest_weight,
        value_weight=s.value_weight,
    )


class Detector:
    """Scores points of many series (keyed by timeseriesId) with one model configuration.

    Each key gets its own forest slot and normalizer state on first sight. The detector is pure: no
    I/O and no clock; timestamps are passed in. A batch goes through three steps: the value's
    expectation (``normalize.prepare``, which also gives the forest its input: the value without
    its seasonal part), the forest (``Forest.update``), and the judgement (``normalize.judge``).

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
        # the scoring stage's state lives where the forest's does (the resolved backend: "auto" -> one)
        self._norm = NormalizerState(capacity=min(capacity, 1024), backend=self._forest.backend)
        self._slots: dict[str, int] = {}
        self._warm = np.zeros(self._norm.capacity, dtype=np.bool_)
        #: per slot: the step (``process_many`` call) that last scored it, for :meth:`coldest`
        self._used = np.zeros(self._norm.capacity, dtype=np.int64)
        #: per slot: a key holds it (``process_slots`` refuses the others)
        self._live = np.zeros(self._norm.capacity, dtype=np.bool_)
        self._tick = 0
        #: bumped whenever a key may lose its slot or a slot change keys (``evict``, ``from_state``):
        #: a :class:`SlotMap` built at another epoch is stale
        self.epoch = 0

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
            used = np.zeros(self._norm.capacity, dtype=np.int64)
            used[: self._used.shape[0]] = self._used
            self._used = used
            live = np.zeros(self._norm.capacity, dtype=np.bool_)
            live[: self._live.shape[0]] = self._live
            self._live = live

    def slots_of(self, keys: Sequence[str]) -> np.ndarray:
        """Slots of ``keys`` (int64[n]) for :meth:`process_slots`; unseen keys get fresh series, in
        order of first appearance (so that slot assignment is deterministic).

        A slot stays its key's until :attr:`epoch` changes (an eviction or a restore).

        One C-level dict lookup per point (``map(dict.get, ...)``: 10 ms for 100,000 keys, where
        sorting the keys with ``np.unique`` took 250 ms); Python bytecode runs only per new key.
        """
        slots = np.fromiter(map(self._slots.get, keys, repeat(-1)), dtype=np.int64, count=len(keys))
        unseen = np.flatnonzero(slots < 0)
        if unseen.size:
            new = list(dict.fromkeys(str(keys[i]) for i in unseen.tolist()))
            fresh = np.asarray(self._forest.add_series(len(new), uids=_uids(new)), dtype=np.int64)
            self._ensure(int(fresh.max()) + 1)
            self._norm.reset(fresh)
            self._warm[fresh] = False
            self._live[fresh] = True
            self._slots.update(zip(new, fresh.tolist(), strict=True))
            slots[unseen] = np.fromiter(
                (self._slots[str(keys[i])] for i in unseen.tolist()), dtype=np.int64, count=unseen.size
            )
        return slots

    # ------------------------------------------------------------------------------------------
    def process_many(
        self,
        keys: Sequence[str],
        values: np.ndarray,
        timestamps_ms: np.ndarray,
        missing: np.ndarray | None = None,
        events: np.ndarray | None = None,
    ) -> ScoreBatch:
        """Update and score a batch of points, in input order (a key may repeat, in time order).

        The same step as :meth:`process_slots` after :meth:`slots_of` (one dict lookup per key).

        Args:
            keys: n timeseriesIds.
            values: float64[n] the points' values (missing windows already filled by the caller).
            timestamps_ms: int64[n] event times (epoch ms): they place a point in its series'
                daily and weekly profiles.
            missing: bool[n] the point is a filled-in missing window (default: none).
            events: float64[n] for a value that is an average, how many events it averages (0 or
                default: not an average). An average of fewer events than the series usually has
                at that hour is judged with a band wider by sqrt(usual / events).

        Returns:
            The per-point results, aligned with the input.

        Raises:
            DetectorError: mismatched lengths or a value that is not a finite number.
        """
        batch = _inputs(len(keys), values, timestamps_ms, missing, events, "keys")
        if len(keys) == 0:
            return _empty_batch()
        return self._score(self.slots_of(keys), *batch)

    def process_slots(
        self,
        slots: np.ndarray,
        values: np.ndarray,
        timestamps_ms: np.ndarray,
        missing: np.ndarray | None = None,
        events: np.ndarray | None = None,
    ) -> ScoreBatch:
        """:meth:`process_many` for series named by their slots (int64[n], from :meth:`slots_of`
        or a :class:`SlotMap` of this detector's current :attr:`epoch`): no per-key work.

        Raises:
            DetectorError: as :meth:`process_many`, or a slot that no key holds now.
        """
        sl = np.asarray(slots).reshape(-1)
        batch = _inputs(sl.shape[0], values, timestamps_ms, missing, events, "slots")
        if sl.shape[0] == 0:
            return _empty_batch()
        if sl.dtype.kind not in "iu":
            raise DetectorError(f"process_slots needs integer slots, got {sl.dtype}")
        return self._score(np.ascontiguousarray(sl, dtype=np.int64), *batch)

    def _score(
        self, slots: np.ndarray, vals: np.ndarray, ts: np.ndarray, miss: np.ndarray, ev: np.ndarray | None
    ) -> ScoreBatch:
        n = slots.shape[0]
        self._tick += 1
        bad, distinct = _mark(slots, self._live, self._used, self._tick)
        if bad >= 0:
            raise DetectorError(
                f"slot {int(slots[bad])} at position {bad} holds no series (evicted or restored since "
                "it was looked up?): look slots up again with slots_of"
            )
        # Missing points are fed like any point: the shingle is a run of consecutive windows and
        # must stay aligned in time (see docs/ARCHITECTURE.md, "Missing windows").
        prep = prepare(self._norm, self._params, slots, vals, ts, ev, distinct=distinct)
        # on the GPU the forest's input and score stay on the device between the passes
        device_slots = None if prep.inputs is None else prep.inputs[0]
        out = self._forest.update(slots, prep.forest_input, device_slots=device_slots, distinct=distinct)
        # the columns that need no result are made while a GPU's kernels run (judge waits on them)
        threshold = np.full(n, float(self.config.scoring.threshold))
        warm = self._warm[slots]
        norm = judge(self._norm, self._params, slots, out.raw_score, prep, vals, ts, miss)
        return ScoreBatch(
            raw_score=norm.raw_score,
            anomaly_score=norm.anomaly_score,
            threshold=threshold,
            decision=norm.decision,
            confidence=norm.confidence,
            inference=norm.inference,
            processed_points=norm.processed_points,
            expected_value=norm.expected_value,
            missing=miss,
            warm_started=warm,
            expected_low=norm.expected_low,
            expected_high=norm.expected_high,
            reason=norm.reason,
            value_score=norm.value_score,
            forest_score=norm.forest_score,
        )

    # ------------------------------------------------------------------------------------------
    def to_state(self, keys: Sequence[str] | None = None) -> dict[str, Any]:
        """Versioned state of ``keys`` (default: all): plain values and numpy arrays.

        ``keys`` (the order of the arrays), ``forest`` (``Forest.to_state_many``), ``scores`` (the
        normalizer's arrays, one row per key: ``NormalizerState.columns``) and ``warm_started``
        (bool[n]). The arrays are copies: the caller may encode them while this detector goes on
        scoring. Only the current version is written (detector/state.py).

        Raises:
            DetectorError: a key this detector does not hold.
        """
        keys = self.keys() if keys is None else list(keys)
        missing = [k for k in keys if k not in self._slots]
        if missing:
            raise DetectorError(f"no model for series {missing[0]!r}; it was never scored or was evicted")
        slots = np.fromiter((self._slots[k] for k in keys), dtype=np.int64, count=len(keys))
        return {
            "version": STATE_VERSION,
            "config": self.config.model_dump(mode="json"),
            "keys": keys,
            "forest": self._forest.to_state_many(slots),
            "scores": {"version": NORMALIZER_STATE.current, **self._norm.columns(slots)},
            "warm_started": self._warm[slots],
        }

    def from_state(self, state: dict[str, Any], *, warm_start: bool = False) -> list[str]:
        """Restore the series in ``state`` (replacing models of the same keys); returns their keys.

        Reads every version in detector/state.py's table. A restored series keeps the
        ``warm_started`` mark it was saved with (a checkpoint restore is not a warm start);
        ``warm_start=True`` marks every restored series as bootstrapped from history.

        Raises:
            StateVersionError: a state version this code cannot read.
            DetectorError: a state that does not fit this detector (another forest config, corrupt).
        """
        state = DETECTOR_STATE.upgrade(state)
        keys = [str(k) for k in state["keys"]]
        n = len(keys)
        warm = np.asarray(state["warm_started"], dtype=np.bool_).reshape(-1)
        if warm.shape[0] != n:
            raise DetectorError(f"corrupt detector state: {warm.shape[0]} warm-start marks for {n} series")
        scores = state["scores"]
        if "partial" not in scores:
            scores = NORMALIZER_STATE.upgrade(scores)
        if n == 0:
            return []
        slots = self._forest.from_state_many(state["forest"])
        if slots.shape[0] != n:
            self._forest.remove_series(slots)
            raise DetectorError(f"corrupt detector state: {n} keys but {slots.shape[0]} forest series")
        try:
            self._ensure(int(slots.max()) + 1)
            self._norm.reset(slots)
            if "partial" in scores:  # upgraded from an older scoring stage: the models learn again
                for name, values in scores["partial"].items():
                    self._norm.put(name, slots, values)
            else:
                self._norm.put_columns(slots, scores)
        except Exception:
            self._forest.remove_series(slots)
            raise
        self.evict(keys)  # only now: a state that fails to load leaves the current models alone
        self.epoch += 1
        self._warm[slots] = warm | warm_start
        self._live[slots] = True
        self._used[slots] = self._tick
        self._slots.update(zip(keys, slots.tolist(), strict=True))
        return keys

    def evict(self, keys: Sequence[str]) -> int:
        """Drop the models of ``keys`` (unknown keys are ignored); returns how many were dropped."""
        slots = [self._slots.pop(k) for k in keys if k in self._slots]
        if slots:
            arr = np.asarray(slots, dtype=np.int64)
            self._forest.remove_series(arr)
            self._norm.reset(arr)
            self._warm[arr] = False
            self._live[arr] = False
            self.epoch += 1
        return len(slots)

    def coldest(self, n: int) -> tuple[list[str], np.ndarray]:
        """The ``n`` series scored least recently (oldest first) and the points each has seen.

        Restored series count as scored by the step that restored them.
        """
        keys = list(self._slots)
        n = min(max(n, 0), len(keys))
        if n == 0:
            return [], np.zeros(0, dtype=np.int64)
        slots = np.fromiter(self._slots.values(), dtype=np.int64, count=len(keys))
        used = self._used[slots]
        pick = np.argpartition(used, n - 1)[:n] if n < len(keys) else np.arange(len(keys))
        pick = pick[np.argsort(used[pick], kind="stable")]
        seen = self._norm.get("n_seen", slots[pick])
        return [keys[i] for i in pick.tolist()], seen

    @property
    def bytes_per_series(self) -> int:
        """Model memory per series: the forest's plus the normalizer's."""
        return int(self._forest.bytes_per_series) + self._norm.bytes_per_series


class SlotMap:
    """A caller's map from its own dense series ids (e.g. a series registry's index) to the
    detector's slots, for :meth:`Detector.process_slots`.

    Ids seen before cost one array read; only ids it has not seen (or all of them, once after the
    detector's :attr:`~Detector.epoch` changed: an eviction or a restore) go through the keys.

    Example:
        >>> import numpy as np
        >>> from detector.config import ModelConfig
        >>> det = Detector(ModelConfig())
        >>> names = ["a", "b"]
        >>> slot_map = SlotMap(det)
        >>> slots = slot_map.slots(np.array([1, 0, 1]), lambda ids: [names[i] for i in ids.tolist()])
        >>> slots.tolist() == det.slots_of(["b", "a", "b"]).tolist()
        True
    """

    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        self._slot = np.full(0, -1, dtype=np.int64)
        self._epoch = detector.epoch

    def slots(self, ids: np.ndarray, keys: Callable[[np.ndarray], Sequence[str]]) -> np.ndarray:
        """The slots (int64[n]) of ``ids`` (int[n], >= 0); ``keys(ids)`` names ids not yet mapped."""
        ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        if self._epoch != self.detector.epoch:
            self._slot[:] = -1
            self._epoch = self.detector.epoch
        slots = np.empty(ids.shape[0], dtype=np.int64)
        n_unseen, top = _lookup(self._slot, ids, slots)  # one pass: no temporaries
        if top > self._slot.shape[0]:
            grown = np.full(max(top, 2 * self._slot.shape[0], 1024), -1, dtype=np.int64)
            grown[: self._slot.shape[0]] = self._slot
            self._slot = grown
        if n_unseen:
            unseen = np.flatnonzero(slots < 0)
            fresh = self.detector.slots_of(keys(ids[unseen]))
            slots[unseen] = fresh
            self._slot[ids[unseen]] = fresh
        return slots


def _inputs(
    n: int,
    values: np.ndarray,
    timestamps_ms: np.ndarray,
    missing: np.ndarray | None,
    events: np.ndarray | None,
    what: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """The batch's columns, contiguous and of the scoring dtypes (no copy where they are), checked;
    ``missing`` is a copy (it goes into the results)."""
    vals = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
    ts = np.ascontiguousarray(timestamps_ms, dtype=np.int64).reshape(-1)
    miss = (
        np.zeros(n, dtype=np.bool_)
        if missing is None
        else np.array(missing, dtype=np.bool_, copy=True).reshape(-1)
    )
    ev = None if events is None else np.asarray(events, dtype=np.float64).reshape(-1)
    if not (vals.shape[0] == ts.shape[0] == miss.shape[0] == n) or (ev is not None and ev.shape[0] != n):
        raise DetectorError(
            f"process_many needs aligned inputs: {n} {what}, {vals.shape[0]} values, "
            f"{ts.shape[0]} timestamps, {miss.shape[0]} missing flags"
            + ("" if ev is None else f", {ev.shape[0]} event counts")
        )
    if n and not np.all(np.isfinite(vals)):
        bad = int(np.flatnonzero(~np.isfinite(vals))[0])
        raise DetectorError(
            f"value at position {bad} is {vals[bad]!r}; fill or drop non-finite values before scoring"
        )
    return vals, ts, miss, ev


@numba.njit(cache=True, nogil=True)
def _lookup(table: np.ndarray, ids: np.ndarray, out: np.ndarray) -> tuple[int, int]:
    """``out[i] = table[ids[i]]`` (-1 for an id beyond the table); returns how many are negative
    (ids not mapped yet) and the largest id + 1."""
    unseen = 0
    top = 0
    for i in range(ids.shape[0]):
        k = ids[i]
        top = max(top, k + 1)
        s = table[k] if 0 <= k < table.shape[0] else -1
        out[i] = s
        if s < 0:
            unseen += 1
    return unseen, top


@numba.njit(cache=True, nogil=True)
def _mark(slots: np.ndarray, live: np.ndarray, used: np.ndarray, tick: int) -> tuple[int, bool]:
    """One pass over a batch's slots: the position of the first slot no key holds (-1: none);
    if none, each slot is marked as used at ``tick`` (a new value per step) and whether no slot
    repeats in the batch (a repeat finds its mark already set)."""
    for i in range(slots.shape[0]):
        s = slots[i]
        if s < 0 or s >= live.shape[0] or not live[s]:
            return i, False
    distinct = True
    for i in range(slots.shape[0]):
        s = slots[i]
        if used[s] == tick:
            distinct = False
        used[s] = tick
    return -1, distinct


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
        expected_low=f.copy(),
        expected_high=f.copy(),
        reason=np.zeros(0, dtype=np.int8),
        value_score=f.copy(),
        forest_score=f.copy(),
    )
