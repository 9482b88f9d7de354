"""NAB accuracy: score the NAB dev subset with cutstream's detector and with a raw-krcf baseline.

``python -m cutstream.bench.nab --nab-dir ../shared/nab`` (= ``make nab``) prints the NAB standard,
reward-low-FP and reward-low-FN scores of:

* cutstream: ``streams.offline.score_series`` — the worker's Detector, default configuration, all
  files as the series of one detector (causal, one configuration, seed 0);
* cutstream's raw forest score without normalization (same run; any monotone map of it scores the
  same, since NAB sweeps one threshold over the corpus);
* krcf (AWS's Rust RCF) raw score / 8, clipped to [0, 1], shingle 1, 100 trees: the baseline quoted
  in the issue, scored by the same harness;

next to published figures for reference. The scorer is ``cutstream.bench.nab_scorer``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from cutstream.bench.nab_scorer import PROFILES, DataFile, ProfileResult, load_corpus, score_corpus

DEFAULT_NAB_DIR = Path("../shared/nab")

#: Files of the quick run (`make bench --quick`, tests): short, with windows, several categories.
QUICK_FILES = (
    "artificialWithAnomaly/art_daily_jumpsup.csv",
    "artificialNoAnomaly/art_daily_small_noise.csv",
    "realAdExchange/exchange-2_cpc_results.csv",
    "realKnownCause/rogue_agent_key_updown.csv",
    "realTraffic/speed_7578.csv",
)

#: Published standard-profile scores quoted in the issue (AWS RCF, HTM, ARTime).
PUBLISHED = (
    ("AWS RCF (published)", 61.3, 51.7),
    ("HTM (published)", 69.5, 70.1),
    ("ARTime (published)", 73.6, 74.9),
)


@dataclass(frozen=True)
class Row:
    """One detector's line of the table."""

    name: str
    results: dict[str, ProfileResult]
    seconds: float | None


def score_cutstream(
    files: Sequence[DataFile], seed: int = 0
) -> tuple[list[np.ndarray], list[np.ndarray], float]:
    """Score every file with the default configuration; returns (scores 0–1, raw scores, seconds)."""
    from detector.config import ForestConfig, ModelConfig
    from streams.offline import score_series

    defaults = ModelConfig()
    config = ModelConfig(
        forest=ForestConfig(**{**defaults.forest.model_dump(), "seed": seed}), scoring=defaults.scoring
    )
    series = {f.name: (f.values, _timestamps_ms(f)) for f in files}
    t0 = time.perf_counter()
    out = score_series(series, config)
    seconds = time.perf_counter() - t0
    return (
        [out[f.name].anomaly_score / 100.0 for f in files],
        [out[f.name].raw_score for f in files],
        seconds,
    )


def score_krcf(
    files: Sequence[DataFile], shingle_size: int = 1, n_trees: int = 100, seed: int = 0
) -> tuple[list[np.ndarray], float]:
    """krcf's raw score / 8 clipped to [0, 1] (score, then update, point by point)."""
    import krcf

    t0 = time.perf_counter()
    scores = []
    for f in files:
        forest = krcf.RandomCutForest(
            {
                "dimensions": 1,
                "shingle_size": shingle_size,
                "num_trees": n_trees,
                "sample_size": 256,
                "random_seed": seed,
                "internal_shingling": True,
            }
        )
        out = np.zeros(len(f.values))
        for i, v in enumerate(f.values.tolist()):
            out[i] = forest.score([v])
            forest.update([v])
        scores.append(np.clip(out / 8.0, 0.0, 1.0))
    return scores, time.perf_counter() - t0


def _timestamps_ms(f: DataFile) -> np.ndarray:
    return np.array(f.timestamps, dtype="datetime64[ms]").astype(np.int64)


@dataclass(frozen=True)
class Spread:
    """The standard-profile score over several forest seeds (one seed moves NAB by a few points)."""

    seeds: int
    scores: list[float]
    raw_scores: list[float]

    def line(self) -> str:
        def fmt(xs: list[float]) -> str:
            return f"mean {np.mean(xs):.1f}, min {min(xs):.1f}, max {max(xs):.1f}"

        return (
            f"Seeds 0–{self.seeds - 1}, standard profile: cutstream {fmt(self.scores)}; "
            f"raw forest score {fmt(self.raw_scores)}."
        )


