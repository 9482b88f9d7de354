"""Model settings: the forest's hyperparameters and the scoring stage (normalization, threshold).

These are frozen pydantic models, built once by the entry point from the detector config file
and passed down. Units are in the names.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ForestConfig(BaseModel):
    """Hyperparameters of the Random Cut Forest of each series.

    The default forest scores each point by its isolation (AWS RCF's score) in 32 trees of 400
    points each, every tree holding every 10th point of the last 4,000: a long memory of the
    series' values at the memory and speed cost of 400-point trees (docs/ARCHITECTURE.md,
    "Detector engine").
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_trees: int = Field(default=32, ge=1, le=1024, description="trees per series")
    sample_size: int = Field(default=400, ge=4, le=4096, description="points kept per tree")
    shingle_size: int = Field(default=1, ge=1, le=64, description="consecutive values per point")
    insert_every: int = Field(
        default=10,
        ge=1,
        le=256,
        description="each tree takes every n-th point (trees take turns), so its sample spans "
        "sample_size * insert_every points; every point is scored by every tree",
    )
    raw_score: Literal["isolation", "codisp"] = Field(
        default="isolation",
        description="isolation: AWS RCF's anomaly score (how near the root the point would be cut "
        "off); codisp: rrcf's collusive displacement over a sliding window (insert_every 1)",
    )
    seed: int = Field(
        default=0, ge=0, description="one seed for the whole forest; a seeded run repeats to the bit"
    )

    @model_validator(mode="after")
    def _check_layout(self) -> ForestConfig:
        if self.insert_every > self.n_trees:
            raise ValueError(
                f"insert_every ({self.insert_every}) is more than n_trees ({self.n_trees}): every class of "
                "points needs a tree"
            )
        if self.raw_score == "codisp" and self.insert_every != 1:
            raise ValueError("raw_score codisp scores a point by inserting it: it needs insert_every 1")
        if self.store_size > 32767:
            raise ValueError(
                f"sample_size * insert_every is {self.store_size}; at most 32767 points of history per series"
            )
        return self

    @property
    def store_size(self) -> int:
        """Points of history each series keeps (the trees' samples are drawn from these)."""
        return self.sample_size * self.insert_every


class ScoringConfig(BaseModel):
    """How raw forest scores become anomalyScore 0–100, a decision and a confidence."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    threshold: float = Field(
        default=70.0, ge=0.0, le=100.0, description="anomalyDecision = 1 when anomalyScore > this"
    )
    learning_points: int = Field(
        default=64, ge=1, description="points a series' model must process before it leaves LEARNING"
    )
    direction: Literal["both", "up", "down"] = Field(
        default="both", description="report spikes only (up), dips only (down) or both"
    )
    min_relative_change: float = Field(
        default=0.0, ge=0.0, description="suppress decisions when |actual-expected|/|expected| is below this"
    )
    avg_points: int = Field(
        default=5,
        ge=1,
        le=64,
        description="raw scores averaged before they are judged (damps one-point blips)",
    )
    raw_log_offset: float = Field(
        default=2.0,
        ge=0.0,
        description="judge log(raw + this) instead of the raw score (0 = raw); tames CoDisp's heavy tail",
    )
    history_points: float = Field(
        default=3000.0,
        ge=2.0,
        description="horizon (points) of the EW mean/variance each new smoothed raw score is judged against",
    )
    value_weight: float = Field(
        default=0.33,
        ge=0.0,
        le=1.0,
        description="weight of the value's own surprise (distance from its EW level) next to the "
        "forest's; 0 = off",
    )
    value_history_points: float = Field(
        default=200.0, ge=2.0, description="horizon (points) of the EW mean/variance of the value itself"
    )
    surprise_at_100: float = Field(
        default=8.7,
        gt=0.0,
        description="-log10 tail probability that maps to anomalyScore 100 (linear below; 70 ~ p=1e-6)",
    )
    suppress_points: int = Field(
        default=75,
        ge=0,
        description="after an alert, hold the series' scores below suppress_cap*threshold this many points",
    )
    suppress_cap: float = Field(
        default=0.7,
        ge=0.0,
        le=1.0,
        description="cap on scores during suppression, as a fraction of the threshold",
    )
    suppress_break_sigma: float = Field(
        default=8.0,
        ge=0.0,
        description="during suppression, a value this many standard deviations from the series' "
        "long-run level is still reported (a new spike, not an echo); 0 = suppress everything",
    )
    spike_weight: float = Field(
        default=0.0,
        ge=0.0,
        description="weight of the newest raw score alone (a lone spike) beside the smoothed score; 0 = off",
    )
    expected_value: Literal["auto", "forest", "time_of_day"] = Field(
        default="auto",
        description="expectedValue source: the forest's imputation from the previous shingle values, "
        "the series' time-of-day profile (EW mean per UTC hour), or auto = forest unless shingle_size is 1",
    )
    confidence_points: float = Field(
        default=1000.0, gt=0.0, description="points after which the model's confidence stops growing"
    )
    missing_confidence: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="confidence factor for a point that is a filled-in missing window",
    )


class ModelConfig(BaseModel):
    """Everything the detector needs to score one detector's series."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    forest: ForestConfig = ForestConfig()
    scoring: ScoringConfig = ScoringConfig()
