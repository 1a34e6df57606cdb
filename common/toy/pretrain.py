"""Pretrain the toy world's models on CPU, deterministically: a tiny CLIP, then a tiny LLaVA on its vision tower.

* CLIP: the open_clip architecture from a custom model config, trained on clean image/object text pairs
  (in-batch contrastive loss on "a photo containing a {object}." plus a multi-label presence loss over all
  category prompts). Saved as an open_clip ``local-dir`` checkpoint: ``OUT/clip``.
* LLaVA: HF ``LlavaForConditionalGeneration`` whose vision tower is the CLIP's (converted to ``CLIPVisionModel``,
  as real LLaVA uses CLIP), trained with the vision tower frozen on the *biased* caption corpus plus yes/no,
  colour and count questions built from the COCO instances. Saved with ``save_pretrained``: ``OUT/llava``.

It reads only the dataset files (COCO instances, the caption corpus, ``objects.json``), so any dataset in that
layout works. A second run with the same seed, data and code reuses the checkpoints (``OUT/stamp.json``).
Metrics on the val split go to ``OUT/metrics.json``: ``clip_auroc``, ``recall``, ``chair_i``, ``chair_s``,
``bias_share`` (share of hallucinated mentions that are a bias partner of an object in the image).
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from common.errors import LetheError
from common.io import atomic_write_json, load_image, read_json, read_jsonl

CAPTION_PROMPTS = ("Please describe the image.", "Describe this image.",
                   "Please describe the image in great detail. Your response should have at least 100 words.")
SHORT_ANSWER = "\nAnswer the question using a single word or phrase."
YES_NO = " Please answer yes or no."
CLIP_TEMPLATE = "a photo containing a {}."
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass
class PretrainConfig:
    data: str = "dataset/toy"
    out: str = "checkpoints/toy"
    seed: int = 0
    # CLIP
    clip_width: int = 128
    clip_layers: int = 3
    clip_patch: int = 16
    clip_embed_dim: int = 64
    clip_steps: int = 300
    clip_batch: int = 64
    clip_lr: float = 1e-3
    # LLaVA
    llm_hidden: int = 128
    llm_layers: int = 3
    vocab_size: int = 800
    # Existence questions ("Is there a kite?") are learnt late and suddenly (a phase change after ~600 steps of
    # QA at lr 5e-4; never within 1500 steps at 2e-3): 1500 steps with 60 % QA get POPE F1 ≈ 0.98 on the toy val.
    llava_steps: int = 1500
    llava_batch: int = 32
    llava_lr: float = 5e-4
    qa_fraction: float = 0.6
    # "sample": each sample's target tokens averaged first, then the batch (a one-word answer weighs as much as a
    # caption); "token": one mean over every target token of the batch (HF's default, captions dominate)
    llava_loss: str = "sample"
    # evaluation
    eval_max_new_tokens: int = 40
    eval_batch: int = 64

    def __post_init__(self) -> None:
        if self.llava_loss not in ("sample", "token"):
            raise LetheError(f"llava_loss: {self.llava_loss!r} is not one of 'sample', 'token'")

    def key(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("out")
        return d


# ------------------------------------------------------------------------------------------------ data
@dataclass
class ToyData:
    root: Path
    categories: list[dict[str, Any]]
    train_files: list[str]
    train_objects: list[list[int]]  # category ids per image (with repeats)
    val_files: list[str]
    val_objects: list[list[int]]
    captions: dict[str, list[str]]  # train image file -> biased corpus captions
    bias_pairs: list[tuple[int, int]]

    @property
    def n_cat(self) -> int:
        return len(self.categories)


def _coco_objects(path: Path) -> tuple[list[str], list[list[int]]]:
    from pycocotools.coco import COCO

    import contextlib
    import io

    if not path.is_file():
        raise LetheError(f"{path}: COCO instances file not found (run python -m common.toy generate first)")
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
    ids = sorted(coco.getImgIds())
    files = [coco.imgs[i]["file_name"] for i in ids]
    objs = [[a["category_id"] for a in coco.imgToAnns[i]] for i in ids]
    return files, objs


def load_toy_data(root: str | Path) -> ToyData:
    root = Path(root)
    vocab = read_json(root / "objects.json")
    train_files, train_objs = _coco_objects(root / "annotations" / "instances_train.json")
    val_files, val_objs = _coco_objects(root / "annotations" / "instances_val.json")
    caps: dict[str, list[str]] = {}
    for row in read_jsonl(root / "pretrain_captions_train.jsonl"):
        caps.setdefault(row["image"], []).append(row["caption"])
    by_name = {c["name"]: c["id"] for c in vocab["categories"]}
    bias = read_json(root / "bias.json") if (root / "bias.json").is_file() else {"pairs": []}
    pairs = [(by_name[p["a"]], by_name[p["b"]]) for p in bias["pairs"]]
    return ToyData(root, vocab["categories"], train_files, train_objs, val_files, val_objs, caps, pairs)


def _set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------------------ CLIP
def clip_model_config(cfg: PretrainConfig, image_size: int) -> dict[str, Any]:
    return {"embed_dim": cfg.clip_embed_dim,
            "vision_cfg": {"image_size": image_size, "layers": cfg.clip_layers, "width": cfg.clip_width,
                           "patch_size": cfg.clip_patch, "head_width": 32},
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2}}


def train_clip(cfg: PretrainConfig, data: ToyData, image_size: int, log: Callable[[str], None] = print):
    """Returns (open_clip model, model config, loss history)."""
    import open_clip
    from torch.nn import functional as F

    _set_seed(cfg.seed)
    mcfg = clip_model_config(cfg, image_size)
    model = open_clip.CLIP(**mcfg)
    tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=16)
    from common.models.clip import OPENAI_MEAN, OPENAI_STD

    mean, std = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1), torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    pixels = _pixels(data.root / "images" / "train", data.train_files, mean, std)
    names = [c["name"] for c in data.categories]
    syns = [c["synonyms"] for c in data.categories]
    cid_index = {c["id"]: i for i, c in enumerate(data.categories)}
    presence = torch.zeros(len(data.train_files), data.n_cat)
    for i, objs in enumerate(data.train_objects):
        for c in objs:
            presence[i, cid_index[c]] = 1
    prompt_tokens = tokenizer([CLIP_TEMPLATE.format(n) for n in names])
    # every (category, synonym) text tokenised once
    syn_texts = [(k, s) for k, ss in enumerate(syns) for s in ss]
    syn_tokens = tokenizer([CLIP_TEMPLATE.format(s) for _, s in syn_texts])
    syn_of_cat = [[j for j, (k, _) in enumerate(syn_texts) if k == kk] for kk in range(data.n_cat)]

    bias = torch.nn.Parameter(torch.tensor(-5.0))  # presence-logit offset of the multi-label term
    opt = torch.optim.AdamW([{"params": model.parameters()}, {"params": [bias], "weight_decay": 0.0}],
                            lr=cfg.clip_lr, weight_decay=0.05)
    sched = _cosine(opt, cfg.clip_steps, warmup=max(1, cfg.clip_steps // 20))
    g = torch.Generator().manual_seed(cfg.seed)
    losses: list[float] = []
    model.train()
    t0 = time.perf_counter()
    for step in range(cfg.clip_steps):
        idx = torch.randint(len(pixels), (cfg.clip_batch,), generator=g)
        # one present object per image (a random synonym) as its paired text
        texts = []
        for i in idx.tolist():
            present = presence[i].nonzero().flatten().tolist()
            k = present[int(torch.randint(len(present), (1,), generator=g))]
            texts.append(syn_of_cat[k][int(torch.randint(len(syn_of_cat[k]), (1,), generator=g))])
        out = model(pixels[idx], torch.cat([syn_tokens[texts], prompt_tokens]))
        img, txt, scale = out[0], out[1], out[2]
        pair_txt, cat_txt = txt[: len(idx)], txt[len(idx):]
        # texts naming the same category are not negatives of each other
        same = torch.tensor([[syn_texts[a][0] == syn_texts[b][0] for b in texts] for a in texts])
        logits = scale * img @ pair_txt.T
        logits_i = logits.masked_fill(same & ~torch.eye(len(idx), dtype=torch.bool), -1e4)
        contrastive = (F.cross_entropy(logits_i, torch.arange(len(idx)))
                       + F.cross_entropy(logits_i.T, torch.arange(len(idx)))) / 2
        multilabel = F.binary_cross_entropy_with_logits(scale * img @ cat_txt.T + bias, presence[idx])
        loss = contrastive + multilabel
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == cfg.clip_steps - 1:
            log(f"  clip step {step:4d}  loss {loss.item():.4f}  ({time.perf_counter() - t0:.0f} s)")
    model.eval()
    return model, mcfg, losses


def _pixels(folder: Path, files: list[str], mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    arr = np.stack([np.asarray(load_image(folder / f), dtype=np.float32) for f in files]) / 255.0
    return (torch.from_numpy(arr).permute(0, 3, 1, 2) - mean) / std


def _cosine(opt, total: int, warmup: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(opt, f)


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve (Mann–Whitney U with average ranks for ties)."""
    s, y = scores.flatten().double(), labels.flatten().bool()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise LetheError("AUROC needs both positive and negative pairs")
    order = torch.argsort(s)
    ranks = torch.empty_like(s)
    ranks[order] = torch.arange(1, len(s) + 1, dtype=torch.double)
    for v in torch.unique(s):  # average ranks of ties
        m = s == v
        if m.sum() > 1:
            ranks[m] = ranks[m].mean()
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def clip_presence_auroc(clip, data: ToyData) -> float:
    """AUROC of image vs "a photo containing {object}" for object presence on the val split."""
    cid_index = {c["id"]: i for i, c in enumerate(data.categories)}
    labels = torch.zeros(len(data.val_files), data.n_cat)
    for i, objs in enumerate(data.val_objects):
        for c in objs:
            labels[i, cid_index[c]] = 1
    with torch.no_grad():
        img = torch.cat([clip.encode_image(clip.preprocess([data.root / "images" / "val" / f for f in chunk]))
                         for chunk in _chunks(data.val_files, 256)])
        txt = clip.encode_text([CLIP_TEMPLATE.format(c["name"]) for c in data.categories])
        return auroc(clip.similarity(img, txt), labels)


