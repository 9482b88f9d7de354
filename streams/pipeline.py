"""One detector's stages, written once: decode → validate → window → score → result batch.

Every driver runs a detector through :class:`DetectorPipeline`: the worker (live events and
replays), backfill (history files; ``cutstream evaluate`` builds on backfill), the demo (a worker)
and ``cutstream bench ingest``. The chain, with what goes in and out of each stage:

====================  =============================================  ==================================
stage                 in                                             out
====================  =============================================  ==================================
decode + validate     message values (bytes) of one partition        ``ParsedBatch`` + rejects
                      (:meth:`~DetectorPipeline.add`), or history
                      columns (:meth:`~DetectorPipeline.add_columns`)
window                ``ParsedBatch`` → the partition's               late events as rejects
                      ``WindowState``
close                 the watermark (and the wall clock, for idle     ``Closed``: ``ClosedWindows`` per
                      partitions)                                     partition, non-finite dropped
score                 ``Closed``                                      ``Scored``: one
                                                                      ``Detector.process_slots`` for all
                                                                      partitions, one ``ResultBatch``
====================  =============================================  ==================================

A *partition* is whatever key the driver splits its input by (the worker: ``(topic, partition)``;
backfill: one key). Each partition has its own windows and owns the models of the series first
seen on it, so that its checkpoint (:meth:`~DetectorPipeline.state`) carries them and a revoke
(:meth:`~DetectorPipeline.drop`) evicts them. Scoring is shared: every series whose window closed
in one pass is scored in one step, whatever its partition, in (window end, series) order.

The scoring step names series by their registry index, not their timeseriesId: a
:class:`~detector.detector.SlotMap` turns indices into the detector's slots with one array read,
and the per-partition ownership is a flag per index, so a step over series seen before does no
per-series Python work (the keys are looked up only for new series, after an eviction or a restore,
and while models are parked).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

import numpy as np
import pyarrow as pa

from detector.detector import Detector, ScoreBatch, SlotMap
from sinks.record import ResultBatch
from streams.config import DetectorSpec
from streams.park import ModelPark
from streams.parse import MAX_MEASURE_ABS, EventParser
from streams.window import ClosedWindows, WindowState

logger = logging.getLogger(__name__)

#: The key a driver splits its input by (the worker: ``(topic, partition)``).
P = TypeVar("P", bound=Hashable)
#: ``(position in the batch handed in, reason)`` of an event that was not taken.
Reject = tuple[int, str]
#: An evicted model is parked when its series has seen at least this many points, else dropped.
PARK_MIN_POINTS = 2


@dataclass(frozen=True)
class Closed(Generic[P]):
    """The windows that closed in one pass, per partition (non-finite aggregates left out)."""

    parts: list[tuple[P, ClosedWindows]]
    non_finite: int = 0  # windows dropped because their aggregate overflowed

    def __len__(self) -> int:
        return sum(len(c) for _, c in self.parts)


@dataclass(frozen=True)
class Scored(Generic[P]):
    """One scoring step: the result records of every closed window, and whose they are."""

    results: ResultBatch
    scores: ScoreBatch
    spans: list[tuple[P, int, int]]  # each partition's rows of ``results``: [start, stop)
    series_split: int = 0  # series first seen on another partition (input not keyed by series?)

    def by_partition(self) -> Iterator[tuple[P, ResultBatch]]:
        """Each partition's records, sharing the step's table and messages."""
        for tp, a, b in self.spans:
            yield tp, self.results.slice(a, b)


@dataclass
class PartitionState:
    """What a checkpoint holds of one partition of one detector."""

    windows: dict[str, Any]  # WindowState.to_state()
    detector: dict[str, Any]  # Detector.to_state(the series whose models are in memory)
    series: list[str]  # the timeseriesIds whose models this partition owns (in memory or parked)
    parked: dict[str, str] = field(default_factory=dict)  # parked series -> segment (streams/park.py)


@dataclass
class _Part:
    windows: WindowState
    series: dict[str, None] = field(default_factory=dict)  # owned models, in first-seen order
    #: per registry index: the series is in ``series`` (False: not known to be; look it up)
    owned_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.bool_))


class DetectorPipeline(Generic[P]):
    """The stages of one detector over any number of partitions (see the module docstring).

    Example:
        >>> from streams.config import DetectorSpec, MeasureSpec
        >>> spec = DetectorSpec(name="shop", topic="orders", dimensions=("product",),
        ...                     measures=(MeasureSpec(field="quantity"),), window_ms=1000)
        >>> pipe = DetectorPipeline(spec)
        >>> pipe.add(0, [b'{"timestamp": 100, "product": "A", "quantity": 2}', b'oops'])
        [(1, 'invalid_json')]
        >>> pipe.add(0, [b'{"timestamp": 1500, "product": "A", "quantity": 5}'])
        []
        >>> scored = pipe.step()
        >>> scored.results.table().column("aggregatedMeasureValue").to_pylist()
        [2.0]

    Args:
        spec: the detector.
        detector: its models (a fresh ``Detector(spec.model)`` when None).
        backend: the forest's array backend, for a fresh detector.
        capacity: series the fresh detector preallocates room for.
        park: where models beyond ``spec.max_models`` go (the worker's, next to its checkpoints);
            without one the budget is not enforced (backfill: its series are what the file holds).
    """

    def __init__(
        self,
        spec: DetectorSpec,
        detector: Detector | None = None,
        *,
        backend: str = "cpu",
        capacity: int = 1024,
        park: ModelPark | None = None,
    ) -> None:
        self.spec = spec
        self.parser = EventParser(spec)
        self.detector = detector if detector is not None else Detector(spec.model, backend, capacity)
        self.park = park
        self.models_dropped = 0  # one-point models evicted without parking
        self._parts: dict[P, _Part] = {}
        self._owner: dict[str, P] = {}
        self._slot_map = SlotMap(self.detector)

    @property
    def name(self) -> str:
        return self.spec.name

    def partitions(self) -> list[P]:
        return list(self._parts)

    def windows(self, tp: P) -> WindowState:
        """The partition's windows (created on first use)."""
        part = self._parts.get(tp)
        if part is None:
            part = self._parts[tp] = _Part(WindowState(self.spec, self.parser.registry))
        return part.windows

    # -- decode + validate + window -------------------------------------------------------------

    def add(self, tp: P, values: Sequence[bytes | None], now_ms: int | None = None) -> list[Reject]:
        """Decode, validate and window one partition's messages (in consumption order).

        ``now_ms``: the caller's wall clock, for the idle rule (None where there is none: backfill).
        Returns every message that was not taken, by position, with the reason.
        """
        parsed = self.parser.parse(values)
        return [*parsed.rejects, *self.windows(tp).add(parsed, now_ms)]

    def add_columns(
        self,
        tp: P,
        timestamps_ms: np.ndarray,
        dimensions: Sequence[pa.Array],
        measures: np.ndarray,
        now_ms: int | None = None,
    ) -> list[Reject]:
        """Window rows that are valid columns already (history): see ``EventParser.from_columns``."""
        parsed = self.parser.from_columns(timestamps_ms, dimensions, measures)
        return self.windows(tp).add(parsed, now_ms)

    # -- close + score ----------------------------------------------------------------------------

    def close(self, tps: Iterable[P] | None = None, now_ms: int | None = None) -> Closed[P]:
        """The windows the watermark (or, with ``now_ms``, the idle rule) closed, per partition."""
        parts: list[tuple[P, ClosedWindows]] = []
        non_finite = 0
        for tp in self._parts if tps is None else tps:
            closed = self.windows(tp).advance(now_ms)
            if len(closed):
                closed, dropped = _finite(closed)
                if dropped:
                    non_finite += dropped
                    logger.warning(
                        "windows with a non-finite aggregate skipped detector=%s partition=%s count=%d",
                        self.name,
                        tp,
                        dropped,
                    )
                if len(closed):
                    parts.append((tp, closed))
        return Closed(parts, non_finite)

    def score(self, closed: Closed[P], closed_at: float | None = None) -> Scored[P] | None:
        """Score every closed window in one detector step and build their result records.

        ``closed_at``: when the windows closed (monotonic seconds), carried for latency figures.
        """
        if not closed.parts:
            return None
        windows = ClosedWindows.concat([c for _, c in closed.parts])
        ids = windows.series
        names = windows.registry.timeseries_ids
        spans: list[tuple[P, int, int]] = []
        split = 0
        at = 0
        for tp, c in closed.parts:
            split += self._own(tp, ids[at : at + len(c)], names)
            spans.append((tp, at, at + len(c)))
            at += len(c)
        keys = None
        if self.park is not None and len(self.park):
            keys = names(ids)
            self._unpark(keys)
        if self._slot_map.detector is not self.detector:  # the driver swapped the detector
            self._slot_map = SlotMap(self.detector)
        slots = self._slot_map.slots(ids, names)
        scores = self.detector.process_slots(
            slots,
            windows.value,
            windows.window_start_ms,
            windows.missing,
            averaged_events(self.spec, windows),
        )
        self._keep_budget()
        results = ResultBatch.build(self.name, windows, scores, closed_at, keys)
        return Scored(results, scores, spans, split)

    # -- the model budget -------------------------------------------------------------------------

    def model_moves(self) -> tuple[int, int, int, int]:
        """The model budget's figures: models parked now, and totals parked, reloaded, dropped."""
        park = self.park
        if park is None:
            return (0, 0, 0, self.models_dropped)
        return (len(park), park.parked_total, park.reloaded_total, self.models_dropped)

    def _unpark(self, keys: Sequence[str]) -> None:
        """Read back the parked models of the series about to be scored."""
        if self.park is not None and len(self.park):
            for state in self.park.take(dict.fromkeys(keys)):  # take skips the keys not parked
                self.detector.from_state(state)

    def _keep_budget(self) -> None:
        """Over ``max_models`` live models: park the coldest (a tenth of the budget more than the
        excess, so that parking comes in batches), dropping those that have seen one point."""
        budget = self.spec.max_models
        if self.park is None or budget <= 0 or len(self.detector) <= budget:
            return
        keys, seen = self.detector.coldest(len(self.detector) - budget + budget // 10)
        by_tp: dict[P, list[str]] = {}
        dropped = []
        for k, n in zip(keys, seen.tolist(), strict=True):
            owner = self._owner.get(k)
            if owner is None:  # warm-started, not yet seen on a partition: it stays
                continue
            if n >= PARK_MIN_POINTS:
                by_tp.setdefault(owner, []).append(k)
            else:
                dropped.append(k)
        for tp, ks in by_tp.items():
            self.park.put(tp, self.detector.to_state(ks))
        self.detector.evict([k for ks in by_tp.values() for k in ks] + dropped)
        for k in dropped:  # gone: if it comes back, it is a new series of whichever partition
            tp = self._owner.pop(k)
            part = self._parts[tp]
            part.series.pop(k, None)
            part.owned_ids = np.zeros(0, dtype=np.bool_)  # which index was k's: look them up again
        self.models_dropped += len(dropped)
        logger.debug(
            "model budget kept detector=%s parked=%d dropped=%d live=%d",
            self.name,
            sum(map(len, by_tp.values())),
            len(dropped),
            len(self.detector),
        )

    def step(
        self,
        tps: Iterable[P] | None = None,
        now_ms: int | None = None,
        closed_at: float | None = None,
    ) -> Scored[P] | None:
        """:meth:`close` then :meth:`score`."""
        return self.score(self.close(tps, now_ms), closed_at)

    def drain(self, tp: P) -> None:
        """The end of the input is the end of time: let the watermark pass every open window."""
        ws = self.windows(tp)
        if ws.watermark is not None:
            ws.watermark += ws.window_ms + ws.lateness_ms

    def _own(self, tp: P, ids: np.ndarray, names: Callable[[np.ndarray], list[str]]) -> int:
        """Record the series (registry indices) first seen on ``tp`` as its own; count those another
        partition owns. Only indices not yet flagged as owned by ``tp`` are looked up by key."""
        part = self._parts[tp]
        if ids.shape[0] == 0:
            return 0
        top = int(ids.max()) + 1
        if top > part.owned_ids.shape[0]:
            grown = np.zeros(max(top, 2 * part.owned_ids.shape[0], 1024), dtype=np.bool_)
            grown[: part.owned_ids.shape[0]] = part.owned_ids
            part.owned_ids = grown
        new = ids[~part.owned_ids[ids]]
        if new.shape[0] == 0:
            return 0
        owned = part.series
        split = 0
        for k in dict.fromkeys(names(new)):
            if k not in owned:
                owner = self._owner.setdefault(k, tp)
                if owner != tp:
                    split += 1
                    logger.warning(
                        "series seen on two partitions (input not keyed by series?) "
                        "detector=%s series=%s first=%s now=%s",
                        self.name,
                        k,
                        owner,
                        tp,
                    )
                owned[k] = None
        part.owned_ids[new] = True
        return split

    # -- partition state --------------------------------------------------------------------------

    def series_of(self, tp: P) -> list[str]:
        part = self._parts.get(tp)
        return list(part.series) if part is not None else []

    def state(self, tp: P) -> PartitionState:
        """A copy of the partition's windows and models (parked ones by reference), for its checkpoint."""
        series = self.series_of(tp)
        parked = self.park.refs(series) if self.park is not None and len(self.park) else {}
        live = [k for k in series if k not in parked]
        return PartitionState(self.windows(tp).to_state(), self.detector.to_state(live), series, parked)

    def restore(self, tp: P, state: PartitionState) -> None:
        """Load a partition's checkpoint. Its idle clock restarts now, not at the checkpoint's time:
        otherwise a restart slower than ``idle_timeout_ms`` would close the restored windows at once,
        before the events that follow the checkpoint arrive."""
        windows = {**state.windows, "last_activity_wall_ms": None, "watermark_at_activity": None}
        part = self._parts[tp] = _Part(WindowState.from_state(self.spec, windows, self.parser.registry))
        self.detector.from_state(state.detector)
        if state.parked:
            if self.park is None:
                raise ValueError(f"partition {tp} has parked models but detector {self.name} has no park")
            self.park.adopt(tp, state.parked)
        part.series = dict.fromkeys(state.series)
        for k in part.series:
            self._owner.setdefault(k, tp)

    def drop(self, tp: P) -> None:
        """Forget the partition: its windows and the models it owns."""
        part = self._parts.pop(tp, None)
        if part is None:
            return
        self.detector.evict(list(part.series))
        if self.park is not None:
            self.park.forget(part.series)
        for k in part.series:
            if self._owner.get(k) == tp:
                del self._owner[k]


def model_moves(pipes: Iterable[DetectorPipeline[Any]]) -> tuple[int, int, int, int]:
    """:meth:`DetectorPipeline.model_moves` summed over ``pipes``."""
    now = parked = reloaded = dropped = 0
    for pipe in pipes:
        a, b, c, d = pipe.model_moves()
        now, parked, reloaded, dropped = now + a, parked + b, reloaded + c, dropped + d
    return now, parked, reloaded, dropped


def averaged_events(spec: DetectorSpec, windows: ClosedWindows) -> np.ndarray:
    """Per window, how many events an ``avg`` measure's value is made of (0 for the other
    aggregations, whose noise the value itself shows): the detector widens the band of an average
    made of fewer events than the series usually has."""
    avg = np.array([m.aggregation == "avg" for m in spec.measures])
    if not avg.any():
        return np.zeros(len(windows))
    return np.where(avg[windows.series % len(avg)], windows.events, 0).astype(np.float64)


def _finite(closed: ClosedWindows) -> tuple[ClosedWindows, int]:
    """Drop windows whose aggregate is not finite or beyond ±MAX_MEASURE_ABS (a sum that
    overflowed): they cannot be scored.

    Each event was within range (the parser checks); only an aggregate can pass it. Such windows get no
    result; the driver counts them, and goes on instead of failing on the same input after every
    restart.
    """
    ok = np.abs(closed.value) <= MAX_MEASURE_ABS  # False for NaN and inf too
    if ok.all():
        return closed, 0
    kept = replace(
        closed,
        series=closed.series[ok],
        window_start_ms=closed.window_start_ms[ok],
        window_end_ms=closed.window_end_ms[ok],
        value=closed.value[ok],
        missing=closed.missing[ok],
        events=closed.events[ok],
    )
    return kept, int((~ok).sum())
