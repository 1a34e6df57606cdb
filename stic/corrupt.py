"""STIC's image corruptions for dispreferred answers, really applied (the original never applied them).

- :func:`low_resolution`: the shorter side resized to 20 px, aspect kept (``torchvision.transforms.Resize(20)``);
  the model's processor later upsamples it, so the model sees a blurred image.
- :func:`color_jitter`: ``torchvision.transforms.ColorJitter(brightness=.5, hue=.3)``: brightness factor
  U[0.5, 1.5], hue shift U[-0.3, 0.3], the two applied in a random order, as ColorJitter does. The randomness comes
  from the ``rng`` passed in (``random.Random`` or ``numpy.random.Generator``), never from torch's global generator,
  so a run is reproducible from its seed.

torchvision's functional ops are used when it is installed, else the same PIL operations (torchvision's own PIL
back end: bilinear resize, ``ImageEnhance.Brightness``, a shift of the HSV hue channel). Images come back as PIL.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

try:
    from torchvision.transforms import functional as _tvf
except ImportError:  # pragma: no cover - torchvision is in the pinned set
    _tvf = None

CORRUPTIONS = ("low_resolution", "color_jitter")
LOW_RESOLUTION_SIZE = 20
BRIGHTNESS = 0.5
HUE = 0.3


def _rgb(img: Image.Image) -> Image.Image:
    return img if img.mode == "RGB" else img.convert("RGB")


def _short_side_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) with the shorter side ``size`` and the aspect kept (torchvision's rounding: truncation)."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def low_resolution(img: Image.Image, size: int = LOW_RESOLUTION_SIZE) -> Image.Image:
    """The image with its shorter side resized to ``size`` pixels (aspect kept), as ``T.Resize(size)``."""
    img = _rgb(img)
    if _tvf is not None:
        return _tvf.resize(img, size)
    return img.resize(_short_side_size(*img.size, size), Image.BILINEAR)


def _uniform(rng: Any, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def jitter_params(rng: Any, brightness: float = BRIGHTNESS, hue: float = HUE) -> tuple[float, float, bool]:
    """``(brightness factor, hue factor, brightness first)`` drawn from ``rng`` as ColorJitter draws them."""
    if not 0 <= brightness or not 0 <= hue <= 0.5:
        raise ValueError(f"brightness must be >= 0 and hue in [0, 0.5], got {brightness}, {hue}")
    b = _uniform(rng, max(0.0, 1 - brightness), 1 + brightness)
    h = _uniform(rng, -hue, hue)
    return b, h, float(rng.random()) < 0.5


def adjust_brightness(img: Image.Image, factor: float) -> Image.Image:
    img = _rgb(img)
    if _tvf is not None:
        return _tvf.adjust_brightness(img, factor)
    return ImageEnhance.Brightness(img).enhance(factor)


def adjust_hue(img: Image.Image, hue_factor: float) -> Image.Image:
    """Shift the hue by ``hue_factor`` of a full turn (in [-0.5, 0.5])."""
    img = _rgb(img)
    if _tvf is not None:
        return _tvf.adjust_hue(img, hue_factor)
    h, s, v = img.convert("HSV").split()
    shifted = (np.asarray(h, dtype=np.int16) + int(hue_factor * 255)) % 256
    return Image.merge("HSV", (Image.fromarray(shifted.astype(np.uint8), "L"), s, v)).convert("RGB")


def apply_color_jitter(img: Image.Image, brightness_factor: float, hue_factor: float,
                       brightness_first: bool = True) -> Image.Image:
    """Brightness and hue adjusted with the given factors, in the given order."""
    ops = [lambda im: adjust_brightness(im, brightness_factor), lambda im: adjust_hue(im, hue_factor)]
    for op in ops if brightness_first else ops[::-1]:
        img = op(img)
    return img


def color_jitter(img: Image.Image, rng: Any, brightness: float = BRIGHTNESS, hue: float = HUE) -> Image.Image:
    """``T.ColorJitter(brightness, hue)`` with its random parameters drawn from ``rng``."""
    return apply_color_jitter(img, *jitter_params(rng, brightness, hue))


def corrupt(img: Image.Image, kind: str, rng: Any) -> Image.Image:
    """Apply the corruption named ``kind`` (one of :data:`CORRUPTIONS`)."""
    if kind == "low_resolution":
        return low_resolution(img)
    if kind == "color_jitter":
        return color_jitter(img, rng)
    raise ValueError(f"unknown corruption {kind!r}; valid: {', '.join(CORRUPTIONS)}")