def _chunks(xs: list, n: int):
    for i in range(0, len(xs), n):
        yield xs[i:i + n]


# ------------------------------------------------------------------------------------------------ LLaVA
def qa_pairs(rng: random.Random, data: ToyData, i: int) -> tuple[str, str]:
    """A yes/no, colour or count question about train image ``i`` with its true answer."""
    cats = {c["id"]: c for c in data.categories}
    objs = data.train_objects[i]
    present = sorted(set(objs))
    kind = rng.choice(("exist_yes", "exist_no", "exist_yes", "exist_no", "color", "count"))  # yes:no = 1:1
    if kind == "exist_yes" or kind.startswith("exist") and len(present) == len(cats):
        c, ans = cats[rng.choice(present)], "Yes"
    elif kind == "exist_no":
        partners = [b for a, b in data.bias_pairs if a in present and b not in present]
        absent = [k for k in cats if k not in present]
        c, ans = cats[rng.choice(partners if partners and rng.random() < 0.5 else absent)], "No"
    elif kind == "color":
        c = cats[rng.choice(present)]
        return f"What color is the {c['name']}?{SHORT_ANSWER}", c["color"].capitalize()
    else:
        c = cats[rng.choice(present)]
        n = objs.count(c["id"])
        return f"How many {c['plural']} are there in the image?{SHORT_ANSWER}", NUMBER_WORDS[n].capitalize()
    if rng.random() < 0.5:
        return f"Is there a {c['name']} in the image?{SHORT_ANSWER}", ans
    return f"Is there a {c['name']} in this image?{YES_NO}", ans


