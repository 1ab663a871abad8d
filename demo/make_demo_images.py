"""Regenerate the demo images (no downloads): python demo/make_demo_images.py

* demo/digit_3.png: image 1220 of scikit-learn's handwritten digits (a "3" of the held-out split of
  tools/dataset_converters/digits_to_imagenet.py), upscaled to 32x32 RGB exactly as that converter does.
* demo/bird.JPEG: a synthetic 320x240 drawing of a bird on a branch (not a photograph), so that the
  usage line `inference_model(NAME, 'demo/bird.JPEG')` of the OpenMMLab docs runs as written.
"""
import os.path as osp

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from sklearn.datasets import load_digits

HERE = osp.dirname(osp.abspath(__file__))

digits = load_digits()
assert digits.target[1220] == 3
img = (digits.images[1220] / 16.0 * 255).round().astype(np.uint8)
Image.fromarray(img).resize((32, 32), Image.BICUBIC).convert('RGB').save(osp.join(HERE, 'digit_3.png'))

# A synthetic "bird on a branch" photograph: sky gradient, blurred foliage, a branch, a bird.
rng = np.random.default_rng(0)
W, H = 320, 240
y = np.linspace(0, 1, H)[:, None, None]
sky = (1 - y) * np.array([110, 160, 215]) + y * np.array([190, 215, 235])
canvas = np.broadcast_to(sky, (H, W, 3)).copy()
im = Image.fromarray(canvas.astype(np.uint8))
d = ImageDraw.Draw(im)
for _ in range(40):  # out-of-focus foliage
    cx, cy, r = rng.integers(0, W), rng.integers(140, 260), rng.integers(15, 45)
    g = rng.integers(90, 150)
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(int(g * 0.45), int(g), int(g * 0.35)))
im = im.filter(ImageFilter.GaussianBlur(6))
d = ImageDraw.Draw(im)
d.line([(0, 178), (120, 168), (320, 186)], fill=(92, 64, 40), width=9)  # branch
d.line([(200, 177), (260, 150)], fill=(92, 64, 40), width=5)
# the bird: body, belly, head, eye, beak, wing, tail, legs
d.ellipse([118, 108, 198, 168], fill=(112, 84, 58))
d.ellipse([128, 128, 186, 168], fill=(214, 120, 60))
d.ellipse([176, 88, 216, 126], fill=(104, 78, 54))
d.ellipse([198, 100, 206, 108], fill=(15, 15, 15))
d.polygon([(214, 104), (232, 109), (213, 113)], fill=(230, 180, 60))
d.polygon([(124, 118), (170, 120), (134, 152)], fill=(80, 58, 40))
d.polygon([(122, 130), (84, 150), (90, 160), (126, 146)], fill=(86, 62, 44))
d.line([(150, 166), (148, 176)], fill=(60, 40, 30), width=3)
d.line([(166, 166), (168, 176)], fill=(60, 40, 30), width=3)
arr = np.asarray(im.filter(ImageFilter.GaussianBlur(0.8))).astype(np.float32)
arr += rng.normal(0, 3, arr.shape)  # sensor noise
Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(osp.join(HERE, 'bird.JPEG'), quality=90)
