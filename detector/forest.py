"""The batched online Random Cut Forest: S series × T trees in preallocated arrays.

By default (``raw_score="isolation"``) each series keeps its last ``sample_size * insert_every``
shingled points; the trees take turns at them (each point goes to one class of trees, so a tree
holds ``sample_size`` points spread over the whole history), and every new point is scored by
every tree before it is stored, with AWS RCF's isolation score averaged over the trees. With
``raw_score="codisp"`` (and ``insert_every=1``) every tree holds the same sliding window (rrcf's
streaming example) and a point is scored by its collusive displacement as it is inserted. See
docs/ARCHITECTURE.md, "Detector engine", for the layout and the choices.

Example:
    >>> import numpy as np
    >>> from detector.config import ForestConfig
    >>> from detector.forest import Forest
    >>> forest = Forest(ForestConfig(n_trees=10, sample_size=32, shingle_size=2), capacity=4)
    >>> slots = forest.add_series(2)
    >>> out = forest.update(np.repeat(slots, 50), np.r_[np.sin(np.arange(50)), np.cos(np.arange(50))])
    >>> out.raw_score.shape, bool(out.raw_score[0] == 0.0)
    ((100,), True)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from detector import kernels
from detector.backend import Backend, get_backend
from detector.config import ForestConfig
from detector.errors import DetectorError, StateVersionError

logger = logging.getLogger(__name__)

#: Version of the one-series dict written by :meth:`Forest.to_state`; older versions stay loadable.
STATE_VERSION = 1
STATE_KIND = "cutstream.forest"
#: Version of the many-series dict written by :meth:`Forest.to_state_many` (the checkpoint format).
MANY_STATE_VERSION = 1
MANY_STATE_KIND = "cutstream.forest.many"
#: Node records gathered (or scattered) per pass of the bulk state code: bounds its scratch memory
#: (16-byte records: 16 MiB, plus an 8 MiB row index) whatever the number of series.
_CHUNK_ROWS = 1 << 20

_SERIES_STATE = ("uid", "n_values", "n_points", "offset", "tail", "points", "rep", "count")
_TREE_STATE = (
    "root",
    "free_head",
    "n_alloc",
    "left",
    "right",
    "cut_dim",
    "cut_value",
    "mass",
    "box_lo",
    "box_hi",
)


@dataclass(frozen=True)
class ForestOutput:
    """Per-point results, aligned with the input of :meth:`Forest.update`.

    Attributes:
        raw_score: float64[n], the point's raw score (isolation or CoDisp) averaged over the
            trees (0 until the shingle is full).
        expected: float64[n], the forest's imputation of the point's value from the previous
            ``shingle_size - 1`` values (median over trees; the value itself until the shingle
            is full).
    """

    raw_score: np.ndarray[Any, np.dtype[np.float64]]
    expected: np.ndarray[Any, np.dtype[np.float64]]


class Forest:
    """Random Cut Forests for many series, updated and scored in one batched step.

    Args:
        config: trees per series, window (sample) size, shingle size and seed.
        capacity: series slots allocated up front (grows by doubling). Allocation is lazy
            (zero pages), so a large capacity costs memory only as series fill.
        backend: "cpu" (numba), "gpu" (numba.cuda + CuPy) or "auto".
    """

    def __init__(self, config: ForestConfig, capacity: int = 1024, backend: str = "cpu") -> None:
        if capacity < 1:
            raise DetectorError(f"capacity must be >= 1, got {capacity}")
        self.config = config
        self._backend: Backend = get_backend(backend)
        self._T = config.n_trees
        self._N = config.sample_size
        self._K = config.shingle_size
        self._M = self._N - 1
        self._every = config.insert_every
        self._isolation = config.raw_score == "isolation"
        #: Point slots per series: the last ``W`` points, of which each tree holds every
        #: ``insert_every``-th (``sample_size`` of them).
        self._W = config.store_size
        self._R, self._box_dtype, self._bo = kernels.record_layout(self._K, self._W)
        self._seed = np.uint64(config.seed)
        self._capacity = 0
        self._a: dict[str, Any] = {}
        self._v: dict[str, Any] = {}
        self._active = np.zeros(0, dtype=bool)
        self._free: list[int] = []
        self._next = 0
        self._next_uid = 0
        self._allocate(capacity)
        self._gpu: Any = None
        #: Walk all trees in lockstep before each step (see kernels_cpu.prewalk); pays off once the
        #: forest no longer fits in cache.
        self._prefetch = True
        from detector import kernels_cpu

        #: log2 of the integer masses, read by the isolation score on either target (bit-identity).
        self._lg = self._backend.asarray(kernels_cpu.log2_table(self._W + 2))
        if self._backend.name in ("gpu", "cudasim"):
            from detector import kernels_cuda

            self._gpu = kernels_cuda.gpu_kernels(
                self._N, self._K, self._T, self._bo, self._every, self._isolation
            )
        logger.info(
            "forest created backend=%s n_trees=%d sample_size=%d shingle_size=%d capacity=%d",
            self._backend.name,
            self._T,
            self._N,
            self._K,
            capacity,
        )

    # ------------------------------------------------------------------ layout

    def _shapes(self, s: int) -> dict[str, tuple[tuple[int, ...], Any]]:
        T, W, K, M = self._T, self._W, self._K, self._M
        g = s * T
        return {
            # per series
            "uid": ((s,), np.uint64),
            "n_values": ((s,), np.int64),
            "n_points": ((s,), np.int64),
            "offset": ((s,), np.float64),
            "tail": ((s, max(K - 1, 1)), np.float64),
            "points": ((s, W, K), np.float32),
            "rep": ((s, W), np.uint16),
            "count": ((s, W), np.uint16),
            "newpt": ((s, K), np.float32),  # scratch: the point being added
            "plan": ((s, 5), np.int32),  # scratch: delete / insert decisions of the step
            # per tree
            "root": ((g,), np.int16),
            "free_head": ((g,), np.int16),
            "n_alloc": ((g,), np.int16),
            "nodes": ((g, M, self._R // 4), np.uint32),  # packed records, see detector.kernels
        }

    def _allocate(self, capacity: int) -> None:
        new = {name: self._backend.zeros(shape, dt) for name, (shape, dt) in self._shapes(capacity).items()}
        if self._capacity:
            for name, old in self._a.items():
                new[name][: old.shape[0]] = old
        self._a = new
        nodes = new["nodes"]
        self._v = {
            "n16": nodes.view(np.int16),
            "u16": nodes.view(np.uint16),
            "f32": nodes.view(np.float32),
            "box": nodes.view(self._box_dtype),
        }
        active = np.zeros(capacity, dtype=bool)
        active[: self._active.shape[0]] = self._active
        self._active = active
        self._capacity = capacity

    @property
    def capacity(self) -> int:
        """Series slots allocated."""
        return self._capacity

    @property
    def backend(self) -> str:
        """ "cpu" or "gpu": where the state lives and the kernels run."""
        return self._backend.name

    @property
    def n_series(self) -> int:
        """Series slots in use."""
        return int(self._active.sum())

    @property
    def bytes_per_series(self) -> int:
        """Bytes of state (and step scratch) per series slot at this config."""
        return int(
            sum(
                int(np.prod(shape[1:], dtype=np.int64))
                * (self._T if name in _TREE_NAMES else 1)
                * np.dtype(dt).itemsize
                for name, (shape, dt) in self._shapes(1).items()
            )
        )

    # ------------------------------------------------------------------ series

    def add_series(
        self, n: int, uids: np.ndarray[Any, Any] | None = None
    ) -> np.ndarray[Any, np.dtype[np.int64]]:
        """Make ``n`` empty series; return their slots (int64[n]).

        Args:
            n: how many.
            uids: optional uint64[n] stable identities (e.g. a hash of the series key): they
                seed the series' random cuts, so a series scores the same whatever its slot. By
                default the forest numbers series in creation order.
        """
        if n < 0:
            raise DetectorError(f"add_series needs n >= 0, got {n}")
        reuse = [self._free.pop() for _ in range(min(n, len(self._free)))]
        fresh = n - len(reuse)
        if self._next + fresh > self._capacity:
            self._allocate(max(2 * self._capacity, self._next + fresh))
        slots = np.concatenate(
            [np.asarray(reuse, dtype=np.int64), np.arange(self._next, self._next + fresh, dtype=np.int64)]
        )
        self._next += fresh
        if uids is None:
            uid_arr = np.arange(self._next_uid, self._next_uid + n, dtype=np.uint64)
            self._next_uid += n
        else:
            uid_arr = np.asarray(uids, dtype=np.uint64)
            if uid_arr.shape != (n,):
                raise DetectorError(f"uids must have shape ({n},), got {uid_arr.shape}")
        self._active[slots] = True
        self._a["uid"][self._backend.asarray(slots)] = self._backend.asarray(uid_arr)
        return slots

    def remove_series(self, slots: np.ndarray[Any, Any]) -> None:
        """Forget series: their slots are cleared and reused by later ``add_series``."""
        slots = self._check_slots(slots)
        slots = np.unique(slots)
        self._clear(slots)
        self._active[slots] = False
        self._free.extend(int(s) for s in slots[::-1])

    def _clear(self, slots: np.ndarray[Any, Any]) -> None:
        b = self._backend
        trees = (slots[:, None] * self._T + np.arange(self._T)[None, :]).ravel()
        s_idx, g_idx = b.asarray(slots), b.asarray(trees)
        for name, arr in self._a.items():
            arr[g_idx if name in _TREE_NAMES else s_idx] = 0

    def n_points(self, slots: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.int64]]:
        """Values each series has received (int64, aligned with ``slots``)."""
        slots = self._check_slots(slots)
        return self._backend.to_numpy(self._a["n_values"][self._backend.asarray(slots)]).astype(np.int64)

    def _check_slots(self, slots: Any) -> np.ndarray[Any, np.dtype[np.int64]]:
        arr = np.ascontiguousarray(slots, dtype=np.int64).reshape(-1)
        at = _first_unknown(arr, self._active)
        if at >= 0:
            bad = arr[(arr < 0) | (arr >= self._capacity)]
            if not bad.size:
                bad = arr[~self._active[arr]]
            raise DetectorError(f"unknown series slot(s) {bad[:5].tolist()}: add them with add_series first")
        return arr

    # ------------------------------------------------------------------ the step

    def update(
        self, slots: Any, values: Any, device_slots: Any = None, distinct: bool | None = None
    ) -> ForestOutput:
        """Add one value per row to its series, then score it; all series advance in one step.

        Args:
            slots: int64[n] series slots; a slot may repeat (its values are taken in row order).
            values: float64[n] raw values (finite).
            device_slots: on the GPU backend, ``slots`` already on the device, with ``values`` a
                device array too (the scoring path's forest input, made there and finite by
                construction), and ``slots`` the caller's, checked there (the detector's step checks
                them against its live series: not again here): the output then stays on the device,
                and nothing is copied.
            distinct: with ``device_slots``, whether no slot repeats where the caller knows it (the
                detector's step does); None finds it out here.

        Returns:
            :class:`ForestOutput` aligned with the rows (device arrays where ``device_slots`` was
            used).
        """
        if device_slots is not None and self._gpu is not None and self._backend.name == "gpu":
            score, expected = self._gpu.update_device(
                self._a,
                self._v,
                self._lg,
                self._seed,
                slots,
                device_slots,
                values,
                self._backend.xp,
                distinct,
            )
            return ForestOutput(score, expected)
        slots = self._check_slots(slots)
        vals = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
        if vals.shape != slots.shape:
            raise DetectorError(f"slots and values differ in length: {slots.shape[0]} vs {vals.shape[0]}")
        if not np.isfinite(vals).all():
            raise DetectorError("values must be finite: impute missing values before Forest.update")
        n = slots.shape[0]
        if n == 0:
            return ForestOutput(np.zeros(0), np.zeros(0))
        if self._gpu is not None:
            score, expected = self._gpu.update(
                self._a, self._v, self._lg, self._seed, slots, vals, self._backend.xp
            )
            return ForestOutput(score, expected)
        from detector import kernels_cpu

        order = np.argsort(slots, kind="stable")
        ss = slots[order]
        starts = np.flatnonzero(np.diff(ss)) + 1
        starts = np.concatenate(([0], starts, [n])).astype(np.int64)
        out_score = np.empty(n, np.float64)
        out_expected = np.empty(n, np.float64)
        a, v = self._a, self._v
        parallel = starts.shape[0] - 1 >= kernels_cpu.PARALLEL_MIN_SERIES
        if self._isolation:
            iso = kernels_cpu.update_batch_iso if parallel else kernels_cpu.update_batch_iso_serial
            iso(
                order,
                starts,
                ss,
                vals,
                self._seed,
                self._T,
                self._W,
                self._K,
                self._bo,
                kernels.expect_stride(self._T),
                self._every,
                a["uid"],
                a["tail"],
                a["n_values"],
                a["n_points"],
                a["offset"],
                a["newpt"],
                a["plan"],
                a["points"],
                a["rep"],
                a["count"],
                v["n16"],
                v["u16"],
                v["f32"],
                v["box"],
                a["root"],
                a["free_head"],
                a["n_alloc"],
                self._lg,
                out_score,
                out_expected,
            )
            return ForestOutput(out_score, out_expected)
        driver = kernels_cpu.update_batch if parallel else kernels_cpu.update_batch_serial
        driver(
            order,
            starts,
            ss,
            vals,
            self._seed,
            self._T,
            self._N,
            self._K,
            self._bo,
            kernels.expect_stride(self._T),
            a["uid"],
            a["tail"],
            a["n_values"],
            a["n_points"],
            a["offset"],
            a["newpt"],
            a["plan"],
            a["points"],
            a["rep"],
            a["count"],
            v["n16"],
            v["u16"],
            v["f32"],
            v["box"],
            a["root"],
            a["free_head"],
            a["n_alloc"],
            out_score,
            out_expected,
            self._prefetch,
        )
        return ForestOutput(out_score, out_expected)

    # ------------------------------------------------------------------ state

    def _config_state(self) -> dict[str, int]:
        cfg = {"n_trees": self._T, "sample_size": self._N, "shingle_size": self._K, "seed": int(self._seed)}
        if self._isolation:
            # A CoDisp sliding-window forest writes the config it always wrote (golden files).
            cfg.update(insert_every=self._every, isolation=1)
        return cfg

    def _check_header(self, state: dict[str, Any], kind: str, version: int) -> None:
        if state.get("kind", kind) != kind:
            raise StateVersionError(f"not a forest state: kind={state.get('kind')!r}, expected {kind!r}")
        found = int(state.get("version", -1))
        if found != version:
            raise StateVersionError(
                f"{kind} state version {found} is not readable by this version "
                f"(reads {version}); rebuild the model from history"
            )
        cfg = {k: int(v) for k, v in dict(state["config"]).items()}
        if cfg != self._config_state():
            raise DetectorError(
                f"state was saved with forest config {cfg}, this forest has {self._config_state()}"
            )

    def to_state_many(self, slots: Any) -> dict[str, Any]:
        """The versioned state of many series, taken in one pass of array operations.

        The checkpoint format: a few large arrays whatever the number of series, instead of a dict
        of small arrays per series. Node records are stored ragged: each tree of series ``i`` keeps
        its first ``used[i]`` records (the series' high-water mark over its trees), so young
        series cost little.

        Args:
            slots: int64[n] series slots.

        Returns:
            ``kind``, ``version`` (MANY_STATE_VERSION), ``config``, and numpy arrays (n series, T
            trees, N = sample_size, K = shingle_size, U = T * used.sum() node records):
            ``uid`` uint64[n], ``n_values`` / ``n_points`` int64[n], ``offset`` float64[n],
            ``tail`` float64[n, max(K-1, 1)], ``points`` float32[n, N, K], ``rep`` / ``count``
            uint16[n, N], ``root`` / ``free_head`` / ``n_alloc`` int16[n, T], ``used`` int64[n],
            ``left`` / ``right`` int16[U], ``mass_left`` / ``mass_right`` uint16[U], ``cut_dim``
            uint8[U], ``cut_value`` float32[U], ``box_lo`` / ``box_hi`` (uint8 or uint16)[U, K];
            the records of series i, tree t come in that order, series after series.
        """
        slots = self._check_slots(slots)
        b, a, n, T = self._backend, self._a, slots.shape[0], self._T
        trees = (slots[:, None] * T + np.arange(T, dtype=np.int64)[None, :]).reshape(-1)
        s_idx, g_idx = b.asarray(slots), b.asarray(trees)
        state: dict[str, Any] = {
            "kind": MANY_STATE_KIND,
            "version": MANY_STATE_VERSION,
            "config": self._config_state(),
        }
        for name in _SERIES_STATE:
            state[name] = np.asarray(b.to_numpy(a[name][s_idx]), dtype=a[name].dtype)
        for name in ("root", "free_head", "n_alloc"):
            state[name] = np.asarray(b.to_numpy(a[name][g_idx]), dtype=a[name].dtype).reshape(n, T)
        used = state["n_alloc"].max(axis=1, initial=0).astype(np.int64)
        state["used"] = used
        state.update(self._gather_nodes(trees, np.repeat(used, T)))
        return state

    def from_state_many(self, state: dict[str, Any]) -> np.ndarray[Any, np.dtype[np.int64]]:
        """Add the series of :meth:`to_state_many`'s dict in one pass; returns their new slots (int64[n])."""
        self._check_header(state, MANY_STATE_KIND, MANY_STATE_VERSION)
        T, W, K = self._T, self._W, self._K
        uid = np.asarray(state["uid"], dtype=np.uint64).reshape(-1)
        n = uid.shape[0]
        used = np.asarray(state["used"], dtype=np.int64).reshape(-1)
        rows = int(T * used.sum())
        expected = {
            "n_values": (n,),
            "n_points": (n,),
            "offset": (n,),
            "tail": (n, max(K - 1, 1)),
            "points": (n, W, K),
            "rep": (n, W),
            "count": (n, W),
            "root": (n, T),
            "free_head": (n, T),
            "n_alloc": (n, T),
            "used": (n,),
            **dict.fromkeys(("left", "right", "mass_left", "mass_right", "cut_dim", "cut_value"), (rows,)),
            "box_lo": (rows, K),
            "box_hi": (rows, K),
        }
        for name, shape in expected.items():
            if np.shape(state[name]) != shape:
                raise DetectorError(
                    f"corrupt forest state: {name} has shape {np.shape(state[name])}, expected {shape}"
                )
        if n and (used.min() < 0 or used.max() > self._M):
            raise DetectorError(f"corrupt forest state: node counts outside 0..{self._M}")
        slots = self.add_series(n, uids=uid)
        b, a = self._backend, self._a  # after add_series, which may have grown the arrays
        trees = (slots[:, None] * T + np.arange(T, dtype=np.int64)[None, :]).reshape(-1)
        s_idx, g_idx = b.asarray(slots), b.asarray(trees)
        for name in _SERIES_STATE[1:]:
            a[name][s_idx] = b.asarray(np.asarray(state[name], dtype=a[name].dtype))
        for name in ("root", "free_head", "n_alloc"):
            a[name][g_idx] = b.asarray(np.asarray(state[name], dtype=a[name].dtype).reshape(-1))
        self._scatter_nodes(trees, np.repeat(used, T), state)
        return slots

    def to_state(self, slot: int) -> dict[str, Any]:
        """The versioned state of one series: plain values and numpy arrays (see STATE_VERSION).

        A view of :meth:`to_state_many` for one slot, in the one-series layout (node fields
        shaped [T, used]) that warm-start files and the golden file of version 1 use.
        """
        many = self.to_state_many([slot])
        used = int(many["used"][0])
        state: dict[str, Any] = {
            "kind": STATE_KIND,
            "version": STATE_VERSION,
            "config": many["config"],
            "uid": int(many["uid"][0]),
            "n_values": int(many["n_values"][0]),
            "n_points": int(many["n_points"][0]),
            "offset": float(many["offset"][0]),
        }
        for name in ("tail", "points", "rep", "count", "root", "free_head", "n_alloc"):
            state[name] = many[name][0]
        for name in _NODE_FIELDS:
            field = many[name]
            state[name] = field.reshape(self._T, used, *field.shape[1:])
        return state

    def from_state(self, state: dict[str, Any]) -> int:
        """Add a series from :meth:`to_state`'s dict; returns its new slot."""
        self._check_header(state, STATE_KIND, STATE_VERSION)
        return int(self.from_state_many(one_to_many(state, self._T))[0])

    def _row_chunks(
        self, trees: np.ndarray[Any, Any], rows: np.ndarray[Any, Any]
    ) -> list[tuple[int, np.ndarray[Any, Any]]]:
        """(first output record, record indices into nodes.reshape(G*M, -1)) per chunk of trees.

        Tree ``trees[i]`` contributes its records ``0 .. rows[i]-1``; chunks hold whole trees and
        about ``_CHUNK_ROWS`` records.
        """
        ends = np.cumsum(rows)
        out = []
        lo = 0
        while lo < trees.shape[0]:
            first = int(ends[lo - 1]) if lo else 0
            hi = max(int(np.searchsorted(ends, first + _CHUNK_ROWS, side="right")), lo + 1)
            r = rows[lo:hi]
            starts = np.cumsum(r) - r
            idx = np.repeat(trees[lo:hi] * self._M - starts, r) + np.arange(int(r.sum()), dtype=np.int64)
            out.append((first, idx))
            lo = hi
        return out

    def _gather_nodes(self, trees: np.ndarray[Any, Any], rows: np.ndarray[Any, Any]) -> dict[str, Any]:
        """Packed records of ``trees`` -> named flat arrays (the state format is layout-free)."""
        b, k, bo = self._backend, self._K, self._bo
        total = int(rows.sum())
        out: dict[str, Any] = {
            **{name: np.empty(total, dt) for name, dt in _NODE_DTYPES.items()},
            "box_lo": np.empty((total, k), self._box_dtype),
            "box_hi": np.empty((total, k), self._box_dtype),
        }
        if self._backend.name != "gpu":
            from detector import kernels_cpu

            v = self._v
            kernels_cpu.gather_records(
                trees, rows, k, bo, v["n16"], v["u16"], v["f32"], v["box"], *(out[f] for f in _NODE_FIELDS)
            )
            return out
        records = self._records()
        for first, idx in self._row_chunks(trees, rows):
            # whole records as one item each: numpy gathers them 8x faster than rows of a 2-D array
            packed = np.ascontiguousarray(b.to_numpy(records[b.asarray(idx)])).view(np.uint32)
            packed = packed.reshape(idx.shape[0], self._R // 4)
            at = slice(first, first + idx.shape[0])
            n16, u16, box = packed.view(np.int16), packed.view(np.uint16), packed.view(self._box_dtype)
            ml, mr = u16[:, 2], u16[:, 3]
            out["left"][at] = n16[:, 0]
            out["right"][at] = n16[:, 1]
            np.bitwise_and(ml, 0x1FFF, out=out["mass_left"][at])
            np.bitwise_and(mr, 0x1FFF, out=out["mass_right"][at])
            cut_dim, high = ml >> 13, mr >> 13
            high <<= 3
            cut_dim |= high
            out["cut_dim"][at] = cut_dim
            out["cut_value"][at] = packed.view(np.float32)[:, 2]
            out["box_lo"][at] = box[:, bo : bo + k]
            out["box_hi"][at] = box[:, bo + k : bo + 2 * k]
        return out

    def _scatter_nodes(
        self, trees: np.ndarray[Any, Any], rows: np.ndarray[Any, Any], state: dict[str, Any]
    ) -> None:
        """Named flat arrays of ``state`` -> packed records of ``trees`` (inverse of _gather_nodes)."""
        b, k, bo = self._backend, self._K, self._bo
        fields = {name: np.asarray(state[name]) for name in _NODE_FIELDS}
        if self._backend.name != "gpu":
            from detector import kernels_cpu

            dtypes = {**_NODE_DTYPES, "box_lo": self._box_dtype, "box_hi": self._box_dtype}
            v = self._v
            kernels_cpu.scatter_records(
                trees, rows, k, bo, v["n16"], v["u16"], v["f32"], v["box"],
                *(np.ascontiguousarray(fields[f], dtype=dtypes[f]) for f in _NODE_FIELDS),
            )  # fmt: skip
            return
        records = self._records()
        for first, idx in self._row_chunks(trees, rows):
            at = slice(first, first + idx.shape[0])
            packed = np.zeros((idx.shape[0], self._R // 4), dtype=np.uint32)
            n16, u16, box = packed.view(np.int16), packed.view(np.uint16), packed.view(self._box_dtype)
            n16[:, 0] = fields["left"][at]
            n16[:, 1] = fields["right"][at]
            cd = fields["cut_dim"][at].astype(np.uint16)
            u16[:, 2] = fields["mass_left"][at].astype(np.uint16) | ((cd & 7) << 13)
            u16[:, 3] = fields["mass_right"][at].astype(np.uint16) | ((cd >> 3) << 13)
            packed.view(np.float32)[:, 2] = fields["cut_value"][at]
            box[:, bo : bo + k] = fields["box_lo"][at]
            box[:, bo + k : bo + 2 * k] = fields["box_hi"][at]
            records[b.asarray(idx)] = b.asarray(
                packed if records.ndim == 2 else packed.view(records.dtype).ravel()
            )

    def _records(self) -> Any:
        """The packed node records, one per row (a view of ``nodes``): G*M items of R bytes on the host."""
        nodes = self._a["nodes"]
        if self._backend.name == "gpu":
            return nodes.reshape(-1, self._R // 4)  # CuPy has no void dtype: rows of R/4 words
        return nodes.reshape(-1).view(np.dtype((np.void, self._R)))


_TREE_NAMES = frozenset(("root", "free_head", "n_alloc", "nodes"))
_NODE_FIELDS = ("left", "right", "mass_left", "mass_right", "cut_dim", "cut_value", "box_lo", "box_hi")
_NODE_DTYPES = {
    "left": np.int16,
    "right": np.int16,
    "mass_left": np.uint16,
    "mass_right": np.uint16,
    "cut_dim": np.uint8,
    "cut_value": np.float32,
}


def one_to_many(state: dict[str, Any], n_trees: int) -> dict[str, Any]:
    """A one-series state (:meth:`Forest.to_state`) in the many-series layout (one row)."""
    used = np.shape(state["left"])[1]
    many: dict[str, Any] = {
        "kind": MANY_STATE_KIND,
        "version": MANY_STATE_VERSION,
        "config": state["config"],
        "uid": np.array([int(state["uid"])], dtype=np.uint64),
        "used": np.array([used], dtype=np.int64),
    }
    for name in _SERIES_STATE[1:]:
        many[name] = np.asarray(state[name])[None]
    for name in ("root", "free_head", "n_alloc"):
        many[name] = np.asarray(state[name]).reshape(1, n_trees)
    for name in _NODE_FIELDS:
        field = np.asarray(state[name])
        many[name] = field.reshape(n_trees * used, *field.shape[2:])
    return many


def concat_many(states: list[dict[str, Any]]) -> dict[str, Any]:
    """Several many-series states of one config as one (series after series)."""
    out = {k: states[0][k] for k in ("kind", "version", "config")}
    for name in states[0]:
        if name not in out:
            out[name] = np.concatenate([np.asarray(s[name]) for s in states])
    return out


_NODE_STATE = ("left", "right", "mass_left", "mass_right", "cut_dim", "cut_value", "box_lo", "box_hi")


def select_many(state: dict[str, Any], rows: np.ndarray[Any, Any]) -> dict[str, Any]:
    """The series at ``rows`` of a many-series state, in that order (the inverse of :func:`concat_many`).

    Per-series arrays are sliced by row; the node records are ragged (series ``i`` owns
    ``T * used[i]`` of them, series after series), so they are gathered by each series' range.
    """
    idx = np.asarray(rows, dtype=np.int64).reshape(-1)
    n_trees = int(state["config"]["n_trees"])
    per = n_trees * np.asarray(state["used"], dtype=np.int64).reshape(-1)
    starts = np.cumsum(per) - per
    lengths = per[idx]
    # each selected series' record range, back to back: its start, then +1 per record
    take = np.repeat(starts[idx] - (np.cumsum(lengths) - lengths), lengths) + np.arange(int(lengths.sum()))
    out = {k: state[k] for k in ("kind", "version", "config")}
    for name, value in state.items():
        if name not in out:
            out[name] = np.asarray(value)[take if name in _NODE_STATE else idx]
    return out


def check_state(state: dict[str, Any]) -> None:
    """Verify the invariants of one series' state; raise DetectorError on the first broken one.

    Slow (pure Python): for tests and debugging. Checks, for every tree: each internal node's box
    is exactly the min/max of its leaves' points, its mass is the sum of its leaves' counts, every
    leaf is reached from the root by following the cuts with its own coordinates, the leaves are
    exactly the distinct live points of the tree's class (every point of the window when
    ``insert_every`` is 1), and the store never holds more than ``sample_size * insert_every``.
    """
    cfg = state["config"]
    n_trees = int(cfg["n_trees"])
    every = int(cfg.get("insert_every", 1))
    n_store = int(cfg["sample_size"]) * every
    pts = np.asarray(state["points"])
    rep, count = np.asarray(state["rep"]), np.asarray(state["count"])
    n_points = int(state["n_points"])
    live_all = list(range(min(n_points, n_store)))
    from detector.kernels import slot_class

    with np.errstate(over="ignore"):  # the class hash wraps uint64 on purpose
        klass = [int(slot_class(np.int64(j), np.int64(every))) for j in range(n_store)]  # type: ignore[no-untyped-call]
    for c in range(every):
        live = [j for j in live_all if klass[j] == c]
        reps = {int(rep[j]) for j in live}
        for r in reps:
            members = [j for j in live if int(rep[j]) == r]
            if int(count[r]) != len(members):
                raise DetectorError(f"leaf {r}: count {int(count[r])} != {len(members)} points")
            if any(not np.array_equal(pts[j], pts[r]) for j in members):
                raise DetectorError(f"leaf {r} groups points that differ")
            if klass[r] != c:
                raise DetectorError(f"leaf {r} stands for points of another class")
        if sum(int(count[r]) for r in reps) != len(live):
            raise DetectorError("counts do not add up to the window")
        _check_trees(state, pts, count, live, reps, range(c, n_trees, every))


def _check_trees(
    state: dict[str, Any],
    pts: np.ndarray[Any, Any],
    count: np.ndarray[Any, Any],
    live: list[int],
    reps: set[int],
    trees: range,
) -> None:
    for t in trees:
        root = int(state["root"][t])
        if not live:
            if root != 0:
                raise DetectorError(f"tree {t}: empty window but root {root}")
            continue
        leaves: list[int] = []

        def walk(
            ref: int, t: int = t, leaves: list[int] = leaves
        ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], int]:
            if ref < 0:
                slot = -ref - 1
                leaves.append(slot)
                return pts[slot], pts[slot], int(count[slot])
            if ref == 0:
                raise DetectorError(f"tree {t}: dangling child")
            m = ref - 1
            lo_l, hi_l, m_l = walk(int(state["left"][t, m]))
            lo_r, hi_r, m_r = walk(int(state["right"][t, m]))
            lo, hi = np.minimum(lo_l, lo_r), np.maximum(hi_l, hi_r)
            box_lo = pts[np.asarray(state["box_lo"][t, m], dtype=np.int64), np.arange(pts.shape[1])]
            box_hi = pts[np.asarray(state["box_hi"][t, m], dtype=np.int64), np.arange(pts.shape[1])]
            if not (np.array_equal(box_lo, lo) and np.array_equal(box_hi, hi)):
                raise DetectorError(f"tree {t} node {m}: box {box_lo}..{box_hi} != leaves' {lo}..{hi}")
            if (int(state["mass_left"][t, m]), int(state["mass_right"][t, m])) != (m_l, m_r):
                raise DetectorError(
                    f"tree {t} node {m}: masses {int(state['mass_left'][t, m])}, "
                    f"{int(state['mass_right'][t, m])} != leaves' {m_l}, {m_r}"
                )
            d, c = int(state["cut_dim"][t, m]), state["cut_value"][t, m]
            if not (hi_l[d] <= c < lo_r[d]):
                raise DetectorError(f"tree {t} node {m}: cut {c} on dim {d} does not separate its children")
            return lo, hi, m_l + m_r

        walk(root)
        if sorted(leaves) != sorted(reps):
            raise DetectorError(f"tree {t}: leaves {sorted(leaves)} != distinct points {sorted(reps)}")


@numba.njit(cache=True, nogil=True)
def _first_unknown(slots: np.ndarray, active: np.ndarray) -> int:
    """The position of the first slot outside ``active`` (or out of range), -1 if none: one pass."""
    for i in range(slots.shape[0]):
        s = slots[i]
        if s < 0 or s >= active.shape[0] or not active[s]:
            return i
    return -1
