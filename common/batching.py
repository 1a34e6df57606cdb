"""The training forward map without waste: samples encoded one by one (in DataLoader workers), padded into a batch
by plain tensor ops, and per-sample NLLs computed from the LM head at the labelled positions only, with no
host-device synchronisation.

``VisionLanguageModel.build_batch`` builds a whole batch in one processor call: right for scoring, but in a
training loop it runs in the main process between two steps, decodes and resizes every image again and tokenizes
every prompt again at every epoch. Here:

- :class:`SampleEncoder` turns one sample into its unpadded model inputs (``build_batch`` of that one sample, so
  the ids, labels and image tensors are exactly the family's), keeping recent encodings in a memory-bounded LRU
  (``cache_mb``; keyed by the sample), so the samples a run draws again (EFUF's positive / gold cycles, later
  epochs) are neither decoded nor tokenized again, and decodes each image once while it stays cached (the samples of
  one caption share their image). DataLoader workers call it, each with its own cache.
- :func:`collate` pads encodings into one :class:`Batch` exactly as the processor pads a batch (per-token tensors
  to the longest row, image tensors concatenated; tensors of unequal trailing shape, e.g. LLaVA-NeXT's per-image
  crops, padded with zeros).
- :class:`LabelIndex` (built by the caller from the padded labels, e.g. in a DataLoader's collate function) holds,
  on the host, where the labels are: the positions whose logits are needed, and for each
  target token its row, position and id. :func:`sample_nll` asks the model for the logits at those positions only
  (``logits_to_keep`` where the model takes a tensor of positions; the full logits otherwise) and never reads a
  device value back.

The NLL is the same arithmetic as ``VisionLanguageModel.per_sample_nll`` (a [B, T] tensor of log-probs summed per
row, divided by the row's target count): the two agree to float rounding (the LM head's product on fewer rows).
"""
from __future__ import annotations

import contextlib
import contextvars
import inspect
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Hashable, Sequence

import torch

from common.models.base import IGNORE_INDEX, Batch, Sample

#: per-token keys of a batch besides ``input_ids`` and the padding value each gets
_TOKEN_PAD = {"attention_mask": 0, "labels": IGNORE_INDEX, "weights": 0.0}


def _nbytes(enc: dict[str, Any]) -> int:
    return sum(v.numel() * v.element_size() for v in enc.values() if torch.is_tensor(v))


_IMAGE_KEY = "lethe_cache_key"  # a tag in PIL's ``Image.info`` (``convert`` and ``copy`` keep it)


class _CachingImageProcessor:
    """Stands in for a processor's image processor while :class:`SampleEncoder` encodes: a call on one image tagged
    with a cache key returns that image's earlier output (a shallow copy) instead of resizing it again; everything
    else goes to the real image processor."""

    def __init__(self, inner, encoder: "SampleEncoder"):
        self._inner, self._encoder = inner, encoder

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def __call__(self, images, *args, **kwargs):
        flat = images if isinstance(images, (list, tuple)) else [images]
        key = getattr(flat[0], "info", {}).get(_IMAGE_KEY) if len(flat) == 1 else None
        if key is None:
            return self._inner(images, *args, **kwargs)
        hit = self._encoder._get(("pixels", key))
        if hit is None:
            hit = (self._inner(images, *args, **kwargs), flat[0].size)
            self._encoder._put(("pixels", key), hit, _nbytes(hit[0]))
        out = hit[0]
        return type(out)(dict(out)) if hasattr(out, "keys") else out


