"""Weight files: safe .pth reading, formats, and the torchvision <-> Flax key map's errors."""

import io
import os
import pickle
import zipfile

import jax
import numpy as np
import pytest

import jaxcnn
from jaxcnn.weights import convert_state_dict, read_state_dict, to_torch_state_dict, write_state_dict

DATA = os.path.join(os.path.dirname(__file__), "data")


def test_reads_torch_zip_format_without_torch():
    # written by torch.save (tests/parity/make_refs.py): views, shared storage, f16/bf16/bool/int64/f64
    got = read_state_dict(os.path.join(DATA, "torch_format.pth"))
    with np.load(os.path.join(DATA, "torch_format_expected.npz")) as want:
        assert sorted(got) == sorted(want.files)
        for k in want.files:
            assert got[k].shape == want[k].shape, k
            np.testing.assert_array_equal(np.asarray(got[k], want[k].dtype), want[k], err_msg=k)
    assert got["half"].dtype == np.float16 and got["bn.running_var"].dtype == np.float64


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"w": _Evil()}))
    with pytest.raises(ValueError, match="refusing to unpickle posix.system|refusing to unpickle os.system"):
        read_state_dict(path)


@pytest.mark.parametrize("ext", [".safetensors", ".npz"])
def test_round_trip_formats(tmp_path, ext):
    state = {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "a.bias": np.ones(2, np.float32)}
    write_state_dict(state, tmp_path / f"w{ext}")
    got = read_state_dict(tmp_path / f"w{ext}")
    assert sorted(got) == sorted(state)
    np.testing.assert_array_equal(got["a.weight"], state["a.weight"])


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_state_dict(tmp_path / "missing.pth")
    (tmp_path / "w.h5").write_bytes(b"x")
    with pytest.raises(ValueError, match="unknown weight format"):
        read_state_dict(tmp_path / "w.h5")
    (tmp_path / "w.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="unreadable|pickled"):
        read_state_dict(tmp_path / "w.npz")


@pytest.fixture(scope="module")
def resnet18():
    model = jaxcnn.create_model("resnet18", num_classes=10)
    return model, jaxcnn.init_variables(model, 32)


def test_round_trip_through_torch_keys(resnet18):
    model, variables = resnet18
    state = to_torch_state_dict(variables)
    assert state["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)  # OIHW
    assert state["fc.weight"].shape == (10, 512)
    back = convert_state_dict(state, model, family="resnet", resolution=32)
    for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(back)):
        np.testing.assert_array_equal(np.asarray(a), b)


def test_key_errors_name_the_keys(resnet18):
    model, variables = resnet18
    state = to_torch_state_dict(variables)
    broken = dict(state)
    del broken["layer1.0.bn1.running_var"]
    broken["layer9.extra.weight"] = np.zeros(3, np.float32)
    broken["fc.weight"] = np.zeros((1000, 512), np.float32)
    with pytest.raises(ValueError) as e:
        convert_state_dict(broken, model, family="resnet", resolution=32, source="w.pth")
    msg = str(e.value)
    assert "\n" not in msg
    assert "missing keys: layer1.0.bn1.running_var" in msg
    assert "unexpected keys: layer9.extra.weight" in msg
    assert "fc.weight (1000, 512) (expected (10, 512))" in msg


def test_nested_and_data_parallel_checkpoints(tmp_path, resnet18):
    import safetensors.numpy  # noqa: F401  (a dependency; keeps the import honest)
    model, variables = resnet18
    state = {f"module.{k}": v for k, v in to_torch_state_dict(variables).items()}
    path = tmp_path / "w.npz"
    write_state_dict(state, path)
    got = read_state_dict(path)
    assert "module.fc.weight" in got  # npz keeps names; the prefix is stripped for .pth checkpoints only
    from jaxcnn.weights.state_dict_io import _unwrap
    unwrapped = _unwrap({"state_dict": state, "epoch": 3}, "x.pth")
    assert "fc.weight" in unwrapped and "module.fc.weight" not in unwrapped


def test_models_without_twin_load_their_own_export(tmp_path):
    from tests.tiny_model import register
    register()
    model = jaxcnn.create_model("tiny_cnn")
    variables = jaxcnn.init_variables(model, 16, seed=3)
    path = tmp_path / "tiny.safetensors"
    jaxcnn.write_state_dict(to_torch_state_dict(variables), path)
    _, loaded = jaxcnn.load_pretrained("tiny_cnn", path)
    for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(loaded)):
        np.testing.assert_array_equal(a, b)


def test_pickle_protocol_file_is_not_a_zip(tmp_path):
    path = tmp_path / "legacy.pth"
    buf = io.BytesIO()
    pickle.dump({"a": 1}, buf)
    path.write_bytes(buf.getvalue())
    try:
        import torch  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="legacy"):
            read_state_dict(path)
