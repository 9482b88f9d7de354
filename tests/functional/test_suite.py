"""The labelled suite (cutstream/suite.py): the same spec gives the same bytes, and its labels keep
their promises (anomalies after the warm-up, one at a time per host, every kind in both parts)."""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from cutstream.suite import (
    KINDS,
    MEASURES,
    MINUTE_MS,
    PARTS,
    SHORT,
    SUITE_EPOCH_MS,
    Label,
    SuiteSpec,
    ensure,
    generate,
    labels_of,
)

DAY_MS = 1440 * MINUTE_MS
NORMAL_KINDS = {"batch_job", "weekend", "daily_peak"}


def _ms(text: str) -> int:
    return int(np.datetime64(text.replace(" ", "T"), "ms").astype(np.int64))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def short(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(SHORT, tmp_path_factory.mktemp("suite") / "short").root


def test_the_same_spec_gives_the_same_bytes(short: Path, tmp_path: Path) -> None:
    again = generate(SHORT, tmp_path / "again").root
    for name in ("events.parquet", "labels.csv", "detector.yaml", "spec.json"):
        assert _sha(again / name) == _sha(short / name), name
    other = generate(SuiteSpec("short", SHORT.hosts, SHORT.days, SHORT.seed + 1), tmp_path / "other").root
    assert _sha(other / "labels.csv") != _sha(short / "labels.csv")


def test_labels_of_is_what_generate_writes(short: Path) -> None:
    with (short / "labels.csv").open(newline="") as fh:
        written = [Label(**row) for row in csv.DictReader(fh)]
    assert written == labels_of(SHORT)


def test_ensure_reuses_a_part_only_for_the_same_spec_and_generator(short: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    first = ensure(SHORT, root)
    stamp = first.events.stat().st_mtime_ns
    assert ensure(SHORT, root).events.stat().st_mtime_ns == stamp  # reused
    marker = json.loads((root / "short" / "spec.json").read_text())
    (root / "short" / "spec.json").write_text(json.dumps({**marker, "generator": marker["generator"] - 1}))
    again = ensure(SHORT, root)
    assert again.events.stat().st_mtime_ns != stamp and _sha(again.events) == _sha(short / "events.parquet")


def _check_labels(spec: SuiteSpec, labels: list[Label]) -> None:
    warmup_end = SUITE_EPOCH_MS + spec.warmup_days * DAY_MS
    end_of_part = SUITE_EPOCH_MS + spec.days * DAY_MS
    per_host: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for lab in labels:
        start, end = _ms(lab.start), _ms(lab.end)
        assert warmup_end <= start <= end < end_of_part, lab
        assert lab.measure in ("", *MEASURES), lab
        if lab.expect == "anomaly":
            assert lab.kind in KINDS, lab
            per_host[lab.host].append((start, end))
        else:
            assert lab.expect == "normal" and lab.kind in NORMAL_KINDS, lab
    for host, stretches in per_host.items():
        stretches.sort()
        for (_, end), (start, _) in itertools.pairwise(stretches):
            assert start > end, f"two anomalies overlap on {host}"


def test_the_short_parts_labels_keep_their_promises(short: Path) -> None:
    labels = labels_of(SHORT)
    _check_labels(SHORT, labels)
    assert {lab.kind for lab in labels if lab.expect == "normal"} == NORMAL_KINDS
    # a host's silence is a stretch without a single report from it
    events = pq.read_table(short / "events.parquet", columns=["timestamp", "host"])
    hosts = pc.cast(events.column("host"), "string").to_numpy(zero_copy_only=False)
    ts = events.column("timestamp").to_numpy()
    assert set(np.unique(hosts)) == {lab.host for lab in labels}
    silences = [lab for lab in labels if lab.kind == "silence"]
    assert silences
    for lab in silences:
        inside = (hosts == lab.host) & (ts >= _ms(lab.start)) & (ts < _ms(lab.end) + MINUTE_MS)
        before = (hosts == lab.host) & (ts >= _ms(lab.start) - 30 * MINUTE_MS) & (ts < _ms(lab.start))
        assert not inside.any() and before.any(), lab


def test_every_anomaly_kind_is_in_both_measured_parts() -> None:
    for spec in PARTS.values():
        labels = labels_of(spec)
        _check_labels(spec, labels)
        kinds = {lab.kind for lab in labels if lab.expect == "anomaly"}
        assert kinds == set(KINDS), (spec.name, set(KINDS) - kinds)
        assert {lab.kind for lab in labels if lab.expect == "normal"} == NORMAL_KINDS
        assert {lab.measure for lab in labels if lab.kind == "single_measure"} <= {"latency_ms", "bytes"}
        assert {lab.measure for lab in labels if lab.kind == "drift"} == {"latency_ms"}