class SampleEncoder:
    """One sample → its unpadded inputs ``{input_ids, attention_mask, labels, weights, <image tensors>}`` (batch
    dimension 1), exactly as ``vlm.build_batch([sample])`` makes them.

    Up to ``cache_mb`` MB (one budget, least recently used out first) hold each image's processed tensors by path
    (a caption's objects, its positive and negative samples, share one image: decoded and resized once) and the
    encodings by ``key`` (the samples a run draws again). Each process keeps its own cache: DataLoader workers each
    fill theirs.
    """

    def __init__(self, vlm, cache_mb: float = 0.0, key: Callable[[Any], Hashable] | None = None):
        self.vlm = vlm
        self.cache_bytes = int(cache_mb * 2 ** 20)
        self.key = key
        self._cache: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._held = 0
        self.hits = self.misses = 0

    def _get(self, key: Hashable):
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key][0]
        return None

    def _put(self, key: Hashable, value: Any, size: int) -> None:
        if self.cache_bytes <= 0 or size > self.cache_bytes:
            return
        self._cache[key] = (value, size)
        self._held += size
        while self._held > self.cache_bytes:
            _, (_, old) = self._cache.popitem(last=False)
            self._held -= old

    def _image(self, path: str | Path):
        """The image at ``path``, tagged for the caching image processor: decoded only when its processed tensors
        are not cached (else a blank stand-in of its size: the processor's output is the cached one)."""
        from PIL import Image

        from common.io import load_image

        key = str(path)
        hit = self._get(("pixels", key))
        im = Image.new("RGB", hit[1]) if hit is not None else load_image(path)
        im.info[_IMAGE_KEY] = key
        return im

    @contextlib.contextmanager
    def _caching(self):
        proc = self.vlm.processor
        inner = getattr(proc, "image_processor", None)
        if self.cache_bytes <= 0 or inner is None:
            yield False
            return
        proc.image_processor = _CachingImageProcessor(inner, self)
        try:
            yield True
        finally:
            proc.image_processor = inner

    def __call__(self, sample: Sample, key: Hashable | None = None) -> dict[str, Any]:
        if key is None and self.key is not None:
            key = self.key(sample)
        if key is not None:
            enc = self._get(("sample", key))
            if enc is not None:
                self.hits += 1
                return enc
        self.misses += 1
        with self._caching() as caching:
            if caching and isinstance(sample.image, (str, Path)):
                sample = replace(sample, image=self._image(sample.image))
            batch = self.vlm.build_batch([sample])
        enc = {**batch.inputs, "labels": batch.labels, "weights": batch.weights}
        if key is not None:
            self._put(("sample", key), enc, _nbytes(enc))
        return enc


@dataclass
class LabelIndex:
    """Host-side (CPU) description of a batch's labels: ``keep`` [K] sorted logit positions that predict a label
    (position p predicts the token at p + 1); per target token ``row``, ``col`` (its logit position), ``slot``
    (index into ``keep``) and ``label``; ``count`` [B] target tokens per row; ``shape`` (B, T)."""

    keep: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    slot: torch.Tensor
    label: torch.Tensor
    count: torch.Tensor
    shape: tuple[int, int]

    @classmethod
    def from_labels(cls, labels: torch.Tensor) -> "LabelIndex":
        labels = labels.cpu()
        sel = labels[:, 1:] != IGNORE_INDEX
        row, col = sel.nonzero(as_tuple=True)
        keep = torch.unique(col)  # sorted
        return cls(keep, row, col, torch.searchsorted(keep, col), labels[:, 1:][sel],
                   (labels != IGNORE_INDEX).sum(1), tuple(labels.shape))

    def to(self, device, non_blocking: bool = True) -> "LabelIndex":
        mv = {k: getattr(self, k).to(device, non_blocking=non_blocking) for k in
              ("keep", "row", "col", "slot", "label", "count")}
        return LabelIndex(**mv, shape=self.shape)


class HostInfo:
    """Host-side data carried with a batch through the DataLoader and the Trainer untouched (neither moves a plain
    object to the device): what the step decides on without reading the device."""

    def __init__(self, **fields):
        self.__dict__.update(fields)

    def __repr__(self) -> str:
        return f"HostInfo({', '.join(self.__dict__)})"


def collate(encodings: Sequence[dict[str, Any]], pad_token_id: int, padding_side: str = "right") -> Batch:
    """Pad per-sample encodings into one batch: per-token tensors to the longest row (``input_ids`` with
    ``pad_token_id``, ``attention_mask`` / ``weights`` with 0, ``labels`` with -100, other per-token keys with 0),
    other tensors concatenated on dim 0 (zero-padded in the other dims where their shapes differ); non-tensors
    (e.g. ``image_sizes`` lists) are concatenated as lists."""
    if not encodings:
        raise ValueError("collate got no encodings")
    lengths = [e["input_ids"].shape[1] for e in encodings]
    width = max(lengths)
    out: dict[str, Any] = {}
    for key in encodings[0]:
        vals = [e[key] for e in encodings]
        first = vals[0]
        if not torch.is_tensor(first):
            out[key] = [x for v in vals for x in (v if isinstance(v, (list, tuple)) else [v])]
            continue
        if first.dim() == 2 and all(v.shape == (1, n) for v, n in zip(vals, lengths)):  # per token
            pad = pad_token_id if key == "input_ids" else _TOKEN_PAD.get(key, 0)
            t = torch.full((len(vals), width), pad, dtype=first.dtype)
            for i, (v, n) in enumerate(zip(vals, lengths)):
                if padding_side == "right":
                    t[i, :n] = v[0]
                else:
                    t[i, width - n:] = v[0]
            out[key] = t
            continue
        shapes = {tuple(v.shape[1:]) for v in vals}
        if len(shapes) == 1:
            out[key] = torch.cat(vals)
            continue
        dims = [max(s[d] for s in shapes) for d in range(first.dim() - 1)]
        t = first.new_zeros((sum(v.shape[0] for v in vals), *dims))
        i = 0
        for v in vals:
            t[(slice(i, i + v.shape[0]), *(slice(0, s) for s in v.shape[1:]))] = v
            i += v.shape[0]
        out[key] = t
    labels, weights = out.pop("labels"), out.pop("weights")
    return Batch(out, labels, weights)


