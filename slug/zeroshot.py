"""Zero-shot classification sets and a fast evaluator for SLUG's step-size search and ``slug/eval.py``.

Sets: an image folder in the ImageNet-val layout (``ROOT/<class folder>/*.jpg``; class names from
``classes.json`` ``{folder: name}`` in ROOT or its parent, else the folder names with ``_`` as spaces), and
CelebA-style identities (``img_align_celeba/`` + ``list_identity_celeba.txt`` ``"<file> <identity id>"`` + a names
file ``"<identity id> <name>"``, since CelebA's names are not public).

Scores: top-1 / top-5 accuracy of ``argmax_c cos(f_I(x), w_c)`` where ``w_c`` is the mean of the normalised text
features of the class name in every template, renormalised (open_clip's zero-shot classifier). The evaluator keeps
the preprocessed pixels, and the features of the tower a SLUG step does not touch, so one trial of the search
re-encodes only what the edited tensor changes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

from common.errors import LetheError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".JPEG", ".JPG", ".PNG")
DEFAULT_TEMPLATES = ("a photo of {}.",)


@dataclass
class ZeroShotSet:
    """Images with a class index each, and the candidate class names."""

    name: str
    images: list[Path]
    labels: list[int]
    class_names: list[str]

    def __post_init__(self) -> None:
        if not self.images:
            raise LetheError(f"zero-shot set {self.name!r} has no images")
        if len(self.images) != len(self.labels):
            raise ValueError("one label per image")

    def only(self, keep: Sequence[str] | None = None, drop: Sequence[str] | None = None, name: str | None = None):
        """The images of some classes (the candidates stay all classes)."""
        idx = [k for k, lab in enumerate(self.labels)
               if (keep is None or self.class_names[lab] in keep) and (drop is None or self.class_names[lab] not in drop)]
        return ZeroShotSet(name or self.name, [self.images[k] for k in idx], [self.labels[k] for k in idx],
                           self.class_names)


def class_map(root: Path) -> dict[str, str] | None:
    for cand in (root / "classes.json", root.parent / "classes.json"):
        if cand.is_file():
            try:
                m = json.loads(cand.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise LetheError(f"{cand}: not a JSON object {{folder: class name}} ({e.__class__.__name__})") from None
            if not isinstance(m, dict):
                raise LetheError(f"{cand}: not a JSON object {{folder: class name}}")
            return {str(k): str(v) for k, v in m.items()}
    return None


def imagenet_names(folders: Sequence[str]) -> dict[str, str] | None:
    """ImageNet-1k's class names (open_clip's list, in sorted-wnid order) when the folders are its 1000 wnids."""
    import re

    if len(folders) != 1000 or not all(re.fullmatch(r"n\d{8}", f) for f in folders):
        return None
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return dict(zip(sorted(folders), IMAGENET_CLASSNAMES))


def load_image_folder(root: str | Path, name: str | None = None) -> ZeroShotSet:
    """An ImageNet-val-layout folder: one sub-folder of images per class (names: classes.json, else ImageNet-1k's
    names for its 1000 wnid folders, else the folder names)."""
    root = Path(root)
    if not root.is_dir():
        raise LetheError(f"{root}: image folder not found (expected ROOT/<class>/<images>)")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise LetheError(f"{root}: no class folders (expected ROOT/<class>/<images>, the ImageNet-val layout)")
    names = class_map(root) or imagenet_names([f.name for f in folders]) or {}
    missing = [f.name for f in folders if names and f.name not in names]
    if missing:
        raise LetheError(f"{root}: classes.json has no name for folder(s) {', '.join(missing[:3])}")
    class_names = [names.get(f.name, f.name.replace("_", " ")) for f in folders]
    images, labels = [], []
    for k, f in enumerate(folders):
        files = sorted(p for p in f.iterdir() if p.suffix in IMAGE_EXTENSIONS)
        images += files
        labels += [k] * len(files)
    return ZeroShotSet(name or root.name, images, labels, class_names)


def load_identities(celeba_root: str | Path, names_file: str | Path, identities: Sequence[str] | None = None,
                    name: str = "celeba") -> ZeroShotSet:
    """CelebA-style identities: the images of ``identities`` (all when None), candidates = every named identity."""
    root = Path(celeba_root)
    ident = root / "list_identity_celeba.txt"
    if not ident.is_file():
        raise LetheError(f"{ident}: file not found (CelebA's '<image file> <identity id>' list)")
    id_name: dict[str, str] = {}
    for n, line in enumerate(Path(names_file).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            parts = line.split(maxsplit=1)
            if len(parts) != 2:
                raise LetheError(f"{names_file} line {n}: expected '<identity id> <name>'")
            id_name[parts[0]] = parts[1].strip()
    class_names = sorted(set(id_name.values()))
    index = {c: k for k, c in enumerate(class_names)}
    wanted = None if identities is None else {i.replace("_", " ").lower() for i in identities}
    unknown = [] if wanted is None else sorted(w for w in wanted if w not in {c.replace("_", " ").lower()
                                                                           for c in class_names})
    if unknown:
        raise LetheError(f"{names_file}: no identity named {unknown[0]!r}")
    images, labels = [], []
    for line in ident.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) != 2 or parts[1] not in id_name:
            continue
        cname = id_name[parts[1]]
        if wanted is None or cname.replace("_", " ").lower() in wanted:
            images.append(root / "img_align_celeba" / parts[0])
            labels.append(index[cname])
    return ZeroShotSet(name, images, labels, class_names)


def prompts(class_names: Sequence[str], templates: Sequence[str]) -> list[str]:
    return [t.format(c.replace("_", " ")) for c in class_names for t in templates]


class Evaluator:
    """Top-1/top-5 of several zero-shot sets for one CLIP, fast under single-tensor edits.

    ``evaluate()`` encodes everything and keeps the features as the reference; ``evaluate(changed="vision")``
    re-encodes only the images (the edit is in the vision tower) and ``changed="text"`` only the class prompts, each
    with the other side taken from the reference — right as long as the model differs from the reference in that
    one tower (a single-tensor edit from the original weights, as the search makes)."""

    def __init__(self, clip, sets: Sequence[ZeroShotSet], templates: Sequence[str] = DEFAULT_TEMPLATES,
                 batch_size: int = 128, cache_pixels_mb: float = 2048):
        self.clip, self.sets, self.templates, self.batch_size = clip, list(sets), list(templates), batch_size
        self.cache_pixels_mb = cache_pixels_mb
        self._pixels: dict[str, list[torch.Tensor]] = {}
        self._image_feats: dict[str, torch.Tensor] = {}
        self._classifiers: dict[tuple[str, ...], torch.Tensor] = {}

    def _pixel_batches(self, s: ZeroShotSet):
        if s.name in self._pixels:
            yield from self._pixels[s.name]
            return
        kept, size = [], 0.0
        for a in range(0, len(s.images), self.batch_size):
            px = self.clip.preprocess(list(s.images[a:a + self.batch_size]))
            size += px.numel() * px.element_size() / 2**20
            kept.append(px)
            yield px
        if size <= self.cache_pixels_mb:
            self._pixels[s.name] = kept

    @torch.inference_mode()
    def image_features(self, s: ZeroShotSet) -> torch.Tensor:
        return torch.cat([self.clip.encode_image(px).float().cpu() for px in self._pixel_batches(s)])

    @torch.inference_mode()
    def classifier(self, class_names: Sequence[str]) -> torch.Tensor:
        texts = prompts(class_names, self.templates)
        feats = torch.cat([self.clip.encode_text(texts[a:a + self.batch_size]).float().cpu()
                           for a in range(0, len(texts), self.batch_size)])
        w = feats.view(len(class_names), len(self.templates), -1).mean(1)
        return torch.nn.functional.normalize(w, dim=-1)

    def evaluate(self, changed: str | None = None) -> dict[str, dict[str, float]]:
        """Scores of the model as it is now. ``changed`` names the one tower that differs from the model of the
        last full evaluation (``changed=None``): the other tower's features are those of that evaluation."""
        if changed is not None and not self._image_feats:
            raise RuntimeError("Evaluator.evaluate(changed=...) needs a full evaluate() first (its reference)")
        out = {}
        for s in self.sets:
            key = tuple(s.class_names)
            if changed == "text":
                img = self._image_feats[s.name]
            else:
                img = self.image_features(s)
            if changed == "vision":
                w = self._classifiers[key]
            else:
                w = self.classifier(s.class_names)
            if changed is None:  # the reference the partial evaluations reuse
                self._image_feats[s.name], self._classifiers[key] = img, w
            out[s.name] = topk_accuracy(img @ w.T, torch.tensor(s.labels))
        return out


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """``{"top1": ..., "top5": ...}``: the share of rows whose label is among the k highest scores (ties broken
    against the label: a tie with the true class counts as ranked above it)."""
    true = logits.gather(1, labels.view(-1, 1))
    rank = (logits > true).sum(1) + ((logits == true).sum(1) - 1)  # pessimistic: ties rank above the true class
    return {f"top{k}": float((rank < k).float().mean()) for k in ks}


