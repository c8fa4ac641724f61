"""Writes tests/data/autoattack_digits_cnn.pth and tests/data/autoattack_refs.npz / .json: AutoAttack's
reference implementation run on a digits CNN, which tests/test_autoattack_refs.py checks jaxcnn against.

Run once in a PyTorch environment with the official code (github.com/fra31/auto-attack, commit
a392200; not a dependency, not vendored):

    AUTOATTACK_SRC=/path/to/auto-attack python tests/refs/make_autoattack_refs.py

1. scikit-learn's digits at 16 px, built as ``jaxcnn.data.sources.digits`` builds them (PIL bilinear
   resize, three equal channels, the stratified split); TinyCNN (``tests/tiny_model.py``'s layout:
   conv-BN-ReLU-maxpool twice, global mean, linear, with ImageNet normalisation inside as jaxcnn's
   ``preprocess``) trained on them in float32, its state dict saved as a zip ``.pth``, which jaxcnn
   reads with ``load_pretrained("tiny_cnn", ...)``.
2. ``AutoAttack(version="standard")`` under L-inf and L2 on the first ``N`` test images, seeds 0-4: the
   robust accuracy after each attack and per example; each attack alone the same way
   (``run_standard_evaluation_individual``).
3. float64 (``torch.set_default_dtype(torch.float64)``, the model in double): APGD's
   ``attack_single_run`` from stored starting points (``x_init``) on 8 correctly classified images, the
   logits of every iterate recorded and the per-iteration loss computed from them (CE, and the
   targeted DLR loss towards the second-ranked class), L-inf and L2; FAB-T's ``attack_single_run``
   (target: the second-ranked class, no random start), L-inf and L2: the closest adversarial points.
   FAB casts its input with ``.float()``, which is made to keep float64 tensors float64 for that call.
4. FAB's projections (``projection_linf``, ``projection_l2``) on random points, normals and offsets
   in float64; Square's side per query (``p_selection`` and the side's formula of ``attack_single_run``)
   and its L2 pattern ``eta`` for several sides.
"""

import json
import math
import os
import re
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_digits

sys.path.insert(0, os.environ["AUTOATTACK_SRC"])
from autoattack import AutoAttack  # noqa: E402
from autoattack.autopgd_base import APGDAttack, APGDAttack_targeted  # noqa: E402
from autoattack.fab_projections import projection_l2, projection_linf  # noqa: E402
from autoattack.fab_pt import FABAttack_PT  # noqa: E402
from autoattack.square import SquareAttack  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
SIZE, N, SEEDS = 16, 128, (0, 1, 2, 3, 4)
EPS = {"Linf": 3 / 255, "L2": 0.2}
CURVE_EPS = {"Linf": 4 / 255, "L2": 0.5}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def digits16():
    d = load_digits()
    small = np.clip(d.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    big = np.stack([np.asarray(Image.fromarray(im).resize((SIZE, SIZE), Image.BILINEAR)) for im in small])
    images, labels = np.repeat(big[..., None], 3, axis=-1), d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(labels))
    test = np.zeros(len(labels), bool)
    for c in range(10):
        test[order[labels[order] == c][::5]] = True
    return (images[~test], labels[~test]), (images[test], labels[test])


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv0, self.bn0 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv1, self.bn1 = nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x):                       # (B, 3, H, W) pixels in [0, 1]
        x = (x - self.mean) / self.std
        x = F.max_pool2d(F.relu(self.bn0(self.conv0(x))), 2, 2)
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2, 2)
        return self.fc(x.mean((2, 3)))


def nchw(images_uint8, dtype=torch.float32):
    return torch.tensor(images_uint8, dtype=dtype).permute(0, 3, 1, 2).contiguous() / 255.0


