"""Fuzzing the ``.pth`` reader with mutations of a file torch.save wrote (``tests/data/torch_format.pth``).

Three kinds of mutation: the pickle's values (the integers that are offsets, sizes, strides and storage
lengths, the storage types, the storage keys), the pickle's bytes (each mutated pickle re-zipped with a
correct CRC, so the unpickler sees it), and the zip file's bytes. Whatever comes out must be either a
one-line ``ValueError`` naming the file or arrays whose every element is an element of the file's
storage records; any other exception fails the test, and a crash ends the test run (the crafted crash
cases run out of process in ``tests/test_weights_crafted.py``). Deterministic (``derandomize``).
"""

from __future__ import annotations

import collections
import pickletools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxcnn.weights import read_state_dict
from tests.test_weights_crafted import REAL, emit, real_parts, write_pth

PREFIX, PICKLE, RECORDS = real_parts()
OPS = list(pickletools.genops(PICKLE))
ENDS = [pos for _, _, pos in OPS[1:]] + [len(PICKLE)]
INT_OPS = [i for i, (op, _, _) in enumerate(OPS) if op.name in ("BININT1", "BININT", "BININT2")]
TORCH_GLOBALS = [i for i, (op, arg, _) in enumerate(OPS) if op.name == "GLOBAL" and arg.startswith("torch ")
                 and arg.endswith("Storage")]
STORAGE_KEYS = [i for i, (op, arg, _) in enumerate(OPS) if op.name == "BINUNICODE" and arg in RECORDS]
STORAGE_NAMES = ["FloatStorage", "DoubleStorage", "HalfStorage", "BFloat16Storage", "LongStorage", "IntStorage",
                 "ShortStorage", "CharStorage", "ByteStorage", "BoolStorage", "ComplexFloatStorage",
                 "UntypedStorage", "QInt8Storage"]

# every itemsize-aligned element of every storage record, by itemsize: what a returned array may contain
ELEMENTS = {size: {raw[i:i + size] for raw in RECORDS.values() for i in range(0, len(raw) - size + 1, size)}
            for size in (1, 2, 4, 8)}
KNOWN_DTYPES = {np.dtype(t) for t in (np.float32, np.float64, np.float16, np.int64, np.int32, np.int16, np.int8,
                                      np.uint8, np.bool_)} | {np.dtype("bfloat16")}

INTS = st.one_of(st.integers(0, 64), st.integers(-3, 300),
                 st.sampled_from([2**31 - 1, 2**31, 2**32, 2**61, 2**62 - 1, 2**62, 2**63 - 1, 2**63, 2**64,
                                  -2**31, -2**63, 2**100]),
                 st.integers(-2**70, 2**70))
VALUE_EDITS = st.lists(st.one_of(
    st.tuples(st.just("int"), st.sampled_from(INT_OPS), INTS),
    st.tuples(st.just("global"), st.sampled_from(TORCH_GLOBALS), st.sampled_from(STORAGE_NAMES)),
    st.tuples(st.just("key"), st.sampled_from(STORAGE_KEYS), st.sampled_from([*RECORDS, "7", "../0", ""])),
), min_size=1, max_size=4)
BYTE_EDITS = st.lists(st.tuples(st.sampled_from(["replace", "insert", "delete"]), st.integers(0, 1 << 20),
                                st.integers(0, 255)), min_size=1, max_size=4)

SETTINGS = settings(max_examples=500, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _encode(kind: str, value) -> bytes:
    if kind == "int":
        out: list[bytes] = []
        emit(value, out)
        return b"".join(out)
    if kind == "global":
        return f"ctorch\n{value}\n".encode()
    out = []
    emit(value, out)
    return b"".join(out)


def _edit_values(edits) -> bytes:
    spans = {i: _encode(kind, value) for kind, i, value in edits}  # the last edit of an op wins
    out, last = [], 0
    for i in sorted(spans):
        out += [PICKLE[last:OPS[i][2]], spans[i]]
        last = ENDS[i]
    return b"".join(out) + PICKLE[last:]


def _edit_bytes(data: bytes, edits) -> bytes:
    buf = bytearray(data)
    for kind, pos, byte in edits:
        pos %= len(buf) + (kind == "insert")
        if kind == "replace":
            buf[pos] = byte
        elif kind == "insert":
            buf.insert(pos, byte)
        elif len(buf) > 1:
            del buf[pos]
    return bytes(buf)


class Outcomes:
    def __init__(self):
        self.counts = collections.Counter()

    def check(self, path) -> None:
        try:
            got = read_state_dict(path)
        except ValueError as e:
            text = str(e)
            assert "\n" not in text and text.startswith(f"{path}: "), text
            self.counts["tensor refused" if ": tensor '" in text else "refused"] += 1
            return
        self.counts["read"] += 1
        assert isinstance(got, dict)
        for key, a in got.items():
            assert isinstance(key, str) and type(a) is np.ndarray, (key, type(a))
            assert a.dtype in KNOWN_DTYPES and a.flags.c_contiguous, (key, a.dtype)
            if a.size == 0:
                continue
            flat = a.reshape(-1)
            if a.dtype == np.bool_:
                assert flat.view(np.uint8).max() <= 1, key
                continue
            rows = flat.view(np.uint8).reshape(-1, a.dtype.itemsize)
            foreign = [bytes(r) for r in rows if bytes(r) not in ELEMENTS[a.dtype.itemsize]]
            assert not foreign, f"{key}: {len(foreign)} elements not from any storage record, e.g. {foreign[0]!r}"


@pytest.fixture
def pth(tmp_path):
    return tmp_path / "fuzz.pth"


def test_fuzz_pickle_values(pth):
    outcomes = Outcomes()

    @SETTINGS
    @given(VALUE_EDITS)
    def run(edits):
        write_pth(pth, _edit_values(edits), RECORDS, prefix=PREFIX)
        outcomes.check(pth)

    run()
    # the edits reach both sides of the layout checks
    assert outcomes.counts["read"] > 10 and outcomes.counts["tensor refused"] > 100, outcomes.counts


def test_fuzz_pickle_bytes(pth):
    outcomes = Outcomes()

    @SETTINGS
    @given(BYTE_EDITS)
    def run(edits):
        write_pth(pth, _edit_bytes(PICKLE, edits), RECORDS, prefix=PREFIX)
        outcomes.check(pth)

    run()
    assert outcomes.counts["read"] > 5 and outcomes.counts["refused"] > 100, outcomes.counts


def test_fuzz_zip_bytes(pth):
    outcomes = Outcomes()
    raw = open(REAL, "rb").read()

    @SETTINGS
    @given(BYTE_EDITS, st.one_of(st.none(), st.integers(0, len(raw))))
    def run(edits, cut):
        pth.write_bytes(_edit_bytes(raw, edits)[:cut])
        outcomes.check(pth)

    run()
    assert outcomes.counts["read"] > 5 and outcomes.counts["refused"] > 100, outcomes.counts


def test_unedited_round_trip_reads_the_real_file(pth):
    write_pth(pth, _edit_values([]), RECORDS, prefix=PREFIX)
    got, want = read_state_dict(pth), read_state_dict(REAL)
    assert sorted(got) == sorted(want) and all(np.array_equal(got[k], want[k]) for k in want)
