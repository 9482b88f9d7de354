"""What one detector reads and how it aggregates: the stream side of the detector config file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from detector.config import ModelConfig
from sinks.config import AlertsConfig, DeliveryConfig

Aggregation = Literal["sum", "avg", "count", "min", "max"]
MissingPolicy = Literal["zero", "carry", "skip"]


class MeasureSpec(BaseModel):
    """One measure field and how its values in a window are aggregated."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    field: str
    aggregation: Aggregation = "sum"
    missing: MissingPolicy | None = Field(
        None,
        description="policy for a window with no event: zero (default for sum/count), "
        "carry (default for avg/min/max: repeat the last value) or skip",
    )

    @property
    def missing_policy(self) -> MissingPolicy:
        if self.missing is not None:
            return self.missing
        return "zero" if self.aggregation in ("sum", "count") else "carry"


class DetectorSpec(BaseModel):
    """One detector: the events topic it reads, its fields, its windows and its model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    topic: str = Field(min_length=1)
    timestamp_field: str = "timestamp"
    timestamp_unit: Literal["auto", "s", "ms", "us", "ns"] = Field(
        "auto",
        description="unit of epoch numbers in history files (replay, backfill, evaluate): s, ms, us, "
        "ns, or auto = from each value's magnitude (right for times from 1973 to 5138; declare it "
        "for earlier ones). Typed timestamp columns carry their own unit; live JSON events are "
        "epoch milliseconds or ISO-8601 text",
    )
    dimensions: tuple[str, ...] = ()
    measures: tuple[MeasureSpec, ...] = Field(min_length=1)
    window_ms: int = Field(60_000, ge=1, description="tumbling window length (detection interval)")
    allowed_lateness_ms: int = Field(
        0, ge=0, description="how long after the watermark a window still accepts events"
    )
    idle_timeout_ms: int = Field(
        10_000,
        ge=0,
        description="wall-clock ms after which an idle partition no longer holds the watermark back",
    )
    max_future_ms: int = Field(
        86_400_000,
        ge=0,
        description="live (the worker): an event more than this ahead of the wall clock, or of the "
        "partition's watermark, is dead-lettered as future_timestamp and never moves the watermark; "
        "0 disables the guard",
    )
    future_confirm_events: int = Field(
        10,
        ge=1,
        description="live: the watermark jumps more than max_future_ms ahead only after this many "
        "consecutive events agree (within max_future_ms of each other) that the stream moved on; "
        "they are dead-lettered, the next one is taken",
    )
    max_series: int = Field(
        1_000_000,
        ge=0,
        description="series (dimension combinations x measures) one worker registers for this "
        "detector; a valid event of a new series beyond it is dead-lettered as cardinality_limit "
        "(bounds memory when a producer puts a unique id in a dimension); 0 = no cap",
    )
    max_models: int = Field(
        20_000,
        ge=0,
        description="models one worker keeps in memory for this detector (~280 KB each with the "
        "default model); beyond it the series scored least recently are parked on disk next to the "
        "checkpoints and read back when they return (a series that has seen one point is dropped "
        "instead); 0 = no budget",
    )
    model: ModelConfig = ModelConfig()
    alerts: AlertsConfig = AlertsConfig()

    @field_validator("measures")
    @classmethod
    def _unique_measures(cls, v: tuple[MeasureSpec, ...]) -> tuple[MeasureSpec, ...]:
        names = [m.field for m in v]
        if len(set(names)) != len(names):
            raise ValueError(f"measure fields must be unique, got {names}")
        return v


class WorkerSettings(BaseModel):
    """How a worker batches, flushes and checkpoints (the ``cutstream worker`` options).

    Parquet files and checkpoints have separate cadences: Parquet is written often so that the
    dashboard sees fresh results; a checkpoint (which also writes what is left for Parquet) is
    larger and is written less often. Offsets are committed right after each checkpoint.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_batch: int = Field(default=10_000, ge=1, description="messages per consume() call")
    poll_timeout_s: float = Field(
        default=0.1,
        gt=0,
        le=5,
        description="longest wait in consume() for a batch; bounds latency at low traffic",
    )
    parquet_interval_s: float = Field(
        default=2.0, gt=0, description="write results to Parquet at least this often"
    )
    checkpoint_interval_s: float = Field(
        default=10.0, gt=0, description="checkpoint + commit each partition this often"
    )
    checkpoint_every_events: int = Field(
        default=0, ge=0, description="also checkpoint a partition after this many events (0 = only by time)"
    )
    series_capacity: int = Field(
        default=1024,
        ge=1,
        description="series each detector's model arrays preallocate room for (they grow beyond)",
    )
    embedded_partitions: int = Field(
        default=4,
        ge=1,
        description="partitions of the events topics created on a worker-started embedded broker",
    )
    warm_start: tuple[str, ...] = Field(
        default=(),
        description="model files from `cutstream backfill --warm-start-out`, loaded before the first event",
    )
    status_file: str | None = Field(
        default=None, description="write counters and the assignment as JSON here about once a second"
    )
    start_from_ms: int | None = Field(
        default=None,
        description=(
            "partitions without a checkpoint start at the first record whose timestamp is at or after "
            "this time (epoch ms; `--from`); needs offsets_for_times, which Tansu lacks"
        ),
    )
    results_guarantee: Literal["auto", "exactly_once", "at_least_once"] = Field(
        default="auto",
        description=(
            "the results topic: exactly_once commits each input partition's results and offset in one "
            "Kafka transaction (read them with isolation.level=read_committed; they become visible at "
            "each checkpoint), at_least_once produces them at once; auto: exactly_once where the broker "
            "has transactions (not on Tansu, the embedded broker). Parquet is exactly-once either way"
        ),
    )
    lag_source: Literal["auto", "end_offsets", "fetch"] = Field(
        default="auto",
        description=(
            "consumer lag from ListOffsets end offsets, or from the fetch-cached high watermark; "
            "auto: end offsets except on Tansu, whose end offsets are stale"
        ),
    )


class WorkerApp(Protocol):
    """The application settings a worker reads (``cutstream.config.AppConfig`` is one).

    Declared here, on the worker's floor, so that streams/ never imports the command line's
    settings: the composition root builds them and passes them down.
    """

    @property
    def brokers(self) -> str | None: ...
    @property
    def data_dir(self) -> Path: ...
    @property
    def results_topic(self) -> str: ...
    @property
    def group_id(self) -> str: ...
    @property
    def kafka(self) -> Mapping[str, str]: ...
    @property
    def kafka_password(self) -> SecretStr | None: ...
    @property
    def detectors(self) -> tuple[DetectorSpec, ...]: ...
    @property
    def alert_delivery(self) -> DeliveryConfig: ...