# ------------------------------------------------------------------------------------------------ the CLI's sets
@dataclass
class EvalSetArguments:
    """The zero-shot sets of ``slug/unlearn.py`` and ``slug/eval.py``."""

    concept: Optional[str] = field(default=None, metadata={"help": "the class name to forget (one of --class_names)"})
    forget_images: Optional[str] = field(default=None, metadata={"help": "a folder of the concept's images (recursive)"})
    class_names: Optional[str] = field(default=None, metadata={
        "help": "the candidate classes: a JSON {folder: name} / list, a text file (one per line), or an "
                "ImageNet-layout folder (its class folders); default: --retain_folder's classes"})
    retain_folder: Optional[str] = field(default=None, metadata={
        "help": "retain accuracy: an ImageNet-val-layout folder (the concept's own folder, if any, is left out)"})
    retain_max_images: int = field(default=0, metadata={"help": "a seeded random subset of N retain images (0: all)"})
    templates: list[str] = field(default_factory=lambda: list(DEFAULT_TEMPLATES), metadata={
        "help": "zero-shot prompt templates ('{}' = the class name), averaged"})
    celeba_root: Optional[str] = field(default=None, metadata={"help": "CelebA root (img_align_celeba/, list_identity_celeba.txt)"})
    identity_names: Optional[str] = field(default=None, metadata={"help": "CelebA '<identity id> <name>' file"})
    celeba_identities: Optional[str] = field(default=None, metadata={
        "help": "comma-separated names scored as the 'celeba' set (e.g. the 100 frequent ones); default: all"})
    eval_batch_size: int = field(default=128, metadata={"help": "images / prompts per encoder call"})
    seed: int = field(default=0, metadata={"help": "seed of --retain_max_images' subset"})


