"""Per-series tumbling windows on event time, for the series of one partition, vectorized.

Windows are aligned to the epoch: an event at ``t`` belongs to window index ``t // window_ms``,
covering ``[index * window_ms, (index + 1) * window_ms)``. The watermark is the largest event time
seen (or pushed forward by :meth:`WindowState.idle_advance`). A window closes when
``watermark >= end + allowed_lateness_ms``.

Lateness is decided per event, in arrival order, independent of how events are batched: event
``i`` of a batch is late when its window had closed under the watermark *before* it (the
running maximum of the earlier events, via ``np.maximum.accumulate``). Late events come back as
rejects (reason ``late``) for the dead-letter topic; every event is either aggregated or
rejected.

Open windows are kept as sorted partial aggregates (count, sum, min, max) per (series, window);
a batch is grouped with one sort and ``ufunc.reduceat`` and merged with ``searchsorted``.
:meth:`WindowState.advance` emits every window that closed, for every known series, including
the windows without events (the measure's missing policy: ``zero``, ``carry`` or ``skip``),
sorted by (window end, series), so the detector scores one window close in one step.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from streams.config import DetectorSpec
from streams.errors import StreamsError
from streams.parse import ParsedBatch
from streams.series import SeriesRegistry
from streams.state import WINDOW_STATE, StateVersionError
from streams.timestamps import MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS

logger = logging.getLogger(__name__)

LATE = "late"
FUTURE_TIMESTAMP = "future_timestamp"
BAD_TIMESTAMP = "bad_timestamp"
STATE_VERSION = WINDOW_STATE.current
_NONE = np.iinfo(np.int64).max  # "no window yet" for a series' next window index
_AGG_CODES = {"sum": 0, "count": 1, "avg": 2, "min": 3, "max": 4}
_POLICY_CODES = {"zero": 0, "carry": 1, "skip": 2}


class WindowStateError(StreamsError):
    """A window state cannot be used as asked (another detector's registry or checkpoint)."""


@dataclass(frozen=True, slots=True)
class ClosedWindows:
    """Windows that closed together, one row per (series, window), sorted by (end, series).

    Attributes:
        series: int64[n], series index in ``registry`` (combo * n_measures + measure index).
        window_start_ms, window_end_ms: int64[n], the window bounds (epoch ms, end exclusive).
        value: float64[n], the aggregate (or the missing policy's value).
        missing: bool[n], True where the window had no value for this series.
        registry: names the series (timeseriesId, measure, dimensions).
        events: int64[n], how many events the aggregate is made of (0 for a missing window).
    """

    series: np.ndarray
    window_start_ms: np.ndarray
    window_end_ms: np.ndarray
    value: np.ndarray
    missing: np.ndarray
    registry: SeriesRegistry = field(repr=False)
    events: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)

    def __len__(self) -> int:
        return len(self.series)

    @property
    def detector(self) -> str:
        return self.registry.detector

    @property
    def combo(self) -> np.ndarray:
        """int64[n], the dimension-combination code of each row."""
        return self.series // self.registry.n_measures

    @property
    def measure_index(self) -> np.ndarray:
        """int64[n], index of each row's measure in the detector's measures."""
        return self.series % self.registry.n_measures

    @property
    def keys(self) -> list[str]:
        """timeseriesId of each row (the detector's series keys)."""
        return self.registry.timeseries_ids(self.series)

    @property
    def timeseries_id(self) -> list[str]:
        """Same as :attr:`keys`."""
        return self.keys

    @property
    def measure(self) -> list[str]:
        """The measure field of each row."""
        names = self.registry.measures
        return [names[m] for m in self.measure_index.tolist()]

    def timeseries_id_array(self) -> pa.Array:
        """:attr:`timeseries_id` as an Arrow string array (for the result table)."""
        return self.registry.timeseries_id_array(self.series)

    def dimension_list_array(self) -> pa.Array:
        """:attr:`dimension_lists` as an Arrow array of RESULT_SCHEMA's ``dimensionList`` type."""
        return self.registry.dimension_list_array(self.combo)

    @property
    def dimension_lists(self) -> list[list[dict[str, str]]]:
        """The result record's dimensionList of each row (shared lists: do not mutate)."""
        dl = self.registry.dimension_list
        return [dl(c) for c in self.combo.tolist()]

    @property
    def dims(self) -> list[tuple[tuple[str, str], ...]]:
        """Each row's ``(name, value)`` dimension pairs, in the detector's dimension order."""
        d = self.registry.dim_pairs
        return [d(c) for c in self.combo.tolist()]

    @classmethod
    def concat(cls, parts: Sequence[ClosedWindows]) -> ClosedWindows:
        """Several partitions' closed windows (one registry) as one batch, in the given order."""
        if not parts:
            raise WindowStateError("concat needs at least one ClosedWindows")
        registry = parts[0].registry
        if any(p.registry is not registry for p in parts):
            raise WindowStateError("cannot concatenate closed windows of different registries")
        if len(parts) == 1:
            return parts[0]

        def cat(name: str) -> np.ndarray:
            return np.concatenate([getattr(p, name) for p in parts])

        return cls(
            cat("series"),
            cat("window_start_ms"),
            cat("window_end_ms"),
            cat("value"),
            cat("missing"),
            registry,
            cat("events"),
        )

    def groups(self) -> list[slice]:
        """Row slices that share one window end, in order."""
        if len(self) == 0:
            return []
        cuts = np.flatnonzero(np.diff(self.window_end_ms)) + 1
        bounds = [0, *cuts.tolist(), len(self)]
        return [slice(a, b) for a, b in itertools.pairwise(bounds)]


