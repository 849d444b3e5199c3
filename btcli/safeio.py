"""Checkpoint files that load without running code from them.

A checkpoint is written by ``torch.save`` and read back only by ``torch.load(weights_only=True)``,
whose unpickler builds tensors, containers and plain Python values and refuses any other
global (a function or class a crafted file names to run code). So that btcli's own state fits
that: numpy arrays and scalars are stored as tagged tensors (:func:`to_plain`; raw bytes for
dtypes torch lacks) and turned back into numpy by :func:`from_plain`.

Checkpoints written before this format hold pickled numpy arrays; they still load, with the
unpickler allowed exactly numpy's array and dtype reconstruction on top of its defaults
(:data:`NUMPY_GLOBALS`), never anything that calls other code.

Environment snapshots (pickled MiniGrid objects, ALE states) are bytes inside a checkpoint: the
loader returns them as bytes, and only a run's own resume unpickles them (see
``runs.load_checkpoint(env_state=...)``).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

_TAG = "__btcli_ndarray__"


class UnsafeCheckpointError(Exception):
    """A checkpoint names a Python global the safe loader does not build (``name``)."""

    def __init__(self, name: str | None):
        super().__init__(name or "unknown")
        self.name = name


def _numpy_globals() -> list:
    """numpy's array, scalar and dtype reconstruction, under numpy 2's and numpy 1's module names."""
    core = getattr(np, "_core", None) or np.core
    allowed: list = [np.ndarray, np.dtype]
    for fn in (core.multiarray._reconstruct, core.multiarray.scalar):
        allowed.append(fn)
        for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            allowed.append((fn, f"{module}.{fn.__name__}"))
    for code in "?bBhHiIlLqQefdgFDGSUV":  # numeric, bytes, str and void dtypes; never object ('O')
        allowed.append(type(np.dtype(code)))
    return allowed


NUMPY_GLOBALS = _numpy_globals()


def _rebuild(obj: Any, fn) -> Any:
    """``obj`` with ``fn`` applied to every leaf; containers that did not change are returned as
    they are (a module state dict keeps its type and ``_metadata``)."""
    if isinstance(obj, dict):
        if _TAG in obj:
            return fn(obj)
        new = {k: _rebuild(v, fn) for k, v in obj.items()}
        if all(new[k] is obj[k] for k in obj):
            return obj
        out = type(obj)(new) if type(obj) is not dict else new
        if hasattr(obj, "_metadata"):
            out._metadata = obj._metadata
        return out
    if isinstance(obj, (list, tuple)):
        items = [_rebuild(v, fn) for v in obj]
        if all(a is b for a, b in zip(items, obj)):
            return obj
        return items if isinstance(obj, list) else tuple(items)
    return fn(obj)


def _pack(value: Any) -> Any:
    if not isinstance(value, (np.ndarray, np.generic)):
        return value
    arr = np.asarray(value)
    if arr.dtype.hasobject:
        raise TypeError("a checkpoint cannot hold numpy object arrays: they would need pickle to load")
    if not arr.flags.c_contiguous:  # (np.ascontiguousarray would turn a 0-d array into 1-d)
        arr = arr.copy(order="C")
    packed: dict[str, Any] = {_TAG: 1, "dtype": arr.dtype.str, "shape": list(arr.shape),
                              "scalar": isinstance(value, np.generic)}
    try:
        packed["data"] = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    except (TypeError, ValueError):  # a dtype torch has no tensor type for (strings, big-endian)
        packed["data"] = arr.tobytes()
    return packed


def _unpack(value: Any) -> Any:
    if not (isinstance(value, dict) and _TAG in value):
        return value
    dtype, shape, data = np.dtype(value["dtype"]), tuple(value["shape"]), value["data"]
    if isinstance(data, torch.Tensor):
        arr = data.cpu().numpy()
        if arr.dtype != dtype or arr.shape != shape:
            raise ValueError(f"a stored array says {dtype}{list(shape)} but holds {arr.dtype}{list(arr.shape)}")
    else:
        arr = np.frombuffer(bytes(data), dtype=dtype).reshape(shape).copy()
    return arr[()] if value.get("scalar") else arr


def to_plain(state: Any) -> Any:
    """``state`` with every numpy array or scalar replaced by a tagged tensor (or bytes)."""
    return _rebuild(state, _pack)


def from_plain(state: Any) -> Any:
    """The inverse of :func:`to_plain`: tagged entries back to numpy, exactly (dtype, shape, values)."""
    return _rebuild(state, _unpack)


def _to_device(state: Any, device: str) -> Any:
    return _rebuild(state, lambda v: v.to(device) if isinstance(v, torch.Tensor) else v)


def safe_torch_load(path: Path, map_location: str = "cpu") -> Any:
    """``torch.load(weights_only=True)`` of ``path`` (numpy reconstruction allowed for older
    checkpoints), arrays restored as numpy and tensors moved to ``map_location``.

    Raises :class:`UnsafeCheckpointError` naming the global when the file asks for anything else.
    """
    try:
        with torch.serialization.safe_globals(NUMPY_GLOBALS):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        raise UnsafeCheckpointError(found[1] if found else None) from None
    state = from_plain(state)
    return state if str(map_location) == "cpu" else _to_device(state, str(map_location))
