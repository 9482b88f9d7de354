"""Array backends: numpy + numba on the CPU, CuPy + numba.cuda on a GPU; picked once, at start.

``get_backend("cpu" | "gpu" | "auto")`` returns a :class:`Backend` whose ``xp`` is the array
namespace the forest allocates its state with. The GPU modules are imported lazily, here only;
a missing one raises :class:`~detector.errors.BackendUnavailable` naming the extra to install.
"auto" tries the GPU and falls back to the CPU with one warning in the log.
"""

from __future__ import annotations

import logging
import mmap
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from detector.errors import BackendUnavailable

logger = logging.getLogger(__name__)

BACKENDS = ("cpu", "gpu", "auto")
_LAZY_BYTES = 16 << 20
# Python < 3.13 does not export it; the value is Linux's (elsewhere: 0, a plain lazy mapping).
_MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000 if sys.platform.startswith("linux") else 0)

_GPU_HINT = "install the GPU extra (pip install 'cutstream[gpu]', plus numba-cuda) on a machine with CUDA"


@dataclass(frozen=True)
class Backend:
    """An array namespace and the name of the kernels that run on it."""

    name: str  # "cpu", "gpu" or "cudasim" (tests: the GPU kernels in numba's simulator)
    xp: ModuleType

    def to_numpy(self, a: Any) -> np.ndarray[Any, Any]:
        """Copy an array of this backend to host memory (no copy on the CPU)."""
        if self.name == "gpu":
            return self.xp.asnumpy(a)  # type: ignore[no-any-return]
        return np.asarray(a)

    def zeros(self, shape: tuple[int, ...], dtype: Any) -> Any:
        """A zero-filled array whose memory is committed only where it is written.

        On the host, large arrays come from an anonymous ``MAP_NORESERVE`` mapping: the kernel
        hands out zero pages on first touch and does not count untouched pages against the
        overcommit limit, so a forest with room for 100,000 series (26 GB at the default
        config) is created in milliseconds and costs memory only as its series fill.
        """
        if self.name == "gpu":
            return self.xp.zeros(shape, dtype=dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if nbytes < _LAZY_BYTES:
            return np.zeros(shape, dtype=dtype)
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE
        buf = mmap.mmap(-1, nbytes, flags=flags)
        # No MADV_HUGEPAGE: a young series touches one node record per tree, and a 2 MB page would
        # zero (and commit) 2 MB there. Measured at the default model, 10,000 new series: their
        # second point took 1.0-2.0 s with huge pages and 0.28-0.35 s without, for ~4 % (within
        # the noise) of tree-walk speed at S=1000 with full windows.
        return np.frombuffer(buf, dtype=dtype).reshape(shape)

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
    if name == "cudasim":
        # Testing only: the GPU kernels on host arrays through numba's CUDA simulator (very slow).
        from numba import config

        # numba's config module sets its attributes from the environment at import time (through
        # globals()), so mypy cannot see them.
        if not config.ENABLE_CUDASIM:  # type: ignore[attr-defined]
            raise BackendUnavailable("backend 'cudasim' needs NUMBA_ENABLE_CUDASIM=1 in the environment")
        return Backend("cudasim", np)
    if name == "auto":
        try:
            return _gpu()
        except BackendUnavailable as exc:
            logger.warning("backend=auto falling back to cpu reason=%r", str(exc))
            return Backend("cpu", np)
    raise BackendUnavailable(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
