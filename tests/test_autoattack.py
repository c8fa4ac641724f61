"""AutoAttack's pieces against NumPy float64 and brute force: the DLR losses, APGD's checkpoints and step
sizes, the per-example first-success bookkeeping over padded batches, per-example randomness, the
flags, one compile per attack, bad input and the command. Agreement with the reference implementation
itself: tests/test_autoattack_refs.py."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import load_pretrained
from jaxcnn.cli import main
from jaxcnn.data.sources import digits
from jaxcnn.imagenet import MEAN, STD
from jaxcnn.inputopt import apgd as A, fab, passes, problem, square
from jaxcnn.inputopt.autoattack import EpsResult, _monotone_flags, _square_flag, autoattack, checks
from tests.tiny_model import TinyCNN, register
from tests.trained_digits import SIZE

WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "autoattack_digits_cnn.pth")


BATCH = 32     # one batch size for every test that attacks the digits CNN: its programs compile once


@pytest.fixture(scope="module")
def cnn():
    """The digits CNN of the reference runs (trained in PyTorch, read as torchvision-style weights) and
    held-out digits: (model, variables, images (364, 16, 16, 3), labels)."""
    register()
    model, variables = load_pretrained("tiny_cnn", WEIGHTS)
    test = digits("test", SIZE)
    return model, variables, np.asarray(test.images, np.float32) / 255, np.asarray(test.labels)


# ---------------------------------------------------------------- losses and the schedule
def _np_dlr(z, y, t=None):
    zs = np.sort(z, 1)
    zy = z[np.arange(len(z)), y]
    if t is None:
        other = np.array([np.max(np.delete(row, k)) for row, k in zip(z, y)])
        return -(zy - other) / (zs[:, -1] - zs[:, -3] + 1e-12)
    return -(zy - z[np.arange(len(z)), t]) / (zs[:, -1] - (zs[:, -3] + zs[:, -4]) / 2 + 1e-12)


def test_dlr_losses_match_numpy_float64():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(64, 10)) * 3
    y = rng.integers(0, 10, 64)
    y[:16] = z[:16].argmax(1)                            # the label on top for some, below for the others
    t = (y + rng.integers(1, 10, 64)) % 10
    with jax.enable_x64(True):
        got = np.asarray(A.dlr_loss(jnp.asarray(z), jnp.asarray(y)))
        got_t = np.asarray(A.dlr_targeted_loss(jnp.asarray(z), jnp.asarray(y), jnp.asarray(t)))
    np.testing.assert_allclose(got, _np_dlr(z, y), rtol=1e-13)
    np.testing.assert_allclose(got_t, _np_dlr(z, y, t), rtol=1e-13)
    right = z.argmax(1) == y
    assert np.all(got[right] < 0) and np.all(got[~right] > 0) and 16 <= right.sum() < 40   # < 0 while right


def _np_checkpoints(n):
    """The reference's counters, transcribed: a check when ``counter3`` reaches ``k``."""
    k, k_min, decr = max(int(0.22 * n), 1), max(int(0.06 * n), 1), max(int(0.03 * n), 1)
    out, counter = [], 0
    for i in range(n):
        counter += 1
        if counter == k:
            out.append((i, k))
            k, counter = max(k - decr, k_min), 0
    return out


def test_checkpoints_follow_the_paper_and_the_reference_counters():
    # the paper: p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06); checks after ceil(p_j N)
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    assert [i + 1 for i, _ in A.checkpoints(100)] == [round(v * 100) for v in p[1:]]
    for n in (1, 2, 5, 10, 37, 100, 250, 1000):
        assert A.checkpoints(n) == _np_checkpoints(n), n


class MLP(nn.Module):
    """A 1-hidden-layer tanh network on the flattened normalised image: gradients NumPy can write down."""

    @nn.compact
    def __call__(self, x, train=False):
        h = jnp.tanh(nn.Dense(12, name="hidden")(x.reshape(x.shape[0], -1)))
        return nn.Dense(5, name="out")(h), {}


def _np_forward(p, x):
    u = ((x - np.array(MEAN)) / np.array(STD)).reshape(len(x), -1)
    h = np.tanh(u @ p["hidden"]["kernel"] + p["hidden"]["bias"])
    return h @ p["out"]["kernel"] + p["out"]["bias"], u, h