def train(train_set):
    torch.manual_seed(0)
    model = TinyCNN()
    opt = torch.optim.Adam(model.parameters(), 5e-3)
    x, y = nchw(train_set[0]), torch.tensor(train_set[1])
    rng = np.random.default_rng(0)
    model.train()
    for _ in range(1500):
        idx = torch.tensor(rng.integers(0, len(y), 64))
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def run_autoattack(model, x, y, norm, seed, individual=False):
    """Robust accuracy after each attack (parsed from AutoAttack's log) and the per-example robust flags."""
    with tempfile.NamedTemporaryFile("r", suffix=".log") as log:
        aa = AutoAttack(model, norm=norm, eps=EPS[norm], version="standard", seed=seed, device="cpu",
                        log_path=log.name)
        if individual:
            aa.verbose = False
            out = aa.run_standard_evaluation_individual(x, y, bs=len(x), return_labels=True)
            return {k: float((v[1] == y).float().mean()) for k, v in out.items()}
        _, y_adv = aa.run_standard_evaluation(x, y, bs=len(x), return_labels=True)
        text = open(log.name).read()
    after = {k.lower(): float(v) / 100 for k, v in re.findall(r"robust accuracy after (\S+): ([\d.]+)%", text)}
    after["clean"] = float(re.search(r"initial accuracy: ([\d.]+)%", text).group(1)) / 100
    return after, (y_adv == y).numpy()


