"""The GPU path's host-side helpers, which CI (no GPU) can run: the kernel arguments' ABI fields
(detector/cuda_launch.py, checked against numba's own on a device at the first launch), the
staging block of a batch's columns and the results' byte layout (detector/scoring_cuda.py)."""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from detector import scoring_cpu, scoring_cuda
from detector.cuda_launch import _flatten


class DeviceArray:
    """An array as another library hands it over: only ``__cuda_array_interface__``."""

    def __init__(self, host: np.ndarray, strides: tuple[int, ...] | None = None) -> None:
        self.__cuda_array_interface__ = {
            "shape": host.shape,
            "typestr": host.dtype.str,
            "data": (host.ctypes.data, False),
            "strides": strides,
            "version": 3,
        }


def test_array_fields_follow_numbas_abi_and_scalars_their_c_types() -> None:
    a = np.zeros((3, 4))
    b = np.zeros(5, dtype=np.bool_)
    kinds: tuple[Any, ...] = ((2, "<f8", True), (1, "|b1", True), ctypes.c_int64, ctypes.c_double, bool)
    fields = _flatten(kinds, (DeviceArray(a), DeviceArray(b), 7, 2.5, np.True_))
    assert fields is not None
    assert fields[:9] == [0, 0, 12, 8, a.ctypes.data, 3, 4, 32, 8]
    assert fields[9:16] == [0, 0, 5, 1, b.ctypes.data, 5, 1]
    assert isinstance(fields[16], ctypes.c_int64) and fields[16].value == 7
    assert isinstance(fields[17], ctypes.c_double) and fields[17].value == 2.5
    assert fields[18] is True


def test_arrays_the_kernel_was_not_compiled_for_go_back_to_numbas_launch() -> None:
    a = np.zeros((3, 4))
    assert _flatten(((2, "<f4", True),), (DeviceArray(a),)) is None  # another dtype
    assert _flatten(((1, "<f8", True),), (DeviceArray(a),)) is None  # another ndim
    # a column (strided) where the kernel assumes C order; fine where it does not
    assert _flatten(((2, "<f8", True),), (DeviceArray(a, strides=(8, 24)),)) is None
    assert _flatten(((2, "<f8", False),), (DeviceArray(a, strides=(8, 24)),)) is not None


def test_an_array_passed_again_reuses_its_fields_and_a_new_one_is_read() -> None:
    a, b = DeviceArray(np.zeros(4)), DeviceArray(np.ones(6))
    kinds = ((1, "<f8", True),)
    last: list[Any] = []
    first = _flatten(kinds, (a,), last)
    a.__cuda_array_interface__ = {**a.__cuda_array_interface__, "shape": (99,)}  # not read again
    assert _flatten(kinds, (a,), last) == first
    again = _flatten(kinds, (b,), last)
    assert again is not None and again[2] == 6 and last[0][0] is b


def test_the_staging_block_holds_the_four_columns_bit_for_bit() -> None:
    rng = np.random.default_rng(3)
    n = 1000
    slots = rng.permutation(n).astype(np.int64)
    values = rng.standard_normal(n)
    ts = 1_767_225_600_000 + rng.integers(0, 10**9, n)
    events = rng.integers(0, 9, n).astype(np.float64)
    block = np.full((4, n), np.nan)
    scoring_cpu.stage_columns(slots, values, ts, events, block, block.view(np.int64))
    assert np.array_equal(block[0].view(np.int64), slots)
    assert np.array_equal(block[1], values)
    assert np.array_equal(block[2].view(np.int64), ts)
    assert np.array_equal(block[3], events)


def test_the_results_bytes_split_into_rows_that_do_not_overlap() -> None:
    n = 7
    buf = np.zeros((8 * scoring_cuda._WIDE_ROWS + scoring_cuda._NARROW_ROWS) * n, dtype=np.uint8)
    blocks = scoring_cuda._blocks(buf, n)
    views = {name: blocks[b][row].view(dt) for name, b, row, dt in scoring_cuda._RESULTS}
    for k, view in enumerate(views.values()):
        view.view(np.uint8)[:] = k + 1  # every byte of the row
    for k, (name, view) in enumerate(views.items()):
        assert np.all(view.view(np.uint8) == k + 1), name  # no later row wrote over it
    assert blocks["wide"].shape == (scoring_cuda._WIDE_ROWS, n)
    assert blocks["narrow"].shape == (scoring_cuda._NARROW_ROWS, n)
    written = {(b, row) for _, b, row, _ in scoring_cuda._RESULTS}
    assert ("wide", scoring_cuda._WIDE_ROWS - 1) not in written  # the raw score's row