def _np_ce_grad(p, x, y):
    z, u, h = _np_forward(p, x)
    e = np.exp(z - z.max(1, keepdims=True))
    s = e / e.sum(1, keepdims=True)
    loss = -np.log(s[np.arange(len(y)), y])
    dz = s.copy()
    dz[np.arange(len(y)), y] -= 1
    da = (dz @ p["out"]["kernel"].T) * (1 - h * h)
    du = (da @ p["hidden"]["kernel"].T).reshape(x.shape)
    return loss, du / np.array(STD), z


def _np_apgd(p, x, y, start, eps, norm, steps):
    """APGD written from the paper as plain NumPy loops over examples (float64)."""
    def proj(z):
        if norm == "linf":
            return np.clip(np.clip(z, x - eps, x + eps), 0, 1)
        d = (z - x).reshape(len(x), -1)
        n = np.sqrt((d * d).sum(1))
        return np.clip(x + (d / (n[:, None] + 1e-12) * np.minimum(eps, n)[:, None]).reshape(x.shape), 0, 1)

    def unit(g):
        if norm == "linf":
            return np.sign(g)
        return g / (np.sqrt((g * g).reshape(len(g), -1).sum(1)).reshape(-1, 1, 1, 1) + 1e-12)

    checks_at = dict(_np_checkpoints(steps))
    cur = np.clip(start, 0, 1)
    loss, g, z = _np_ce_grad(p, cur, y)
    prev_x, best_x, best_g, best_loss = cur.copy(), cur.copy(), g.copy(), loss.copy()
    step = np.full(len(x), 2 * eps)
    last_best, reduced = best_loss.copy(), np.ones(len(x), bool)
    history, sizes, robust = [loss.copy()], [], z.argmax(1) == y
    for i in range(steps):
        a = 1.0 if i == 0 else 0.75
        zz = proj(cur + step.reshape(-1, 1, 1, 1) * unit(g))
        new = proj(cur + (zz - cur) * a + (cur - prev_x) * (1 - a))
        prev_x = cur
        loss, g, z = _np_ce_grad(p, new, y)
        robust &= z.argmax(1) == y
        history.append(loss.copy())
        cur = new
        for b in range(len(x)):
            if loss[b] > best_loss[b]:
                best_x[b], best_g[b], best_loss[b] = new[b], g[b], loss[b]
        if i in checks_at:
            k = checks_at[i]
            for b in range(len(x)):
                seq = [0.0 if j < 0 else history[j + 1][b] for j in range(i - k, i + 1)]
                rises = sum(seq[j + 1] > seq[j] for j in range(k))
                halve = rises <= 0.75 * k or (not reduced[b] and last_best[b] >= best_loss[b])
                reduced[b] = halve
                if halve:
                    step[b] /= 2
                    cur[b], g[b] = best_x[b], best_g[b]
            last_best = best_loss.copy()
        sizes.append(step.copy())
    return np.array(history), np.array(sizes), best_x, best_loss, ~robust


def test_apgd_steps_and_step_sizes_match_numpy_float64(norm="linf", eps=0.06):
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(6, 4, 4, 3))
    model = MLP()
    with jax.enable_x64(True):
        variables = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64) * 3,
                                 model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 3), jnp.float64)))
        p = jax.tree.map(np.asarray, variables["params"])
        y = np.asarray(_np_forward(p, x)[0].argmax(1))
        start = np.clip(x + eps * rng.uniform(-1, 1, x.shape) * (0.2 if norm == "l2" else 1), 0, 1)
        run = A.run_apgd(model, variables, jnp.asarray(x), jnp.asarray(y, jnp.int32), jnp.asarray(start), eps=eps,
                         norm=norm, loss="ce", steps=40)
        got = jax.tree.map(np.asarray, (run.losses, run.step_sizes, run.x_best, run.loss_best, run.fooled))
    want = _np_apgd(p, x, y, start, eps, norm, 40)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(got[1], want[1])               # every halving at the same step
    np.testing.assert_allclose(got[2], want[2], atol=1e-12)
    np.testing.assert_allclose(got[3], want[3], rtol=1e-10)
    np.testing.assert_array_equal(got[4], want[4])
    assert len(np.unique(got[1])) >= 3                           # the schedule halved, more than once


