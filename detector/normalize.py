"""The scoring stage around the forest: a series' expected value, anomalyScore 0-100, the decision.

A point is judged by two channels, each on a common scale of *surprise* (``-log10`` of how likely
a point at least this unusual is, for this series):

**The value channel** (``prepare``, before the forest; ``judge``, after it) asks how far the value
is from what this series does at this time:

1. *Transform.* ``x = sign(v) * log(1 + |v| / c)`` with ``c`` the series' typical magnitude
   (mean ``|v|`` of its first points): linear near zero, logarithmic for large values, so that
   heavy-tailed latencies and byte counts are judged in relative terms and a count's noise does
   not grow with its level.
2. *Expected value.* Four models of ``x`` are kept per series and the one that has predicted it
   best is used: the level (an EW mean over ~200 points), the hour of day and the hour of week
   (EW means per bucket over days and weeks, linearly interpolated between bucket centres) and the
   5-minute slot of the day (what the coarse model misses in that slot: sharp daily shapes, a daily
   batch job; so a weekend's slot expects the weekend's level plus the job). The choice is global (which
   model has the lower EW absolute error over the last ~1000 points) and then local: in a week
   hour where the weekly model beats the daily one, or in a day slot where the slot beats the
   rest, that one is used there (weekends, batch jobs); a week hour not yet judged takes the weekly
   model when the daily one missed it badly last week (a series' second weekend). A day slot just
   before or after the point's own, where it holds a rhythm of its own, may explain the point
   instead (a batch job's last minute in the next slot; ``_neighbour_slot``). The scale ``S``
   is the chosen model's EW
   absolute deviation, floored by 70 % of the series' 99th-percentile residual / 2.58 and by 2 %
   of its overall spread (a step in a constant series is not infinitely unusual). An average made
   of fewer events than the series usually has at that hour of day (``events``: a minute's mean
   latency of 2 requests where 40 are usual) is noisier: ``S`` grows by ``sqrt(usual / events)``.
3. *Evidence.* ``z = (x - E) / S``; the instant channel judges ``|z|``, the sustained channel the
   mean of the last 5 residuals (a shift or a silence of a few windows), the shift channel an EW
   mean of the clipped residuals over ~15 points (weighted 0.6; one alert per shift). Each is
   calibrated to the series' own tail: the EW frequency with which it exceeded each of 28 levels
   (over ~10,000 points) replaces the Gaussian tail probability where the series has exceeded that
   level at least 5 times, and the Gaussian shape carries on beyond (``_surprise``). A series whose
   outliers are common thus learns that they are; a series that never had one keeps the Gaussian.
   During an incident the sustained and shift statistics are not learned (a few level shifts must
   not teach a series that the next one is common).

**The forest channel** judges the forest's raw isolation score: the mean of the last 2 raw scores
against their EW mean and variance over ~3000 points (upper tail only), as HTM's anomaly
likelihood does. The forest reads the value with the seasonal part of the expectation removed, so
that the daily rhythm is not news to it. Its evidence counts for a decision only where the value
channel sees the point as at least a little unusual (calibrated surprise 2.5, about p = 0.3 %), and it
is weighted by how often, on this series, its high scores came with such value evidence (a
Bayesian ratio with 3 agreeing points as prior, squared): on a heavy-tailed series where the
forest isolates every large value, its voice fades.

``anomalyScore = 100 * max(channels) / surprise_at_100`` up to 70, then approaching 100 smoothly
(``_to_score``: strong alerts stay ranked); the decision is ``anomalyScore > threshold`` with the
optional ``direction`` and ``min_relative_change`` filters. After an alert a series' scores are held
below the threshold for ``suppress_points`` points (one incident, one alert), unless the incident
ends first (20 points in a row below surprise 3: the next anomaly is a new one) or the value
evidence moves the other way. A series is in ``LEARNING`` (score 0) until it has ``learning_points``
points spanning ``learning_ms`` of event time (or ``learning_max_points`` points).

Each point is judged by what came before it (the models learn after judging: causal), and the
state lives in per-slot arrays so that a batch of many series is one compiled loop. The passes'
per-point code is written once, as plain Python (detector/scoring_kernels.py), and compiled twice:
for the CPU (detector/scoring_cpu.py: numba ``prange`` over the batch's series) and for CUDA
(detector/scoring_cuda.py: one thread per series, the state on the device when the backend is
``gpu``). This module keeps the state (``NormalizerState``) and the passes' Python side.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np

from detector import scoring_kernels
from detector.backend import Backend, get_backend

#: Version of the normalizer's per-series state (``NormalizerState.columns``).
STATE_VERSION = 3

DIRECTION_CODES = {"both": 0, "up": 1, "down": 2}
#: ``ScoreBatch.reason`` codes: which channel carried the point's score.
REASONS = ("", "value", "sustained", "forest", "shift")

_NEVER = scoring_kernels._NEVER
N_DAY, N_WEEK, N_SLOT = scoring_kernels.N_DAY, scoring_kernels.N_WEEK, scoring_kernels.N_SLOT
#: Levels at which each channel's exceedance frequency is tracked (calibration).
LEVELS = scoring_kernels.LEVELS
N_LEVELS = scoring_kernels.N_LEVELS
#: Sustained channel: residuals averaged.
MEAN_POINTS = scoring_kernels.MEAN_POINTS
#: Shift channel: EW mean of the clipped residuals over about this many points.
SHIFT_POINTS = scoring_kernels.SHIFT_POINTS
_RAW_POINTS = scoring_kernels._RAW_POINTS


@dataclass(frozen=True)
class NormalizerParams:
    """The scoring stage's parameters, flattened from ``ScoringConfig`` for the compiled loops."""

    threshold: float
    learning_points: int
    learning_ms: float
    learning_max_points: int
    direction: int
    min_relative_change: float
    surprise_at_100: float
    suppress_points: int
    suppress_cap: float
    confidence_points: float
    missing_confidence: float
    seasonal: bool
    forest_weight: float
    value_weight: float


