"""Kernel launches with little host work: numba.cuda's own launch prepares every argument anew.

``numba.cuda`` turns each array argument into its ABI fields (meminfo, parent, size, itemsize,
data pointer, shape, strides) through a device-array wrapper, and syncs on the stream an array's
``__cuda_array_interface__`` names: about 10 µs an argument. The scoring stage's kernels take 45
to 60 arguments, so a launch cost 0.4 ms of host time on an H200 host for a kernel that ran in
tens of microseconds (issue 18's profile, BENCHMARKS.md).

:class:`Launcher` launches the first time through numba (which compiles the kernel), then checks
its own flattening of the same arguments against numba's (``_Kernel._prepare_args``) field by
field; when they agree, later launches go straight to ``cuda.core``'s ``launch``, an array's
fields read from CuPy's attributes (or its ``__cuda_array_interface__``) only when another array
than last launch's comes in at its place (no sync: every array here lives on the default stream,
where the launch goes too). Where anything differs or is missing (another
numba-cuda version, the simulator), every launch stays numba's. numba-cuda 0.30 on the device
machine passed this check (BENCHMARKS.md, GPU).
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


class Launcher:
    """Launches one ``numba.cuda.jit`` kernel with ``launcher(grid, block, *args)``."""

    def __init__(self, dispatcher: Any) -> None:
        self._dispatcher = dispatcher
        #: None: not checked yet; False: numba's launch only; else the fast path's parts
        self._fast: Any = None
        #: per argument position, the array of the last launch and its fields: the state arrays
        #: are the same objects launch after launch, and their fields are not read again
        self._last: list[Any] = []
        self._configs: dict[tuple[int, int], Any] = {}

    def __call__(self, grid: int, block: int, *args: Any) -> None:
        fast = self._fast
        if fast:
            kernel, kinds, stream, launch, config = fast
            fields = _flatten(kinds, args, self._last)
            if fields is not None:
                cfg = self._configs.get((grid, block))
                if cfg is None:
                    cfg = self._configs[grid, block] = config(grid, block)
                launch(stream, cfg, kernel, *fields)
                return
        self._dispatcher[grid, block](*args)
        if fast is None:
            self._fast = _fast_path(self._dispatcher, args) or False

    @property
    def fast(self) -> bool:
        """Whether launches skip numba's argument preparation (after the first launch)."""
        return bool(self._fast)


