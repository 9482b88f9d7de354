"""Array backends: numpy + numba on the CPU, CuPy + numba.cuda on a GPU; picked once, at start.

``get_backend("cpu" | "gpu" | "auto")`` returns a :class:`Backend` whose ``xp`` is the array
namespace the forest allocates its state with. The GPU modules are imported lazily, here only;
a missing one raises :class:`~detector.errors.BackendUnavailable` naming the extra to install.
"auto" tries the GPU and falls back to the CPU with one warning in the log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from detector.errors import BackendUnavailable

logger = logging.getLogger(__name__)

BACKENDS = ("cpu", "gpu", "auto")

_GPU_HINT = "install the GPU extra (pip install 'cutstream[gpu]', plus numba-cuda) on a machine with CUDA"


@dataclass(frozen=True)
class Backend:
    """An array namespace and the name of the kernels that run on it."""

    name: str  # "cpu" or "gpu"
    xp: ModuleType

    def to_numpy(self, a: Any) -> np.ndarray[Any, Any]:
        """Copy an array of this backend to host memory (no copy on the CPU)."""
        if self.name == "gpu":
            return self.xp.asnumpy(a)  # type: ignore[no-any-return]
        return np.asarray(a)

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """Move a host array to this backend."""
        return self.xp.asarray(a, dtype=dtype)


def _gpu() -> Backend:
    try:
        import cupy
    except ImportError as exc:
        raise BackendUnavailable(f"backend 'gpu' needs CuPy, which is not installed: {_GPU_HINT}") from exc
    try:
        from numba import cuda
    except ImportError as exc:
        raise BackendUnavailable(f"backend 'gpu' needs numba.cuda: {_GPU_HINT}") from exc
    try:
        available = bool(cuda.is_available()) and cupy.cuda.runtime.getDeviceCount() > 0
    except Exception as exc:
        raise BackendUnavailable(f"backend 'gpu': no usable CUDA device ({exc}); use backend 'cpu'") from exc
    if not available:
        raise BackendUnavailable("backend 'gpu': no CUDA device is visible here; use backend 'cpu'")
    return Backend("gpu", cupy)


def get_backend(name: str) -> Backend:
    """The backend called ``name``: "cpu", "gpu" (raises when unusable) or "auto" (GPU, else CPU)."""
    if name == "cpu":
        return Backend("cpu", np)
    if name == "gpu":
        return _gpu()
    if name == "auto":
        try:
            return _gpu()
        except BackendUnavailable as exc:
            logger.warning("backend=auto falling back to cpu reason=%r", str(exc))
            return Backend("cpu", np)
    raise BackendUnavailable(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
