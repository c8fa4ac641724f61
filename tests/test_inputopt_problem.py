"""The shared input-optimisation module (``jaxcnn.inputopt.problem``): the ascent loop's CPU rule, the checks.

``Ascent`` runs an iterative method's step N times: on the CPU fast path one compiled step called N
times from Python, elsewhere one ``lax.scan``. On the single-device default path (ONE child process,
``python -m tests.test_inputopt_problem OUT``: the suite's 8 simulated devices are not the default
path) Carlini-Wagner and integrated gradients compile their step once, call it N times, and give
what the scan path gives (``cpu.steps_per_call`` patched to run all steps in one call) up to float32
rounding.
"""

from __future__ import annotations

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.inputopt import objectives as O, problem
from tests.single_device import run_child

CW_STEPS, CW_SEARCHES, IG_STEPS = 12, 2, 16


def _counting(loop: problem.Ascent) -> list:
    """Counts the calls of ``loop``'s compiled chunk (each call runs one or more steps)."""
    calls, compiled = [], loop.compiled
    loop.compiled = lambda *a, **k: calls.append(k["n"]) or compiled(*a, **k)
    return calls


def child(out_dir: str) -> None:
    from jaxcnn import cpu
    from jaxcnn.inputopt import attacks, attribution
    from tests.tiny_model import TinyCNN

    model = TinyCNN(num_classes=10)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(4, 16, 16, 3)).astype(np.float32)
    y = np.arange(4)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.asarray(x))
    unit = O.class_logit(y)
    cw_calls, ig_calls = _counting(attacks._cw_loop), _counting(attribution._ig_loop)
    results = {"device_count": jax.device_count(), "steps_per_call": cpu.steps_per_call(CW_STEPS)}

    def run(name):
        traces = attacks._cw_loop.trace_count, attribution._ig_loop.trace_count
        del cw_calls[:], ig_calls[:]
        cw = attacks.carlini_wagner(model, variables, x, y, steps=CW_STEPS, binary_search_steps=CW_SEARCHES)
        ig = attribution.integrated_gradients(model, variables, x, unit, steps=IG_STEPS)
        results[name] = {"cw_traces": attacks._cw_loop.trace_count - traces[0], "cw_calls": list(cw_calls),
                         "ig_traces": attribution._ig_loop.trace_count - traces[1], "ig_calls": list(ig_calls),
                         "cw_images": np.asarray(cw.images).tolist(), "cw_l2": cw.l2.tolist(),
                         "ig": np.asarray(ig).tolist()}

    run("per_step")
    cpu.steps_per_call = lambda steps: steps     # the rule off the CPU: every step in one compiled scan
    run("scan")
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f)


@pytest.fixture(scope="module")
def results():
    return run_child("tests.test_inputopt_problem", timeout=600)


def test_on_the_default_path_cw_and_ig_compile_one_step_and_call_it_n_times(results):
    assert results["device_count"] == 1 and results["steps_per_call"] == 1
    r = results["per_step"]
    assert r["cw_traces"] == 1 and r["cw_calls"] == [1] * (CW_STEPS * CW_SEARCHES)
    assert r["ig_traces"] == 1 and r["ig_calls"] == [1] * IG_STEPS


def test_the_scan_path_runs_all_steps_in_one_call_with_the_same_result(results):
    step, scan = results["per_step"], results["scan"]
    assert scan["cw_traces"] == 1 and scan["cw_calls"] == [CW_STEPS] * CW_SEARCHES
    assert scan["ig_traces"] == 1 and scan["ig_calls"] == [IG_STEPS]
    np.testing.assert_allclose(scan["ig"], step["ig"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scan["cw_images"], step["cw_images"], atol=1e-5)
    np.testing.assert_allclose(scan["cw_l2"], step["cw_l2"], rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- the loop itself, in this process
def _count_step(consts, carry, x, *, scale):
    return carry * consts + scale * x, carry


def test_ascent_equals_a_python_loop_and_stops_early_when_told(monkeypatch):
    from jaxcnn import cpu
    loop = problem.Ascent(_count_step)
    xs = jnp.arange(6, dtype=jnp.float32)
    expect, seen = 1.0, []
    for x in range(6):
        seen.append(expect)
        expect = expect * 0.5 + 2.0 * x
    for per_call in (1, 6):
        monkeypatch.setattr(cpu, "steps_per_call", lambda steps, n=per_call: min(n, steps))
        carry, ys = loop(jnp.float32(0.5), jnp.float32(1.0), xs, scale=2.0)
        np.testing.assert_allclose(float(carry), expect, rtol=1e-6)
        np.testing.assert_allclose(ys, seen, rtol=1e-6)
    monkeypatch.setattr(cpu, "steps_per_call", lambda steps: 1)
    carry, ys = loop(jnp.float32(0.5), jnp.float32(1.0), xs, after=lambda c, y, done: done == 3, scale=2.0)
    assert ys.shape == (3,)
    np.testing.assert_allclose(float(carry), seen[3], rtol=1e-6)
    with pytest.raises(ValueError, match="at least one step"):
        loop(jnp.float32(0.5), jnp.float32(1.0), xs[:0], scale=2.0)


# ---------------------------------------------------------------- checks against the model's shapes
@pytest.fixture(scope="module")
def tiny():
    from tests.tiny_model import TinyCNN
    model = TinyCNN(num_classes=10)
    return model, jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))


