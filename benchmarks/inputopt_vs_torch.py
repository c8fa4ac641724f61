"""Input-optimisation loops, jaxcnn against a plain PyTorch loop on the same weights, in one run.

Workloads (same model, weights, image size, steps and update rule on both sides):
  style   Gatys style transfer on VGG-19: content conv4_2, style conv1_1..conv5_1 Gram
          matrices, Adam on the pixels (L-BFGS line searches differ between libraries, so
          the number of function evaluations would not match), clamp to [0, 1].
  dream   DeepDream on GoogLeNet at inception4c: normalised-gradient ascent with jitter,
          one octave (the octave loop is the same Python on both sides).
  pgd     L-inf PGD on ResNet-18 (batch ``--batch``, eps 4/255, random start), cross-entropy
          of the true label, sign steps, projection.
jaxcnn's time is split into compile (first call minus a warm call) and the steady-state
run; PyTorch runs eager after one warm-up step. Cases alternate jaxcnn / PyTorch, median of
``--repeats``. Weights are random (He-normal), exported from jaxcnn with
``to_torch_state_dict`` and loaded into torchvision's definitions.

Run (needs torch + torchvision beside jaxcnn; see benchmarks/README.md):
    python benchmarks/inputopt_vs_torch.py --size 128 --steps 10 --repeats 3
Writes benchmarks/results/inputopt_vs_torch.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torchvision

import jaxcnn
from jaxcnn import host_memory
from jaxcnn.data.image_io import center_crop, resize_shorter, sample_photos
from jaxcnn.inputopt import objectives as O
from jaxcnn.inputopt.optimize import InputOptimizer
from jaxcnn.inputopt.style import style_objectives
from jaxcnn.inputopt.transforms import Jitter
from jaxcnn.weights.torchvision import to_torch_state_dict

STYLE = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
CONTENT = "conv4_2"


def _torch_model(name: str, variables, **kwargs):
    model = getattr(torchvision.models, name)(weights=None, **kwargs).eval()
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in to_torch_state_dict(variables).items()}
    model.load_state_dict(state, strict=False)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _vgg_layer_index(features) -> dict[str, int]:
    """torchvision VGG ``features`` index of each ReLU, by Caffe name (conv{b}_{i})."""
    names, block, i = {}, 1, 1
    for idx, layer in enumerate(features):
        if isinstance(layer, torch.nn.ReLU):
            names[f"conv{block}_{i}"] = idx
            i += 1
        elif isinstance(layer, torch.nn.MaxPool2d):
            block, i = block + 1, 1
    return names


MEAN = torch.tensor(jaxcnn.MEAN).view(1, 3, 1, 1)
STD = torch.tensor(jaxcnn.STD).view(1, 3, 1, 1)


def torch_style(vgg, content, styles_gram, content_target, steps, lr, style_weight):
    index = _vgg_layer_index(vgg.features)
    wanted = {index[n]: n for n in (*STYLE, CONTENT)}
    last = max(wanted)

    def feats(x):
        out, h = {}, (x - MEAN) / STD
        for idx, layer in enumerate(vgg.features[: last + 1]):
            h = layer(h)
            if idx in wanted:
                out[wanted[idx]] = h
        return out

    def gram(f):
        b, c, hh, ww = f.shape
        flat = f.reshape(b, c, hh * ww)
        return flat @ flat.transpose(1, 2) / (hh * ww)

    img = content.clone().requires_grad_(True)
    opt = torch.optim.Adam([img], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        f = feats(img)
        loss = 0.5 * ((f[CONTENT] - content_target) ** 2).sum()
        for n in STYLE:
            c = f[n].shape[1]
            loss = loss + style_weight / len(STYLE) * ((gram(f[n]) - styles_gram[n]) ** 2).sum() / (4 * c * c)
        loss.backward()
        opt.step()
        with torch.no_grad():
            img.clamp_(0, 1)
    return img.detach()


def torch_dream(net, image, steps, lr, jitter, gen):
    acts = {}
    hook = net.inception4c.register_forward_hook(lambda m, i, o: acts.__setitem__("a", o))
    img = image.clone()
    for _ in range(steps):
        dy, dx = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=gen))
        x = torch.roll(img, (dy, dx), (2, 3)).requires_grad_(True)
        net((x - MEAN) / STD)
        (acts["a"] ** 2).mean().backward()
        g = torch.roll(x.grad, (-dy, -dx), (2, 3))
        img = (img + lr * g / (g.abs().mean() + 1e-8)).clamp(0, 1)
    hook.remove()
    return img


def torch_pgd(net, x, y, eps, alpha, steps):
    adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(net((adv - MEAN) / STD), y)
        (g,) = torch.autograd.grad(loss, adv)
        adv = adv.detach() + alpha * g.sign()
        adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1)
    return adv


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8, help="PGD batch")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "inputopt_vs_torch.json"))
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    host_memory.keep_freed_memory()     # as the jaxcnn command does; before JAX's first computation
    s, steps = args.size, args.steps
    photos = sample_photos()
    content = center_crop(resize_shorter(photos["astronaut"], s), s)
    style_img = center_crop(resize_shorter(photos["coffee"], s), s)
    rows = []

    # ------------------------------------------------------------ style transfer, VGG-19
    vgg = jaxcnn.create_model("vgg19")
    v_vgg = jaxcnn.init_variables(vgg, 32)
    content_obj, style_obj = style_objectives(vgg, v_vgg, content, [style_img])
    objective = content_obj + 1e3 * style_obj
    jx = InputOptimizer(vgg, v_vgg, steps=steps, optimizer="adam", learning_rate=0.02, shard=False)
    run_jax = lambda: jax.block_until_ready(jx.run(objective, content[None]).images)
    tv_vgg = _torch_model("vgg19", v_vgg)
    t_content = torch.from_numpy(content.transpose(2, 0, 1)[None].copy())
    content_target = torch.from_numpy(np.asarray(content_obj.terms[0].params).transpose(0, 3, 1, 2).copy())
    grams = {l: torch.from_numpy(np.asarray(t.params)) for l, t in zip(STYLE, style_obj.terms)}
    run_torch = lambda: torch_style(tv_vgg, t_content, grams, content_target, steps, 0.02, 1e3)
    rows.append(_measure("style transfer (VGG-19, Adam)", run_jax, run_torch, args.repeats, steps))

    # ------------------------------------------------------------ DeepDream, GoogLeNet
    net = jaxcnn.create_model("googlenet", aux_logits=False)
    v_net = jaxcnn.init_variables(net, 64)
    dream = InputOptimizer(net, v_net, steps=steps, optimizer="normalized_sgd", learning_rate=0.01,
                           transforms=(Jitter(16),), shard=False)
    run_jax = lambda: jax.block_until_ready(dream.run(O.layer_l2("inception4c"), content[None]).images)
    tv_net = _torch_model("googlenet", v_net, aux_logits=False, init_weights=False)
    gen = torch.Generator().manual_seed(0)
    run_torch = lambda: torch_dream(tv_net, t_content, steps, 0.01, 16, gen)
    rows.append(_measure("DeepDream (GoogLeNet inception4c)", run_jax, run_torch, args.repeats, steps))

    # ------------------------------------------------------------ PGD, ResNet-18
    from jaxcnn.inputopt.attacks import pgd
    r18 = jaxcnn.create_model("resnet18")
    v_r18 = jaxcnn.init_variables(r18, 64)
    rng = np.random.default_rng(0)
    xb = np.stack([center_crop(resize_shorter(p, s), s) for p in photos.values()] * args.batch)[: args.batch]
    yb = rng.integers(0, 1000, args.batch)
    eps = 4 / 255
    run_jax = lambda: jax.block_until_ready(pgd(r18, v_r18, xb, yb, eps=eps, steps=steps).images)
    tv_r18 = _torch_model("resnet18", v_r18)
    tx_, ty_ = torch.from_numpy(xb.transpose(0, 3, 1, 2).copy()), torch.from_numpy(yb)
    run_torch = lambda: torch_pgd(tv_r18, tx_, ty_, eps, 2.5 * eps / steps, steps)
    rows.append(_measure(f"PGD (ResNet-18, batch {args.batch})", run_jax, run_torch, args.repeats, steps))

    meta = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "cpu": _cpu_name(), "jax": jax.__version__, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "device": jax.devices()[0].device_kind,
            "size": s, "steps": steps, "repeats": args.repeats,
            "command": f"python benchmarks/inputopt_vs_torch.py --size {s} --steps {steps} --repeats {args.repeats} "
                       f"--batch {args.batch}"}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print(f"\n{meta['cpu']}; jax {meta['jax']}, torch {meta['torch']}; {s} px, {steps} steps\n")
    print("| workload | jaxcnn s/step | PyTorch s/step | jaxcnn / PyTorch speed | jaxcnn compile s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workload']} | {r['jax_s_per_step']:.3f} | {r['torch_s_per_step']:.3f} | "
              f"{r['speed_ratio']:.2f}x | {r['jax_compile_s']:.1f} |")


def _measure(name, run_jax, run_torch, repeats, steps) -> dict:
    first = _time(run_jax)
    _time(run_torch)  # warm-up
    jt, tt = [], []
    for _ in range(repeats):
        jt.append(_time(run_jax))
        tt.append(_time(run_torch))
    j, t = statistics.median(jt), statistics.median(tt)
    return {"workload": name, "jax_s_per_step": j / steps, "torch_s_per_step": t / steps, "speed_ratio": t / j,
            "jax_compile_s": max(first - j, 0.0), "jax_runs_s": jt, "torch_runs_s": tt}


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
