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
    points each, every tree holding every 20th point of the last 8,000: a long memory of the
    series' values at the memory and speed cost of 400-point trees (docs/ARCHITECTURE.md,
    "Detector engine").
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_trees: int = Field(default=32, ge=1, le=1024, description="trees per series")
    sample_size: int = Field(default=400, ge=4, le=4096, description="points kept per tree")
    shingle_size: int = Field(default=1, ge=1, le=64, description="consecutive values per point")
    insert_every: int = Field(
        default=20,
        ge=1,
        le=256,
        description="each tree takes every n-th point (trees take turns), so its sample spans "
        "sample_size * insert_every points (8,000 by default: 5.6 days of 1-minute windows, so "
        "that a weekend does not fill it); every point is scored by every tree (when not given: 20, "
        "or n_trees when fewer, or 1 for codisp)",
    )
    raw_score: Literal["isolation", "codisp"] = Field(
        default="isolation",
        description="isolation: AWS RCF's anomaly score (how near the root the point would be cut "
        "off); codisp: rrcf's collusive displacement over a sliding window (insert_every 1)",
    )
    seed: int = Field(
        default=0, ge=0, description="one seed for the whole forest; a seeded run repeats to the bit"
    )

    @model_validator(mode="before")
    @classmethod
    def _default_insert_every(cls, data: object) -> object:
        # An unspecified insert_every follows the other settings, so that a small forest or the
        # codisp score is valid as written.
        if isinstance(data, dict) and "insert_every" not in data:
            n_trees = data.get("n_trees", 32)
            if data.get("raw_score") == "codisp":
                return {**data, "insert_every": 1}
            if isinstance(n_trees, int) and n_trees < 20:
                return {**data, "insert_every": max(1, n_trees)}
        return data

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
    """How a point becomes anomalyScore 0-100, a decision and a confidence (detector/normalize.py)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    threshold: float = Field(
        default=70.0, ge=0.0, le=100.0, description="anomalyDecision = 1 when anomalyScore > this"
    )
    learning_points: int = Field(
        default=64, ge=1, description="points a series' model must learn before it leaves LEARNING"
    )
    learning_ms: int = Field(
        default=86_400_000,
        ge=0,
        description="... and the event time they must span (a day: the daily rhythm is not news "
        "once a full day has been seen), unless learning_max_points come first",
    )
    learning_max_points: int = Field(
        default=2_880, ge=1, description="points after which LEARNING ends whatever time they span"
    )
    direction: Literal["both", "up", "down"] = Field(
        default="both", description="report spikes only (up), dips only (down) or both"
    )
    min_relative_change: float = Field(
        default=0.0, ge=0.0, description="suppress decisions when |actual-expected|/|expected| is below this"
    )
    seasonal: bool = Field(
        default=True,
        description="learn the series' hour-of-day, hour-of-week and 5-minute-of-day profiles (used "
        "where they predict better than the plain level)",
    )
    value_weight: float = Field(
        default=1.0, ge=0.0, description="weight of the value channels (distance from the expected value)"
    )
    forest_weight: float = Field(default=1.0, ge=0.0, description="weight of the forest channel")
    surprise_at_100: float = Field(
        default=8.7,
        gt=0.0,
        description="-log10 tail probability that maps to anomalyScore 100 (linear below; 70 ~ p=1e-6)",
    )
    suppress_points: int = Field(
        default=100,
        ge=0,
        description="after an alert, hold the series' scores below suppress_cap*threshold this many "
        "points, unless new evidence breaks through (the other direction, or far stronger)",
    )
    suppress_cap: float = Field(
        default=0.7,
        ge=0.0,
        le=1.0,
        description="cap on scores during suppression, as a fraction of the threshold",
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
