"""Writes tests/data/eval_transform_refs.npz: torchvision's evaluation transform of scikit-image's photos.

Run once in a PyTorch environment (``python tests/refs/make_eval_transform_refs.py``); the suite reads
the file without torch. Each entry is ``transforms.Resize(resize)`` then ``transforms.CenterCrop(size)``
applied to a PIL image (torchvision's classification references: 256 -> 224, 342 -> 299 for Inception v3;
here 342 -> 299 and smaller sizes, one with the crop larger than the resized image), as uint8 (H, W, 3);
key ``<photo>_<resize>_<size>``.
"""

import os

import numpy as np
from PIL import Image
from skimage import data
from torchvision import transforms

CASES = [("coffee", 342, 299), ("astronaut", 73, 64), ("chelsea", 73, 64),
         ("coffee", 37, 32), ("coffee", 20, 24)]

out = {}
for photo, resize, size in CASES:
    image = Image.fromarray(getattr(data, photo)())
    t = transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(size)])
    out[f"{photo}_{resize}_{size}"] = np.asarray(t(image))
path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "eval_transform_refs.npz")
np.savez_compressed(path, **out)
print(path, {k: v.shape for k, v in out.items()}, os.path.getsize(path))
