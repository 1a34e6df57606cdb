"""Image-object relevance with the ``clip`` family: EFUF's sliding-window ("fine text, fine image") score.

    python insight/clip.py --objects_path dataset/objects.jsonl --image_dir dataset/images \
        --clip_path openai/clip-vit-base-patch32 --output_path dataset/clip_scores.jsonl

The image is tiled into ``patch_size`` px patches (the last row/column may be partial); every
``window_size``×``window_size``-patch window at a stride of one patch is cropped and scored against
"A photo containing {object}." (logit_scale · cosine, i.e. 100·cos for OpenAI CLIP); a patch's score is the mean
over the windows covering it, and the object's score is the mean of its ``average_top_k`` best patches. Patches
are counted with ceil, so a side needs more than ``(window_size - 1) * patch_size`` px for one (clipped) window; a
smaller image gets no scores (``null``), as in the original.

Unlike the original (one processor call and one CLIP forward per image in the main process, a Python double loop
to spread window scores), images are decoded in ``--num_workers`` DataLoader workers, crops of many images go
through CLIP in one batch, every distinct object text is encoded once per run, and the window→patch spreading is
one matrix product. The windows are preprocessed in one of two ways (``--preprocess``): ``pil`` (the default on
the CPU) crops them with PIL in the workers and runs the checkpoint's own transform on each crop, as the original
does, so the scores are the ones this CLI always gave (the quickstart's toy numbers depend on them); ``tensor``
(the default on CUDA) cuts them out of the decoded image on the device and resizes, crops and normalises all
windows of one size in one batched call (``insight/window_ops.py``: within 1–2 uint8 levels of PIL's pixels),
with the image encoder under fp16 autocast on a GPU (``--amp``). Output: the input rows plus ``"scores"`` (one per
object), appended per chunk; a re-run skips images already scored.
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: import from the repo root, never from this script's folder
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401, E702

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from common.errors import LetheError, cli_main, run_cli
from insight.window_ops import decode, pixel_spec


#: WindowScorer's ``amp`` values → autocast dtype (None: no autocast; "auto" resolves to "fp16" or "off")
AMP = {"auto": None, "bf16": torch.bfloat16, "fp16": torch.float16, "off": None}


@dataclass
class ClipScoreArguments:
    objects_path: str = field(default="dataset/objects.jsonl", metadata={"help": "insight/object.py output"})
    image_dir: str = field(default="dataset/images")
    output_path: str = field(default="dataset/clip_scores.jsonl")
    clip_path: str = field(default="openai/clip-vit-base-patch32", metadata={
        "help": "HF CLIPModel dir/id (default: the CLIP EFUF scored with) or an open_clip dir / ARCH/TAG name "
                "(OpenAI tags are built with the QuickGELU they were trained with)"})
    clip_backend: Optional[str] = field(default=None, metadata={"help": "open_clip or hf (default: detect)"})
    clip_prompt: str = field(default="A photo containing {}.", metadata={"help": "{} is the object"})
    patch_size: int = field(default=48)
    window_size: int = field(default=4)
    average_top_k: int = field(default=4)
    max_object_words: int = field(default=10, metadata={"help": "longer object phrases get no score"})
    batch_size: int = field(default=256, metadata={"help": "crops per CLIP forward"})
    num_workers: int = field(default=2, metadata={"help": "processes decoding images (and with --preprocess pil "
                                                          "cropping and preprocessing their windows) while CLIP "
                                                          "encodes (the original used none)"})
    device: str = field(default="auto")
    preprocess: str = field(default="auto", metadata={
        "help": "window preprocessing: pil (PIL crops through the checkpoint's own transform in the workers, as "
                "the original), tensor (windows cut, resized and normalised as batched tensor ops on the scoring "
                "device: scores within about 2e-4 x logit_scale of pil's in float32) or auto: tensor on CUDA, pil "
                "otherwise, so CPU runs keep their exact scores (the quickstart's toy numbers depend on them)",
        "choices": ["auto", "tensor", "pil"]})
    amp: str = field(default="auto", metadata={
        "help": "autocast of the image encoder with --preprocess tensor: fp16, bf16, off, or auto (fp16 on CUDA, "
                "off on the CPU). Measured on ViT-B-32 (H200, 3,840 scores): classes (positive / negative / unused) "
                "changed vs float32 PIL crops: off 0.05 %, fp16 0.29 %, bf16 2.7 % (bf16 keeps 8 mantissa bits)",
        "choices": list(AMP)})
    restart: bool = field(default=False, metadata={"help": "ignore an existing output file"})
    verbose: bool = field(default=False, metadata={"help": "show the model-loading progress bars"})


@lru_cache(maxsize=64)
def window_layout(height: int, width: int, patch: int, window: int) -> tuple[list[tuple[int, int, int, int]],
                                                                             torch.Tensor]:
    """Crop boxes (left, top, right, bottom) of every window, and the [patches, windows] averaging matrix.

    Row p of the matrix holds 1/count(p) for each window covering patch p, so ``A @ window_scores`` is the
    per-patch mean the original computes with its coverage mask.
    """
    ph, pw = -(-height // patch), -(-width // patch)  # ceil: a partial last patch counts
    nh, nw = ph - window + 1, pw - window + 1
    if nh <= 0 or nw <= 0:
        return [], torch.zeros(0, 0)
    boxes, cover = [], torch.zeros(ph, pw, nh * nw)
    for i in range(nh):
        for j in range(nw):
            top, left = i * patch, j * patch
            boxes.append((left, top, min(left + window * patch, width), min(top + window * patch, height)))
            cover[i:i + window, j:j + window, i * nw + j] = 1.0
    cover = cover.reshape(ph * pw, nh * nw)
    return boxes, cover / cover.sum(1, keepdim=True)


class WindowScorer:
    """Batched sliding-window CLIP scores with a per-run text-feature cache.

    ``preprocess="pil"`` cuts every window as a PIL crop and runs the checkpoint's own transform on each, as the
    original does (its scores within 1e-5). ``preprocess="tensor"`` decodes each image once to a uint8 tensor, and
    the windows are cut as tensor slices on the scoring device, resized in one batched call per window size and
    center-cropped and normalised as tensor ops (``insight.window_ops``: within 1–2 uint8 levels of PIL's pixels).
    ``amp`` runs the image encoder under autocast: ``"bf16"``, ``"fp16"``, ``"off"`` or ``"auto"`` (fp16 for the
    tensor path on a GPU, else off: OpenAI's CLIP itself runs in fp16, and bf16's 8 mantissa bits moved 2.7 % of
    the objects across EFUF's thresholds against fp16's 0.29 %); the text features and the scores stay float32.
    Measured on ViT-B-32 (random weights), as a cosine (score / logit_scale) off the PIL path's: float32 ≤ 4e-5,
    fp16 ≤ 1.4e-4, bf16 ≤ 9e-4.
    """

    def __init__(self, clip, patch_size: int = 48, window_size: int = 4, average_top_k: int = 4,
                 prompt: str = "A photo containing {}.", max_object_words: int = 10, batch_size: int = 256,
                 preprocess: str = "pil", amp: str = "auto"):
        if preprocess not in ("pil", "tensor"):
            raise LetheError(f"unknown window preprocessing {preprocess!r}; valid: pil, tensor")
        if amp not in AMP:
            raise LetheError(f"unknown autocast {amp!r}; valid: {', '.join(AMP)}")
        self.clip, self.patch, self.window, self.k = clip, patch_size, window_size, average_top_k
        self.prompt, self.max_words, self.batch_size = prompt, max_object_words, batch_size
        self.preprocess = preprocess
        self.spec = pixel_spec(clip) if preprocess == "tensor" else None
        if amp == "auto":
            amp = "fp16" if preprocess == "tensor" and clip.device.type == "cuda" else "off"
        self.amp = amp
        self._text: dict[str, torch.Tensor] = {}

    def prompt_for(self, obj: str) -> str | None:
        obj = obj.replace("[", "").replace("]", "").strip()
        if not obj or len(obj.split(" ")) > self.max_words:
            return None
        return self.prompt.format(obj)

    @torch.no_grad()
    def text_features(self, prompts: Sequence[str]) -> torch.Tensor:
        new = sorted({p for p in prompts if p not in self._text})
        for i in range(0, len(new), self.batch_size):
            chunk = new[i:i + self.batch_size]
            for p, f in zip(chunk, self.clip.encode_text(list(chunk))):
                self._text[p] = f
        return torch.stack([self._text[p] for p in prompts]) if prompts else torch.zeros(0)

    def crops(self, image) -> tuple[list, torch.Tensor]:
        boxes, avg = window_layout(image.height, image.width, self.patch, self.window)
        return [image.crop(b) for b in boxes], avg

    def prepare(self, image) -> tuple[torch.Tensor, torch.Tensor]:
        """CPU side of one image, and the averaging matrix: with ``pil``, its window crops preprocessed
        ([windows, 3, H, W]); with ``tensor``, the decoded image (uint8 [3, H, W]), cut and resized later on the
        scoring device by :meth:`window_pixels`.

        Pure and picklable, so a ``DataLoader`` can run it in worker processes while CLIP encodes."""
        if self.preprocess == "tensor":
            return decode(image), window_layout(image.height, image.width, self.patch, self.window)[1]
        crops, avg = self.crops(image)
        return (self.clip.preprocess(crops) if crops else torch.zeros(0)), avg

    def window_pixels(self, prepared: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """All windows of the prepared images, in order, as model input [windows, 3, H, W].

        ``tensor``: every image goes to the device once and its windows are slices of it; the windows of one size
        (the full ones; the partial ones along the right and bottom edges) of all the images are resized,
        center-cropped and normalised in one batched call."""
        if self.spec is None:
            pixels = [px for px, avg in prepared if avg.shape[-1]]
            return torch.cat(pixels) if pixels else torch.zeros(0)
        device = self.clip.device
        groups: dict[tuple[int, int], tuple[list[int], list[torch.Tensor]]] = {}
        n = 0
        for image, avg in prepared:
            if not avg.shape[-1]:
                continue
            image = image.to(device)
            for left, top, right, bottom in window_layout(image.shape[1], image.shape[2], self.patch, self.window)[0]:
                where, cuts = groups.setdefault((bottom - top, right - left), ([], []))
                where.append(n)
                cuts.append(image[:, top:bottom, left:right])
                n += 1
        out = torch.empty(n, 3, *self.spec.out_size, device=device)
        for where, cuts in groups.values():
            out.index_copy_(0, torch.tensor(where, device=device), self.spec(torch.stack(cuts)))
        return out

    @torch.no_grad()
    def score_images(self, images: Sequence[Any], objects: Sequence[Sequence[str]]) -> list[list[float | None]]:
        """Scores for each image's objects (None: no window fits, or the object phrase is too long)."""
        return self.score_prepared([self.prepare(im) for im in images], objects)

    @torch.no_grad()
    def score_prepared(self, prepared: Sequence[tuple[torch.Tensor, torch.Tensor]],
                       objects: Sequence[Sequence[str]]) -> list[list[float | None]]:
        features = self.encode_windows(self.window_pixels(prepared))
        return self.score_features(features, [avg for _, avg in prepared], objects)

    @torch.no_grad()
    def encode_windows(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised float32 image features [windows, dim] of :meth:`window_pixels`' output, ``batch_size`` at a
        time (under autocast to ``amp``'s dtype unless it is off)."""
        with torch.autocast(self.clip.device.type, dtype=AMP[self.amp], enabled=self.amp != "off"):
            feats = [self.clip.encode_image(pixels[i:i + self.batch_size])
                     for i in range(0, len(pixels), self.batch_size)]
        return torch.cat(feats).float() if feats else torch.zeros(0)

    @torch.no_grad()
    def score_features(self, features: torch.Tensor, averaging: Sequence[torch.Tensor],
                       objects: Sequence[Sequence[str]]) -> list[list[float | None]]:
        """Scores from the windows' features (images in order) and each image's averaging matrix."""
        out, offset = [], 0
        scale = self.clip.logit_scale
        for avg, objs in zip(averaging, objects):
            prompts = [self.prompt_for(o) for o in objs]
            n = avg.shape[-1]
            if n == 0:
                out.append([None] * len(objs))
                continue
            f = features[offset:offset + n]
            offset += n
            valid = [p for p in prompts if p is not None]
            scores: list[float | None] = [None] * len(objs)
            if valid:
                sims = scale * f @ self.text_features(valid).to(f).T  # [windows, objects]
                patch_scores = avg.to(sims) @ sims  # [patches, objects]
                k = min(self.k, patch_scores.shape[0])
                top = patch_scores.topk(k, dim=0).values.mean(0)
                it = iter(top.tolist())
                scores = [next(it) if p is not None else None for p in prompts]
            out.append(scores)
        return out


class _PreparedImages(torch.utils.data.Dataset):
    """Rows → ``WindowScorer.prepare`` of the decoded image (its preprocessed crops, or with ``tensor`` the uint8
    image; and the averaging matrix), for DataLoader workers.

    A missing or undecodable image comes back as its error message (a ``str``) instead of raising: an exception
    raised in a worker process reaches the main process wrapped in the worker's traceback, so the message travels
    as data and the main process raises it as the CLI's one ``error:`` line, with any number of workers."""

    def __init__(self, scorer: WindowScorer, rows: Sequence[dict], image_dir: str,
                 where: Sequence[str] | None = None):
        self.scorer, self.rows, self.image_dir, self.where = scorer, rows, image_dir, where

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        from common.io import load_image

        try:
            return self.scorer.prepare(load_image(Path(self.image_dir) / self.rows[i]["image"]))
        except LetheError as e:
            return f"{e} (listed at {self.where[i]})" if self.where else str(e)


def _row_key(row: dict) -> str:
    return f"{row.get('image_id', '')}|{row['image']}|{row.get('caption_id', row.get('caption', ''))}"


@cli_main
def main(argv: list[str] | None = None) -> int:
    from common.args import parse_args
    from common.io import append_jsonl, iter_jsonl, iter_jsonl_numbered, repair_jsonl_tail
    from common.models import load_model

    (a,) = parse_args([ClipScoreArguments], argv)
    rows, line_of = [], {}
    for n, r in iter_jsonl_numbered(a.objects_path):
        if "image" not in r or not isinstance(r.get("objects"), list):
            raise LetheError(f"{a.objects_path}:{n}: a row needs 'image' and an 'objects' list")
        rows.append(r)
        line_of[id(r)] = n
    out = Path(a.output_path)
    if a.restart and out.exists():
        out.unlink()
    repair_jsonl_tail(out)  # a run killed mid-line left half a row: drop it, it is scored again
    done = {_row_key(r) for r in iter_jsonl(out)} if out.exists() else set()
    todo = [r for r in rows if _row_key(r) not in done]
    print(f"{len(rows)} captions, {len(rows) - len(todo)} already scored, {len(todo)} to go")
    if not todo:
        return 0
    clip = load_model("clip", a.clip_path, backend=a.clip_backend, device=a.device, verbose=a.verbose)
    preprocess = a.preprocess if a.preprocess != "auto" else "tensor" if clip.device.type == "cuda" else "pil"
    scorer = WindowScorer(clip, a.patch_size, a.window_size, a.average_top_k, a.clip_prompt, a.max_object_words,
                          a.batch_size, preprocess=preprocess, amp=a.amp)
    from tqdm.auto import tqdm

    chunk = max(1, a.batch_size // 8)  # images per CLIP step (~8 windows each at EFUF's settings: batch_size crops)
    where = [f"{a.objects_path}:{line_of[id(r)]}" for r in todo]
    loader = torch.utils.data.DataLoader(_PreparedImages(scorer, todo, a.image_dir, where), batch_size=chunk,
                                         num_workers=a.num_workers, collate_fn=list)
    for i, prepared in enumerate(tqdm(loader, desc="clip scores")):
        failed = next((p for p in prepared if isinstance(p, str)), None)
        if failed is not None:  # the rows scored so far are kept: a re-run resumes after fixing the image
            raise LetheError(failed)
        part = todo[i * chunk:(i + 1) * chunk]
        names = [[o["text"] if isinstance(o, dict) else str(o) for o in r["objects"]] for r in part]
        scores = scorer.score_prepared(prepared, names)
        append_jsonl(out, [{**r, "scores": s} for r, s in zip(part, scores)])
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
