"""The versions of the detector's saved state, in one table, with one mapper per old version.

As streams/state.py does for the stream side (and random-cut-forest-by-aws with
``state/Version.java`` and a mapper per part): every part detector/ saves carries a ``version``;
this table says which version each part writes now and which it reads. Reading an old version
goes through its mappers, one version step each; only the current version is written. Every old
version has a golden file under ``tests/golden/`` that must keep loading.

- detector state (``Detector.to_state``): writes 3, reads 1, 2, 3. 1: one dict per series; 2: the
  series in a few arrays; 3: the scoring stage of detector/normalize.py version 2.
- normalizer state (inside it): writes 4, reads 2, 3 and 4. 1 (before the seasonal value models) cannot
  be mapped: the series' models learn again. 3 added the incident's quiet-point counter (``quiet_n``;
  from 2: 0, as if the series had just been loud). 4: a day slot holds the coarse model's residual,
  no longer the value, and an average's usual number of events per hour of day is kept (``ev_day``;
  from 3: the day slots are emptied and learn again in two days, ``ev_day`` starts empty; every
  other model is kept).
- forest state (one series / many): writes and reads 1. Its config gained ``insert_every`` and
  ``isolation`` with the isolation engine (absent = CoDisp).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detector.errors import StateVersionError

State = dict[str, Any]


@dataclass(frozen=True)
class Part:
    """One kind of saved state: the version written now and how older ones are brought up to it.

    streams/state.py uses the same class for the stream side's parts, with its own error type.

    Attributes:
        name: what the state is (used in error messages).
        current: the version written now.
        mappers: ``{old version: function}`` turning a state of that version into one of the next.
        error: the exception raised for a version that cannot be read.
        hint: what to do about it, appended to the message.
    """

    name: str
    current: int
    mappers: Mapping[int, Callable[[State], State]] = field(default_factory=dict)
    error: type[Exception] = StateVersionError
    hint: str = "; drop the checkpoint to start these series fresh"

    @property
    def readable(self) -> tuple[int, ...]:
        return (*sorted(self.mappers), self.current)

    def upgrade(self, state: State, *, hint: str | None = None) -> State:
        """``state`` (any readable version) as a state of the current version."""
        version = state.get("version")
        while version != self.current:
            mapper = self.mappers.get(version) if isinstance(version, int) else None
            if mapper is None:
                raise self.error(
                    f"{self.name} version {version!r} is not supported (this version reads "
                    f"{', '.join(map(str, self.readable))}){self.hint if hint is None else hint}"
                )
            state = mapper(state)
            version = state.get("version")
        return state


def _detector_v1_to_v2(state: State) -> State:
    """One dict per series → the series' forests in one many-series state, scores kept per series."""
    from detector.forest import STATE_KIND, concat_many, one_to_many

    series = state["series"]
    keys = [str(k) for k in series]
    forests = []
    for k in keys:
        f = series[k]["forest"]
        if f.get("kind", STATE_KIND) != STATE_KIND:
            raise StateVersionError(f"series {k!r}: not a forest state ({f.get('kind')!r})")
        forests.append(one_to_many(f, int(f["config"]["n_trees"])))
    return {
        "version": 2,
        "config": state["config"],
        "keys": keys,
        "forest": concat_many(forests) if forests else None,
        "scores": {"version": 1, "series": [series[k]["scores"] for k in keys]},
        "warm_started": np.array([bool(series[k].get("warm_started", False)) for k in keys], dtype=bool),
    }


def _detector_v2_to_v3(state: State) -> State:
    """The scoring stage before normalize.py version 2 kept other numbers: the forest is kept, the
    value models and the scores' moments learn again (``n_model`` 0: LEARNING until they have);
    ``processedDataPoints`` and the suppression clock carry on."""
    keys = list(state["keys"])
    n = len(keys)
    scores = state["scores"]
    if "series" in scores:  # from version 1: per-series dicts
        n_seen = np.array([int(s["n_seen"]) for s in scores["series"]], dtype=np.int64)
        since = np.array([int(s["since_alert"]) for s in scores["series"]], dtype=np.int64)
        missing = np.array([float(s["missing_rate"]) for s in scores["series"]])
    else:
        n_seen = np.asarray(scores["n_seen"], dtype=np.int64).reshape(n)
        since = np.asarray(scores["since_alert"], dtype=np.int64).reshape(n)
        missing = np.asarray(scores["missing_rate"], dtype=np.float64).reshape(n)
    return {
        "version": 3,
        "config": state["config"],
        "keys": keys,
        "forest": state["forest"],
        "scores": {
            "version": 2,
            "partial": {"n_seen": n_seen, "since_alert": since, "missing_rate": missing},
        },
        "warm_started": np.asarray(state["warm_started"], dtype=bool).reshape(n),
    }


def _normalizer_v2_to_v3(state: State) -> State:
    """Version 3 counts the points since the series was last loud (``quiet_n``): 0 for every series."""
    if "since_alert" not in state:
        raise StateVersionError("normalizer state version 2 without since_alert: the checkpoint is corrupt")
    n = np.asarray(state["since_alert"]).reshape(-1).shape[0]
    return {**state, "version": 3, "quiet_n": np.zeros(n, dtype=np.int64)}


#: The day slots' columns that version 4 reads differently (emptied from version 3).
_SLOT_COLUMNS = ("slot_mean", "slot_dev", "slot_n", "slot_err", "coarse_err")


def _normalizer_v3_to_v4(state: State) -> State:
    """Version 4's day slots learn the coarse model's residual: version 3's (absolute values) are
    emptied, so the slots are not used until they have seen two days again."""
    missing = [c for c in _SLOT_COLUMNS if c not in state]
    if missing:
        raise StateVersionError(f"normalizer state version 3 without {missing[0]}: the checkpoint is corrupt")
    n = np.asarray(state["slot_mean"]).shape[0]
    return {
        **state,
        "version": 4,
        **{c: np.zeros_like(np.asarray(state[c])) for c in _SLOT_COLUMNS},
        "ev_day": np.zeros((n, 24), dtype=np.float32),
    }


#: ``Detector.to_state``'s dict.
DETECTOR_STATE = Part("detector state", 3, {1: _detector_v1_to_v2, 2: _detector_v2_to_v3})
#: The normalizer's arrays inside it (``NormalizerState.columns``).
NORMALIZER_STATE = Part("normalizer state", 4, {2: _normalizer_v2_to_v3, 3: _normalizer_v3_to_v4})
#: ``Forest.to_state`` / ``Forest.to_state_many``.
FOREST_STATE = Part("forest state", 1)

PARTS: tuple[Part, ...] = (DETECTOR_STATE, NORMALIZER_STATE, FOREST_STATE)


def select_detector_state(state: State, rows: Sequence[int]) -> State:
    """The series at ``rows`` of a current-version detector state (``Detector.to_state``'s dict), in
    that order: every per-series array sliced the same way (the forest's many-series arrays are
    series-major, as ``forest.concat_many`` joins them)."""
    idx = np.asarray(rows, dtype=np.int64)
    keys = list(state["keys"])
    from detector.forest import select_many

    scores = state["scores"]
    return {
        **state,
        "keys": [keys[i] for i in idx.tolist()],
        "forest": select_many(state["forest"], idx),
        "scores": {k: (v if k == "version" else np.asarray(v)[idx]) for k, v in scores.items()},
        "warm_started": np.asarray(state["warm_started"])[idx],
    }
