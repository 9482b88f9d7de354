"""detector/ stays pure: importing it (and using the forest) loads no I/O library."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = (
    "kafka",
    "confluent_kafka",
    "aiokafka",
    "pyarrow",
    "duckdb",
    "dash",
    "faust",
    "flask",
    "requests",
)

SCRIPT = """
import json, sys
import numpy as np
import detector, detector.forest, detector.backend, detector.kernels, detector.config
from detector.config import ForestConfig
forest = detector.forest.Forest(ForestConfig(n_trees=2, sample_size=8, shingle_size=2), capacity=1)
forest.update(forest.add_series(1).repeat(5), np.arange(5.0))
try:
    import detector.detector
except ImportError:
    pass
print(json.dumps(sorted(sys.modules)))
"""


def test_importing_and_running_the_detector_loads_no_io_library() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=120
    )
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    bad = sorted(m for m in loaded if m.split(".")[0] in FORBIDDEN)
    assert not bad, f"detector imported I/O libraries: {bad}"
    assert "detector.forest" in loaded and "detector.kernels_cpu" in loaded