def read_class_names(spec: str) -> list[str]:
    p = Path(spec)
    if p.is_dir():
        return load_image_folder(p).class_names
    if not p.is_file():
        raise LetheError(f"--class_names {spec}: file or folder not found")
    if p.suffix == ".json":
        try:
            obj = json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise LetheError(f"{p}: not JSON ({e.__class__.__name__})") from None
        names = list(obj.values()) if isinstance(obj, dict) else obj
    else:
        names = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise LetheError(f"{p}: expected class names (a JSON list / {{folder: name}} or one name per line)")
    return names


def same_class(a: str, b: str) -> bool:
    return a.replace("_", " ").strip().lower() == b.replace("_", " ").strip().lower()


def build_sets(a: EvalSetArguments) -> dict[str, ZeroShotSet]:
    """``{"forget": ..., "retain": ... [, "celeba": ...]}`` from the arguments (one ``error:`` line when wrong)."""
    import random

    if not a.concept:
        raise LetheError("--concept is required (the class name to forget)")
    if not a.forget_images and not a.celeba_root:
        raise LetheError("--forget_images (a folder of the concept's images) or --celeba_root is required")
    retain_all = load_image_folder(a.retain_folder, "retain") if a.retain_folder else None
    sets: dict[str, ZeroShotSet] = {}
    if a.celeba_root:
        if not a.identity_names:
            raise LetheError("--celeba_root needs --identity_names ('<identity id> <name>' per line)")
        sets["forget"] = load_identities(a.celeba_root, a.identity_names, [a.concept], "forget")
        wanted = [s for s in (a.celeba_identities or "").split(",") if s.strip()] or None
        sets["celeba"] = load_identities(a.celeba_root, a.identity_names, wanted, "celeba")
    else:
        names = read_class_names(a.class_names) if a.class_names else (
            retain_all.class_names if retain_all else None)
        if names is None:
            raise LetheError("--class_names (or --retain_folder, whose classes are the candidates) is required")
        hit = [k for k, n in enumerate(names) if same_class(n, a.concept)]
        if not hit:
            raise LetheError(f"--concept {a.concept!r} is not among the {len(names)} class names "
                             f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})")
        root = Path(a.forget_images)
        if not root.is_dir():
            raise LetheError(f"--forget_images {root}: folder not found")
        files = sorted(p for p in root.rglob("*") if p.suffix in IMAGE_EXTENSIONS)
        if not files:
            raise LetheError(f"--forget_images {root}: no images")
        sets["forget"] = ZeroShotSet("forget", files, [hit[0]] * len(files), list(names))
    if retain_all is not None:
        retain = retain_all.only(drop=[n for n in retain_all.class_names if same_class(n, a.concept)], name="retain")
        if a.class_names and not a.celeba_root:
            cand = sets["forget"].class_names
            missing = [n for n in retain.class_names if not any(same_class(n, c) for c in cand)]
            if missing:
                raise LetheError(f"--retain_folder classes {missing[:3]} are not among --class_names")
            index = [next(k for k, c in enumerate(cand) if same_class(c, n)) for n in retain.class_names]
            retain = ZeroShotSet("retain", retain.images, [index[lab] for lab in retain.labels], list(cand))
        if a.retain_max_images and len(retain.images) > a.retain_max_images:
            keep = sorted(random.Random(a.seed).sample(range(len(retain.images)), a.retain_max_images))
            retain = ZeroShotSet("retain", [retain.images[k] for k in keep], [retain.labels[k] for k in keep],
                                 retain.class_names)
        sets["retain"] = retain
    elif "celeba" not in sets:
        raise LetheError("--retain_folder (an ImageNet-val-layout folder) is required for the retain accuracy")
    return sets