class NormalizerState:
    """Per-slot arrays of both passes (structure of arrays); a slot is a row, grown on demand."""

    #: name -> (trailing shape, dtype, fill). Scalars are float64/int64; the profiles float32.
    SPEC: ClassVar[dict[str, tuple[tuple[int, ...], Any, float]]] = {
        # counters and clocks: points processed (processedDataPoints) and points the models learned
        # (they restart at 0 when an older state is upgraded: the models must learn again)
        "n_seen": ((), np.int64, 0),
        "n_model": ((), np.int64, 0),
        "t_first": ((), np.int64, 0),
        "t_last": ((), np.int64, 0),
        "cadence": ((), np.float64, 0.0),
        "c_sum": ((), np.float64, 0.0),
        "c_n": ((), np.int64, 0),
        # level and spread
        "level": ((), np.float64, 0.0),
        "level_dev": ((), np.float64, 0.0),
        "spread_mean": ((), np.float64, 0.0),
        "spread_dev": ((), np.float64, 0.0),
        "q99": ((), np.float64, 0.0),
        # model errors and counts (global choice)
        "err": ((4,), np.float64, 0.0),
        "err_n": ((4,), np.int64, 0),
        # profiles
        "day_mean": ((N_DAY,), np.float32, 0.0),
        "day_dev": ((N_DAY,), np.float32, 0.0),
        "day_n": ((N_DAY,), np.float32, 0.0),
        "week_mean": ((N_WEEK,), np.float32, 0.0),
        "week_dev": ((N_WEEK,), np.float32, 0.0),
        "week_n": ((N_WEEK,), np.float32, 0.0),
        "slot_mean": ((N_SLOT,), np.float32, 0.0),  # the coarse model's residual, from version 4
        "slot_dev": ((N_SLOT,), np.float32, 0.0),
        "slot_n": ((N_SLOT,), np.float32, 0.0),
        # local choice: errors of the slot vs the coarse model per slot, week vs day per week hour
        "slot_err": ((N_SLOT,), np.float32, 0.0),
        "coarse_err": ((N_SLOT,), np.float32, 0.0),
        # an average's typical number of events per hour of day (0: not learned)
        "ev_day": ((N_DAY,), np.float32, 0.0),
        "week_err": ((N_WEEK,), np.float32, 0.0),
        "day_err": ((N_WEEK,), np.float32, 0.0),
        # value channel
        "recent_z": ((MEAN_POINTS,), np.float64, 0.0),
        "ex_value": ((N_LEVELS,), np.float32, 0.0),
        "ex_sustained": ((N_LEVELS,), np.float32, 0.0),
        "shift_z": ((), np.float64, 0.0),
        "shift_armed": ((), np.int64, 1),
        "ex_shift": ((N_LEVELS,), np.float32, 0.0),
        "calib_n": ((), np.int64, 0),
        # forest channel
        "recent_raw": ((_RAW_POINTS,), np.float64, 0.0),
        "raw_mean": ((), np.float64, 0.0),
        "raw_var": ((), np.float64, 0.0),
        "forest_alarms": ((), np.float64, 0.0),
        "forest_agreed": ((), np.float64, 0.0),
        # decisions
        "since_alert": ((), np.int64, int(_NEVER)),
        "alert_sign": ((), np.int64, 0),
        "quiet_n": ((), np.int64, 0),
        "missing_rate": ((), np.float64, 0.0),
    }

    def __init__(self, capacity: int = 64, backend: str = "cpu") -> None:
        #: where the arrays live and the passes run: "cpu" (numpy, numba), "gpu" (CuPy arrays,
        #: numba.cuda kernels) or "cudasim" (tests: the CUDA kernels in numba's simulator)
        self.backend: Backend = get_backend(backend)
        xp = self.backend.xp
        self.arrays: dict[str, Any] = {
            name: xp.full((0, *shape), fill, dtype=dt) for name, (shape, dt, fill) in self.SPEC.items()
        }
        self.ensure(capacity)

    def __getattr__(self, name: str) -> Any:
        arrays = self.__dict__.get("arrays")
        if arrays is not None and name in arrays:
            return arrays[name]
        raise AttributeError(name)

    @property
    def capacity(self) -> int:
        return int(self.arrays["n_seen"].shape[0])

    def _index(self, slots: Any) -> Any:
        return self.backend.asarray(np.asarray(slots, dtype=np.int64))

    def ensure(self, capacity: int) -> None:
        """Grow the arrays (doubling) so that slots ``< capacity`` exist; new slots are fresh."""
        old = self.capacity
        if capacity <= old:
            return
        new = max(capacity, 2 * old, 16)
        xp = self.backend.xp
        for name, (shape, dt, fill) in self.SPEC.items():
            grown = xp.full((new, *shape), fill, dtype=dt)
            grown[:old] = self.arrays[name]
            self.arrays[name] = grown

    def reset(self, slots: np.ndarray) -> None:
        """Make ``slots`` fresh (a new series, or one that was evicted)."""
        idx = self._index(slots)
        for name, (_, _, fill) in self.SPEC.items():
            self.arrays[name][idx] = fill

    def get(self, name: str, slots: np.ndarray) -> np.ndarray:
        """Field ``name`` of ``slots``, in host memory (a copy)."""
        return np.array(self.backend.to_numpy(self.arrays[name][self._index(slots)]), copy=True)

    def put(self, name: str, slots: np.ndarray, values: Any) -> None:
        """Set field ``name`` of ``slots`` from host values."""
        self.arrays[name][self._index(slots)] = self.backend.asarray(
            np.asarray(values, dtype=self.SPEC[name][1])
        )

    def columns(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """The state of ``slots`` as named arrays (host copies; one row per slot)."""
        return {name: self.get(name, slots) for name in self.SPEC}

    def put_columns(self, slots: np.ndarray, columns: dict[str, Any]) -> None:
        """Restore what :meth:`columns` returned into ``slots``."""
        from detector.errors import StateVersionError

        checked = {}
        for name, (shape, dt, _) in self.SPEC.items():
            if name not in columns:
                raise StateVersionError(
                    f"normalizer state field {name} is missing: the checkpoint is corrupt or from "
                    "another version"
                )
            arr = np.asarray(columns[name], dtype=dt)
            if arr.shape != (slots.shape[0], *shape):
                raise StateVersionError(
                    f"normalizer state field {name} has shape {arr.shape}, expected "
                    f"{(slots.shape[0], *shape)}: the checkpoint is corrupt or from another version"
                )
            checked[name] = arr
        for name, arr in checked.items():
            self.put(name, slots, arr)

    @property
    def bytes_per_series(self) -> int:
        return sum(
            int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize for shape, dt, _ in self.SPEC.values()
        )


# --------------------------------------------------------------------------------------------------
# The Python side


@dataclass(frozen=True)
class Prepared:
    """Pass A's outputs, aligned with the batch: the forest's input and the value's judgement."""

    z: np.ndarray  # float64[n] the value's residual in scales
    expected_x: np.ndarray  # float64[n] the expectation, transformed
    scale: np.ndarray  # float64[n] the residual's scale, transformed
    forest_input: np.ndarray  # float64[n] the value with the seasonal part removed (GPU: on the device)
    count: np.ndarray  # int64[n] points the series' models have learned, this one included
    seen: np.ndarray  # int64[n] points the series has processed, this one included
    magnitude: np.ndarray  # float64[n] the transform's typical magnitude ``c`` for the point
    order: np.ndarray  # int64[n] the batch's points grouped by series (stable: input order inside)
    starts: np.ndarray  # int64[series + 1] where each series' points begin in ``order``
    #: GPU and simulator: the batch's slots, values and timestamps where the kernels read them
    #: (``judge`` reuses them; on a GPU, on the device)
    inputs: tuple[Any, Any, Any] | None = None


def prepare(state: NormalizerState, params: NormalizerParams, slots: np.ndarray, values: np.ndarray,
            timestamps_ms: np.ndarray, events: np.ndarray | None = None,
            distinct: bool | None = None) -> Prepared:  # fmt: skip
    """Judge each value against its series' models and learn it (in input order).

    ``events``: for an average, how many events it is made of (0: not an average, or unknown).
    ``distinct``: whether a slot repeats in the batch, where the caller knows it (True: a worker's
    usual step, the points need no grouping by series; None: found out here).
    On the GPU backend the outputs stay on the device, ``forest_input`` (the forest's input) too,
    and ``judge`` takes them there.
    """
    n = slots.shape[0]
    slots = np.ascontiguousarray(slots, dtype=np.int64)
    order, starts = _index(n) if distinct else _runs(slots, may_be_distinct=distinct is None)
    vals = np.ascontiguousarray(values, dtype=np.float64)
    ts = np.ascontiguousarray(timestamps_ms, dtype=np.int64)
    ev = np.zeros(n) if events is None else np.ascontiguousarray(events, dtype=np.float64)
    if state.backend.name != "cpu":
        from detector import scoring_cuda

        return Prepared(
            **scoring_cuda.prepare(
                state, bool(params.seasonal), slots, vals, ts, ev, order, starts, PREPARE_STATE
            )
        )
    from detector import scoring_cpu

    out = [np.zeros(n) for _ in range(4)] + [np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n)]
    if n:
        a = state.arrays
        scoring_cpu.prepare_batch(
            order,
            starts,
            slots,
            vals,
            ts,
            ev,
            bool(params.seasonal),
            *(a[name] for name in PREPARE_STATE),
            *out,
        )
    return Prepared(
        order=order,
        starts=starts,
        z=out[0],
        expected_x=out[1],
        scale=out[2],
        forest_input=out[3],
        count=out[4],
        seen=out[5],
        magnitude=out[6],
    )


