"""Reading PyTorch state dicts into NumPy without executing pickled code, safe against crafted files.

Formats: ``.safetensors``, ``.npz`` (``np.load(allow_pickle=False)``; object arrays are refused), and
``.pth``/``.pt`` files in PyTorch's zip format, read with a restricted unpickler that only knows how to
rebuild tensors and ordered dicts: any other global in the pickle is refused. This needs no PyTorch.
Legacy (pre-1.6, non-zip) ``.pth`` files are read with ``torch.load(weights_only=True)`` when PyTorch is
installed. ``.onnx`` models give their layer parameters (``jaxcnn.weights.onnx_io``, with the optional
``onnx`` package).

A ``.pth`` pickle only describes tensors (storage record, dtype, offset, sizes, strides); the unpickler
records those descriptions, and the arrays are built afterwards, each one checked first: the storage's
type is known, its record in the zip holds exactly the bytes the pickle claims, the offset, sizes and
strides are non-negative integers, and the furthest element ``offset + sum((size_i - 1) * stride_i)``
lies inside the storage. Anything else is a one-line ``ValueError`` naming the file and the tensor's key.
The arrays are copies, never views of the file's buffers. ``tests/test_weights_crafted.py`` holds the
crafted cases, ``tests/test_weights_fuzz.py`` mutates a real torch file.
"""

from __future__ import annotations

import collections
import lzma
import math
import os
import pickle
import struct
import zipfile
import zlib
from typing import Any, Callable

import ml_dtypes
import numpy as np

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
_MAX_DIMS = 64  # NumPy's limit
_MAX_INT = 2**62  # offsets, sizes, strides and element counts beyond this are refused before any arithmetic
# A tensor can hold more elements than its storage only by repeating them (zero strides, as torch.save
# writes an ``expand``-ed tensor); such a tensor is materialised up to this many bytes, so that a few
# bytes of pickle cannot ask for terabytes.
_MAX_REPEAT_BYTES = 1 << 28
# what reading a damaged zip, npz or safetensors file raises, besides our own messages
_READ_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error,
                lzma.LZMAError, struct.error, NotImplementedError, RuntimeError, pickle.UnpicklingError)


class _FileError(ValueError):
    """A message that already names the file (passed on as it is)."""


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def _name(key: str) -> str:
    return repr(key) if len(key) <= 80 else repr(key[:77]) + "..."


# --- what the unpickler hands to the pickle: inert records, no __dict__, BUILD on them refused -----------

class _Inert:
    __slots__ = ()

    def __setstate__(self, state):
        raise TypeError(f"BUILD on a {type(self).__name__.strip('_')}")


class _StorageType(_Inert):
    __slots__ = ("name", "dtype")

    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name]) if name in _STORAGE_DTYPES else None


class _StorageRef(_Inert):
    __slots__ = ("pid",)

    def __init__(self, pid):
        self.pid = pid


class _TensorRef(_Inert):
    __slots__ = ("args",)

    def __init__(self, *args):
        self.args = args


class _Function(_Inert):
    # a fresh callable per load: a crafted BUILD cannot alter this module's functions
    __slots__ = ("fn",)

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args):
        return self.fn(*args)


def _parameter(data, *rest):
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    _FUNCTIONS = {
        ("torch._utils", "_rebuild_tensor_v2"): _TensorRef,
        ("torch._utils", "_rebuild_parameter"): _parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _parameter,
    }

    def __init__(self, fh, path: str):
        super().__init__(fh)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and isinstance(name, str) and name.endswith("Storage"):
            return _StorageType(name)  # an unknown one is refused with the tensor's key
        if (module, name) in self._FUNCTIONS:
            return _Function(self._FUNCTIONS[(module, name)])
        raise _FileError(f"{self._path}: refusing to unpickle {module:.60}.{name:.60} (only tensors are read)")

    def persistent_load(self, pid: Any) -> _StorageRef:
        return _StorageRef(pid)


# --- building the arrays ----------------------------------------------------------------------------------

def _is_int(x) -> bool:
    return type(x) is int and -_MAX_INT < x < _MAX_INT


