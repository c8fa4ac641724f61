"""A switch of the CPU policy (``cpu.set_mode``, ``cpu.winograd_disabled``) takes effect for the next call.

The package's compiled programs are ``cpu.jit``s, keyed on ``cpu.policy.key()``: after a switch the
next call traces a new program under the new policy, and switching back reuses the first one. This
needs the fast paths themselves (one CPU device: the suite's 8 simulated devices turn the oneDNN
convolutions off), so ONE child process (``python -m tests.test_cpu_policy OUT``) runs with JAX's
default device count and writes what it saw to ``results.json``.
"""

from __future__ import annotations

import ast
import json
import os
import pathlib
import sys

import pytest

from tests.single_device import run_child

ROOT = pathlib.Path(__file__).resolve().parent.parent
TRACES = {"model": 0}   # the child's model counts its traces (Python runs only while tracing)


def _model():
    import flax.linen as nn
    import jax.numpy as jnp

    from jaxcnn import layers

    class Net(nn.Module):
        """Two 3x3 convolutions wide enough for oneDNN and Winograd at 32 px, a dense layer."""

        @nn.compact
        def __call__(self, x, train: bool = False):
            TRACES["model"] += 1
            feats = {}
            x = feats["conv0"] = nn.relu(layers.conv(32, 3, padding=1, name="conv0")(x))
            x = feats["conv1"] = nn.relu(layers.conv(32, 3, padding=1, name="conv1")(x))
            return nn.Dense(10, name="fc")(jnp.mean(x, axis=(1, 2))), feats

    return Net()


def _kernels(text: str) -> list[str]:
    return [k for k in ("jaxcnn_conv_forward", "jaxcnn_winograd") if k in text]


def child(out_dir: str) -> None:
    import jax
    import numpy as np

    from jaxcnn import cpu
    from jaxcnn.cpu import policy
    from jaxcnn.inputopt import attacks, problem

    model = _model()
    x = np.random.default_rng(0).uniform(size=(4, 32, 32, 3)).astype(np.float32)
    y = np.arange(4)
    variables = jax.jit(model.init)(jax.random.key(0), x)
    results = {"device_count": jax.device_count(), "onednn_convs": policy.onednn_convs()}

    def call(name):
        """Runs the clean forward and PGD; records whether each traced and what the forward calls. (PGD calls
        the forward inside, on its batch of 4: the forward here takes 2 images so that its trace is its own.)"""
        before = TRACES["model"]
        logits = np.asarray(problem.logits(model, variables, x[:2]))
        traced_forward = TRACES["model"] > before
        before = TRACES["model"]
        adv = np.asarray(attacks.pgd(model, variables, x, y, eps=0.03, steps=2).images)
        results[name] = {"pgd_traced": TRACES["model"] > before, "forward_traced": traced_forward,
                         "kernels": _kernels(problem.logits.lower(model, variables, x[:2]).as_text()),
                         "adv": adv.tolist(), "logits": logits.tolist()}

    call("auto")
    cpu.set_mode("reference")
    call("reference")
    cpu.set_mode("auto")
    call("auto_again")
    with cpu.winograd_disabled():
        call("no_winograd")
    call("auto_after_winograd")
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f)


@pytest.fixture(scope="module")
def results():
    from jaxcnn.cpu import build
    if not build.available():
        pytest.skip(f"the CPU fast path is not built: {build.why_unavailable()}")
    return run_child("tests.test_cpu_policy", timeout=600)


def test_the_child_has_the_fast_paths(results):
    assert results["device_count"] == 1 and results["onednn_convs"]
    assert results["auto"]["pgd_traced"] and results["auto"]["forward_traced"]
    assert results["auto"]["kernels"] == ["jaxcnn_conv_forward", "jaxcnn_winograd"], results["auto"]["kernels"]


def test_reference_mode_retraces_without_the_custom_calls(results):
    ref = results["reference"]
    assert ref["pgd_traced"] and ref["forward_traced"]
    assert ref["kernels"] == []
    # the same computation by other kernels: equal up to float32 rounding, not bit for bit necessarily
    import numpy as np
    np.testing.assert_allclose(ref["logits"], results["auto"]["logits"], rtol=1e-4, atol=1e-5)


def test_winograd_switch_retraces_with_direct_convolutions(results):
    off = results["no_winograd"]
    assert off["pgd_traced"] and off["forward_traced"]
    assert off["kernels"] == ["jaxcnn_conv_forward"]


@pytest.mark.parametrize("name", ["auto_again", "auto_after_winograd"])
def test_switching_back_reuses_the_first_program(results, name):
    again = results[name]
    assert not again["pgd_traced"] and not again["forward_traced"]
    assert again["kernels"] == results["auto"]["kernels"]
    assert again["adv"] == results["auto"]["adv"] and again["logits"] == results["auto"]["logits"]


def test_every_compiled_program_of_inputopt_is_keyed_on_the_policy():
    """No ``jax.jit`` (or ``from jax import jit``) in jaxcnn/inputopt: they all use ``cpu.jit``."""
    found = []
    for path in sorted((ROOT / "jaxcnn" / "inputopt").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr in ("jit", "pmap") and isinstance(node.value, ast.Name)
                    and node.value.id == "jax"):
                found.append(f"{path.name}:{node.lineno}")
            if isinstance(node, ast.ImportFrom) and node.module == "jax" and any(a.name == "jit" for a in node.names):
                found.append(f"{path.name}:{node.lineno}")
    assert found == []


if __name__ == "__main__":
    child(sys.argv[1])