def test_channels_and_neurons_out_of_range_are_one_line_errors(tiny):
    model, variables = tiny
    logits, features = problem.feature_shapes(model, variables, (2, 16, 16, 3))
    with pytest.raises(ValueError, match=r"^channel 99999\.\.99999 out of range for block1, which has 16 channels$"):
        problem.check_objective(O.channel("block1", 99999), logits.shape, features)
    with pytest.raises(ValueError, match="channel -1..3 out of range for block0, which has 8 channels"):
        problem.check_objective(O.channel("block0", [3, -1]), logits.shape, features)
    with pytest.raises(ValueError, match="neuron y=9 out of range for block0, whose feature map is 8x8"):
        problem.check_objective(O.neuron("block0", 1, y=9, x=0), logits.shape, features)
    for fine in (O.channel("block1", 15), O.neuron("block0", 7, y=7, x=7), O.neuron("pre_logits", 15)):
        problem.check_objective(fine, logits.shape, features)
    # where the objective meets the model: the loop and the attributions
    from jaxcnn.inputopt import InputOptimizer
    from jaxcnn.inputopt.attribution import input_gradient
    with pytest.raises(ValueError, match="which has 16 channels"):
        InputOptimizer(model, variables, steps=1).run(O.channel("block1", 99999), (1, 16, 16))
    with pytest.raises(ValueError, match="which has 8 channels"):
        input_gradient(model, variables, np.zeros((1, 16, 16, 3), np.float32), O.channel("block0", 8))


def test_attack_batch_checks_and_shards(tiny):
    model, variables = tiny
    x = np.full((8, 16, 16, 3), 0.5, np.float32)
    xs, labels, target = problem.attack_batch(model, variables, x, np.arange(8), target=3)
    assert labels.dtype == jnp.int32 and target.shape == (8,) and int(target[0]) == 3
    assert len(xs.sharding.device_set) == len(jax.devices())
    with pytest.raises(ValueError, match="8 images but 3 labels"):
        problem.attack_batch(model, variables, x, np.arange(3))
    with pytest.raises(ValueError, match="label out of range: got 0..10, the model has 10 classes"):
        problem.attack_batch(model, variables, x, np.arange(8) + np.array([0] * 7 + [3]))
    with pytest.raises(ValueError, match="epsilon must be a finite number >= 0, got nan"):
        problem.attack_batch(model, variables, x, np.arange(8), eps=float("nan"))



def test_preprocess_refuses_integers_and_one_channel_unless_asked():
    from jaxcnn.imagenet import MEAN, STD, preprocess
    pixels = np.random.default_rng(1).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"^preprocess takes float pixel values in \[0, 1\], got uint8 "
                                         r"\(for 0-255 images divide by 255 first\)$"):
        preprocess(pixels)
    with pytest.raises(ValueError, match="got int32"):
        preprocess(jnp.asarray(pixels, jnp.int32))
    gray = pixels[..., :1].astype(np.float32) / 255
    with pytest.raises(ValueError, match=r"got shape \(2, 4, 4, 1\) \(pass gray=True"):
        preprocess(gray)
    with pytest.raises(ValueError, match=r"got shape \(2, 4, 4, 4\)$"):
        preprocess(np.zeros((2, 4, 4, 4), np.float32))
    want = (np.repeat(gray, 3, -1) - np.array(MEAN)) / np.array(STD)
    np.testing.assert_allclose(preprocess(gray, gray=True), want, rtol=1e-6, atol=1e-6)
    assert float(jnp.max(jnp.abs(preprocess(pixels / 255.0)))) < 3     # scaled input: normalised values


if __name__ == "__main__":
    child(sys.argv[1])
