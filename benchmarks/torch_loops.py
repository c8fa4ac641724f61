"""The plain PyTorch loops that ``benchmarks.inputopt_vs_torch`` compares jaxcnn with (run in its PyTorch worker).

Imported only in that worker (it needs torch and torchvision)."""

from __future__ import annotations

import numpy as np
import torch
import torchvision

STYLE = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
CONTENT = "conv4_2"


def load_model(name: str, weights: str, **kwargs):
    """torchvision's ``name`` with the state dict saved (as .npz) by jaxcnn's worker, frozen, in eval mode."""
    model = getattr(torchvision.models, name)(weights=None, **kwargs).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in np.load(weights).items()}, strict=False)
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


MEAN = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)    # jaxcnn.MEAN / jaxcnn.STD: torchvision's
STD = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)


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