def _runs(slots: np.ndarray, may_be_distinct: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The points of each series, together and in input order (``order``), and where each series'
    run begins (``starts``, with ``n`` last): the compiled passes take the series in parallel.

    A batch of distinct series (one point each: a worker's usual step) is its own order, one run a
    point, without sorting (at 100,000 points the sort took 6 ms); ``may_be_distinct`` False (the
    caller knows a slot repeats) skips that check.
    """
    n = slots.shape[0]
    if may_be_distinct and n and slots.min() >= 0:
        top = int(slots.max()) + 1
        if top <= 4 * n + 1024:  # a mark per slot: cheap next to the batch
            first = np.full(top, -1, dtype=np.int64)
            first[slots] = np.arange(n, dtype=np.int64)  # the last row of each slot wins
            if np.count_nonzero(first >= 0) == n:  # n distinct slots
                return _index(n)
    order = np.argsort(slots, kind="stable")
    ordered = slots[order]
    cut = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
    return order.astype(np.int64, copy=False), np.concatenate(([0], cut, [slots.shape[0]])).astype(np.int64)


_INDEX = np.zeros(0, dtype=np.int64)


def _index(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``order`` and ``starts`` of a batch of ``n`` distinct series: ``0..n-1`` and ``0..n``, as
    views of one array kept between batches (no allocation per batch; nothing writes them)."""
    global _INDEX
    if _INDEX.shape[0] < n + 1:
        _INDEX = np.arange(max(n + 1, 2 * _INDEX.shape[0], 1024), dtype=np.int64)
    return _INDEX[:n], _INDEX[: n + 1]


PREPARE_STATE = (
    "n_seen", "n_model", "t_first", "t_last", "cadence", "c_sum", "c_n", "level", "level_dev", "spread_mean",
    "spread_dev", "q99", "err", "err_n", "day_mean", "day_dev", "day_n", "week_mean", "week_dev",
    "week_n", "slot_mean", "slot_dev", "slot_n", "slot_err", "coarse_err", "week_err", "day_err", "ev_day",
)  # fmt: skip
JUDGE_STATE = (
    "t_first", "recent_z", "ex_value", "ex_sustained", "shift_z", "shift_armed", "ex_shift", "calib_n",
    "recent_raw", "raw_mean", "raw_var", "forest_alarms", "forest_agreed", "since_alert",
    "alert_sign", "missing_rate", "quiet_n",
)  # fmt: skip


@dataclass
class NormalizedBatch:
    """Outputs of ``judge`` aligned with the input points, in host memory."""

    anomaly_score: np.ndarray  # float64[n], 0-100
    decision: np.ndarray  # int8[n]
    confidence: np.ndarray  # float64[n], 0-100
    inference: np.ndarray  # bool[n]
    processed_points: np.ndarray  # int64[n]
    expected_value: np.ndarray  # float64[n], in the value's units
    expected_low: np.ndarray  # float64[n], the band a value is judged normal in
    expected_high: np.ndarray
    reason: np.ndarray  # int8[n], REASONS index
    value_score: np.ndarray  # float64[n], the value channels' score 0-100
    forest_score: np.ndarray  # float64[n], the forest channel's (gated, weighted) score 0-100
    raw_score: np.ndarray  # float64[n], the forest's raw score ``judge`` was given


def judge(
    state: NormalizerState,
    params: NormalizerParams,
    slots: np.ndarray,
    raw: Any,
    prepared: Prepared,
    values: np.ndarray,
    timestamps_ms: np.ndarray,
    missing: np.ndarray,
) -> NormalizedBatch:
    """Score a batch of points in input order, advancing each series' state (after ``prepare``).

    ``raw``: the forest's raw scores, on the host (or, on the GPU backend, on the device too).
    """
    n = slots.shape[0]
    if state.backend.name != "cpu" and n:
        from detector import scoring_cuda

        return NormalizedBatch(
            **scoring_cuda.judge(state, _scalars(params), raw, prepared, missing, JUDGE_STATE)
        )
    out = NormalizedBatch(
        anomaly_score=np.zeros(n),
        decision=np.zeros(n, dtype=np.int8),
        confidence=np.zeros(n),
        inference=np.zeros(n, dtype=np.bool_),
        processed_points=np.zeros(n, dtype=np.int64),
        expected_value=np.zeros(n),
        expected_low=np.zeros(n),
        expected_high=np.zeros(n),
        reason=np.zeros(n, dtype=np.int8),
        value_score=np.zeros(n),
        forest_score=np.zeros(n),
        raw_score=np.ascontiguousarray(raw, dtype=np.float64),
    )
    if n == 0:
        return out
    from detector import scoring_cpu

    scoring_cpu.judge_batch(
        prepared.order,
        prepared.starts,
        np.ascontiguousarray(slots, dtype=np.int64),
        out.raw_score,
        prepared.z,
        np.ascontiguousarray(values, dtype=np.float64),
        prepared.expected_x,
        prepared.scale,
        np.ascontiguousarray(timestamps_ms, dtype=np.int64),
        np.ascontiguousarray(missing, dtype=np.bool_),
        prepared.count,
        prepared.seen,
        prepared.magnitude,
        *_scalars(params),
        *(state.arrays[name] for name in JUDGE_STATE),
        *(getattr(out, f.name) for f in fields(out) if f.name != "raw_score"),
    )
    return out


def _scalars(p: NormalizerParams) -> tuple[float | int, ...]:
    """The judge pass's scalar arguments: the band (``scoring_kernels.judge_band``), then ``p``."""
    from detector import scoring_cpu

    s_thr, z_band = scoring_cpu.judge_band(float(p.threshold), float(p.surprise_at_100))
    return (
        float(s_thr),
        float(z_band),
        float(p.threshold),
        int(p.learning_points),
        float(p.learning_ms),
        int(p.learning_max_points),
        int(p.direction),
        float(p.min_relative_change),
        float(p.surprise_at_100),
        int(p.suppress_points),
        float(p.suppress_cap),
        float(p.confidence_points),
        float(p.missing_confidence),
        float(p.forest_weight),
        float(p.value_weight),
    )