class _Storages:
    """The zip's storage records, each read once, checked against the dtype and length the pickle claims."""

    def __init__(self, zf: zipfile.ZipFile, prefix: str):
        self._zf, self._prefix = zf, prefix
        self._read: dict[str, np.ndarray] = {}

    def get(self, pid, fail: Callable[[str], ValueError]) -> np.ndarray:
        if not (type(pid) is tuple and len(pid) == 5 and pid[0] == "storage"):
            raise fail("its storage is not a ('storage', type, key, location, size) record")
        _, stype, key, _location, numel = pid
        if not isinstance(stype, _StorageType):
            raise fail("its storage type is not a torch storage class")
        if stype.dtype is None:
            raise fail(f"unsupported storage type torch.{stype.name:.60}")
        if type(key) is not str or not _is_int(numel) or numel < 0:
            raise fail("malformed storage record (key or size)")
        dtype = stype.dtype
        if key in self._read:
            got = self._read[key]
            if got.dtype != dtype or len(got) != numel:
                raise fail(f"storage {_name(key)} is read both as {len(got)} {got.dtype} and as {numel} {dtype}")
            return got
        record = f"{self._prefix}/data/{key}" if self._prefix else f"data/{key}"
        try:
            info = self._zf.getinfo(record)
        except KeyError:
            raise fail(f"its storage record {_name(record)} is missing from the archive")
        if info.file_size != numel * dtype.itemsize:
            raise fail(f"storage {_name(key)} claims {numel} {dtype} elements ({numel * dtype.itemsize} bytes) "
                 f"but its record holds {info.file_size} bytes")
        raw = self._zf.read(info)
        if len(raw) != numel * dtype.itemsize:
            raise fail(f"storage {_name(key)}: record read short ({len(raw)} of {info.file_size} bytes)")
        if dtype == np.bool_:
            data = np.frombuffer(raw, np.uint8) != 0  # bytes other than 0/1 are not valid NumPy bools
        else:
            data = np.frombuffer(raw, dtype.newbyteorder("<"))
        self._read[key] = data
        return data


def _tensor(ref: _TensorRef, fail: Callable[[str], ValueError], storages: _Storages) -> np.ndarray:
    if not 4 <= len(ref.args) <= 7:
        raise fail(f"malformed _rebuild_tensor_v2 call ({len(ref.args)} arguments)")
    storage, offset, size, stride = ref.args[:4]
    if not isinstance(storage, _StorageRef):
        raise fail("its storage is not a storage record of the archive")
    data = storages.get(storage.pid, fail)
    if not (_is_int(offset) and type(size) is tuple and type(stride) is tuple
            and all(_is_int(n) for n in size) and all(_is_int(s) for s in stride)):
        raise fail(f"offset, size and stride must be integers below 2**62 "
             f"(got {type(offset).__name__}, {type(size).__name__}, {type(stride).__name__})")
    if len(size) != len(stride) or len(size) > _MAX_DIMS:
        raise fail(f"{len(size)} sizes and {len(stride)} strides (at most {_MAX_DIMS} dimensions)")
    if offset < 0 or min(size, default=0) < 0 or min(stride, default=0) < 0:
        raise fail(f"negative offset, size or stride (offset {offset}, size {size}, stride {stride})")
    numel = math.prod(size)
    where = f"offset {offset}, size {size}, stride {stride}"
    if numel == 0:
        if offset > len(data) or max(size, default=0) > 2**31:
            raise fail(f"empty tensor with {where} over a {len(data)}-element storage")
        return np.zeros(size, data.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= len(data):
        raise fail(f"{where} reach element {last} of a {len(data)}-element storage")
    itemsize = data.dtype.itemsize
    if numel > len(data) and numel * itemsize > _MAX_REPEAT_BYTES:
        raise fail(f"{where} repeat a {len(data)}-element storage into {numel * itemsize} bytes "
             f"(more than {_MAX_REPEAT_BYTES})")
    contiguous = [math.prod(size[i + 1:]) for i in range(len(size))]
    if all(n == 1 or s == c for n, s, c in zip(size, stride, contiguous)):
        return data[offset:offset + numel].reshape(size).copy()
    # checked above: every element lies inside data[offset:]; a size-1 dimension's stride is never used
    strides = tuple((s if n > 1 else 0) * itemsize for n, s in zip(size, stride))
    return np.lib.stride_tricks.as_strided(data[offset:], shape=size, strides=strides, writeable=False).copy()


# --- formats ----------------------------------------------------------------------------------------------

def _read_torch_zip(path: str) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pkl:
            raise _FileError(f"{path}: zip file without data.pkl, not a PyTorch checkpoint")
        prefix = pkl[0][: -len("/data.pkl")] if "/" in pkl[0] else ""
        byteorder = f"{prefix}/byteorder"
        if byteorder in names and zf.read(byteorder).strip() != b"little":
            raise _FileError(f"{path}: big-endian PyTorch checkpoints are not supported")
        with zf.open(pkl[0]) as fh:
            try:
                obj = _RestrictedUnpickler(fh, path).load()
            except _FileError:
                raise
            except Exception as e:  # the pickle machine raises assorted errors on corrupt opcodes
                raise _FileError(f"{path}: corrupt pickle {_name(pkl[0])} ({_one_line(e)})") from None
        refs = _unwrap(obj, path)
        storages = _Storages(zf, prefix)
        out = {}
        for key, ref in refs.items():
            def fail(why: str, key=key) -> ValueError:
                return _FileError(f"{path}: tensor {_name(key)}: {why}")
            out[key] = _tensor(ref, fail, storages)
        return out


def _read_torch_legacy(path: str, head: bytes) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        if not head.startswith(b"\x80"):  # legacy torch.save output starts with a protocol-2 pickle
            raise _FileError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle)") from None
        raise _FileError(f"{path}: legacy (non-zip) PyTorch file; install torch to read it, "
                         "or re-save it with torch.save or as .safetensors") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load's errors on a refused or damaged pickle vary by version
        raise _FileError(f"{path}: torch.load failed ({_one_line(e)})") from None
    tensors = _unwrap(obj, path, lambda v: isinstance(v, torch.Tensor))
    return {k: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy() for k, v in tensors.items()}