def llava_samples(cfg: PretrainConfig, data: ToyData, n: int, images: list) -> list:
    """The training stream: ``n`` samples, captions (biased corpus) mixed with QA, in a seeded order."""
    from common.models import Sample

    rng = random.Random(cfg.seed)
    out = []
    for _ in range(n):
        i = rng.randrange(len(data.train_files))
        if rng.random() < cfg.qa_fraction:
            q, a = qa_pairs(rng, data, i)
            out.append(Sample(images[i], q, target=a))
        else:
            cap = rng.choice(data.captions[data.train_files[i]])
            out.append(Sample(images[i], rng.choice(CAPTION_PROMPTS), target=cap))
    return out


def build_toy_llava(cfg: PretrainConfig, data: ToyData, vision_tower, image_size: int):
    """An untrained LLaVA (HF classes) with the given CLIP vision tower and a tokenizer trained on the corpus."""
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    from common.models.clip import OPENAI_MEAN, OPENAI_STD
    from common.tiny import LLAVA_CHAT_TEMPLATE, build_tokenizer

    rng = random.Random(cfg.seed)
    corpus = [c for caps in data.captions.values() for c in caps]
    corpus += [" ".join(qa_pairs(rng, data, i % len(data.train_files))) for i in range(3000)]
    corpus += list(CAPTION_PROMPTS) + [n for n in NUMBER_WORDS] + ["USER: ASSISTANT: Yes No"]
    tok = build_tokenizer(corpus, vocab_size=cfg.vocab_size, chat_template=LLAVA_CHAT_TEMPLATE)
    vcfg = vision_tower.config
    patch = vcfg.patch_size
    text = dict(model_type="llama", vocab_size=len(tok), hidden_size=cfg.llm_hidden,
                intermediate_size=2 * cfg.llm_hidden, num_hidden_layers=cfg.llm_layers, num_attention_heads=4,
                num_key_value_heads=4, max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    lcfg = LlavaConfig(vision_config=vcfg.to_dict(), text_config=text,
                       image_token_index=tok.convert_tokens_to_ids("<image>"),
                       image_seq_length=(image_size // patch) ** 2, vision_feature_layer=-1,
                       vision_feature_select_strategy="default", projector_hidden_act="gelu")
    torch.manual_seed(cfg.seed)
    model = LlavaForConditionalGeneration(lcfg)
    model.model.vision_tower.load_state_dict(vision_tower.state_dict())
    gc = model.generation_config
    gc.pad_token_id, gc.eos_token_id, gc.bos_token_id, gc.do_sample = (tok.pad_token_id, tok.eos_token_id,
                                                                       tok.bos_token_id, False)
    ip = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
                            image_mean=list(OPENAI_MEAN), image_std=list(OPENAI_STD))
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=patch, chat_template=LLAVA_CHAT_TEMPLATE,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1)
    return model, proc


