"""Reading PyTorch state dicts into NumPy without executing pickled code.

Formats: ``.safetensors``, ``.npz`` (``np.load(allow_pickle=False)``), and
``.pth``/``.pt`` files in PyTorch's zip format, read with a restricted
unpickler that only knows how to rebuild tensors and ordered dicts: any other
global in the pickle is refused. This needs no PyTorch. Legacy (pre-1.6,
non-zip) ``.pth`` files are read with ``torch.load(weights_only=True)`` when
PyTorch is installed.
"""

from __future__ import annotations

import collections
import os
import pickle
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    item = storage.dtype.itemsize
    if len(size) == 0:
        return np.array(storage[offset])
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * item for s in stride))
    return np.array(view)


def _rebuild_parameter(data, requires_grad=False, hooks=None, *state):
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    }

    def __init__(self, fh, archive: zipfile.ZipFile, prefix: str, path: str):
        super().__init__(fh)
        self._archive, self._prefix, self._path = archive, prefix, path
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        raise ValueError(f"{self._path}: refusing to unpickle {module}.{name} (only tensors are read)")

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise ValueError(f"{self._path}: unsupported persistent id {pid!r:.60}")
        storage_type, key = pid[1], str(pid[2])
        if key not in self._storages:
            raw = self._archive.read(f"{self._prefix}/data/{key}")
            self._storages[key] = np.frombuffer(raw, dtype=storage_type.dtype.newbyteorder("<"))
        return self._storages[key]


def _read_torch_zip(path: str) -> Any:
    with zipfile.ZipFile(path) as zf:
        pkl = [n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pkl:
            raise ValueError(f"{path}: zip file without data.pkl, not a PyTorch checkpoint")
        prefix = pkl[0][: -len("/data.pkl")] if "/" in pkl[0] else ""
        byteorder = f"{prefix}/byteorder"
        if byteorder in zf.namelist() and zf.read(byteorder).strip() != b"little":
            raise ValueError(f"{path}: big-endian PyTorch checkpoints are not supported")
        with zf.open(pkl[0]) as fh:
            return _RestrictedUnpickler(fh, zf, prefix, path).load()


def _read_torch_legacy(path: str) -> Any:
    try:
        import torch
    except ImportError:
        raise ValueError(f"{path}: legacy (non-zip) PyTorch file; install torch to read it, "
                         "or re-save it with torch.save or as .safetensors") from None
    obj = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy() for k, v in obj.items()}


def _unwrap(obj: Any, path: str) -> dict[str, np.ndarray]:
    # checkpoints sometimes nest the weights ({"state_dict": ...}, {"model": ...})
    while isinstance(obj, dict) and not any(isinstance(v, np.ndarray) for v in obj.values()):
        nested = [obj[k] for k in ("state_dict", "model", "model_state_dict") if isinstance(obj.get(k), dict)]
        if not nested:
            raise ValueError(f"{path}: no tensors found at the top level or under state_dict/model")
        obj = nested[0]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict (name -> tensor), got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        if not isinstance(v, np.ndarray):
            continue
        out[k[len("module."):] if k.startswith("module.") else k] = v
    return out


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a state dict file into ``{torch key: numpy array}`` without running pickled code."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weight file not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".safetensors":
            from safetensors.numpy import load_file
            return load_file(path)
        if ext == ".npz":
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        if ext in (".pth", ".pt", ".bin", ".ckpt"):
            obj = _read_torch_zip(path) if zipfile.is_zipfile(path) else _read_torch_legacy(path)
            return _unwrap(obj, path)
    except (OSError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError) as e:
        raise ValueError(f"{path}: unreadable weight file ({e})") from None
    raise ValueError(f"{path}: unknown weight format {ext!r}; use .safetensors, .npz or .pth")


def write_state_dict(state: dict[str, np.ndarray], path: str | os.PathLike) -> None:
    """Writes ``{key: array}`` as ``.safetensors`` or ``.npz`` (chosen by extension)."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    arrays = {k: np.ascontiguousarray(v) for k, v in state.items()}
    if ext == ".safetensors":
        from safetensors.numpy import save_file
        save_file(arrays, path)
    elif ext == ".npz":
        np.savez(path, **arrays)
    else:
        raise ValueError(f"{path}: can only write .safetensors or .npz")