def run(
    nab_dir: Path, quick: bool = False, baseline: bool = True, seeds: int = 1
) -> tuple[list[Row], int, int, Spread | None]:
    """Score the corpus; returns (rows, files, windows, spread over ``seeds`` seeds or None)."""
    files = load_corpus(nab_dir, QUICK_FILES if quick else None)
    ours, raw, seconds = score_cutstream(files)
    rows = [
        Row("cutstream (default config, normalized)", score_corpus(files, ours), seconds),
        Row(
            "cutstream raw forest score (no normalization)",
            score_corpus(files, [r / (1.0 + r) for r in raw]),
            None,
        ),
    ]
    spread = None
    if seeds > 1:
        std, raw_std = [rows[0].results["standard"].score], [rows[1].results["standard"].score]
        for seed in range(1, seeds):
            o, r, _ = score_cutstream(files, seed=seed)
            std.append(score_corpus(files, o, ["standard"])["standard"].score)
            raw_std.append(score_corpus(files, [x / (1.0 + x) for x in r], ["standard"])["standard"].score)
        spread = Spread(seeds, std, raw_std)
    if baseline:
        try:
            kr, ks = score_krcf(files)
        except ImportError:
            print("krcf is not installed (dev group): baseline skipped", file=sys.stderr)
        else:
            rows.append(Row("krcf raw/8 (shingle 1, 100 trees)", score_corpus(files, kr), ks))
    return rows, len(files), sum(len(f.windows) for f in files), spread


def table(rows: Sequence[Row], quick: bool) -> str:
    """The markdown table of ``rows`` plus the published reference lines."""
    lines = [
        "| detector | standard | reward low FP | reward low FN | threshold (std) "
        "| TP / FP / FN (std) | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        s = r.results["standard"]
        secs = f"{r.seconds:.1f}" if r.seconds is not None else "(same run)"
        lines.append(
            f"| {r.name} | {s.score:.1f} | {r.results['reward_low_FP_rate'].score:.1f} | "
            f"{r.results['reward_low_FN_rate'].score:.1f} | {s.threshold:.3f} | "
            f"{s.tp} / {s.fp} / {s.fn} | {secs} |"
        )
    if not quick:
        for name, subset, full in PUBLISHED:
            lines.append(f"| {name}: this subset / full NAB | {subset} / {full} | | | | | |")
    return "\n".join(lines)


def markdown_report(quick: bool) -> str:
    """The BENCHMARKS.md block: the command, the corpus and the table."""
    nab_dir = DEFAULT_NAB_DIR
    if not (nab_dir / "data").is_dir():
        return f"(skipped: {nab_dir} is not present)"
    seeds = 1 if quick else 5
    rows, n_files, n_windows, spread = run(nab_dir, quick=quick, seeds=seeds)
    cmd = "python -m cutstream.bench.nab --nab-dir ../shared/nab" + (
        " --quick" if quick else f" --seeds {seeds}"
    )
    extra = f"\n{spread.line()}\n" if spread else ""
    return (
        f"Command: `{cmd}` (`make nab` runs it with one seed). Corpus: {n_files} files, "
        f"{n_windows} windows (NAB dev subset). Scores are NAB-normalized (100 = perfect, 0 = null "
        f"detector), one threshold per profile optimized over the corpus; the first row is the "
        f"default configuration (seed 0); `seconds` = wall time of scoring all files."
        f"\n\n{table(rows, quick)}\n{extra}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nab-dir", type=Path, default=DEFAULT_NAB_DIR)
    parser.add_argument("--quick", action="store_true", help=f"only {len(QUICK_FILES)} files")
    parser.add_argument("--no-baseline", action="store_true", help="skip the krcf baseline")
    parser.add_argument("--seeds", type=int, default=1, help="also report the spread over this many seeds")
    args = parser.parse_args(argv)
    if not (args.nab_dir / "data").is_dir():
        print(f"{args.nab_dir} has no data/ folder: nothing to score", file=sys.stderr)
        return 2
    rows, n_files, n_windows, spread = run(
        args.nab_dir, quick=args.quick, baseline=not args.no_baseline, seeds=args.seeds
    )
    print(f"NAB: {n_files} files, {n_windows} windows, profiles: {', '.join(PROFILES)}")
    print(table(rows, args.quick))
    if spread:
        print(spread.line())
    return 0


@click.command("nab")
@click.option(
    "--nab-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_NAB_DIR,
    show_default=True,
    help="the NAB copy (data/ and labels/)",
)
@click.option("--quick", is_flag=True, help=f"only {len(QUICK_FILES)} files")
@click.option("--no-baseline", is_flag=True, help="skip the krcf baseline")
@click.option(
    "--seeds", type=int, default=1, show_default=True, help="also report the spread over this many seeds"
)
def nab_command(nab_dir: Path, quick: bool, no_baseline: bool, seeds: int) -> None:
    """Score the NAB dev subset and print the NAB scores (standard, low FP, low FN)."""
    argv = (
        ["--nab-dir", str(nab_dir), "--seeds", str(seeds)]
        + (["--quick"] if quick else [])
        + (["--no-baseline"] if no_baseline else [])
    )
    raise SystemExit(main(argv))


COMMANDS = [nab_command]

if __name__ == "__main__":
    raise SystemExit(main())