def _fast_path(dispatcher: Any, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """The fast path's parts, or None where this numba-cuda's launch is not the one checked."""
    try:
        from numba.cuda.cudadrv import driver

        if len(dispatcher.overloads) != 1:
            return None
        kernel = next(iter(dispatcher.overloads.values()))
        if kernel.debug or kernel.extensions:
            return None
        kinds = _kinds(kernel.argument_types, args)
        if kinds is None:
            return None
        theirs: list[Any] = []
        retr: list[Any] = []
        for ty, value in zip(kernel.argument_types, args, strict=True):
            kernel._prepare_args(ty, value, 0, retr, theirs)
        mine = _flatten(kinds, args)
        if retr or mine is None or [_plain(f) for f in mine] != [_plain(f) for f in theirs]:
            logger.info("cuda launch: numba's argument layout differs; numba launches kept")
            return None
        launch, config = _launch_api()
        core_kernel = kernel._codelibrary.get_cufunc().kernel
        stream = driver._to_core_stream(0)  # type: ignore[attr-defined]
        return core_kernel, kinds, stream, launch, config
    except Exception as exc:  # any other numba-cuda: its own launch, which works everywhere
        logger.info("cuda launch: fast path unavailable (%r); numba launches kept", exc)
        return None


def _kinds(argument_types: Any, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """Per argument, how :func:`_flatten` writes it: (ndim, typestr, C order) for an array, the
    ctypes type or ``bool`` for a scalar; None for a type this does not handle."""
    from numba.cuda import types

    kinds: list[Any] = []
    for ty, value in zip(argument_types, args, strict=True):
        if isinstance(ty, types.Array):  # type: ignore[attr-defined]
            if not hasattr(value, "__cuda_array_interface__"):
                return None
            kinds.append((ty.ndim, value.__cuda_array_interface__["typestr"], ty.layout == "C"))
        elif isinstance(ty, types.Integer):  # type: ignore[attr-defined]
            kinds.append(getattr(ctypes, f"c_{ty}"))
        elif ty == types.float64:  # type: ignore[attr-defined]
            kinds.append(ctypes.c_double)
        elif ty == types.boolean:  # type: ignore[attr-defined]
            kinds.append(bool)
        else:
            return None
    return tuple(kinds)


def _launch_api() -> tuple[Any, Any]:
    """``cuda.core``'s ``launch`` and a maker of its launch configuration (grid, block)."""
    from cuda.core import LaunchConfig, launch
    from numba.cuda._compat import CUDA_CORE_GE_1_0

    if CUDA_CORE_GE_1_0:

        def config(grid: int, block: int) -> Any:
            return LaunchConfig(grid=grid, block=block, shmem_size=0, is_cooperative=False)
    else:

        def config(grid: int, block: int) -> Any:
            return LaunchConfig(grid=grid, block=block, shmem_size=0, cooperative_launch=False)

    return launch, config


def _plain(field: Any) -> tuple[str, Any]:
    """A kernel argument field as (C type, value), to compare two flattenings."""
    if isinstance(field, ctypes._SimpleCData):
        return type(field).__name__, field.value
    if isinstance(field, bool | np.bool_):
        return "bool", bool(field)
    return "intptr", int(field)


def _flatten(
    kinds: tuple[Any, ...], args: tuple[Any, ...], last: list[Any] | None = None
) -> list[Any] | None:
    """numba's ABI fields of ``args``: an array is meminfo 0, parent 0, size, itemsize, data
    pointer, shape, strides in bytes; a scalar its C value. ``kinds`` holds, per array, the ndim
    and dtype (``typestr``) the compiled kernel was made for and whether it assumes C order. None:
    an array of another dtype or ndim, or not C-ordered where the kernel assumes it: numba's own
    launch then takes the call (and compiles for it).

    ``last`` (per position: the array last flattened there and its fields) spares the work for an
    array passed again; it is updated.
    """
    if last is not None and len(last) != len(args):
        last[:] = [(None, None)] * len(args)
    out: list[Any] = []
    for i, (kind, value) in enumerate(zip(kinds, args, strict=True)):
        if isinstance(kind, tuple):
            if last is not None and last[i][0] is value:
                out += last[i][1]
                continue
            fields = _array_fields(kind, value)
            if fields is None:
                return None
            if last is not None:
                last[i] = (value, fields)
            out += fields
        elif kind is bool:
            out.append(bool(value))
        else:
            out.append(kind(value))
    return out


def _array_fields(kind: tuple[int, str, bool], value: Any) -> list[Any] | None:
    """One array's ABI fields (see :func:`_flatten`), from CuPy's attributes where it is a CuPy
    array (no interface dict to build), else from its ``__cuda_array_interface__``."""
    ndim, typestr, c_order = kind
    memory = getattr(value, "data", None)
    ptr = getattr(memory, "ptr", None)
    if ptr is not None and hasattr(value, "strides"):  # CuPy
        shape, strides, dtype = tuple(value.shape), tuple(value.strides), value.dtype.str
    else:
        cai = value.__cuda_array_interface__
        shape, dtype, ptr = tuple(cai["shape"]), cai["typestr"], cai["data"][0]
        strides = cai.get("strides")
    if len(shape) != ndim or dtype != typestr:
        return None
    itemsize = np.dtype(typestr).itemsize
    contiguous, step = [], itemsize
    for dim in reversed(shape):
        contiguous.append(step)
        step *= dim
    contiguous.reverse()
    if strides is None:
        strides = tuple(contiguous)
    elif c_order and tuple(strides) != tuple(contiguous) and min(shape, default=2) > 1:
        return None
    size = 1
    for dim in shape:
        size *= dim
    return [0, 0, size, itemsize, ptr, *shape, *strides]