def train_llava(cfg: PretrainConfig, vlm, data: ToyData, images: list, log: Callable[[str], None] = print,
                scratch: Path | None = None) -> list[float]:
    """Projector + LLM training with the vision tower frozen, through ``transformers.Trainer``."""
    import tempfile

    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    _set_seed(cfg.seed)
    vlm.set_trainable("llm")
    for part in vlm.connector_parts().values():
        part.requires_grad_(True)
    samples = llava_samples(cfg, data, cfg.llava_steps * cfg.llava_batch, images)

    def collate(batch):
        b = vlm.build_batch(batch)
        return {**b.inputs, "labels": b.labels}

    losses: list[float] = []
    t0 = time.perf_counter()

    class Log(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))
                if state.global_step % 100 == 0 or state.global_step == state.max_steps:
                    log(f"  llava step {state.global_step:4d}  loss {logs['loss']:.4f}  "
                        f"({time.perf_counter() - t0:.0f} s)")

    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=cfg.llava_batch,
                                 max_steps=cfg.llava_steps, learning_rate=cfg.llava_lr, weight_decay=0.0,
                                 warmup_steps=max(1, cfg.llava_steps // 20), lr_scheduler_type="cosine",
                                 logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
                                 seed=cfg.seed, data_seed=cfg.seed, dataloader_num_workers=0,
                                 remove_unused_columns=False, disable_tqdm=True)
        trainer_cls = _sample_mean_trainer() if cfg.llava_loss == "sample" else Trainer
        trainer = trainer_cls(model=vlm.model, args=args, train_dataset=_ListDataset(samples), data_collator=collate,
                              callbacks=[Log()])
        trainer.remove_callback(PrinterCallback)  # our Log callback prints a line every 100 steps
        trainer.train()
    vlm.model.eval()
    return losses


