"""Writes tests/data/gradcam_refs.npz: Captum's Grad-CAM and guided Grad-CAM of a ResNet-18 on real photos.

Run once in a PyTorch environment with Captum (``python tests/refs/make_gradcam_refs.py``); the suite reads
the file without torch (tests/test_gradcam.py). The network is torchvision's ``resnet18`` with the parity
suite's synthetic weights (``tests/parity/synthetic.py``, which the test regenerates with NumPy) and
batch-norm statistics calibrated on scikit-image's photos (and their mirror images), so that its maps
depend on the image. It is fed pixels in [0, 1] through ImageNet's normalization, as jaxcnn's attributions
are, so that guided backprop's gradients are with respect to the same input.

Stored per photo (72 px, uint8) and per target (each photo's top class, then its second): Captum 0.9's
``LayerGradCam`` at ``layer3`` (5x5) and ``layer4`` (3x3) with ``relu_attributions`` False and True,
``LayerAttribution.interpolate`` of the ReLU'd ``layer3`` map to 72 px (nearest: a factor of 14.4), and
``GuidedGradCam`` at ``layer3`` (NHWC), plus the calibrated statistics.
"""

import os
import sys

import numpy as np
import torch
import torchvision
from captum.attr import GuidedGradCam, LayerAttribution, LayerGradCam
from PIL import Image
from skimage import data
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from tests.parity.synthetic import synthetic_state_dict  # noqa: E402  (NumPy only, shared with the suite)

SIZE = 72
PHOTOS = ("chelsea", "coffee", "astronaut")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    def forward(self, x):
        return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def main():
    torch.manual_seed(0)
    net = torchvision.models.resnet18()
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    net.load_state_dict({k: torch.from_numpy(v) for k, v in synthetic_state_dict(shapes, "resnet18").items()})
    model = nn.Sequential(Normalize(), net)
    images = np.stack([np.asarray(Image.fromarray(getattr(data, p)()).resize((SIZE, SIZE), Image.BILINEAR))
                       for p in PHOTOS])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.cat([x, x.flip(3)]))
    model.eval()
    with torch.no_grad():
        logits = model(x)
    order = logits.argsort(dim=1, descending=True)
    out = {"photos": images, "logits": logits.numpy(),
           **{f"bn/{k}": v.numpy() for k, v in net.state_dict().items() if k.endswith(("running_mean", "running_var"))}}
    for t, target in enumerate((order[:, 0], order[:, 1])):
        out[f"target{t}"] = target.numpy()
        for name in ("layer3", "layer4"):
            cam = LayerGradCam(model, getattr(net, name))
            for relu in (False, True):
                a = cam.attribute(x, target=target, relu_attributions=relu)        # (B, 1, h, w)
                out[f"gradcam{t}_{name}_{'relu' if relu else 'raw'}"] = a[:, 0].detach().numpy()
        a = LayerGradCam(model, net.layer3).attribute(x, target=target, relu_attributions=True)
        out[f"upsampled{t}_layer3"] = LayerAttribution.interpolate(a, (SIZE, SIZE), "nearest")[:, 0].detach().numpy()
        g = GuidedGradCam(model, net.layer3).attribute(x, target=target)               # (B, 3, H, W)
        out[f"guided{t}_layer3"] = g.detach().permute(0, 2, 3, 1).numpy()
    path = os.path.join(ROOT, "tests", "data", "gradcam_refs.npz")
    np.savez_compressed(path, **out)
    print(path, os.path.getsize(path), "bytes; targets", out["target0"], out["target1"],
          "layer3 maps (relu) per photo max:", out["gradcam0_layer3_relu"].max(axis=(1, 2)))


if __name__ == "__main__":
    main()
