"""Detection commands: ``cutstream score`` (offline scoring of CSV files, no Kafka)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--output",
    "output_path",
    required=True,
    type=click.Path(path_type=Path),
    help="output CSV (or folder, when INPUT is a folder)",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="the forest's seed (runs repeat to the bit)"
)
@click.option(
    "--threshold",
    type=click.FloatRange(0, 100),
    default=None,
    help="anomalyDecision threshold (default: the model default, 70)",
)
@click.option(
    "--backend",
    type=click.Choice(["cpu", "gpu"]),
    default="cpu",
    show_default=True,
    help="array backend of the detector (gpu needs the cutstream[gpu] extra)",
)
def score(input_path: Path, output_path: Path, seed: int, threshold: float | None, backend: str) -> None:
    """Score INPUT (a `timestamp,value` CSV, or a folder of them) with the worker's detector.

    Writes the same rows in the same order with `timestamp,value,anomaly_score` (anomalyScore/100)
    and extra columns. Causal, one default configuration, deterministic for a seed. The files of a
    folder are scored as the series of one detector.
    """
    from detector.config import ForestConfig, ModelConfig, ScoringConfig
    from detector.errors import DetectorError
    from streams.errors import StreamsError
    from streams.offline import score_paths

    defaults = ModelConfig()
    scoring = (
        defaults.scoring
        if threshold is None
        else ScoringConfig(**{**defaults.scoring.model_dump(), "threshold": threshold})
    )
    config = ModelConfig(
        forest=ForestConfig(**{**defaults.forest.model_dump(), "seed": seed}), scoring=scoring
    )
    try:
        written = score_paths(input_path, output_path, config, backend=backend)
    except (StreamsError, DetectorError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"scored {len(written)} file(s) -> {output_path}")


COMMANDS = [score]