# --------------------------------------------------------------------------------------- the loss side
def accepts_logits_to_keep(model) -> bool:
    """Whether ``model.forward`` takes ``logits_to_keep`` (transformers' causal LMs and Llava-style models do, and
    slice the hidden states with a tensor of positions before the LM head)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


def sample_nll(model, inputs: dict[str, torch.Tensor], index: LabelIndex, keep_logits: bool = True):
    """Mean target-token NLL per row ([B], float32) and the model outputs, from one forward without a KV cache.

    ``index`` must already be on the model's device (:meth:`LabelIndex.to`). With ``keep_logits`` and a model that
    takes ``logits_to_keep``, the LM head runs on the ``index.keep`` positions only; otherwise the full logits are
    computed and the same positions picked. Nothing is read back to the host.
    """
    if keep_logits and accepts_logits_to_keep(model):
        outputs = model(**inputs, use_cache=False, logits_to_keep=index.keep)
        logits = outputs.logits  # [B, K, V]
        picked = logits[index.row, index.slot]
    else:
        outputs = model(**inputs, use_cache=False)
        picked = outputs.logits[index.row, index.col]
    lp = torch.log_softmax(picked.float(), dim=-1).gather(-1, index.label.unsqueeze(-1)).squeeze(-1)
    b, t = index.shape
    per_token = torch.zeros((b, t), dtype=torch.float32, device=lp.device)
    per_token[index.row, index.col + 1] = lp  # the layout of per_sample_nll: summed per row in the same order
    return -per_token.sum(1) / index.count.clamp(min=1), outputs


# --------------------------------------------------------------------------------------- counting host syncs
#: tensor operations that read a device value back to the host (a synchronisation on an accelerator)
SYNC_OPS = frozenset({"__bool__", "item", "__int__", "__float__", "__index__", "tolist", "nonzero", "masked_select",
                      "cpu", "numpy", "unique"})
_host_side: contextvars.ContextVar[bool] = contextvars.ContextVar("lethe_host_side", default=False)


@contextlib.contextmanager
def host_side():
    """Marks code that works on host (CPU) tensors only: :class:`SyncCounter` does not count it. On this CPU-only
    machine the counter cannot tell a host tensor from a model-device tensor by its device."""
    token = _host_side.set(True)
    try:
        yield
    finally:
        _host_side.reset(token)


class SyncCounter(torch.overrides.TorchFunctionMode):
    """Counts tensor operations that force a host-device synchronisation (``SYNC_OPS``, and indexing with a boolean
    tensor), outside :func:`host_side` blocks, on tensors of ``device`` (any device when None). Counts are kept per
    ``region`` (a label the caller switches, e.g. "model" inside the model's forward): ``counts[region][op]``."""

    def __init__(self, device: torch.device | str | None = None):
        super().__init__()
        self.device = torch.device(device) if device is not None else None
        self.region = "step"
        self.counts: dict[str, dict[str, int]] = {}

    @contextlib.contextmanager
    def model_region(self, model):
        """Within: what runs inside ``model``'s forward counts under region "model", the rest under "step"."""
        def enter(*_):
            self.region = "model"

        def leave(*_):
            self.region = "step"

        hooks = (model.register_forward_pre_hook(enter), model.register_forward_hook(leave))
        try:
            yield self
        finally:
            for h in hooks:
                h.remove()

    def total(self, region: str | None = None) -> int:
        return sum(n for r, ops in self.counts.items() if region in (None, r) for n in ops.values())

    def _on_device(self, args) -> bool:
        for a in args:
            if torch.is_tensor(a):
                return self.device is None or a.device.type == self.device.type
        return False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if not _host_side.get() and self._on_device(args):
            boolean_index = name == "__getitem__" and len(args) > 1 and any(
                torch.is_tensor(i) and i.dtype == torch.bool
                for i in (args[1] if isinstance(args[1], tuple) else (args[1],)))
            if name in SYNC_OPS or boolean_index:
                ops = self.counts.setdefault(self.region, {})
                key = "bool-mask indexing" if boolean_index else name
                ops[key] = ops.get(key, 0) + 1
        return func(*args, **(kwargs or {}))