def _grow(arr: np.ndarray, size: int, fill: Any) -> np.ndarray:
    if size <= len(arr):
        return arr
    out = np.full(max(size, 2 * len(arr)), fill, dtype=arr.dtype)
    out[: len(arr)] = arr
    return out


class WindowState:
    """Open windows, watermark and per-series progress of one partition of one detector.

    Example:
        >>> from streams.config import DetectorSpec, MeasureSpec
        >>> from streams.parse import EventParser
        >>> spec = DetectorSpec(name="shop", topic="orders", dimensions=("product",),
        ...                     measures=(MeasureSpec(field="quantity"),), window_ms=1000)
        >>> parser = EventParser(spec)
        >>> windows = WindowState(spec, parser.registry)
        >>> windows.add(parser.parse([b'{"timestamp": 100, "product": "A", "quantity": 2}',
        ...                           b'{"timestamp": 2500, "product": "A", "quantity": 5}']))
        []
        >>> closed = windows.advance()
        >>> closed.window_start_ms.tolist(), closed.value.tolist(), closed.missing.tolist()
        ([0, 1000], [2.0, 0.0], [False, True])

    Args:
        spec: the detector (window length, lateness, idle timeout, measures).
        registry: the parser's series registry (``parser.registry``); taken from the first batch
            when omitted.
        max_missing_run: at most this many consecutive missing windows are emitted per series
            (a watermark jump of years would otherwise emit millions); the rest are counted in
            ``counters["missing_skipped"]``. A gap longer than ``max_future_ms`` closed in one
            advance is not filled at all (the watermark jumped: a confirmed move of the stream, a
            fresh partition's far-past first event, a partition resuming after days): counted too.
    """

    def __init__(
        self, spec: DetectorSpec, registry: SeriesRegistry | None = None, max_missing_run: int = 10_000
    ) -> None:
        self.spec = spec
        self.registry = registry
        self.window_ms = spec.window_ms
        self.lateness_ms = spec.allowed_lateness_ms
        self.max_missing_run = max_missing_run
        self.n_measures = len(spec.measures)
        self._agg = np.array([_AGG_CODES[m.aggregation] for m in spec.measures], dtype=np.int64)
        self._policy = np.array([_POLICY_CODES[m.missing_policy] for m in spec.measures], dtype=np.int64)
        #: largest event time seen (or pushed by idle_advance); None before the first event
        self.watermark: int | None = None
        #: windows with index <= closed_through have been emitted
        self.closed_through: int | None = None
        self._last_activity_wall_ms: int | None = None
        self._watermark_at_activity: int | None = None
        self._active = False
        # the future guard's run of consecutive far-ahead events: (length, last event time)
        self._future_run = 0
        self._future_last = 0
        #: events taken so far, up to future_confirm_events: a watermark resting on fewer is not
        #: trusted by the future guard (a far-past first event must not pin a fresh partition)
        self._support = 0
        # per series (global series index): next window to emit, last data value (for carry)
        self._next = np.full(0, _NONE, dtype=np.int64)
        self._last = np.full(0, np.nan)
        # open partial aggregates, sorted by (series, window)
        self._o_series = np.zeros(0, np.int64)
        self._o_window = np.zeros(0, np.int64)
        self._o_count = np.zeros(0, np.int64)
        self._o_sum = np.zeros(0)
        self._o_min = np.zeros(0)
        self._o_max = np.zeros(0)
        self.counters: Counter[str] = Counter()

    # -- adding events --------------------------------------------------------------------------

    def add(self, batch: ParsedBatch, now_ms: int | None = None) -> list[tuple[int, str]]:
        """Aggregate a parsed batch into the open windows; late events come back as rejects.

        Args:
            batch: the parser's output for one consumed batch of this partition.
            now_ms: wall-clock time of the batch (for :meth:`idle_advance`); the module reads
                no clock.

        Returns:
            ``(position in the consumed batch, reason)`` for every event not taken: ``late``,
            ``future_timestamp`` or ``bad_timestamp`` (see :meth:`_refused`).
        """
        if self.registry is None:
            self.registry = batch.registry
        elif batch.registry is not self.registry:
            raise WindowStateError("the batch was parsed with another series registry than this state's")
        n = len(batch)
        if n == 0:
            return []
        rejects, (ts, index, combo, values, present) = self._screen(batch, now_ms)
        self._support = min(self._support + len(ts), self.spec.future_confirm_events)
        n = len(ts)
        if n == 0:
            return rejects
        widx = ts // self.window_ms
        running = np.maximum.accumulate(ts)
        before = np.empty(n, dtype=np.int64)
        before[0] = self.watermark if self.watermark is not None else np.iinfo(np.int64).min
        np.maximum(running[:-1], before[0], out=before[1:])
        # window end + lateness <= watermark before the event  →  the window had closed
        late = (widx + 1) * self.window_ms + self.lateness_ms <= before
        if self.closed_through is not None:
            late |= widx <= self.closed_through
        self.watermark = int(max(running[-1], before[0]))
        if now_ms is not None:
            self._last_activity_wall_ms, self._watermark_at_activity = now_ms, self.watermark
        else:
            self._active = True  # idle_advance stamps the activity with its own wall-clock
        if late.any():
            rejects += [(i, LATE) for i in index[late].tolist()]
            self.counters[LATE] += int(late.sum())
            keep = ~late
            combo, widx, values, present = combo[keep], widx[keep], values[keep], present[keep]
        accepted = len(combo)
        self.counters["accepted"] += accepted
        if accepted:
            self._aggregate(combo, widx, values, present)
        return rejects

    def _screen(
        self, batch: ParsedBatch, now_ms: int | None
    ) -> tuple[list[tuple[int, str]], tuple[np.ndarray, ...]]:
        """The events :meth:`_refused` refuses, as rejects, and the batch's columns without them."""
        cols = (batch.timestamp_ms, batch.index, batch.combo, batch.values, batch.present)
        refused = self._refused(batch.timestamp_ms, now_ms)
        if refused is None:
            return [], cols
        rejects: list[tuple[int, str]] = []
        for reason in (BAD_TIMESTAMP, FUTURE_TIMESTAMP):
            mask = refused == reason
            if mask.any():
                rejects += [(i, reason) for i in batch.index[mask].tolist()]
                self.counters[reason] += int(mask.sum())
        keep = refused == ""
        return rejects, tuple(c[keep] for c in cols)

    def _refused(self, ts: np.ndarray, now_ms: int | None) -> np.ndarray | None:
        """Per event, why the window stage refuses it before lateness: ``bad_timestamp`` (its window
        would start or end outside what a result record can name, years 1-9999), ``future_timestamp``
        (the future guard) or "" (taken); None when every event is taken (the usual case, one
        vectorized check).

        The future guard, live only (``now_ms`` given) and ``max_future_ms > 0``: an event more than
        ``max_future_ms`` ahead of the wall clock is refused; so is one that far ahead of the
        watermark before it, unless it follows ``future_confirm_events`` consecutive refused events
        that agree with it (each within ``max_future_ms`` of the last): then the stream has moved on
        (a replayed history with a gap, a partition resuming after an outage) and it is taken. A
        refused event does not move the watermark, so one event far in the future neither makes
        the later real events late nor makes missing windows up to it. The watermark is trusted
        only once ``future_confirm_events`` events have been taken on the partition: before that an
        event far ahead of it is taken (one far-past event at the start of a fresh partition does
        not make the real events that follow "future"). Decided per event in arrival order, so
        batching does not change the result; the run of refused events is in the state.
        """
        start = ts // self.window_ms * self.window_ms
        bad = (start < MIN_TIMESTAMP_MS) | (start + self.window_ms >= MAX_TIMESTAMP_MS)
        horizon = self.spec.max_future_ms
        far = np.zeros(len(ts), dtype=bool)
        if now_ms is not None and horizon > 0:
            far = ts > now_ms + horizon
            # the watermark before each event if every event is taken: exact when none is far ahead
            # (the usual case); otherwise the batch goes event by event
            lowest = np.iinfo(np.int64).min
            prev = np.empty(len(ts), dtype=np.int64)
            prev[0] = self.watermark if self.watermark is not None else lowest
            np.maximum(np.maximum.accumulate(ts)[:-1], prev[0], out=prev[1:])
            far |= (prev != lowest) & (ts > prev + horizon)  # event by event below (support, runs)
            if not far.any() and not bad.all():
                self._future_run = 0
        if not bad.any() and not far.any():
            return None
        out = np.where(bad, BAD_TIMESTAMP, "").astype(object)
        if now_ms is not None and far.any():
            self._guard_sequential(ts, bad, out, now_ms + horizon)
        return out

    def _guard_sequential(self, ts: np.ndarray, bad: np.ndarray, out: np.ndarray, wall_limit: int) -> None:
        """The future guard event by event (only for batches where some event is far ahead)."""
        horizon = self.spec.max_future_ms
        confirm = self.spec.future_confirm_events
        mark = self.watermark
        run, last = self._future_run, self._future_last
        support = self._support
        for i, t in enumerate(ts.tolist()):
            if bad[i]:
                continue
            if t > wall_limit:
                out[i] = FUTURE_TIMESTAMP
                continue
            support += 1  # taken unless refused just below
            if mark is not None and t > mark + horizon and support > confirm:
                run = run + 1 if run and abs(t - last) <= horizon else 1
                last = t
                if run <= confirm:
                    out[i] = FUTURE_TIMESTAMP
                    support -= 1
                    continue
            run = 0
            mark = t if mark is None else max(mark, t)
        self._future_run, self._future_last = run, last

    def _aggregate(
        self, combo: np.ndarray, widx: np.ndarray, values: np.ndarray, present: np.ndarray
    ) -> None:
        m = self.n_measures
        if m == 1 and present.all():
            series, win, vals = combo, widx, values[:, 0]
        else:
            series = (combo[:, None] * m + np.arange(m))[present]
            win = np.broadcast_to(widx[:, None], present.shape)[present]
            vals = values[present]
        if len(series) == 0:
            return
        n_series = self.registry.n_series if self.registry is not None else int(series.max()) + 1
        self._next = _grow(self._next, n_series, _NONE)
        self._last = _grow(self._last, n_series, np.nan)
        # group by (series, window) with one sort of a packed key
        wmin = int(win.min())
        span = int(win.max()) - wmin + 1
        if span * (int(series.max()) + 1) < 2**62:
            key = series * span + (win - wmin)
            order = np.argsort(key, kind="stable")
            skey = key[order]
            starts = np.flatnonzero(np.concatenate(([True], skey[1:] != skey[:-1])))
        else:  # windows too far apart to pack: sort on both columns
            order = np.lexsort((win, series))
            ss, sw = series[order], win[order]
            starts = np.flatnonzero(np.concatenate(([True], (ss[1:] != ss[:-1]) | (sw[1:] != sw[:-1]))))
        sv = vals[order]
        g_series = series[order][starts]
        g_window = win[order][starts]
        g_count = np.diff(np.append(starts, len(sv)))
        g_sum = np.add.reduceat(sv, starts)
        g_min = np.minimum.reduceat(sv, starts)
        g_max = np.maximum.reduceat(sv, starts)
        # a series' first window is the earliest it has seen (until it emits)
        first = np.flatnonzero(np.concatenate(([True], g_series[1:] != g_series[:-1])))
        fs = g_series[first]
        self._next[fs] = np.minimum(self._next[fs], g_window[first])
        self._merge(g_series, g_window, g_count, g_sum, g_min, g_max)

    def _merge(
        self, s: np.ndarray, w: np.ndarray, c: np.ndarray, sm: np.ndarray, mn: np.ndarray, mx: np.ndarray
    ) -> None:
        """Merge grouped partials (unique, sorted by (series, window)) into the open ones."""
        if len(self._o_series) == 0:
            self._o_series, self._o_window, self._o_count = s, w, c
            self._o_sum, self._o_min, self._o_max = sm, mn, mx
            return
        wmin = min(int(w.min()), int(self._o_window.min()))
        span = max(int(w.max()), int(self._o_window.max())) - wmin + 1
        top = max(int(s.max()), int(self._o_series.max())) + 1
        if span * top < 2**62:
            ok = self._o_series * span + (self._o_window - wmin)
            nk = s * span + (w - wmin)
            pos = np.searchsorted(ok, nk)
            hit = pos < len(ok)
            hit[hit] = ok[pos[hit]] == nk[hit]
        else:
            pos = np.zeros(len(s), dtype=np.int64)
            hit = np.zeros(len(s), dtype=bool)
            index = {
                (a, b): i
                for i, (a, b) in enumerate(zip(self._o_series.tolist(), self._o_window.tolist(), strict=True))
            }
            for j, (a, b) in enumerate(zip(s.tolist(), w.tolist(), strict=True)):
                i = index.get((a, b))
                if i is not None:
                    pos[j], hit[j] = i, True
        if hit.any():
            p = pos[hit]
            self._o_count[p] += c[hit]
            self._o_sum[p] += sm[hit]
            self._o_min[p] = np.minimum(self._o_min[p], mn[hit])
            self._o_max[p] = np.maximum(self._o_max[p], mx[hit])
        new = ~hit
        if new.any():
            cat = [
                np.concatenate((a, b[new]))
                for a, b in (
                    (self._o_series, s),
                    (self._o_window, w),
                    (self._o_count, c),
                    (self._o_sum, sm),
                    (self._o_min, mn),
                    (self._o_max, mx),
                )
            ]
            order = np.lexsort((cat[1], cat[0]))
            (self._o_series, self._o_window, self._o_count, self._o_sum, self._o_min, self._o_max) = (
                a[order] for a in cat
            )

    # -- closing windows ------------------------------------------------------------------------

    def idle_advance(self, now_ms: int) -> ClosedWindows:
        """Advance the watermark by wall-clock when the partition has been idle long enough.

        After ``idle_timeout_ms`` of wall-clock time without events (as passed to :meth:`add`),
        the watermark moves to the event time of the last activity plus the idle wall-clock
        time, so the windows of a quiet partition close. ``idle_timeout_ms = 0`` disables this.
        Events that arrive later for windows closed this way are late.
        """
        self._idle_push(now_ms)
        return self.advance()

    def _idle_push(self, now_ms: int) -> None:
        if self.spec.idle_timeout_ms <= 0 or self.watermark is None:
            return
        if self._active or self._last_activity_wall_ms is None or self._watermark_at_activity is None:
            self._active = False
            self._last_activity_wall_ms, self._watermark_at_activity = now_ms, self.watermark
            return
        idle = now_ms - self._last_activity_wall_ms
        if idle < self.spec.idle_timeout_ms:
            return
        pushed = self._watermark_at_activity + idle
        if pushed > self.watermark:
            self.counters["idle_advances"] += 1
            self.watermark = pushed

    def _empty(self) -> ClosedWindows:
        z = np.zeros(0, dtype=np.int64)
        return ClosedWindows(z, z, z, np.zeros(0), np.zeros(0, dtype=bool), self._registry(), z)

    def _registry(self) -> SeriesRegistry:
        if self.registry is None:
            self.registry = SeriesRegistry(
                self.spec.name, self.spec.dimensions, tuple(m.field for m in self.spec.measures)
            )
        return self.registry

    def close_frontier(self) -> int | None:
        """Index of the last window that the watermark has closed (None before any event)."""
        if self.watermark is None:
            return None
        return (self.watermark - self.lateness_ms) // self.window_ms - 1

    def advance(self, now_ms: int | None = None) -> ClosedWindows:
        """Emit every window the watermark has closed since the last call, for every known series.

        Args:
            now_ms: the caller's wall-clock; when given, the idle rule of :meth:`idle_advance`
                applies first.

        Returns:
            The closed windows sorted by (window end, series), data and missing windows together.
        """
        if now_ms is not None:
            self._idle_push(now_ms)
        frontier = self.close_frontier()
        if frontier is None or (self.closed_through is not None and frontier <= self.closed_through):
            return self._empty()
        registry = self._registry()
        d_series, d_window, d_value, d_count = self._take_closed(frontier)
        out_series, out_window, out_value, out_missing, out_events = self._with_missing(
            frontier, d_series, d_window, d_value, d_count
        )
        self.closed_through = frontier
        self.counters["windows_emitted"] += len(out_series)
        order = np.lexsort((registry.sort_keys(out_series), out_window))
        out_window = out_window[order]
        start = out_window * self.window_ms
        return ClosedWindows(
            out_series[order],
            start,
            start + self.window_ms,
            out_value[order],
            out_missing[order],
            registry,
            out_events[order],
        )

    def _take_closed(self, frontier: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Remove the open windows with index <= frontier; their (series, window, aggregate, events)."""
        m = self.n_measures
        closing = self._o_window <= frontier
        d_series, d_window = self._o_series[closing], self._o_window[closing]
        d_count, d_sum = self._o_count[closing], self._o_sum[closing]
        d_min, d_max = self._o_min[closing], self._o_max[closing]
        if closing.any():
            keep = ~closing
            self._o_series, self._o_window, self._o_count = (
                self._o_series[keep],
                self._o_window[keep],
                self._o_count[keep],
            )
            self._o_sum, self._o_min, self._o_max = self._o_sum[keep], self._o_min[keep], self._o_max[keep]
        agg = self._agg[d_series % m] if m > 1 else np.full(len(d_series), self._agg[0])
        d_value = np.select(
            [agg == 0, agg == 1, agg == 2, agg == 3],
            [d_sum, d_count.astype(np.float64), d_sum / np.maximum(d_count, 1), d_min],
            d_max,
        )
        return d_series, d_window, d_value, d_count

    def _with_missing(
        self,
        frontier: int,
        d_series: np.ndarray,
        d_window: np.ndarray,
        d_value: np.ndarray,
        d_count: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The data windows plus, per due series, the windows without data up to the frontier
        (the measure's missing policy); updates each series' progress and last value."""
        m = self.n_measures
        # series that emit: known (next != NONE) and due
        due = np.flatnonzero(self._next <= frontier)
        # boundaries per series: a start marker (next - 1), its data windows, an end marker (frontier + 1)
        b_series = np.concatenate((due, d_series, due))
        b_window = np.concatenate((self._next[due] - 1, d_window, np.full(len(due), frontier + 1)))
        b_value = np.concatenate((self._last[due], d_value, np.full(len(due), np.nan)))
        b_kind = np.concatenate(
            (np.zeros(len(due), np.int8), np.ones(len(d_series), np.int8), np.full(len(due), 2, np.int8))
        )
        order = np.lexsort((b_window, b_series))
        b_series, b_window, b_value, b_kind = b_series[order], b_window[order], b_value[order], b_kind[order]
        b_count = np.concatenate((np.zeros(len(due), np.int64), d_count, np.zeros(len(due), np.int64)))[order]
        # gap after each boundary (within the same series): windows with no data
        same = np.concatenate((b_series[1:] == b_series[:-1], [False]))
        gap = np.where(same, np.append(b_window[1:], 0) - b_window - 1, 0)
        policy = self._policy[b_series % m]
        gap = np.where(policy == 2, 0, gap)  # skip: no missing windows
        capped = np.minimum(gap, self.max_missing_run)
        horizon = self.spec.max_future_ms // self.window_ms
        if horizon > 0:  # a gap longer than max_future_ms in one advance: the stream jumped, not filled
            capped = np.where(gap > horizon, 0, capped)
        skipped = int((gap - capped).sum())
        if skipped:
            self.counters["missing_skipped"] += skipped
        # the carry value of a gap is the last data value before it (boundary value, or the
        # series' last value for the start marker)
        fill = np.where(policy == 1, b_value, 0.0)
        n_gap = int(capped.sum())
        g_src = np.repeat(np.arange(len(b_series)), capped)
        g_off = np.arange(n_gap) - np.repeat(np.cumsum(capped) - capped, capped) + 1
        data = b_kind == 1
        # progress: everything up to the frontier is emitted; last data value per series
        self._next[due] = frontier + 1
        if data.any():
            ds, dv = b_series[data], b_value[data]
            last_of = np.concatenate((ds[1:] != ds[:-1], [True]))
            self._last[ds[last_of]] = dv[last_of]
        self.counters["missing_windows"] += n_gap
        return (
            np.concatenate((b_series[data], b_series[g_src])),
            np.concatenate((b_window[data], b_window[g_src] + g_off)),
            np.concatenate((b_value[data], fill[g_src])),
            np.concatenate((np.zeros(int(data.sum()), bool), np.ones(n_gap, bool))),
            np.concatenate((b_count[data], np.zeros(n_gap, np.int64))),
        )

    # -- checkpoints ----------------------------------------------------------------------------

    def known_series(self) -> np.ndarray:
        """int64 indices of the series this partition has seen."""
        return np.flatnonzero(self._next != _NONE)

    @property
    def open_windows(self) -> int:
        """Number of open (series, window) aggregates."""
        return len(self._o_series)

    def to_state(self) -> dict[str, Any]:
        """A JSON-compatible, versioned snapshot (dimension values, never process-local codes)."""
        registry = self._registry()
        known = self.known_series()
        combos = sorted(
            set((known // self.n_measures).tolist()) | set((self._o_series // self.n_measures).tolist())
        )
        pos = {c: i for i, c in enumerate(combos)}
        measures = [m.field for m in self.spec.measures]

        def ref(series: np.ndarray) -> list[list[int]]:
            return [[pos[s // self.n_measures], s % self.n_measures] for s in series.tolist()]

        def floats(a: np.ndarray) -> list[float | None]:
            return [None if math.isnan(v) else v for v in a.tolist()]

        return {
            "version": STATE_VERSION,
            "detector": self.spec.name,
            "window_ms": self.window_ms,
            "measures": measures,
            "dimensions": list(self.spec.dimensions),
            "watermark": self.watermark,
            "closed_through": self.closed_through,
            "last_activity_wall_ms": self._last_activity_wall_ms,
            "watermark_at_activity": self._watermark_at_activity,
            "future_run": [self._future_run, self._future_last],
            "support": self._support,
            "combos": [list(registry.dims(c)) for c in combos],
            "series": {
                "ref": ref(known),
                "next": self._next[known].tolist(),
                "last": floats(self._last[known]),
            },
            "open": {
                "ref": ref(self._o_series),
                "window": self._o_window.tolist(),
                "count": self._o_count.tolist(),
                "sum": self._o_sum.tolist(),
                "min": self._o_min.tolist(),
                "max": self._o_max.tolist(),
            },
            "counters": dict(self.counters),
        }

    @classmethod
    def from_state(
        cls,
        spec: DetectorSpec,
        state: dict[str, Any],
        registry: SeriesRegistry | None = None,
        max_missing_run: int = 10_000,
    ) -> WindowState:
        """Rebuild a state saved by :meth:`to_state` (raises WindowStateError on a mismatch)."""
        try:
            state = WINDOW_STATE.upgrade(state, hint="; delete the checkpoint to start over")
        except StateVersionError as exc:
            raise WindowStateError(str(exc)) from exc
        if state["detector"] != spec.name or state["window_ms"] != spec.window_ms:
            raise WindowStateError(
                f"window state of detector={state['detector']} window_ms={state['window_ms']} cannot be "
                f"loaded for detector={spec.name} window_ms={spec.window_ms}; "
                "delete the checkpoint to start over"
            )
        if tuple(state["dimensions"]) != tuple(spec.dimensions):
            raise WindowStateError(
                "the checkpoint's dimensions differ from the config's; delete the checkpoint"
            )
        ws = cls(spec, registry, max_missing_run)
        ws._load(state)
        return ws

    def _load(self, state: dict[str, Any]) -> None:
        reg = self._registry()
        # measures are matched by field name: a measure added to the config starts fresh
        m_map = {
            i: spec_i
            for i, f in enumerate(state["measures"])
            for spec_i, m in enumerate(self.spec.measures)
            if m.field == f
        }
        codes = [reg.combo_for(tuple(d)) for d in state["combos"]]

        def series(refs: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
            out = np.array([codes[c] * self.n_measures + m_map.get(m, 0) for c, m in refs], dtype=np.int64)
            ok = np.array([m in m_map for _, m in refs], dtype=bool)
            return out.reshape(-1), ok.reshape(-1)

        self._next = np.full(reg.n_series, _NONE, dtype=np.int64)
        self._last = np.full(reg.n_series, np.nan)
        s, ok = series(state["series"]["ref"])
        self._next[s[ok]] = np.array(state["series"]["next"], dtype=np.int64).reshape(-1)[ok]
        self._last[s[ok]] = np.array(
            [np.nan if v is None else v for v in state["series"]["last"]], dtype=np.float64
        ).reshape(-1)[ok]
        o = state["open"]
        s, ok = series(o["ref"])
        cols = [
            s,
            np.array(o["window"], np.int64),
            np.array(o["count"], np.int64),
            np.array(o["sum"], np.float64),
            np.array(o["min"], np.float64),
            np.array(o["max"], np.float64),
        ]
        cols = [c.reshape(-1)[ok] for c in cols]
        order = np.lexsort((cols[1], cols[0]))
        (self._o_series, self._o_window, self._o_count, self._o_sum, self._o_min, self._o_max) = (
            c[order] for c in cols
        )
        self.watermark = state["watermark"]
        self.closed_through = state["closed_through"]
        self._last_activity_wall_ms = state.get("last_activity_wall_ms")
        self._watermark_at_activity = state.get("watermark_at_activity")
        self._future_run, self._future_last = state.get("future_run", (0, 0))  # absent before the guard
        # absent before the rule: a checkpointed partition had taken events, trust its watermark
        self._support = int(state.get("support", self.spec.future_confirm_events))
        self.counters.update(state.get("counters", {}))