def _is_tensor(v) -> bool:
    return isinstance(v, (np.ndarray, _TensorRef))


def _unwrap(obj: Any, path: str, is_tensor: Callable[[Any], bool] = _is_tensor) -> dict[str, Any]:
    # checkpoints sometimes nest the weights ({"state_dict": ...}, {"model": ...}); the depth is bounded
    # because a pickle can make a dict that contains itself
    for _ in range(8):
        if not isinstance(obj, dict) or any(is_tensor(v) for v in obj.values()):
            break
        nested = [obj[k] for k in ("state_dict", "model", "model_state_dict") if isinstance(obj.get(k), dict)]
        if not nested:
            raise _FileError(f"{path}: no tensors found at the top level or under state_dict/model")
        obj = nested[0]
    if not isinstance(obj, dict) or not any(is_tensor(v) for v in obj.values()):
        raise _FileError(f"{path}: expected a state dict (name -> tensor), got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        if not is_tensor(v):
            continue
        if type(k) is not str:
            raise _FileError(f"{path}: a tensor's key is a {type(k).__name__}, not a string")
        name = k[len("module."):] if k.startswith("module.") else k
        if name in out:
            raise _FileError(f"{path}: both {_name(name)} and {_name('module.' + name)} are in the file")
        out[name] = v
    return out


def _read_npz(path: str) -> dict[str, np.ndarray]:
    loaded = np.load(path, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise _FileError(f"{path}: a single .npy array, not an .npz archive of named arrays")
    with loaded as f:
        members = set(f.zip.namelist())
        out = {}
        for key in f.files:
            member = key + ".npy" if key + ".npy" in members else key
            try:
                with f.zip.open(member) as fh:
                    version = np.lib.format.read_magic(fh)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                        np.lib.format.read_array_header_2_0
                    dtype = read(fh)[2]
            except _READ_ERRORS:
                dtype = None  # a damaged header: f[key] below says how
            if dtype is not None and dtype.hasobject:
                raise _FileError(f"{path}: array {_name(key)} holds Python objects ({dtype}), which are "
                                 "read only by unpickling; refusing it (save numeric arrays only)")
            out[key] = f[key]
        return out


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    try:
        return load_file(path)
    except (SafetensorError, TypeError) as e:  # TypeError: a dtype NumPy lacks
        raise _FileError(f"{path}: unreadable .safetensors file ({_one_line(e)})") from None


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a state dict file into ``{torch key: numpy array}`` without running pickled code.

    Damaged or crafted files raise a one-line ``ValueError`` naming the file (and the tensor, for a
    ``.pth`` whose layout does not fit its storage); a missing file raises ``FileNotFoundError``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weight file not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".safetensors":
            return _read_safetensors(path)
        if ext == ".npz":
            return _read_npz(path)
        if ext == ".onnx":
            from jaxcnn.weights.onnx_io import read_onnx
            return read_onnx(path)
        if ext in (".pth", ".pt", ".bin", ".ckpt"):
            if zipfile.is_zipfile(path):
                return _read_torch_zip(path)
            with open(path, "rb") as fh:
                head = fh.read(4)
            if head.startswith(b"PK"):
                raise _FileError(f"{path}: truncated zip archive (its end-of-archive record is missing): "
                                 "the file was cut short; download or copy it again")
            return _read_torch_legacy(path, head)
    except _FileError:
        raise
    except _READ_ERRORS as e:
        raise ValueError(f"{path}: unreadable weight file ({_one_line(e)})") from None
    raise ValueError(f"{path}: unknown weight format {ext!r}; use .safetensors, .npz, .pth or .onnx")


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