# ---------------------------------------------------------------- the bookkeeping
class Buckets(nn.Module):
    """Predicts the class round(4 * mean pixel of the red channel) of 5: images whose class a test can set."""

    @nn.compact
    def __call__(self, x, train=False):
        level = jnp.mean(x[..., 0], axis=(1, 2)) * STD[0] + MEAN[0]
        return -jnp.square(4 * level[:, None] - jnp.arange(5.0)), {}


def _constant(value, n=1):
    return np.full((n, 4, 4, 3), value, np.float32)


def test_first_success_bookkeeping_matches_numpy():
    n, rng = 37, np.random.default_rng(0)
    levels = rng.integers(0, 5, n)
    x = np.concatenate([_constant(v / 4) for v in levels])
    labels = levels.copy()
    labels[:5] = (labels[:5] + 1) % 5                            # five examples wrong before any attack
    model, variables = Buckets(), {}
    calls = []

    def fake(p, rule, honest=True):
        def run(xb, yb, ib, key):
            idx = np.asarray(ib)
            calls.append((p, idx))
            hit = np.array([rule(i) for i in idx])
            other = _constant(0)[0] + ((np.asarray(yb) + 2) % 5)[:, None, None, None] / 4
            adv = np.where(hit[:, None, None, None] & honest, other, np.asarray(xb)).astype(np.float32)
            return jnp.asarray(adv), jnp.asarray(hit)
        return run

    rules = [("a", lambda i: i % 3 == 0, True), ("a", lambda i: i % 5 == 1, True), ("b", lambda i: i % 2 == 0, False),
             ("b", lambda i: i % 7 == 2, True), ("c", lambda i: True, True)]
    plan = [passes.Pass(name, fake(k, rule, honest)) for k, (name, rule, honest) in enumerate(rules)]
    out = passes.run_passes(plan, model, variables, x, labels, key=jax.random.key(0), batch_size=8,
                            attacks=("a", "b", "c"))

    first = np.where(levels == labels, 3, -1)                    # the same by hand
    names = ["a", "b", "c"]
    for k, (name, rule, honest) in enumerate(rules):
        remaining = np.flatnonzero(first == 3)
        got = np.concatenate([idx for p, idx in calls if p == k]) if remaining.size else np.zeros(0, int)
        assert sorted(set(got)) == list(remaining), k             # only the still-robust examples, all of them
        assert all(len(idx) == 8 and set(idx) <= set(remaining) for p, idx in calls if p == k)
        for i in remaining:
            if rule(i) and honest:
                first[i] = names.index(name)
    np.testing.assert_array_equal(out.first, first)
    assert out.clean_accuracy == pytest.approx(32 / 37)
    assert out.robust_accuracy_after() == pytest.approx([np.mean(first > a) for a in range(3)])
    assert out.robust_accuracy_after()[-1] == 0
    broken = first >= 0
    np.testing.assert_array_equal(out.predictions[broken], (labels[broken] + 2) % 5)
    np.testing.assert_array_equal(out.images[~broken], x[~broken])
    res = passes.attack_result(out, x)
    np.testing.assert_array_equal(res.success, np.ones(n, bool))


def test_random_numbers_are_drawn_per_example(cnn):
    model, variables, x, y = cnn
    key, eps = passes.seed_key(3), jnp.float32(0.03)
    whole = np.asarray(A.random_start(key, jnp.arange(16), jnp.asarray(x[:16]), eps, "l2"))
    part = np.asarray(A.random_start(key, jnp.array([3, 7, 11, 12]), jnp.asarray(x[[3, 7, 11, 12]]), eps, "l2"))
    np.testing.assert_allclose(part, whole[[3, 7, 11, 12]], rtol=1e-6)   # the same draws (norms round apart)
    # the odd examples attacked alone, then among the even ones: the same random numbers, the same results
    x, y = x[:64], y[:64]
    variables = problem.fixed_weights(variables)      # as autoattack passes them: the programs are shared
    plan = A.apgd_passes(model, variables, eps=3 / 255, norm="linf", steps=4)
    clean = passes.predict(model, variables, x, BATCH)
    full = passes.run_passes(plan, model, variables, x, y, key=passes.seed_key(0), batch_size=BATCH, clean=clean)
    odd = np.arange(64) % 2 == 1
    alone = passes.run_passes(plan, model, variables, x, y, key=passes.seed_key(0), batch_size=BATCH,
                              clean=np.where(odd, clean, (y + 1) % 10))
    np.testing.assert_array_equal(full.first[odd], alone.first[odd])
    np.testing.assert_array_equal(full.images[odd], alone.images[odd])
    assert 0.1 < np.mean(full.first[odd] == 0) < 0.9


