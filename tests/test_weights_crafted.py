"""Crafted weight files: tensors whose layout does not fit their storage, damaged archives, object arrays.

``torch_pickle`` writes the pickle of a state dict the way ``torch.save`` does (the same opcodes and
globals as ``tests/data/torch_format.pth``), from layouts given by hand, so that no PyTorch is needed;
``tests/test_weights_fuzz.py`` uses it too.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from jaxcnn.weights import read_state_dict

DATA = os.path.join(os.path.dirname(__file__), "data")
REAL = os.path.join(DATA, "torch_format.pth")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- writing torch-format pickles by hand -------------------------------------------------------------------

class Global:
    def __init__(self, module: str, name: str):
        self.module, self.name = module, name


class Reduce:
    def __init__(self, fn, args: tuple):
        self.fn, self.args = fn, args


class PersistentId:
    def __init__(self, pid: tuple):
        self.pid = pid


class Ordered:
    """collections.OrderedDict(), then SETITEMS: how torch.save writes a state dict."""

    def __init__(self, items):
        self.items = list(items)


def emit(obj, out: list[bytes]) -> None:
    if obj is None:
        out.append(b"N")
    elif obj is True or obj is False:
        out.append(b"\x88" if obj else b"\x89")
    elif isinstance(obj, int):
        if 0 <= obj < 256:
            out.append(b"K" + bytes([obj]))
        elif -2**31 <= obj < 2**31:
            out.append(b"J" + struct.pack("<i", obj))
        else:
            raw = obj.to_bytes((obj.bit_length() + 8) // 8, "little", signed=True)
            out.append(b"\x8a" + bytes([len(raw)]) + raw)
    elif isinstance(obj, str):
        raw = obj.encode("utf-8")
        out.append(b"X" + struct.pack("<I", len(raw)) + raw)
    elif isinstance(obj, tuple):
        out.append(b"(")
        for x in obj:
            emit(x, out)
        out.append(b"t")
    elif isinstance(obj, dict):
        out.append(b"}(")
        for k, v in obj.items():
            emit(k, out)
            emit(v, out)
        out.append(b"u")
    elif isinstance(obj, list):
        out.append(b"](")
        for x in obj:
            emit(x, out)
        out.append(b"e")
    elif isinstance(obj, Global):
        out.append(f"c{obj.module}\n{obj.name}\n".encode())
    elif isinstance(obj, Reduce):
        emit(obj.fn, out)
        emit(tuple(obj.args), out)
        out.append(b"R")
    elif isinstance(obj, PersistentId):
        emit(obj.pid, out)
        out.append(b"Q")
    elif isinstance(obj, Ordered):
        emit(Reduce(Global("collections", "OrderedDict"), ()), out)
        out.append(b"(")
        for k, v in obj.items:
            emit(k, out)
            emit(v, out)
        out.append(b"u")
    else:
        raise TypeError(type(obj))


def dumps(obj) -> bytes:
    out = [b"\x80\x02"]
    emit(obj, out)
    return b"".join(out) + b"."


def tensor(storage_key: str, numel: int, offset, size, stride, storage_type: str = "FloatStorage"):
    """What ``torch.save`` writes for one tensor: ``_rebuild_tensor_v2(storage, offset, size, stride, ...)``."""
    storage = PersistentId(("storage", Global("torch", storage_type), storage_key, "cpu", numel))
    return Reduce(Global("torch._utils", "_rebuild_tensor_v2"),
                  (storage, offset, size, stride, False, Reduce(Global("collections", "OrderedDict"), ())))


def write_pth(path, pickle_bytes: bytes, records: dict[str, bytes], prefix: str = "archive") -> None:
    """A torch-format zip: ``prefix/data.pkl``, ``prefix/byteorder``, ``prefix/data/<key>`` (stored, fixed dates)."""
    with zipfile.ZipFile(path, "w") as zf:
        def put(name, data):
            zf.writestr(zipfile.ZipInfo(f"{prefix}/{name}", (1980, 1, 1, 0, 0, 0)), data)
        put("data.pkl", pickle_bytes)
        put("byteorder", b"little")
        for key, raw in records.items():
            put(f"data/{key}", raw)
        put("version", b"3\n")


def real_parts() -> tuple[str, bytes, dict[str, bytes]]:
    """(prefix, data.pkl, {storage key: record bytes}) of the file torch.save wrote."""
    with zipfile.ZipFile(REAL) as zf:
        pkl = next(n for n in zf.namelist() if n.endswith("/data.pkl"))
        prefix = pkl[: -len("/data.pkl")]
        records = {n[len(prefix) + 6:]: zf.read(n) for n in zf.namelist() if n.startswith(f"{prefix}/data/")}
        return prefix, zf.read(pkl), records


FOUR = np.arange(1, 5, dtype=np.float32)  # the storage of the crafted files: 4 floats, 16 bytes


def crafted(path, *tensors, records=None) -> str:
    """A .pth of ``{name: tensor}`` over 4-float storages (keys "0" and "1")."""
    records = records if records is not None else {"0": FOUR.tobytes(), "1": FOUR.tobytes()}
    write_pth(path, dumps(Ordered(tensors)), records)
    return str(path)


def _brute_force(storage: np.ndarray, offset: int, size: tuple, stride: tuple) -> np.ndarray:
    out = np.empty(size, storage.dtype)
    for index in np.ndindex(*size):
        out[index] = storage[offset + sum(i * s for i, s in zip(index, stride))]
    return out


# --- the emitter writes what torch.save writes ----------------------------------------------------------------

def test_hand_written_pickle_reads_like_the_real_one(tmp_path):
    # the real file's tensors as layouts: (key, storage type, record, numel, offset, size, stride)
    layouts = [("conv.weight", "FloatStorage", "0", 54, 0, (2, 3, 3, 3), (27, 9, 3, 1)),
               ("bn.running_var", "DoubleStorage", "1", 2, 0, (2,), (1,)),
               ("bn.num_batches_tracked", "LongStorage", "2", 1, 0, (), ()),
               ("fc.weight", "FloatStorage", "3", 24, 0, (6, 4), (1, 6)),
               ("fc.bias", "FloatStorage", "3", 24, 8, (3,), (1,)),
               ("half", "HalfStorage", "4", 5, 0, (5,), (1,)),
               ("bf16", "BFloat16Storage", "5", 3, 0, (3,), (1,)),
               ("mask", "BoolStorage", "6", 3, 0, (3,), (1,))]
    prefix, real_pkl, records = real_parts()
    pkl = dumps(Ordered((k, tensor(r, n, o, s, st, t)) for k, t, r, n, o, s, st in layouts))
    write_pth(tmp_path / "w.pth", pkl, records)
    got, want = read_state_dict(tmp_path / "w.pth"), read_state_dict(REAL)
    assert list(got) == list(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


@pytest.mark.parametrize("offset,size,stride", [
    (1, (3,), (1,)),            # a slice
    (0, (2, 2), (1, 2)),        # a transpose
    (3, (2, 2), (0, 0)),        # expand of one element
    (0, (2, 3), (1, 1)),        # overlapping windows
    (1, (1, 3), (2**61, 1)),    # a size-1 dimension's stride is never used
    (0, (), ()),                # a scalar
    (4, (0, 5), (5, 1)),        # empty, offset at the storage's end
])
def test_valid_layouts_match_brute_force(tmp_path, offset, size, stride):
    path = crafted(tmp_path / "w.pth", ("w", tensor("0", 4, offset, size, stride)))
    got = read_state_dict(path)["w"]
    np.testing.assert_array_equal(got, _brute_force(FOUR, offset, size, stride))
    assert got.shape == size and got.dtype == np.float32 and got.flags.c_contiguous
    assert got.base is None or got.base.base is None  # a copy, not a view of the archive's buffer


def test_shared_storage_and_module_prefix(tmp_path):
    path = crafted(tmp_path / "w.pth", ("module.a", tensor("0", 4, 0, (2,), (1,))),
                   ("module.b", tensor("0", 4, 2, (2,), (1,))))
    got = read_state_dict(path)
    np.testing.assert_array_equal(got["a"], FOUR[:2])
    np.testing.assert_array_equal(got["b"], FOUR[2:])


# --- refused layouts: each a one-line ValueError naming the file and the key ---------------------------------

REFUSED = {
    # the issue's case: 64 floats claimed over a 4-float storage (returned heap bytes)
    "size_over_storage": (tensor("0", 4, 0, (64,), (1,)), r"reach element 63 of a 4-element storage"),
    # a far-out stride (segfaulted)
    "far_stride": (tensor("0", 4, 0, (2,), (2**40,)), r"reach element 1099511627776 of a 4-element"),
    "stride_past_int64": (tensor("0", 4, 0, (3,), (2**61,)), r"reach element"),
    "stride_beyond_2_62": (tensor("0", 4, 0, (2,), (2**70,)), r"integers below 2\*\*62"),
    "offset_past_end": (tensor("0", 4, 4, (1,), (1,)), r"reach element 4 of a 4-element"),
    "negative_offset": (tensor("0", 4, -1, (2,), (1,)), r"negative offset"),
    "negative_stride": (tensor("0", 4, 3, (2,), (-1,)), r"negative offset, size or stride"),
    "negative_size": (tensor("0", 4, 0, (-2, -2), (1, 1)), r"negative offset, size or stride"),
    "sizes_strides_differ": (tensor("0", 4, 0, (2, 2), (1,)), r"2 sizes and 1 strides"),
    "string_size": (tensor("0", 4, 0, "ab", (1,)), r"integers below"),
    "bool_offset": (tensor("0", 4, True, (1,), (1,)), r"integers below"),
    "too_many_dims": (tensor("0", 4, 0, (1,) * 65, (0,) * 65), r"65 sizes"),
    "huge_repeat": (tensor("0", 4, 0, (2**20, 2**20), (0, 0)), r"repeat a 4-element storage"),
    "huge_empty": (tensor("0", 4, 0, (2**40, 0), (0, 1)), r"empty tensor"),
    # wrong dtype: a 16-byte record read as 4 doubles (32 bytes)
    "wrong_dtype": (tensor("0", 4, 0, (4,), (1,), "DoubleStorage"), r"claims 4 float64 elements \(32 bytes\) "
                    r"but its record holds 16 bytes"),
    "numel_over_record": (tensor("0", 8, 0, (8,), (1,)), r"claims 8 float32 elements"),
    "unknown_storage_type": (tensor("0", 4, 0, (2,), (1,), "ComplexFloatStorage"),
                             r"unsupported storage type torch.ComplexFloatStorage"),
    "missing_record": (tensor("9", 4, 0, (2,), (1,)), r"storage record 'archive/data/9' is missing"),
    "storage_not_a_record": (Reduce(Global("torch._utils", "_rebuild_tensor_v2"), (5, 0, (1,), (1,), False, None)),
                             r"not a storage record"),
    "short_pid": (Reduce(Global("torch._utils", "_rebuild_tensor_v2"),
                         (PersistentId(("storage", Global("torch", "FloatStorage"), "0")), 0, (1,), (1,))),
                  r"not a \('storage'"),
    "too_few_arguments": (Reduce(Global("torch._utils", "_rebuild_tensor_v2"), (1, 2)), r"2 arguments"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_layouts_name_the_key(tmp_path, case):
    entry, message = REFUSED[case]
    path = crafted(tmp_path / f"{case}.pth", ("ok", tensor("1", 4, 0, (4,), (1,))), ("layer1.weight", entry))
    with pytest.raises(ValueError, match=message) as e:
        read_state_dict(path)
    text = str(e.value)
    assert "\n" not in text and text.startswith(f"{path}: tensor 'layer1.weight': "), text


def test_storage_read_with_two_dtypes_is_refused(tmp_path):
    path = crafted(tmp_path / "w.pth", ("a", tensor("0", 4, 0, (4,), (1,))),
                   ("b", tensor("0", 8, 0, (8,), (1,), "HalfStorage")))
    with pytest.raises(ValueError, match=r"tensor 'b': storage '0' is read both as 4 float32 and as 8 float16"):
        read_state_dict(path)


@pytest.mark.parametrize("obj,message", [
    (Ordered([(3, tensor("0", 4, 0, (4,), (1,)))]), r"a tensor's key is a int"),
    (Ordered([("a", tensor("0", 4, 0, (4,), (1,))), ("module.a", tensor("0", 4, 0, (4,), (1,)))]),
     r"both 'a' and 'module.a'"),
    (Ordered([("w", 1)]), r"no tensors found"),
    ([tensor("0", 4, 0, (4,), (1,))], r"expected a state dict \(name -> tensor\), got list"),
    (Reduce(Global("torch", "Tensor"), ()), r"refusing to unpickle torch.Tensor"),
    (Reduce(Global("torch._utils", "_rebuild_parameter"), ()), r"corrupt pickle"),
])
def test_refused_structures(tmp_path, obj, message):
    path = crafted(tmp_path / "w.pth", records={"0": FOUR.tobytes()})
    write_pth(path, dumps(obj), {"0": FOUR.tobytes()})
    with pytest.raises(ValueError, match=message) as e:
        read_state_dict(path)
    assert "\n" not in str(e.value)


def test_self_containing_dict_is_refused(tmp_path):
    # {"state_dict": <itself>} through the memo: the nesting must not be followed forever
    pkl = b"\x80\x02}q\x00X\x0a\x00\x00\x00state_dicth\x00s."
    path = tmp_path / "loop.pth"
    write_pth(path, pkl, {})
    with pytest.raises(ValueError, match="no tensors found|expected a state dict"):
        read_state_dict(path)


def test_build_on_a_tensor_or_function_is_refused(tmp_path):
    # BUILD (setstate) on what the unpickler hands out: on a function it could alter the reader itself
    for target in (tensor("0", 4, 0, (4,), (1,)), Global("torch._utils", "_rebuild_tensor_v2")):
        out = [b"\x80\x02"]
        emit(Reduce(Global("collections", "OrderedDict"), ()), out)
        emit("w", out)
        emit(target, out)
        emit((None, {"fn": None, "__defaults__": (1,)}), out)
        out.append(b"bs.")  # BUILD, SETITEM, STOP
        path = tmp_path / "build.pth"
        write_pth(path, b"".join(out), {"0": FOUR.tobytes()})
        with pytest.raises(ValueError, match=r"corrupt pickle .*TypeError: BUILD on a"):
            read_state_dict(path)
    with np.load(os.path.join(DATA, "torch_format_expected.npz")) as want:
        np.testing.assert_array_equal(read_state_dict(REAL)["conv.weight"], want["conv.weight"])


# --- damaged archives ----------------------------------------------------------------------------------------

def test_truncated_zip_is_reported_as_truncated(tmp_path):
    raw = open(REAL, "rb").read()
    for cut in (len(raw) // 2, len(raw) - 10, 30):
        path = tmp_path / "cut.pth"
        path.write_bytes(raw[:cut])
        with pytest.raises(ValueError, match="truncated zip archive") as e:
            read_state_dict(path)
        assert "legacy" not in str(e.value) and "\n" not in str(e.value)


def test_damaged_record_is_unreadable(tmp_path):
    raw = bytearray(open(REAL, "rb").read())
    with zipfile.ZipFile(REAL) as zf:
        info = zf.getinfo("torch_format/data/0")
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    raw[info.header_offset + 30 + name_len + extra_len + 5] ^= 0xFF  # a byte of conv.weight
    path = tmp_path / "crc.pth"
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"unreadable weight file \(BadZipFile: Bad CRC-32"):
        read_state_dict(path)


def test_legacy_pickle_file_is_still_refused_without_torch(tmp_path):
    path = tmp_path / "legacy.pth"
    # what torch.save(_use_new_zipfile_serialization=False) starts with: a protocol-2 pickle of a magic number
    path.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps({"a": 1}, protocol=2))
    try:
        import torch  # noqa: F401
        pytest.skip("PyTorch is installed: legacy files are read with torch.load")
    except ImportError:
        pass
    with pytest.raises(ValueError, match=r"legacy \(non-zip\) PyTorch file; install torch"):
        read_state_dict(path)


def test_zip_without_pickle(tmp_path):
    path = tmp_path / "w.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/readme.txt", b"x")
    with pytest.raises(ValueError, match="zip file without data.pkl"):
        read_state_dict(path)


# --- .npz and .safetensors -----------------------------------------------------------------------------------

def test_npz_object_array_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, fine=np.ones(2, np.float32), bad=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(ValueError, match=r"obj.npz: array 'bad' holds Python objects \(object\)") as e:
        read_state_dict(path)
    assert "\n" not in str(e.value)


def test_npz_that_is_a_single_npy(tmp_path):
    path = tmp_path / "one.npz"
    with open(path, "wb") as fh:
        np.save(fh, np.ones(3))
    with pytest.raises(ValueError, match="a single .npy array, not an .npz archive"):
        read_state_dict(path)


def test_npz_truncated(tmp_path):
    buf = io.BytesIO()
    np.savez(buf, w=np.ones(1000, np.float32))
    (tmp_path / "cut.npz").write_bytes(buf.getvalue()[:2000])
    with pytest.raises(ValueError, match="cut.npz: unreadable weight file") as e:
        read_state_dict(tmp_path / "cut.npz")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("raw", [
    b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":1}",                                  # header length past the end
    b"\x38\x00\x00\x00\x00\x00\x00\x00" + b'{"w":{"dtype":"Q9","shape":[],"data_offsets":[0,0]}}'.ljust(56),
    b"\x40\x00\x00\x00\x00\x00\x00\x00" + b'{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}'.ljust(64),
])
def test_corrupt_safetensors_is_one_line(tmp_path, raw):
    path = tmp_path / "w.safetensors"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=r"w.safetensors: unreadable") as e:
        read_state_dict(path)
    assert "\n" not in str(e.value)


# --- a crash would fail the test: out of process -------------------------------------------------------------

def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env=env)


def test_issue_cases_do_not_crash_out_of_process(tmp_path):
    paths = [crafted(tmp_path / f"{case}.pth", ("w", REFUSED[case][0]))
             for case in ("size_over_storage", "far_stride", "stride_past_int64")]
    code = ("import sys\nfrom jaxcnn.weights.state_dict_io import read_state_dict\n"
            "for p in sys.argv[1:]:\n"
            "    try:\n        print('read', read_state_dict(p)['w'][:4])\n"
            "    except ValueError as e:\n        print('refused', e)\n")
    done = _run(code, *paths)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    lines = done.stdout.splitlines()
    assert len(lines) == 3 and all(line.startswith("refused ") for line in lines), done.stdout


def test_predict_with_crafted_weights_exits_2(tmp_path):
    path = crafted(tmp_path / "crafted.pth", ("conv1.weight", REFUSED["far_stride"][0]))
    done = _run("import sys; from jaxcnn.cli.main import main; sys.exit(main(sys.argv[1:]))",
                "predict", "--model", "resnet18", "--weights", path)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("jaxcnn predict: error: ") and "tensor 'conv1.weight'" in last, done.stderr


def test_neither_zip_nor_pickle(tmp_path):
    path = tmp_path / "w.pth"
    path.write_bytes(b"<html>not found</html>")
    try:
        import torch  # noqa: F401
        pytest.skip("PyTorch is installed: such files go to torch.load")
    except ImportError:
        pass
    with pytest.raises(ValueError, match=r"not a PyTorch checkpoint \(neither a zip archive nor a pickle\)"):
        read_state_dict(path)
