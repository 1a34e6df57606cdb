"""Tensor preprocessing of sliding-window crops: what a CLIP checkpoint's own transform does, as batched tensor ops.

The original (EFUF's ``insight/clip.py``) and ``WindowScorer(preprocess="pil")`` hand every window crop to the
checkpoint's transform one by one: open_clip's torchvision ``Compose`` (``Resize`` of the shortest side with PIL's
bicubic filter, ``CenterCrop``, ``ToTensor`` = /255, ``Normalize``) or Hugging Face's ``CLIPImageProcessor`` (the
same steps with ``size["shortest_edge"]``, ``crop_size``, ``rescale_factor``, ``image_mean`` / ``image_std``; in
transformers 5 its resize is ``torchvision``'s, i.e. torch's uint8 kernel on the CPU). :func:`pixel_spec` reads those
numbers off the loaded adapter (never ViT-B/32's hard-coded), and :class:`PixelSpec` replays them on a uint8 batch
of same-size windows on any device: one resize call per window size instead of one PIL call per crop.

The resize follows PIL's scheme: two separable passes (horizontal, then vertical) with an antialiased filter
(``interpolate(..., antialias=True)``, whose bicubic uses PIL's a = -0.5), rounding and clamping to uint8 values
after each pass as PIL stores its intermediate and final images in uint8. On random-noise crops this lands within
1–2 levels of PIL's pixels, with about 1 % of them off by one (a plain float resize would be up to 24 levels off,
as PIL clips the bicubic overshoot in between); on smoother images fewer still differ.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from common.errors import LetheError


@dataclass(frozen=True)
class PixelSpec:
    """A checkpoint transform as numbers: resize → center crop → rescale → normalise (each channel)."""

    resize: int | tuple[int, int]  # shortest side to this many px (aspect kept), or exactly (height, width)
    crop: tuple[int, int] | None  # center crop (height, width) of the resized image
    mode: str  # "bicubic" or "bilinear", the resample filter
    round_crop: bool  # torchvision's CenterCrop rounds the crop offset (half to even); HF's floors it
    rescale: float  # 1/255 for ToTensor
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)  # per channel (0 and 1 without normalisation)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)

    @property
    def out_size(self) -> tuple[int, int]:
        """(height, width) of every preprocessed window."""
        return self.crop if self.crop is not None else self.resize  # type: ignore[return-value]

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """The resize's output (height, width): torchvision's / HF's rule, the long side truncated to int."""
        if not isinstance(self.resize, int):
            return self.resize
        short, long = sorted((height, width))
        new_long = int(self.resize * long / short)
        return (self.resize, new_long) if height <= width else (new_long, self.resize)

    def __call__(self, windows: torch.Tensor) -> torch.Tensor:
        """uint8 windows of one size [N, 3, h, w] → normalised pixels [N, 3, H, W] (float32, same device)."""
        x = resize_like_pil(windows, self.resized_size(*windows.shape[-2:]), self.mode)
        if self.crop is not None:
            (h, w), (ch, cw) = x.shape[-2:], self.crop
            off = (lambda d: int(round(d / 2.0))) if self.round_crop else (lambda d: d // 2)
            top, left = off(h - ch), off(w - cw)
            x = x[..., top:top + ch, left:left + cw]
        # (x · rescale − mean) / std as one multiply-add (1 ulp from the two steps)
        scale = torch.tensor([self.rescale / s for s in self.std], device=x.device).view(-1, 1, 1)
        shift = torch.tensor([-m / s for m, s in zip(self.mean, self.std)], device=x.device).view(-1, 1, 1)
        return torch.addcmul(shift, x, scale)


def resize_like_pil(images: torch.Tensor, size: tuple[int, int], mode: str = "bicubic") -> torch.Tensor:
    """uint8 (or uint8-valued) [N, C, h, w] → float32 [N, C, H, W] holding uint8 values, as PIL resizes: the
    horizontal pass, then the vertical one, each antialiased and rounded + clamped to [0, 255]; a side that keeps
    its size is not resampled (PIL skips that pass, and torchvision returns an image of the asked size as is)."""
    x = images.float()
    (h, w), (nh, nw) = x.shape[-2:], size
    if w != nw:
        x = F.interpolate(x, size=(h, nw), mode=mode, align_corners=False, antialias=True).round_().clamp_(0, 255)
    if h != nh:
        x = F.interpolate(x, size=(nh, nw), mode=mode, align_corners=False, antialias=True).round_().clamp_(0, 255)
    return x


def decode(image) -> torch.Tensor:
    """A PIL image → its RGB pixels as a uint8 tensor [3, H, W] (the one decode the tensor path needs)."""
    return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()


def pixel_spec(clip) -> PixelSpec:
    """The ``ClipModel`` adapter's image transform (open_clip ``Compose`` or HF image processor) as a
    :class:`PixelSpec`; a step the tensor path does not replay (pad, keep-ratio / longest-side resize, another
    filter) raises, naming ``--preprocess pil``."""
    if clip.backend == "open_clip":
        return _open_clip_spec(clip._preprocess)
    return _hf_spec(clip.processor.image_processor)


def _unsupported(what: Any) -> LetheError:
    return LetheError(f"the CLIP image transform has {what}, which the tensor preprocessing path does not replay; "
                      "use --preprocess pil")


def _open_clip_spec(transform) -> PixelSpec:
    """open_clip's eval ``Compose``: ``Resize`` (shortest side, bicubic) → ``CenterCrop`` → ``MaybeConvertMode`` →
    ``MaybeToTensor`` (/255) → ``Normalize``; torchvision's ``CenterCrop`` rounds its offset."""
    from open_clip.transform import MaybeConvertMode
    from torchvision import transforms as T

    found: dict[str, Any] = {}
    order = ("resize", "crop", "to_tensor", "normalize")
    for t in getattr(transform, "transforms", [transform]):
        if isinstance(t, T.Resize) and t.max_size is None and t.interpolation.value in ("bicubic", "bilinear"):
            size = [t.size] if isinstance(t.size, int) else list(t.size)
            found["resize"] = (size[0] if len(size) == 1 else (size[0], size[1]), t.interpolation.value)
        elif isinstance(t, T.CenterCrop):
            found["crop"] = (t.size[0], t.size[-1])
        elif isinstance(t, T.ToTensor):
            found["to_tensor"] = True
        elif isinstance(t, T.Normalize):
            found["normalize"] = (tuple(map(float, t.mean)), tuple(map(float, t.std)))
        elif not isinstance(t, MaybeConvertMode):  # RGB in, RGB out
            raise _unsupported(t)
    if list(found) != [k for k in order if k in found] or "resize" not in found or "to_tensor" not in found:
        raise _unsupported(f"the steps {list(found)}")
    (resize, mode), crop = found["resize"], found.get("crop")
    norm = dict(zip(("mean", "std"), found["normalize"])) if "normalize" in found else {}
    return _checked(PixelSpec(resize, crop, mode, round_crop=True, rescale=1 / 255, **norm))


def _hf_spec(ip) -> PixelSpec:
    """A HF ``CLIPImageProcessor``: resize to ``size`` (``shortest_edge``, or ``height`` × ``width``) with
    ``resample``, center crop to ``crop_size`` (offset floored), × ``rescale_factor``, normalise."""
    from transformers.image_utils import PILImageResampling

    resample = {PILImageResampling.BICUBIC: "bicubic", PILImageResampling.BILINEAR: "bilinear"}
    if not getattr(ip, "do_resize", False) or getattr(ip, "do_pad", False) or ip.resample not in resample:
        raise _unsupported(f"do_resize={getattr(ip, 'do_resize', None)}, do_pad={getattr(ip, 'do_pad', None)}, "
                           f"resample={ip.resample}")
    size = ip.size
    if size.shortest_edge and not size.longest_edge:
        resize: int | tuple[int, int] = size.shortest_edge
    elif size.height and size.width:
        resize = (size.height, size.width)
    else:
        raise _unsupported(f"size={size}")
    crop = (ip.crop_size.height, ip.crop_size.width) if ip.do_center_crop else None
    norm = {"mean": tuple(ip.image_mean), "std": tuple(ip.image_std)} if ip.do_normalize else {}
    return _checked(PixelSpec(resize, crop, resample[ip.resample], round_crop=False,
                              rescale=ip.rescale_factor if ip.do_rescale else 1.0, **norm))


def _checked(spec: PixelSpec) -> PixelSpec:
    """Every window must come out at one size, without padding: a shortest-side resize needs a center crop, and
    a crop larger than the resized image (which pads) is not replayed."""
    if spec.crop is None:
        if isinstance(spec.resize, int):
            raise _unsupported("a shortest-side resize without a center crop (windows of different sizes)")
        return spec
    smallest = (spec.resize, spec.resize) if isinstance(spec.resize, int) else spec.resize
    if spec.crop[0] > smallest[0] or spec.crop[1] > smallest[1]:
        raise _unsupported(f"a {spec.crop} center crop of a {spec.resize} resize (padding)")
    return spec
