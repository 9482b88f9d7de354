"""Demo data: the reference stack's bookstore, and many hosts to show scale.

Event time is simulated and compressed: the generator emits whole simulated windows at a time,
so the demo shows learning, then anomalies, within a couple of minutes. Everything is seeded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

HOUR_MS = 3_600_000
#: 2026-01-01 00:00:00 UTC: the demo's simulated clock starts here.
DEMO_EPOCH_MS = 1_767_225_600_000


@dataclass(frozen=True)
class Spike:
    """An injected anomaly: which series, which window, and by how much."""

    dims: tuple[tuple[str, str], ...]
    window_start_ms: int
    factor: float


@dataclass
class EventBatch:
    """All events of one simulated window: (key, JSON value) pairs plus the spikes in it."""

    window_start_ms: int
    messages: list[tuple[bytes, bytes]]
    spikes: list[Spike] = field(default_factory=list)


def bookstore(
    hours: int, *, seed: int = 7, start_ms: int = DEMO_EPOCH_MS, spike_every: int = 37, warmup_hours: int = 72
) -> Iterator[EventBatch]:
    """Orders of Item-A (~20 units in even hours, ~10 in odd) and Item-B (~30 / ~15).

    Each hour becomes several order events (``product_name``, ``quantity``, ``timestamp``);
    after ``warmup_hours`` an unexplained spike (3-5x) hits one item about every
    ``spike_every`` hours.
    """
    rng = np.random.default_rng(seed)
    base = {"item-A": 20.0, "item-B": 30.0}
    next_spike = warmup_hours + int(rng.integers(0, spike_every // 2 + 1))
    for h in range(hours):
        t0 = start_ms + h * HOUR_MS
        spikes: list[Spike] = []
        spiked_item = None
        if h == next_spike:
            spiked_item = str(rng.choice(list(base)))
            factor = float(rng.uniform(3.0, 5.0))
            spikes.append(Spike((("product_name", spiked_item),), t0, factor))
            next_spike += spike_every + int(rng.integers(-spike_every // 4, spike_every // 4 + 1))
        messages: list[tuple[bytes, bytes]] = []
        for item, units in base.items():
            mean = units if h % 2 == 0 else units / 2
            if item == spiked_item:
                mean *= spikes[0].factor
            total = max(0, int(rng.normal(mean, mean * 0.08)))
            n_orders = max(1, total // 3)
            qty = rng.multinomial(total, np.full(n_orders, 1.0 / n_orders))
            offsets = np.sort(rng.integers(0, HOUR_MS, n_orders))
            key = f"product_name={item}".encode()
            for q, off in zip(qty, offsets, strict=True):
                event = {"timestamp": int(t0 + off), "product_name": item, "quantity": int(q)}
                messages.append((key, json.dumps(event, separators=(",", ":")).encode()))
        messages.sort(key=lambda kv: json.loads(kv[1])["timestamp"])
        yield EventBatch(t0, messages, spikes)


def hosts(
    hours: int,
    *,
    n_hosts: int = 1000,
    seed: int = 11,
    start_ms: int = DEMO_EPOCH_MS,
    spike_prob: float = 0.002,
    warmup_hours: int = 72,
) -> Iterator[EventBatch]:
    """``n_hosts`` hosts reporting ``cpu`` and ``latency_ms`` once per simulated hour.

    Daily seasonality per host (random phase and level); after ``warmup_hours`` each host
    spikes with probability ``spike_prob`` per hour.
    """
    rng = np.random.default_rng(seed)
    level = rng.uniform(20, 60, n_hosts)
    phase = rng.uniform(0, 24, n_hosts)
    lat_level = rng.uniform(50, 200, n_hosts)
    names = [f"host-{i:05d}" for i in range(n_hosts)]
    region = [("us", "eu", "ap")[i % 3] for i in range(n_hosts)]
    for h in range(hours):
        t0 = start_ms + h * HOUR_MS
        season = np.sin(2 * np.pi * (h + phase) / 24)
        cpu = level * (1 + 0.3 * season) + rng.normal(0, 1.5, n_hosts)
        lat = lat_level * (1 + 0.2 * season) + rng.normal(0, 5, n_hosts)
        spiking = (rng.random(n_hosts) < spike_prob) if h >= warmup_hours else np.zeros(n_hosts, bool)
        factor = rng.uniform(2.5, 4.0, n_hosts)
        cpu = np.where(spiking, np.minimum(cpu * factor, 100.0), cpu)
        lat = np.where(spiking, lat * factor, lat)
        spikes = [
            Spike((("host", names[i]), ("region", region[i])), t0, float(factor[i]))
            for i in np.flatnonzero(spiking)
        ]
        ts = t0 + rng.integers(0, HOUR_MS, n_hosts)
        messages = [
            (
                f"host={names[i]}".encode(),
                json.dumps(
                    {
                        "timestamp": int(ts[i]),
                        "host": names[i],
                        "region": region[i],
                        "cpu": round(float(cpu[i]), 3),
                        "latency_ms": round(float(lat[i]), 3),
                    },
                    separators=(",", ":"),
                ).encode(),
            )
            for i in range(n_hosts)
        ]
        yield EventBatch(t0, messages, spikes)