class Recorder(nn.Module):
    """The model, keeping the logits of every forward (the iterates of an attack run)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.logits = model, []

    def forward(self, x):
        out = self.model(x)
        self.logits.append(out.detach().clone())
        return out


def dlr_targeted(z, y, t):
    zs = z.sort(dim=1)[0]
    u = torch.arange(len(z))
    return -(z[u, y] - z[u, t]) / (zs[:, -1] - .5 * (zs[:, -3] + zs[:, -4]) + 1e-12)


def apgd_curves(model64, x, y, rng, out):
    second = model64(x).sort(dim=1)[1][:, -2]
    for norm in ("Linf", "L2"):
        eps = CURVE_EPS[norm]
        if norm == "Linf":
            t = rng.uniform(-1, 1, x.shape)
            t /= np.abs(t.reshape(len(t), -1)).max(1).reshape(-1, 1, 1, 1) + 1e-12
        else:
            t = rng.normal(size=x.shape)
            t /= np.sqrt((t ** 2).reshape(len(t), -1).sum(1)).reshape(-1, 1, 1, 1) + 1e-12
        start = torch.clamp(x + eps * torch.tensor(t), 0, 1)
        out[f"apgd_start_{norm}"] = start.permute(0, 2, 3, 1).numpy()
        for loss in ("ce", "dlr-targeted"):
            rec = Recorder(model64)
            if loss == "ce":
                attack = APGDAttack(rec, n_iter=100, norm=norm, eps=eps, loss="ce", device="cpu")
            else:
                attack = APGDAttack_targeted(rec, n_iter=100, norm=norm, eps=eps, device="cpu")
                attack.y_target = second
            attack.init_hyperparam(x)
            x_best, acc, loss_best, x_best_adv = attack.attack_single_run(x, y, x_init=start)
            logits = torch.stack(rec.logits)                          # (steps + 1, B, classes)
            if loss == "ce":
                curve = torch.stack([F.cross_entropy(z, y, reduction="none") for z in logits])
            else:
                curve = torch.stack([dlr_targeted(z, y, second) for z in logits])
            key = f"apgd_{norm}_{loss}"
            out[f"{key}_curve"] = curve.numpy()
            out[f"{key}_loss_best"] = loss_best.numpy()
            out[f"{key}_x_best"] = x_best.permute(0, 2, 3, 1).numpy()
            out[f"{key}_fooled"] = (~acc).numpy()
    out["apgd_target"] = second.numpy()


def fab_targeted(model64, x, y, out):
    as_float = torch.Tensor.float
    torch.Tensor.float = lambda self, *a, **k: self if self.dtype == torch.float64 else as_float(self, *a, **k)
    try:
        for norm in ("Linf", "L2"):
            fab = FABAttack_PT(model64, norm=norm, n_restarts=1, n_iter=100, eps=CURVE_EPS[norm], seed=0,
                               targeted=True, device="cpu")
            fab.target_class = 2
            adv = fab.attack_single_run(x, y, use_rand_start=False, is_targeted=True)
            d = (adv - x).reshape(len(x), -1)
            dist = d.abs().max(1)[0] if norm == "Linf" else (d ** 2).sum(1).sqrt()
            out[f"fab_{norm}_adv"] = adv.permute(0, 2, 3, 1).numpy()
            out[f"fab_{norm}_dist"] = dist.numpy()
    finally:
        torch.Tensor.float = as_float


def projections(rng, out):
    t = rng.uniform(size=(96, 40))
    t[:, :6] = rng.integers(0, 2, (96, 6))                        # points on the box's faces
    w = rng.normal(size=(96, 40))
    w[:, 6:10] = 0                                                 # coordinates the hyperplane ignores
    b = (w * t).sum(1) + rng.normal(size=96) * np.geomspace(1e-3, 30, 96)   # near, far and out of reach
    out["proj_t"], out["proj_w"], out["proj_b"] = t, w, b
    args = [torch.tensor(a) for a in (t, w, b)]
    out["proj_linf"] = projection_linf(*args).numpy()
    out["proj_l2"] = projection_l2(*args).numpy()


def square_schedule(out):
    for norm in ("Linf", "L2"):
        sq = SquareAttack(None, norm=norm, n_queries=5000, eps=0.1, p_init=.8, resc_schedule=False)
        sizes = []
        for i in range(5000):
            p = sq.p_selection(i)
            if norm == "Linf":
                s = min(max(int(round(math.sqrt(p * SIZE * SIZE * 3 / 3))), 1), SIZE)
            else:
                s = max(int(round(math.sqrt(p * SIZE * SIZE * 3 / 3))), 3)
                s = min(s + (s % 2 == 0), SIZE)
            sizes.append(s)
        out[f"square_sizes_{norm}"] = np.array(sizes)
    sq = SquareAttack(None, norm="L2", eps=0.1, device="cpu")
    for s in (1, 2, 3, 5, 8, 11, 15):
        seed = 0
        while True:                                                # a seed whose coin leaves eta untransposed
            torch.manual_seed(seed)
            if not torch.rand([1]) > 0.5:
                break
            seed += 1
        torch.manual_seed(seed)
        out[f"square_eta_{s}"] = sq.eta(s).numpy()


def main():
    torch.set_num_threads(1)
    train_set, test_set = digits16()
    model = train(train_set)
    torch.save(model.state_dict(), os.path.join(DATA, "autoattack_digits_cnn.pth"))
    x_all, y_all = nchw(test_set[0]), torch.tensor(test_set[1])
    with torch.no_grad():
        accuracy = float((model(x_all).argmax(1) == y_all).float().mean())
    x, y = x_all[:N], y_all[:N]
    with torch.no_grad():
        clean = model(x).argmax(1).numpy()
    out = {"images": test_set[0][:N], "labels": test_set[1][:N], "clean_predictions": clean}
    summary = {"test_accuracy": accuracy, "n": N, "seeds": list(SEEDS), "eps": EPS, "curve_eps": CURVE_EPS,
               "autoattack_commit": "a392200", "torch": torch.__version__, "standard": {}, "individual": {}}
    float64_parts(model, x, y, out)
    for norm in ("Linf", "L2"):
        summary["standard"][norm], summary["individual"][norm] = [], []
        for seed in SEEDS:
            after, robust = run_autoattack(model, x, y, norm, seed)
            summary["standard"][norm].append(after)
            out[f"robust_{norm}_seed{seed}"] = robust
            summary["individual"][norm].append(run_autoattack(model, x, y, norm, seed, individual=True))
            print(norm, seed, after, summary["individual"][norm][-1], flush=True)
    save(out, summary)
    print(json.dumps(summary, indent=1))


def float64_parts(model, x, y, out):
    """The float64 runs, the projections and Square's schedule (saved at once: the float32 runs take long)."""
    torch.set_default_dtype(torch.float64)
    try:
        model64 = TinyCNN()
        model64.load_state_dict(model.state_dict())
        model64 = model64.double().eval()
        with torch.no_grad():
            right = np.flatnonzero((model64(x.double()).argmax(1) == y).numpy())[:8]
        x8, y8 = x.double()[right], y[right]
        out["float64_index"] = right
        with torch.no_grad():
            out["float64_logits"] = model64(x8).numpy()
        rng = np.random.default_rng(0)
        apgd_curves(model64, x8, y8, rng, out)
        fab_targeted(model64, x8, y8, out)
        projections(rng, out)
        square_schedule(out)
    finally:
        torch.set_default_dtype(torch.float32)
    save(out, None)


def save(out, summary):
    np.savez_compressed(os.path.join(DATA, "autoattack_refs.npz"), **out)
    if summary is not None:
        with open(os.path.join(DATA, "autoattack_refs.json"), "w") as f:
            json.dump(summary, f, indent=1)

if __name__ == "__main__":
    main()
