"""``jaxcnn.cpu.policy.disabled``: each switch turns its part of the fast path off, keeps the function, and
keys ``cpu.jit``'s programs (the benchmarks under ``benchmarks/cpu/`` measure each part this way)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import cpu, layers
from jaxcnn.cpu import build, ops, policy, winograd

pytestmark = pytest.mark.skipif(not build.available(), reason="the C++ kernels are not built")


def _hlo(f, *args) -> str:
    return cpu.jit(f).lower(*args).as_text()


def test_unknown_switch_is_one_line_value_error():
    with pytest.raises(ValueError, match="unknown fast-path switch 'pool'"):
        with policy.disabled("pool"):
            pass


def test_disabled_restores_and_keys_cpu_jit():
    f = cpu.jit(lambda x: layers.max_pool(x, 3, 2))
    x = jnp.arange(2 * 9 * 9 * 3, dtype=jnp.float32).reshape(2, 9, 9, 3)
    with cpu.mode("fast"):
        before = policy.key()
        with policy.disabled("max_pool", "gram"):
            assert not policy.enabled("max_pool") and not policy.enabled("gram") and policy.enabled("batch_norm")
            assert policy.key() != before
            assert "jaxcnn_max_pool" not in f.lower(x).as_text()
        assert policy.enabled("max_pool") and policy.key() == before
        assert "jaxcnn_max_pool" in f.lower(x).as_text()


def test_max_pool_switch_gives_the_sliced_vjp_with_the_same_gradient():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 11, 11, 4)), jnp.float32)
    pool = lambda x: layers.max_pool(x, 3, 2, 1, ceil_mode=True)  # noqa: E731
    g = jnp.asarray(rng.standard_normal(jax.eval_shape(pool, x).shape), jnp.float32)
    grad = lambda x: jax.vjp(pool, x)[1](g)[0]  # noqa: E731
    with cpu.mode("fast"):
        assert "jaxcnn_max_pool" in _hlo(grad, x)
        native = cpu.jit(grad)(x)
        with policy.disabled("max_pool"):
            text = _hlo(grad, x)
            sliced = cpu.jit(grad)(x)
    assert "jaxcnn_max_pool" not in text and "select-and-scatter" not in text
    with cpu.mode("reference"):
        reference = cpu.jit(grad)(x)
    np.testing.assert_allclose(native, reference, rtol=1e-6, atol=1e-6)   # overlapping windows: sums in any order
    np.testing.assert_allclose(sliced, reference, rtol=1e-6, atol=1e-6)


def test_batch_norm_and_gram_switches_leave_xla():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((4, 5, 5, 8)), jnp.float32)
    bn = lambda x: ops.batch_norm(x, jnp.ones(8), jnp.zeros(8), 1e-5)[0]  # noqa: E731
    flat = jnp.asarray(rng.standard_normal((1, 25, 8)), jnp.float32)
    with cpu.mode("fast"):
        assert "jaxcnn_batch_norm" in _hlo(bn, x) and "jaxcnn_matmul" in _hlo(ops.gram, flat)
        native_bn, native_gram = cpu.jit(bn)(x), cpu.jit(ops.gram)(flat)
        with policy.disabled("batch_norm", "gram"):
            assert "jaxcnn_batch_norm" not in _hlo(bn, x) and "jaxcnn_matmul" not in _hlo(ops.gram, flat)
            xla_bn, xla_gram = cpu.jit(bn)(x), cpu.jit(ops.gram)(flat)
    np.testing.assert_allclose(native_bn, xla_bn, rtol=1e-4, atol=1e-5)
    want = np.einsum("bpc,bpd->bcd", np.asarray(flat, np.float64), np.asarray(flat, np.float64))
    np.testing.assert_allclose(native_gram, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(xla_gram, want, rtol=1e-4, atol=1e-4)


def test_bias_add_and_cond_tree_switches():
    y, b = jnp.zeros((2, 3, 3, 4), jnp.bfloat16), jnp.zeros(4, jnp.float32)

    def jaxprs():   # new functions each time: jax caches a trace per function object
        grad = jax.grad(lambda b: jnp.sum(ops.bias_add(y, b).astype(jnp.float32)))
        pick = lambda p: cpu.cond_tree(p, lambda: {"a": jnp.ones(3)}, lambda: {"a": jnp.zeros(3)})  # noqa: E731
        return str(jax.make_jaxpr(grad)(b)), str(jax.make_jaxpr(pick)(True)), grad(b)

    with cpu.mode("fast"):
        bias, cond, _ = jaxprs()
        assert "custom_vjp" in bias and "cond[" in cond
        with policy.disabled("bias_add", "cond_tree"):
            bias, cond, db = jaxprs()
    assert "custom_vjp" not in bias and "cond[" not in cond and "select_n" in cond
    np.testing.assert_array_equal(db, np.full(4, 18.0))


def test_winograd_switches():
    x = jnp.zeros((8, 32, 32, 64), jnp.float32)
    w3, w5 = jnp.zeros((3, 3, 64, 64), jnp.float32), jnp.zeros((5, 5, 64, 64), jnp.float32)
    pads3, pads5 = ((1, 1), (1, 1)), ((2, 2), (2, 2))
    variables = {"params": {"conv": {"kernel": jnp.ones((3, 3, 64, 64), jnp.float32)}}}
    with cpu.mode("fast"):
        assert winograd.eligible(x, w3, (1, 1), pads3, (1, 1), 1) and winograd.eligible(x, w5, (1, 1), pads5, (1, 1), 1)
        assert winograd.COLLECTION in cpu.fixed_weights(variables, remember=False)
        with policy.disabled("winograd_5x5", "fixed_weights"):
            assert winograd.eligible(x, w3, (1, 1), pads3, (1, 1), 1)
            assert not winograd.eligible(x, w5, (1, 1), pads5, (1, 1), 1)
            assert winograd.COLLECTION not in cpu.fixed_weights(variables, remember=False)