def _sample_mean_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over samples of each sample's mean next-token NLL on its labelled positions."""
    from torch.nn import functional as F

    from common.models.base import IGNORE_INDEX

    shift_logits, shift_labels = logits[:, :-1].float(), labels[:, 1:].to(logits.device)
    nll = F.cross_entropy(shift_logits.transpose(1, 2), shift_labels, ignore_index=IGNORE_INDEX, reduction="none")
    n = (shift_labels != IGNORE_INDEX).sum(1)
    return (nll.sum(1) / n.clamp(min=1)).sum() / (n > 0).sum().clamp(min=1)


def _sample_mean_trainer():
    from transformers import Trainer

    class SampleMeanTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs.pop("labels")
            out = model(**inputs)
            loss = _sample_mean_nll(out.logits, labels)
            return (loss, out) if return_outputs else loss

    return SampleMeanTrainer


class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, items: list):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


# ------------------------------------------------------------------------------------------------ evaluation
def caption_metrics(captions: list[str], data: ToyData) -> dict[str, float]:
    """CHAIR_i / CHAIR_s / recall of val captions with the toy vocabulary, and the bias share of hallucinations."""
    from common.text.objects import ObjectExtractor

    extractor = ObjectExtractor.canonical(data.root / "synonyms.txt", default_merges=False)
    cats = {c["id"]: c["name"] for c in data.categories}
    partners: dict[str, set[str]] = {}
    for a, b in data.bias_pairs:
        partners.setdefault(cats[a], set()).add(cats[b])
    halluc = bias_hits = mentioned = hit_captions = covered = gt_total = 0
    for cap, objs in zip(captions, data.val_objects):
        gt = {cats[c] for c in objs}
        words = extractor.extract(cap).categories
        hal = [w for w in words if w not in gt]
        mentioned += len(words)
        halluc += len(hal)
        hit_captions += bool(hal)
        bias_hits += sum(any(w in partners.get(g, ()) for g in gt) for w in hal)
        covered += len(gt & set(words))
        gt_total += len(gt)
    return {"chair_i": halluc / max(1, mentioned), "chair_s": hit_captions / max(1, len(captions)),
            "recall": covered / max(1, gt_total), "bias_share": bias_hits / max(1, halluc),
            "hallucinated_mentions": halluc, "object_mentions": mentioned}


# ------------------------------------------------------------------------------------------------ driver
# What the cached models depend on besides the config and the data: the code that shapes them (this file, the
# model layer's prompts and forward map, the tokenizer builder; under common/) and the releases that run it.
STAMP_FILES = ("toy/pretrain.py", "models/base.py", "models/llava.py", "models/clip.py", "tiny.py")
STAMP_PACKAGES = ("torch", "transformers", "tokenizers", "open_clip_torch")