# ---------------------------------------------------------------- the ensemble, flags and compiles
class Masked(nn.Module):
    """The digits CNN behind a stop-gradient: the function unchanged, every input gradient zero."""

    @nn.compact
    def __call__(self, x, train=False):
        return TinyCNN(name="net")(jax.lax.stop_gradient(x), train)


def test_masked_gradients_raise_the_square_and_zero_gradient_flags(cnn):
    _, variables, x, y = cnn
    masked = {k: {"net": v} for k, v in variables.items()}
    rep = autoattack(Masked(), masked, x[:BATCH], y[:BATCH], 8 / 255, version="custom", attacks=["apgd-dlr", "square"],
                     steps=5, queries=300, batch_size=BATCH)
    after = rep.rows[0].robust_after
    assert after["apgd-dlr"] > after["square"] + 0.15                 # only the black-box attack gets through
    names = [f["flag"] for f in rep.flags]
    assert "square_improves" in names and "zero_gradient" in names
    assert rep.version == "custom"


def test_flag_rules():
    row = lambda eps, acc: EpsResult(eps, 1.0, {}, acc, 0, 0, None, None, None)
    assert [f["flag"] for f in _monotone_flags([row(0.01, 0.5), row(0.02, 0.6), row(0.03, 0.2)])] == \
        ["eps_not_monotone"]
    assert _monotone_flags([row(0.01, 0.5), row(0.02, 0.5)]) == []
    names = ("apgd-ce", "square")
    assert _square_flag({"apgd-ce": 0.5, "square": 0.499}, names, 0.1) == []      # within AutoAttack's 0.2%
    assert _square_flag({"apgd-ce": 0.5, "square": 0.49}, names, 0.1)[0]["flag"] == "square_improves"


class Noisy(nn.Module):
    """Logits with host-side noise on every call: deterministic-looking, randomized in fact."""

    @nn.compact
    def __call__(self, x, train=False):
        z = -jnp.square(jnp.mean(x, axis=(1, 2, 3))[:, None] - jnp.linspace(-2, 2, 5))
        noise = jax.pure_callback(lambda s: np.random.default_rng().normal(0, 0.1, s.shape).astype(np.float32),
                                  jax.ShapeDtypeStruct(z.shape, jnp.float32), z)
        return z + noise, {}


