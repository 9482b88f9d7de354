"""TEMPORARY stand-ins for stages that other engineers are writing (parse, window, detector, sinks).

The worker imports the real modules when they exist and falls back to these otherwise. Delete
this file once streams/parse.py, streams/window.py, detector/detector.py and sinks/parquet.py land.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streams.config import DetectorSpec


@dataclass
class ParsedBatch:
    index: np.ndarray
    timestamp_ms: np.ndarray
    dims: list[tuple[tuple[str, str], ...]]
    measures: dict[str, np.ndarray]
    rejects: list[tuple[int, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.index)


class EventParser:
    def __init__(self, spec: DetectorSpec) -> None:
        self.spec = spec

    def parse(self, values: Sequence[bytes | None]) -> ParsedBatch:
        idx: list[int] = []
        ts: list[int] = []
        dims: list[tuple[tuple[str, str], ...]] = []
        meas: dict[str, list[float]] = {m.field: [] for m in self.spec.measures}
        rejects: list[tuple[int, str]] = []
        for i, v in enumerate(values):
            if v is None:
                rejects.append((i, "null-value"))
                continue
            try:
                obj = json.loads(v)
            except ValueError:
                rejects.append((i, "bad-json"))
                continue
            if not isinstance(obj, dict):
                rejects.append((i, "not-an-object"))
                continue
            t = obj.get(self.spec.timestamp_field)
            if not isinstance(t, int | float) or isinstance(t, bool):
                rejects.append((i, "missing-timestamp" if t is None else "bad-timestamp"))
                continue
            row: dict[str, float] = {}
            bad = None
            for m in self.spec.measures:
                x = obj.get(m.field)
                if not isinstance(x, int | float) or isinstance(x, bool) or not math.isfinite(x):
                    bad = "missing-measure" if x is None else "non-numeric-measure"
                    break
                row[m.field] = float(x)
            if bad:
                rejects.append((i, bad))
                continue
            d = []
            for name in self.spec.dimensions:
                if name not in obj:
                    bad = "missing-dimension"
                    break
                d.append((name, str(obj[name])))
            if bad:
                rejects.append((i, bad))
                continue
            idx.append(i)
            ts.append(int(t))
            dims.append(tuple(d))
            for k, x in row.items():
                meas[k].append(x)
        return ParsedBatch(np.array(idx, dtype=np.int64), np.array(ts, dtype=np.int64), dims,
                           {k: np.array(v, dtype=np.float64) for k, v in meas.items()}, rejects)


@dataclass
class ClosedWindows:
    timeseries_id: list[str]
    measure: list[str]
    dims: list[tuple[tuple[str, str], ...]]
    window_start_ms: np.ndarray
    window_end_ms: np.ndarray
    value: np.ndarray
    missing: np.ndarray

    def __len__(self) -> int:
        return len(self.timeseries_id)


class WindowState:
    """Works on streams.parse.ParsedBatch (combo codes + registry)."""

    def __init__(self, spec: DetectorSpec, registry: Any = None) -> None:
        self.spec = spec
        self.registry = registry
        self.open: dict[tuple[tuple[str, ...], int], list[list[float]]] = {}
        self.watermark = -(2**62)
        self.last_wall_ms: int | None = None

    def add(self, parsed: Any, wall_ms: int | None = None) -> list[tuple[int, str]]:
        rejects: list[tuple[int, str]] = []
        w = self.spec.window_ms
        reg = parsed.registry
        self.registry = reg
        for j in range(len(parsed)):
            t = int(parsed.timestamp_ms[j])
            start = t - t % w
            key = reg.dims(int(parsed.combo[j]))
            if start + w <= self.watermark - self.spec.allowed_lateness_ms:
                rejects.append((int(parsed.index[j]), "late"))
                continue
            agg = self.open.setdefault((key, start), [[] for _ in self.spec.measures])
            for m in range(len(self.spec.measures)):
                if parsed.present[j, m]:
                    agg[m].append(float(parsed.values[j, m]))
            self.watermark = max(self.watermark, t)
        if len(parsed):
            self.last_wall_ms = wall_ms
        return rejects

    def advance(self, wall_ms: int) -> ClosedWindows:
        from sinks.record import timeseries_id

        w = self.spec.window_ms
        idle = bool(self.last_wall_ms is not None and self.open
                    and wall_ms - self.last_wall_ms >= self.spec.idle_timeout_ms)
        due = sorted((k for k in self.open
                      if idle or k[1] + w <= self.watermark - self.spec.allowed_lateness_ms),
                     key=lambda k: k[1])
        out = ClosedWindows([], [], [], np.zeros(0, np.int64), np.zeros(0, np.int64),
                            np.zeros(0), np.zeros(0, bool))
        starts: list[int] = []
        vals: list[float] = []
        for k in due:
            agg = self.open.pop(k)
            if idle:
                self.watermark = max(self.watermark, k[1] + w + self.spec.allowed_lateness_ms)
            for m, ms in enumerate(self.spec.measures):
                xs = agg[m]
                if not xs:
                    continue
                v = {"sum": sum, "count": len, "min": min, "max": max,
                     "avg": lambda a: sum(a) / len(a)}[ms.aggregation](xs)
                pairs = dict(zip(self.spec.dimensions, k[0], strict=True))
                out.timeseries_id.append(timeseries_id(self.spec.name, ms.field, pairs))
                out.measure.append(ms.field)
                out.dims.append(tuple(pairs.items()))
                starts.append(k[1])
                vals.append(float(v))
        out.window_start_ms = np.array(starts, dtype=np.int64)
        out.window_end_ms = out.window_start_ms + w
        out.value = np.array(vals, dtype=np.float64)
        out.missing = np.zeros(len(vals), dtype=bool)
        return out

    def to_state(self) -> dict[str, Any]:
        return {"version": 1, "watermark": self.watermark,
                "open": [[list(k[0]), k[1], v] for k, v in self.open.items()]}

    @classmethod
    def from_state(cls, spec: DetectorSpec, state: dict[str, Any], registry: Any = None) -> WindowState:
        ws = cls(spec, registry)
        ws.watermark = int(state["watermark"])
        for dims, start, agg in state["open"]:
            ws.open[(tuple(str(a) for a in dims), int(start))] = [list(v) for v in agg]
        return ws


@dataclass
class ScoreBatch:
    raw_score: np.ndarray
    anomaly_score: np.ndarray
    threshold: np.ndarray
    decision: np.ndarray
    confidence: np.ndarray
    inference: np.ndarray
    processed_points: np.ndarray
    expected_value: np.ndarray
    missing: np.ndarray
    warm_started: np.ndarray


class Detector:
    """Welford mean/std per key; deterministic and exactly restorable."""

    def __init__(self, config: Any, backend: str = "cpu") -> None:
        self.config = config
        self.stats: dict[str, list[float]] = {}

    def process_many(self, keys: Sequence[str], values: np.ndarray, timestamps_ms: np.ndarray,
                     missing: np.ndarray | None = None) -> ScoreBatch:
        n = len(keys)
        out = {k: np.zeros(n) for k in ("raw", "score", "exp")}
        inf = np.zeros(n, bool)
        pts = np.zeros(n, np.int64)
        lp = self.config.scoring.learning_points
        for i, k in enumerate(keys):
            c, mean, m2 = self.stats.setdefault(k, [0.0, 0.0, 0.0])
            x = float(values[i])
            std = math.sqrt(m2 / c) if c > 1 else 0.0
            raw = abs(x - mean) / (std + 1e-9) if c > 1 else 0.0
            c += 1
            d = x - mean
            mean += d / c
            m2 += d * (x - mean)
            self.stats[k] = [c, mean, m2]
            inf[i] = c > lp
            out["raw"][i] = raw
            out["score"][i] = min(100.0, raw * 15.0) if inf[i] else 0.0
            out["exp"][i] = mean
            pts[i] = int(c)
        thr = np.full(n, self.config.scoring.threshold)
        return ScoreBatch(out["raw"], out["score"], thr, (out["score"] > thr).astype(np.int8),
                          np.where(inf, 80.0, 0.0), inf, pts, out["exp"],
                          np.zeros(n, bool) if missing is None else np.asarray(missing, bool), np.zeros(n, bool))

    def to_state(self, keys: Sequence[str]) -> dict[str, Any]:
        return {"version": 1, "stats": {k: self.stats[k] for k in keys if k in self.stats}}

    def from_state(self, state: dict[str, Any]) -> None:
        self.stats.update({k: list(v) for k, v in state["stats"].items()})

    def evict(self, keys: Sequence[str]) -> None:
        for k in keys:
            self.stats.pop(k, None)

    def keys(self) -> list[str]:
        return list(self.stats)


class ParquetSink:
    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "results"

    def write(self, table: Any, source: str, first_offset: int, last_offset: int) -> list[Path]:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        from sinks.record import format_period

        paths = []
        starts = table.column("windowStart").cast("int64").to_numpy()
        dates = np.array([format_period(int(s))[:10] for s in starts])
        names = np.array(table.column("detectorName").to_pylist())
        for det in sorted(set(names.tolist())):
            for date in sorted(set(dates[names == det].tolist())):
                mask = (names == det) & (dates == date)
                part = table.filter(pc.array(mask))
                d = self.root / f"detector={det}" / f"date={date}"
                d.mkdir(parents=True, exist_ok=True)
                final = d / f"{source}-{first_offset:020d}-{last_offset:020d}.parquet"
                tmp = d / f".{final.name}.tmp"
                pq.write_table(part, tmp)
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
                os.replace(tmp, final)
                paths.append(final)
        return paths

    def delete_after(self, source: str, offset: int) -> int:
        n = 0
        for p in self.root.glob(f"detector=*/date=*/{source}-*.parquet"):
            first = int(p.stem.rsplit("-", 2)[1])
            if first >= offset:
                p.unlink()
                n += 1
        return n
