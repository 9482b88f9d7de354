"""The model budget in a live worker (embedded broker): with max_models far below the number of
series, models are parked on disk, named by the checkpoints, read back after a restart, and the
results equal those of a worker with no budget, record for record."""

from __future__ import annotations

import json
import time
from typing import Any

import pyarrow.dataset as ds
import pytest

import streams.pipeline
from tests.conftest import FAST_GROUP
from tests.integration.worker_procs import produce

pytestmark = pytest.mark.integration

WINDOW_MS = 1_000
HOSTS = tuple(f"h{i}" for i in range(12))
FIELDS = ["timeseriesId", "windowStart", "aggregatedMeasureValue", "anomalyScore", "rawScore",
          "expectedValue", "processedDataPoints", "modelStage"]  # fmt: skip


def _app(bootstrap: str, topic: str, group: str, data_dir: Any, max_models: int) -> Any:
    from cutstream.config import AppConfig
    from detector.config import ForestConfig, ModelConfig, ScoringConfig
    from streams.config import DetectorSpec, MeasureSpec

    spec = DetectorSpec(
        name="budget",
        topic=topic,
        timestamp_field="ts",
        dimensions=("host",),
        measures=(MeasureSpec(field="value", aggregation="avg", missing="skip"),),
        window_ms=WINDOW_MS,
        idle_timeout_ms=0,
        max_models=max_models,
        model=ModelConfig(
            forest=ForestConfig(n_trees=5, sample_size=32, seed=3),
            scoring=ScoringConfig(learning_points=4, learning_ms=0),
        ),
    )
    return AppConfig(
        brokers=bootstrap,
        data_dir=data_dir,
        group_id=group,
        kafka=dict(FAST_GROUP),
        results_topic=f"{topic}.results",
        detectors=(spec,),
    )


def _events(base: int, first: int, last: int) -> list[tuple[bytes, bytes]]:
    """Each window: 3 hot hosts and 3 of the others in turn (so most models go cold and come back)."""
    out = []
    for w in range(first, last):
        for i in (0, 1, 2, 3 + (3 * w) % 9, 3 + (3 * w + 1) % 9, 3 + (3 * w + 2) % 9):
            host = HOSTS[i]
            value = json.dumps(
                {"ts": base + w * WINDOW_MS + 100 + i, "host": host, "value": 10.0 + (w * i) % 7}
            )
            out.append((host.encode(), value.encode()))
    return out


def _results(data_dir: Any) -> dict[tuple[str, int], dict[str, Any]]:
    table = ds.dataset(data_dir / "results", format="parquet", partitioning="hive").to_table()
    rows = table.select(FIELDS).to_pylist()
    keyed = {(r["timeseriesId"], int(r["windowStart"].timestamp() * 1000)): r for r in rows}
    assert len(keyed) == len(rows), "a (series, window) written twice"
    return keyed


def test_parked_models_survive_a_restart_and_score_like_an_unbounded_worker(
    bootstrap: str, topic_factory: Any, group_factory: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streams.worker import Worker

    monkeypatch.setattr(streams.pipeline, "PARK_MIN_POINTS", 1)  # park one-point models too: exact
    topic = topic_factory("budget", partitions=2)
    base = (int(time.time() * 1000) - 3_600_000) // WINDOW_MS * WINDOW_MS
    first, second = _events(base, 0, 40), _events(base, 40, 80)
    produce(bootstrap, topic, first)

    bounded_dir = tmp_path / "bounded"
    bounded = _app(bootstrap, topic, group_factory(), bounded_dir, max_models=4)
    w1 = Worker(bounded)
    c1 = w1.run_until_idle(idle_s=2.0, timeout_s=120)
    assert c1.events_in == len(first)
    parked_files = list((bounded_dir / "checkpoints").rglob("seg-*.ckpt"))
    assert parked_files, "nothing was parked"
    produce(bootstrap, topic, second)
    w2 = Worker(bounded)  # restores both partitions' checkpoints: live models and parked ones
    c2 = w2.run_until_idle(idle_s=2.0, timeout_s=120)
    assert c2.events_in == len(second) and c2.restores == 2
    moves = streams.pipeline.model_moves(w2.pipelines.values())
    assert moves[2] > 0, "no parked model was read back after the restart"

    free_dir = tmp_path / "free"
    Worker(_app(bootstrap, topic, group_factory(), free_dir, max_models=0)).run_until_idle(
        idle_s=2.0, timeout_s=120
    )
    bounded_rows, free_rows = _results(bounded_dir), _results(free_dir)
    assert bounded_rows.keys() == free_rows.keys()
    diff = [k for k in free_rows if free_rows[k] != bounded_rows[k]]
    assert not diff, f"{len(diff)} results differ, e.g. {free_rows[diff[0]]} vs {bounded_rows[diff[0]]}"
    # the segments still on disk are the ones the final checkpoints name (the rest were collected)
    from streams.checkpoint import CheckpointStore

    store = CheckpointStore(bounded_dir, bounded.group_id)
    named = set()
    for p in (0, 1):
        ckpt = store.load(topic, p)
        assert ckpt is not None
        named |= set(ckpt.parked.get("budget", {}).values())
    on_disk = {f.name for f in (bounded_dir / "checkpoints").rglob("seg-*.ckpt")}
    assert on_disk == named
