"""cutstream/evaluate.py on hand-made windows: labels files, alarms, the figures, the baseline."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from cutstream.evaluate import (
    LabelError,
    LabelRow,
    Matcher,
    Scored,
    alarms_of,
    load_labels,
    match_series,
    parse_duration_ms,
    robust_z,
    score_flags,
)

W = 60_000
T0 = 1_772_409_600_000  # a Monday, 00:00 UTC


def make_scored(
    n: int,
    series: tuple[tuple[tuple[tuple[str, str], ...], str], ...] = (((("host", "a"),), "m"),),
    values: np.ndarray | None = None,
) -> Scored:
    """``n`` windows of every series (dims, measure), one minute each from T0."""
    s = len(series)
    v = np.zeros(s * n) if values is None else np.asarray(values, dtype=float)
    return Scored(
        window_ms=W,
        keys=[f"k{i}" for i in range(s)],
        dims=[d for d, _ in series],
        measures=[m for _, m in series],
        series=np.repeat(np.arange(s), n).astype(np.int64),
        start_ms=np.tile(T0 + np.arange(n) * W, s).astype(np.int64),
        value=v,
        score=np.zeros(s * n),
        decision=np.zeros(s * n, dtype=bool),
        inference=np.ones(s * n, dtype=bool),
    )


def flags(sc: Scored, at: dict[int, list[int]]) -> np.ndarray:
    """bool per window: series -> flagged window numbers."""
    out = np.zeros(len(sc), dtype=bool)
    n = len(sc) // len(sc.keys)
    for s, ws in at.items():
        out[[s * n + w for w in ws]] = True
    return out


def label(
    start: int,
    end: int,
    kind: str = "spike",
    expect: str = "anomaly",
    dims: tuple[tuple[str, str], ...] = (("host", "a"),),
    measure: str = "",
    where: str = "l.csv:2",
) -> LabelRow:
    return LabelRow(dims, measure, T0 + start * W, T0 + end * W, kind, expect, where)


# --------------------------------------------------------------------------- alarms and figures


def test_merge_gap_counts_the_unflagged_windows_between_two_flags() -> None:
    sc = make_scored(100)
    f = flags(sc, {0: [10, 11, 13, 20]})
    assert [len(alarms_of(sc, f, g)) for g in (0, 1, 5, 6)] == [3, 2, 2, 1]
    a = alarms_of(sc, f, 1)
    assert (a.first - T0).tolist() == [10 * W, 20 * W] and (a.last - T0).tolist() == [13 * W, 20 * W]


def test_alarms_never_merge_across_series() -> None:
    sc = make_scored(50, ((((("host", "a"),), "m")), ((("host", "b"),), "m")))
    a = alarms_of(sc, flags(sc, {0: [49], 1: [0]}), 100)
    assert a.series.tolist() == [0, 1]


def test_tolerance_lets_an_alarm_just_after_the_label_find_it() -> None:
    sc = make_scored(100)
    f = flags(sc, {0: [25]})
    labs = [label(20, 22)]
    late = score_flags("x", sc, f, labs, tolerance=3)
    assert (late.true_alarms, late.false_alarms, late.recall) == (1, 0, 1.0)
    assert late.kind("spike").delay_median == 5.0
    missed = score_flags("x", sc, f, labs, tolerance=2)
    assert (missed.true_alarms, missed.false_alarms, missed.recall) == (0, 1, 0.0)


def test_a_flag_before_the_label_is_false_unless_its_alarm_reaches_into_it() -> None:
    sc = make_scored(100)
    labs = [label(20, 22)]
    early = score_flags("x", sc, flags(sc, {0: [18]}), labs, merge_gap=0)
    assert (early.true_alarms, early.recall) == (0, 0.0)
    running = score_flags("x", sc, flags(sc, {0: [17, 18, 19, 20]}), labs, merge_gap=0)
    assert (running.alarms, running.true_alarms, running.recall) == (1, 1, 1.0)
    assert running.kind("spike").delay_median == 0.0  # the alarm was already on


def test_delay_is_windows_from_the_label_start_to_the_first_flag() -> None:
    sc = make_scored(200, ((((("host", "a"),), "m")), ((("host", "b"),), "m")))
    labs = [label(30, 60, "dip"), label(100, 120, "dip", dims=(("host", "b"),))]
    fig = score_flags("x", sc, flags(sc, {0: [33, 34, 50], 1: [101]}), labs, merge_gap=0)
    k = fig.kind("dip")
    assert k.detected == 2 and k.delay_median == 2.0 and k.delay_p90 == pytest.approx(2.8)
    assert fig.delay_median == 2.0


def test_warmup_leaves_out_windows_and_labels_that_end_inside_it() -> None:
    sc = make_scored(100)
    f = flags(sc, {0: [3, 5, 11]})
    labs = [label(2, 4, "early"), label(8, 12, "straddles")]
    fig = score_flags("x", sc, f, labs, warmup_ms=10 * W, merge_gap=0)
    assert fig.series_windows == 90
    assert fig.alarms == 1 and fig.true_alarms == 1  # the flags at 3 and 5 are not judged
    assert [(k.kind, k.labels, k.detected) for k in fig.kinds] == [("straddles", 1, 1)]
    cold = score_flags("x", sc, f, labs, merge_gap=0)
    assert cold.series_windows == 100 and cold.alarms == 3
    assert {k.kind for k in cold.kinds} == {"early", "straddles"}


def test_false_alarms_are_counted_where_they_fell() -> None:
    sc = make_scored(200)
    labs = [
        label(20, 22),
        label(15, 30, "weekend", "normal", where="l.csv:3"),
        label(50, 60, "batch_job", "normal", where="l.csv:4"),
        label(40, 70, "weekend", "normal", where="l.csv:5"),
    ]
    # 21: inside the anomaly (and a weekend): true; 55: batch job and weekend, the batch job comes
    # first in the file; 45: weekend only; 150: nowhere
    fig = score_flags("x", sc, flags(sc, {0: [21, 45, 55, 150]}), labs, merge_gap=0, tolerance=0)
    assert (fig.alarms, fig.true_alarms) == (4, 1)
    assert fig.false_by_normal == {"batch_job": 1, "weekend": 1, "other": 1}
    assert fig.false_alarms_per_1000 == pytest.approx(1000 * 3 / 200)


def test_precision_recall_and_f1_arithmetic() -> None:
    sc = make_scored(300)
    labs = [label(10, 12, "x"), label(100, 110, "x"), label(200, 205, "y")]
    # two alarms inside x labels, two false ones, none near the y label
    fig = score_flags("d", sc, flags(sc, {0: [11, 105, 150, 250]}), labs, merge_gap=0, tolerance=0)
    assert (fig.alarms, fig.true_alarms, fig.false_alarms) == (4, 2, 2)
    assert fig.precision == 0.5 and fig.recall == pytest.approx(2 / 3)
    assert fig.f1 == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    x, y = fig.kind("x"), fig.kind("y")
    assert (x.labels, x.detected, x.recall, x.f1) == (2, 2, 1.0, pytest.approx(2 / 3))
    assert (y.labels, y.detected, y.recall, y.f1, y.delay_median) == (1, 0, 0.0, 0.0, None)


def test_nothing_flagged_or_nothing_to_find() -> None:
    sc = make_scored(50)
    quiet = score_flags("x", sc, flags(sc, {}), [label(10, 12)])
    assert (quiet.alarms, quiet.precision, quiet.recall, quiet.f1) == (0, 1.0, 0.0, 0.0)
    unlabelled = score_flags("x", sc, flags(sc, {0: [5]}), [])
    assert (unlabelled.precision, unlabelled.recall, unlabelled.kinds) == (0.0, 1.0, [])


def test_labels_name_series_by_any_subset_of_dimensions_and_optionally_a_measure() -> None:
    series = tuple(
        ((("host", h), ("region", "eu")), m) for h, m in itertools.product(("a", "b"), ("latency", "bytes"))
    )
    sc = make_scored(100, series)
    cover = match_series(
        [
            label(10, 10, dims=(("host", "a"),)),
            label(10, 10, dims=(("host", "a"),), measure="bytes"),
            label(10, 10, dims=(("region", "eu"),)),
            label(10, 10, dims=()),
            label(10, 10, dims=(("host", "c"),)),
        ],
        sc,
    )
    assert [c.tolist() for c in cover] == [[0, 1], [1], [0, 1, 2, 3], [0, 1, 2, 3], []]
    # a single-measure anomaly: a flag on the host's other measure is a false alarm
    only_bytes = [label(10, 12, "single_measure", measure="bytes")]
    fig = score_flags("x", sc, flags(sc, {0: [11], 1: [11]}), only_bytes, tolerance=0)
    assert (fig.true_alarms, fig.false_alarms, fig.recall) == (1, 1, 1.0)


def _reference(sc: Scored, f: np.ndarray, labels: list[LabelRow], gap: int, tol: int, warm: int) -> dict:
    """The figures by the definitions, one window at a time (what Matcher must agree with)."""
    first = {s: int(sc.start_ms[sc.series == s].min()) for s in range(len(sc.keys))}
    counted = [int(t) >= first[int(s)] + warm for s, t in zip(sc.series, sc.start_ms, strict=True)]
    alarms: list[list[int]] = []  # [series, first, last]
    for i in range(len(sc)):
        if not (f[i] and counted[i]):
            continue
        s, t = int(sc.series[i]), int(sc.start_ms[i])
        if alarms and alarms[-1][0] == s and t - alarms[-1][2] <= (gap + 1) * W:
            alarms[-1][2] = t
        else:
            alarms.append([s, t, t])

    def covers(lab: LabelRow) -> list[int]:
        return [
            s
            for s in range(len(sc.keys))
            if (not lab.measure or lab.measure == sc.measures[s]) and set(lab.dims) <= set(sc.dims[s])
        ]

    def overlaps(al: list[int], lab: LabelRow) -> bool:
        return al[0] in covers(lab) and al[1] <= lab.end_ms + tol * W and al[2] >= lab.start_ms - W + 1

    true = [any(lab.expect == "anomaly" and overlaps(al, lab) for lab in labels) for al in alarms]
    first_counted = {
        s: min((int(t) for s2, t, c in zip(sc.series, sc.start_ms, counted, strict=True) if s2 == s and c))
        for s in range(len(sc.keys))
    }
    judged, delays = [], {}
    for k, lab in enumerate(labels):
        cov = covers(lab)
        if lab.expect != "anomaly" or not cov or lab.end_ms < min(first_counted[s] for s in cov):
            continue
        judged.append(k)
        hits = [al[1] for al in alarms if overlaps(al, lab)]
        if hits:
            delays[k] = max(0, min(hits) - lab.start_ms) / W
    where: dict[str, int] = {}
    for al, ok in zip(alarms, true, strict=True):
        if not ok:
            kind = next((lab.kind for lab in labels if lab.expect == "normal" and overlaps(al, lab)), "other")
            where[kind] = where.get(kind, 0) + 1
    return {"alarms": len(alarms), "true": sum(true), "judged": judged, "delays": delays, "where": where}


@pytest.mark.parametrize("seed", range(12))
def test_the_vectorized_figures_agree_with_the_definitions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    series = tuple(((("host", h),), m) for h, m in itertools.product("abc", ("requests", "latency")))
    n = 240
    sc = make_scored(n, series)
    f = rng.random(len(sc)) < rng.uniform(0.01, 0.08)
    kinds = ("spike", "dip", "batch_job", "weekend")
    labels = []
    for k in range(int(rng.integers(3, 15))):
        start = int(rng.integers(0, n - 5))
        kind = str(rng.choice(kinds))
        labels.append(
            label(
                start,
                start + int(rng.integers(0, 30)),
                kind,
                "normal" if kind in ("batch_job", "weekend") else "anomaly",
                dims=(("host", str(rng.choice(list("abcd")))),),
                measure=str(rng.choice(["", "", "latency"])),
                where=f"l.csv:{k + 2}",
            )
        )
    gap, tol, warm = int(rng.integers(0, 4)), int(rng.integers(0, 4)), int(rng.integers(0, 40)) * W
    m = Matcher(sc, labels, merge_gap=gap, tolerance=tol, warmup_ms=warm)
    fig = m.figures("x", f)
    ref = _reference(sc, f, labels, gap, tol, warm)
    assert (fig.alarms, fig.true_alarms) == (ref["alarms"], ref["true"])
    assert np.flatnonzero(m.judged).tolist() == ref["judged"]
    assert sum(k.detected for k in fig.kinds) == len(ref["delays"])
    for k in fig.kinds:
        mine = [d for i, d in ref["delays"].items() if labels[i].kind == k.kind]
        assert k.delay_median == (float(np.median(mine)) if mine else None)
    assert {k: v for k, v in fig.false_by_normal.items() if v} == ref["where"]


# --------------------------------------------------------------------------- the baseline


def test_robust_z_is_the_distance_from_the_median_of_the_past_in_mads() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(10.0, 2.0, 200)
    z = robust_z(make_scored(200, values=x), window=20)
    assert np.all(z[:20] == 0.0)
    for i in (20, 57, 199):
        past = x[i - 20 : i]
        med = np.median(past)
        assert z[i] == pytest.approx(abs(x[i] - med) / (1.4826 * np.median(np.abs(past - med))))


def test_robust_z_falls_back_to_the_mean_deviation_where_the_mad_is_zero() -> None:
    x = np.zeros(80)
    x[[10, 20, 30, 40, 50]] = 1.0  # mostly zero counts: the MAD of any 60 of them is 0
    x[70] = 3.0
    z = robust_z(make_scored(80, values=x), window=60)
    assert z[70] == pytest.approx(3.0 / (1.2533 * 5 / 60))
    flat = np.r_[np.full(70, 4.0), 4.0, 5.0]
    zf = robust_z(make_scored(72, values=flat), window=60)
    assert zf[70] == 0.0 and zf[71] == np.inf  # no spread at all: any change is infinitely far


def test_robust_z_skips_windows_without_a_value_and_keeps_series_apart() -> None:
    x = np.r_[np.arange(30.0), np.full(30, 1000.0)]
    x[25] = np.nan
    series = ((((("host", "a"),), "m")), ((("host", "b"),), "m"))
    z = robust_z(make_scored(30, series, values=x), window=10)
    past = x[17:27][~np.isnan(x[17:27])]  # window 27's past: x[17..26] less the missing one
    med = np.median(past)
    assert z[25] == 0.0  # no value, no judgement
    assert z[27] == pytest.approx(abs(27 - med) / (1.4826 * np.median(np.abs(past - med))))
    assert np.all(z[30:40] == 0.0)  # series b starts over: its past is not series a's


# --------------------------------------------------------------------------- labels files and durations


def test_csv_labels_with_dimensions_measure_kind_and_expect(tmp_path: Path) -> None:
    p = tmp_path / "l.csv"
    p.write_text(
        "host,region,measure,start,end,kind,expect\n"
        "a,,latency_ms,2026-03-09 10:00:00,2026-03-09T10:05:00Z,drift,\n"
        "\n"
        "b,eu,,1773050400000,1773050460000,,Normal\n"
    )
    a, b = load_labels(p, ("host", "region"), ("requests", "latency_ms"))
    assert (a.dims, a.measure, a.kind, a.expect, a.where) == (
        (("host", "a"),),
        "latency_ms",
        "drift",
        "anomaly",
        f"{p}:2",
    )
    assert a.end_ms - a.start_ms == 5 * W and a.start_ms == 1773050400000
    assert (b.dims, b.kind, b.expect, b.where, b.start_ms) == (
        (("host", "b"), ("region", "eu")),
        "normal",
        "normal",
        f"{p}:4",
        a.start_ms,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("host,start\na,2026-03-09\n", ":1: no 'end' column"),
        ("hostname,start,end\na,2026-03-09,2026-03-09\n", ":1: column 'hostname' is not a dimension"),
        (
            "host,start,end\na,2026-03-09,2026-03-09\n\na,yesterday,2026-03-09\n",
            ":4: start 'yesterday' is not",
        ),
        ("host,start,end\na,2026-03-10,2026-03-09\n", ":2: end '2026-03-09' is before start"),
        ("host,start,end\na,2026-03-09,2026-03-09,extra\n", ":2: more values than the header"),
        (
            "host,start,end,measure\na,2026-03-09,2026-03-09,latency\n",
            ":2: measure 'latency' is not a measure",
        ),
        (
            "host,start,end,expect\na,2026-03-09,2026-03-09,maybe\n",
            ":2: expect must be 'anomaly' or 'normal'",
        ),
        ("host,start,end\na,,2026-03-09\n", ":2: no start"),
        ("", ": empty"),
    ],
)
def test_a_bad_csv_label_names_its_line(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "l.csv"
    p.write_text(text)
    with pytest.raises(LabelError) as err:
        load_labels(p, ("host",), ("requests",))
    assert str(err.value).startswith(str(p)) and message in str(err.value)


def test_json_labels_and_their_line_numbers(tmp_path: Path) -> None:
    p = tmp_path / "l.json"
    rows = [
        {"host": "a", "start": "2026-03-09 10:00:00", "end": "2026-03-09 10:02:00", "kind": "spike"},
        {"host": "a", "start": 1773050400000, "end": 1773050400000, "expect": "normal"},
    ]
    p.write_text(json.dumps(rows, indent=1))
    a, b = load_labels(p, ("host",))
    assert (a.kind, b.kind, b.expect) == ("spike", "normal", "normal")
    assert (a.where, b.where) == (f"{p}:2", f"{p}:8")
    rows[1]["end"] = "2026-03-08"
    p.write_text(json.dumps(rows, indent=1))
    with pytest.raises(LabelError, match=r"l\.json:8: end '2026-03-08' is before start"):
        load_labels(p, ("host",))
    p.write_text('[\n {"host": "a",\n  "start": 1}\n')
    with pytest.raises(LabelError, match=r"l\.json:4: invalid JSON"):
        load_labels(p)
    p.write_text('{"host": "a"}')
    with pytest.raises(LabelError, match=r"l\.json:1: expected a JSON list"):
        load_labels(p)
    p.write_text('[\n {"host": "a", "start": 1, "end": 2},\n 7\n]')
    with pytest.raises(LabelError, match=r"l\.json:3: a label must be a JSON object"):
        load_labels(p)


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("7d", 7 * 86_400_000),
        ("12h", 43_200_000),
        ("30m", 1_800_000),
        ("90s", 90_000),
        ("250ms", 250),
        ("1d12h", 129_600_000),
        ("1500", 1500),
        ("0", 0),
        ("1.5h", 5_400_000),
    ],
)
def test_durations(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["7x", "", "d", "7 d", "-1h", "1h30", "ms"])
def test_not_durations(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration_ms(text)


def test_an_evaluation_comes_back_from_its_json_with_the_same_report() -> None:
    from cutstream.evaluate import Evaluation, evaluate_scored, table

    rng = np.random.default_rng(0)
    sc = make_scored(400, values=rng.normal(10, 1, 400))
    sc.value[[150, 300]] += 20
    sc.score[[150, 300]] = 90.0
    sc.decision[[150, 300]] = True
    ev = evaluate_scored(sc, [label(150, 152), label(10, 20, "batch_job", "normal")], configured_threshold=70)
    back = Evaluation.from_json(json.loads(json.dumps(ev.to_json())))
    assert back == ev and table(back) == table(ev)
    assert ev.detector.true_alarms == 1 and ev.detector.false_alarms == 1