class Softmax(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        return jax.nn.softmax(Buckets()(x)[0]), {}


def test_randomized_softmax_and_class_count_checks():
    x, y = _constant(0.5, 8), np.zeros(8, int)
    budgets = dict(targets=9)
    assert [f["flag"] for f in checks(Noisy(), {}, x, y, 5, ("apgd-t",), budgets)] == ["randomized", "few_classes"]
    assert [f["flag"] for f in checks(Softmax(), {}, x, y, 5, ("apgd-ce",), budgets)] == ["softmax_output"]
    assert checks(Buckets(), {}, x, y, 5, ("apgd-ce", "square"), budgets) == []


def test_each_attack_compiles_once_over_batches_targets_and_budgets(cnn):
    model, variables, x, y = cnn
    loops = (A._loop, fab._loop, square._loop)
    before = [loop.trace_count for loop in loops]
    rep = autoattack(model, variables, x[:40], y[:40], [1 / 255, 2 / 255], steps=4, queries=20, targets=3,
                     batch_size=BATCH)                    # 2 batches (32 + 8 padded), 3 targets, 2 budgets
    # one trace per attack: APGD's loop serves APGD-CE (which an earlier test may have traced) and APGD-T,
    # FAB-T's and Square's one each; other images and budgets then trace nothing
    first = [loop.trace_count - b for loop, b in zip(loops, before)]
    assert first[1:] == [1, 1] and first[0] in (1, 2), first
    autoattack(model, variables, x[40:70], y[40:70], 3 / 255, steps=4, queries=20, targets=3, batch_size=BATCH)
    assert [loop.trace_count - b for loop, b in zip(loops, before)] == first
    rows = rep.to_json()["results"]
    assert [r["eps"] for r in rows] == [1 / 255, 2 / 255]
    assert rows[0]["robust_accuracy"] >= rows[1]["robust_accuracy"]
    assert all(r["max_perturbation"] <= r["eps"] * (1 + 1e-5) for r in rows)
    assert len(rows[0]["examples"]) == 40
    assert "| linf epsilon (pixels in [0, 1]) | clean | after APGD-CE |" in rep.markdown()


# ---------------------------------------------------------------- bad input and the command
def test_bad_input_is_one_line(cnn):
    model, variables, x, y = cnn
    x, y = x[:4], y[:4]
    cases = [(dict(norm="l1"), "unknown norm 'l1'; valid: linf, l2"),
             (dict(eps=0.0), "epsilon must be a finite number > 0, got 0.0"),
             (dict(eps=-1.0), "epsilon must be a finite number > 0"),
             (dict(eps=float("nan")), "epsilon must be a finite number > 0"),
             (dict(y=y[:3]), "4 images but labels of shape (3,)"),
             (dict(y=y.astype(float)), "labels must be integer class indices, got float64"),
             (dict(y=y + 10), "label out of range: got"),
             (dict(version="plus"), "unknown version 'plus'; valid: standard, custom"),
             (dict(version="custom", attacks=["pgd"]), "unknown attack 'pgd'"),
             (dict(attacks=["square"]), "attacks are chosen by version='custom'"),
             (dict(steps=0), "steps must be an integer >= 1, got 0"),
             (dict(iterations=5), "unknown budget 'iterations'")]
    for change, message in cases:
        kwargs = dict(y=y, eps=0.01)
        kwargs.update(change)
        with pytest.raises(ValueError, match=None) as e:
            autoattack(model, variables, x, kwargs.pop("y"), kwargs.pop("eps"), **kwargs)
        assert message in str(e.value) and "\n" not in str(e.value), (change, str(e.value))
    with pytest.raises(ValueError, match="at least 5 x 5 pixels"):
        square.square(model, variables, x[:, :4, :4], y, eps=0.5, norm="l2")
    with pytest.raises(ValueError, match="needs a model with at least 4 classes; this one has 3"):
        A.apgd_targeted(Buckets3(), {}, _constant(0.5, 2), [0, 1], eps=0.1)


class Buckets3(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        return Buckets()(x)[0][:, :3], {}


def test_command_prints_the_table_and_writes_the_report(tmp_path, capsys):
    register()
    common = ["attack", "--method", "autoattack", "--model", "tiny_cnn", "--weights", WEIGHTS, "--size", str(SIZE)]
    assert main([*common, "--dataset", "digits", "--limit", str(BATCH), "--eps", "0.1", "0.2",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| clean | after APGD-CE | after APGD-T | after FAB-T | after Square | robust accuracy |" in out
    report = json.load(open(tmp_path / "autoattack.json"))
    assert report["version"] == "standard" and report["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert [r["eps"] for r in report["results"]] == [0.1, 0.2]
    first = report["results"][0]
    assert first["robust_accuracy"] == 0 < first["clean_accuracy"]     # a large budget breaks the whole set
    assert {e["broken_by"] for e in first["examples"]} <= {"clean", "apgd-ce"}
    assert np.load(tmp_path / "autoattack_images.npz")["eps_0.1"].shape == (BATCH, SIZE, SIZE, 3)
    assert main([*common, "--eps", "0.1", "--out", str(tmp_path)]) == 2
    assert "--method autoattack evaluates a data set: give --dataset" in capsys.readouterr().err
