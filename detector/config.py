"""Model settings: the forest's hyperparameters and the scoring stage (normalization, threshold).

These are frozen pydantic models, built once by the entry point from the detector config file
and passed down. Units are in the names.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ForestConfig(BaseModel):
    """Hyperparameters of the Random Cut Forest of each series."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_trees: int = Field(50, ge=1, le=1024, description="trees per series")
    sample_size: int = Field(256, ge=4, le=4096, description="points kept per tree")
    shingle_size: int = Field(4, ge=1, le=64, description="consecutive values per point")
    seed: int = Field(0, ge=0, description="one seed for the whole forest; a seeded run repeats to the bit")


class ScoringConfig(BaseModel):
    """How raw forest scores become anomalyScore 0–100, a decision and a confidence."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    threshold: float = Field(70.0, ge=0.0, le=100.0, description="anomalyDecision = 1 when anomalyScore > this")
    learning_points: int = Field(
        64, ge=1, description="points a series' model must process before it leaves LEARNING"
    )
    direction: Literal["both", "up", "down"] = Field(
        "both", description="report spikes only (up), dips only (down) or both"
    )
    min_relative_change: float = Field(
        0.0, ge=0.0, description="suppress decisions when |actual-expected|/|expected| is below this"
    )


class ModelConfig(BaseModel):
    """Everything the detector needs to score one detector's series."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    forest: ForestConfig = ForestConfig()
    scoring: ScoringConfig = ScoringConfig()