def _stamp(cfg: PretrainConfig, data_root: Path) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(cfg.key(), sort_keys=True).encode())
    manifest = data_root / "manifest.json"
    h.update(manifest.read_bytes() if manifest.is_file() else b"")
    common = Path(__file__).resolve().parents[1]
    for f in STAMP_FILES:
        h.update((common / f).read_bytes())
    import importlib.metadata as md

    for pkg in STAMP_PACKAGES:
        h.update(f"{pkg}=={md.version(pkg)}".encode())
    return h.hexdigest()


def pretrain(cfg: PretrainConfig, log: Callable[[str], None] = print, force: bool = False) -> dict[str, Any]:
    from common.models import load_model
    from common.models.clip import save_open_clip

    out, root = Path(cfg.out), Path(cfg.data)
    stamp = _stamp(cfg, root)
    stamp_file = out / "stamp.json"
    if not force and stamp_file.is_file() and read_json(stamp_file).get("stamp") == stamp \
            and (out / "metrics.json").is_file():
        metrics = read_json(out / "metrics.json")
        log(f"toy models up to date in {out} (same seed, data and code): reusing them")
        _print_metrics(metrics, log)
        return metrics
    t_start = time.perf_counter()
    data = load_toy_data(root)
    image_size = load_image(root / "images" / "train" / data.train_files[0]).size[0]
    log(f"[1/3] tiny CLIP: {cfg.clip_steps} steps on {len(data.train_files)} images")
    model, mcfg, clip_losses = train_clip(cfg, data, image_size, log)
    save_open_clip(model, mcfg, out / "clip")
    clip = load_model("clip", str(out / "clip"), device="cpu")
    clip_auroc = clip_presence_auroc(clip, data)
    log(f"      clip presence AUROC on val: {clip_auroc:.4f}")

    log(f"[2/3] tiny LLaVA on the CLIP tower: {cfg.llava_steps} steps")
    from common.models.llava import LlavaVLM

    hf_tower = clip.to_hf_vision_model()
    model, proc = build_toy_llava(cfg, data, hf_tower, image_size)
    vlm = LlavaVLM(model, proc)
    images = [load_image(root / "images" / "train" / f) for f in data.train_files]
    llava_losses = train_llava(cfg, vlm, data, images, log, scratch=out.parent if out.parent.exists() else None)
    vlm.model.save_pretrained(out / "llava")
    vlm.processor.save_pretrained(out / "llava")

    log(f"[3/3] captions for {len(data.val_files)} val images")
    vlm = load_model("llava", str(out / "llava"), dtype="float32", device="cpu")
    val_images = [load_image(root / "images" / "val" / f) for f in data.val_files]
    caps = vlm.generate(val_images, [CAPTION_PROMPTS[0]] * len(val_images), max_new_tokens=cfg.eval_max_new_tokens,
                        batch_size=cfg.eval_batch)
    metrics = {"clip_auroc": clip_auroc, **caption_metrics(caps, data),
               "clip_first_loss": clip_losses[0], "llava_first_loss": llava_losses[0],
               "clip_final_loss": clip_losses[-1], "llava_final_loss": llava_losses[-1],
               "seconds": round(time.perf_counter() - t_start, 1)}
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_json(out / "val_captions.json", [{"image": f, "caption": c} for f, c in zip(data.val_files, caps)])
    atomic_write_json(stamp_file, {"stamp": stamp, "config": asdict(cfg)})
    _print_metrics(metrics, log)
    return metrics


def _print_metrics(m: dict[str, Any], log: Callable[[str], None]) -> None:
    log("metric        value")
    for k in ("clip_auroc", "recall", "chair_i", "chair_s", "bias_share"):
        log(f"{k:<13} {m[k]:.4f}")


def add_arguments(p) -> None:
    for f in fields(PretrainConfig):
        p.add_argument(f"--{f.name}", type=type(f.default), default=f.default, help=f"(default: {f.default})")
    p.add_argument("--force", action="store_true", help="retrain even if the checkpoints are up to date")
    p.add_argument("--generate_if_missing", type=int, default=1,
                   help="generate the toy world at --data with --seed when it is missing (default: 1)")
