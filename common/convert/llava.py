"""Original LLaVA-1.5 / ShareGPT4V checkpoint dir → Hugging Face ``LlavaForConditionalGeneration``.

The original layout (haotian-liu/LLaVA ``llava/model/``; ShareGPT4V ``share4v/model/`` in
InternLM/InternLM-XComposer ``projects/ShareGPT4V``): ``config.json`` is a Llama config plus ``mm_vision_tower``
(a Hugging Face CLIP dir or id; ShareGPT4V-7B: ``Lin-Chen/ShareGPT4V-7B_Pretrained_vit-large336-l12``),
``mm_projector_type: mlp2x_gelu``, ``mm_hidden_size``, ``mm_vision_select_layer: -2``,
``mm_vision_select_feature: patch``, ``image_aspect_ratio: pad``; the weights hold the LLM (``model.*``,
``lm_head.weight``) and the projector ``model.mm_projector.0.*`` / ``model.mm_projector.2.*``. The vision tower is
built with ``delay_load`` and loaded from ``mm_vision_tower``, so tower tensors inside the LLM checkpoint are ignored
by the official loader (and dropped here, reported). The prompt is the vicuna_v1 conversation (also EFUF's).

Like transformers' ``convert_llava_weights_to_hf``, ``<image>`` and ``<pad>`` tokens are added to the tokenizer and
the embedding/LM-head rows grow (to a multiple of 64) when they are new; the new rows are the mean of the old ones.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from common.convert.core import (ROTARY_BUFFER, Converter, check_complete, llama_text_config, load_llm_tokenizer,
                                 meta_shapes, read_model_dir)
from common.errors import LetheError
from common.models.llava import VICUNA_V1_SYSTEM

SYSTEM = VICUNA_V1_SYSTEM
# vicuna_v1 (LLaVA-1.5, ShareGPT4V evals, EFUF): "{system} USER: <image>\n{prompt} ASSISTANT: {answer}</s>"
VICUNA_V1_CHAT_TEMPLATE = (
    "{{ '" + SYSTEM.replace("'", "\\'") + " ' }}"
    "{% for m in messages %}{% if m['role'] == 'user' %}{{ 'USER: ' }}{% elif m['role'] == 'assistant' %}"
    "{{ 'ASSISTANT: ' }}{% endif %}{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}{{ '<image>\\n' }}{% endif %}{% endfor %}"
    "{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{% if m['role'] == 'assistant' %}{{ '</s>' }}{% else %}{{ ' ' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
IMAGE_TOKEN = "<image>"
TOWER_DROPS = ("text_model.", "text_projection.", "visual_projection.", "logit_scale")


def is_original_layout(path: str | Path) -> bool:
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return False
    try:
        d = json.loads(cfg.read_text())
    except ValueError:
        return False
    return "text_config" not in d and ("mm_vision_tower" in d or "mm_projector_type" in d)


def resolve_vision_tower(path: Path, cfg: dict, vision_tower: str | None = None) -> Path:
    """The CLIP vision tower dir: ``vision_tower`` if given, else ``mm_vision_tower`` as a path (absolute or relative
    to the checkpoint), a subdir of the checkpoint named like the id's last part, or the local Hugging Face cache."""
    name = vision_tower or cfg.get("mm_vision_tower") or cfg.get("vision_tower")
    if not name:
        raise LetheError(f"{path}/config.json: no mm_vision_tower; pass the vision tower dir")
    candidates = [Path(name), path / name, path / Path(name).name]
    for c in candidates:
        if (c / "config.json").is_file():
            return c
    if vision_tower is None and name.count("/") == 1:
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(name, local_files_only=True))
        except Exception:  # noqa: BLE001 - not in the cache
            pass
    raise LetheError(f"vision tower {name!r} not found (looked for {candidates[0]}, {candidates[1]}, "
                     f"{candidates[2]} and the Hugging Face cache); pass its dir (--vision_tower)")


def _image_processor(tower: Path, pad: bool):
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    from common.models.native import read_json

    f = tower / "preprocessor_config.json"
    if not f.is_file():
        raise LetheError(f"{f}: file not found (the vision tower's image processor config)")
    pc = read_json(f)
    size, crop = pc.get("size", 336), pc.get("crop_size", 336)
    size = size if isinstance(size, dict) else {"shortest_edge": int(size)}
    crop = crop if isinstance(crop, dict) else {"height": int(crop), "width": int(crop)}
    return LlavaImageProcessorPil(size=size, crop_size=crop, image_mean=pc.get("image_mean", OPENAI_CLIP_MEAN),
                                  image_std=pc.get("image_std", OPENAI_CLIP_STD), resample=pc.get("resample", 3),
                                  do_pad=pad)


def _resized(t: torch.Tensor, rows: int) -> torch.Tensor:
    if rows == t.shape[0]:
        return t
    mean = t.float().mean(0, keepdim=True).to(t.dtype)
    return torch.cat([t, mean.expand(rows - t.shape[0], -1)], dim=0)


def original_config(path: str | Path, vision_tower: str | None = None):
    """(LlavaConfig, tokenizer, vision tower dir, original config dict, original vocab size); no weights read."""
    from transformers import CLIPVisionConfig, LlavaConfig

    from common.models.native import read_json

    path = Path(path)
    cfg = read_json(path / "config.json")
    ptype = cfg.get("mm_projector_type", "linear")
    if ptype != "mlp2x_gelu":
        raise LetheError(f"{path}/config.json: mm_projector_type {ptype!r}; HF Llava has the LLaVA-1.5 "
                         "'mlp2x_gelu' projector only")
    if cfg.get("mm_use_im_start_end"):
        raise LetheError(f"{path}/config.json: mm_use_im_start_end is not supported by HF Llava")
    select = cfg.get("mm_vision_select_feature", "patch")
    if select not in ("patch", "cls_patch"):
        raise LetheError(f"{path}/config.json: unknown mm_vision_select_feature {select!r}")
    if "eva" in str(cfg.get("mm_vision_tower", "")).lower() and vision_tower is None:
        raise LetheError(f"{path}/config.json: EVA-CLIP vision towers are not supported (CLIP only)")
    tower = resolve_vision_tower(path, cfg, vision_tower)
    try:
        vision = CLIPVisionConfig.from_pretrained(str(tower)).to_dict()
    except Exception as e:  # noqa: BLE001
        raise LetheError(f"{tower}/config.json: not a CLIP vision config ({str(e).splitlines()[0]})") from None
    if cfg.get("mm_hidden_size") not in (None, vision["hidden_size"]):
        raise LetheError(f"{path}/config.json: mm_hidden_size {cfg['mm_hidden_size']} but the vision tower {tower} "
                         f"has width {vision['hidden_size']}")
    vision["model_type"] = "clip_vision_model"
    text = llama_text_config(cfg)
    orig_vocab = int(text["vocab_size"])
    tok = load_llm_tokenizer(path, IMAGE_TOKEN, pad="<pad>")
    vocab = orig_vocab if len(tok) <= orig_vocab else -(-len(tok) // 64) * 64
    text["vocab_size"] = vocab
    n_patches = (vision["image_size"] // vision["patch_size"]) ** 2
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids(IMAGE_TOKEN),
                         image_seq_length=n_patches, vision_feature_layer=cfg.get("mm_vision_select_layer", -2),
                         vision_feature_select_strategy="default" if select == "patch" else "full",
                         projector_hidden_act="gelu", multimodal_projector_bias=True, tie_word_embeddings=False)
    return config, tok, tower, cfg, orig_vocab


def convert_original(path: str | Path, vision_tower: str | None = None, **_):
    """Original dir → (LlavaConfig, state dict, LlavaProcessor, ConversionReport)."""
    from transformers import LlavaForConditionalGeneration, LlavaProcessor

    path = Path(path)
    config, tok, tower, cfg, orig_vocab = original_config(path, vision_tower)
    text = config.text_config.to_dict()
    vocab = text["vocab_size"]
    vision = config.vision_config.to_dict()
    expected = meta_shapes(LlavaForConditionalGeneration, config)

    tower_src = read_model_dir(tower)
    conv = Converter({"llm": read_model_dir(path), "tower": tower_src})
    state: dict[str, torch.Tensor] = {}
    hidden = text["hidden_size"]
    for target, shape in expected.items():
        if target in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
            key = "lm_head.weight" if target == "lm_head.weight" else "model.embed_tokens.weight"
            state[target] = _resized(conv.take("llm", key, (orig_vocab, hidden)), vocab)
        elif target.startswith("model.language_model."):
            state[target] = conv.take("llm", "model." + target[len("model.language_model."):], shape)
        elif target.startswith("model.multi_modal_projector.linear_"):
            idx = {"1": 0, "2": 2}[target[len("model.multi_modal_projector.linear_")]]
            state[target] = conv.take("llm", f"model.mm_projector.{idx}.{target.rsplit('.', 1)[1]}", shape)
        elif target.startswith("model.vision_tower."):
            # transformers 4.x CLIP dirs (and full CLIPModel dirs) prefix the tower with "vision_model."
            key = target[len("model.vision_tower."):]
            key = f"vision_model.{key}" if conv.has("tower", f"vision_model.{key}") else key
            state[target] = conv.take("tower", key, shape)
        else:
            raise LetheError(f"internal: no source rule for {target}")
    conv.drop_matching("llm", ROTARY_BUFFER, "rotary buffer, recomputed")
    conv.drop_matching("llm", lambda k: k.startswith("model.vision_tower."),
                       "vision tower inside the LLM checkpoint; the official loader takes it from mm_vision_tower")
    conv.drop_matching("tower", lambda k: k.startswith(TOWER_DROPS),
                       "CLIP text side / projections, not part of a vision tower")
    conv.drop_matching("tower", lambda k: k.endswith("position_ids"), "position_ids buffer, recomputed")
    state = conv.finish(state)
    check_complete(state, expected, str(path))
    if vocab != orig_vocab:
        conv.report.notes.append(f"vocabulary {orig_vocab} → {vocab} (added {IMAGE_TOKEN} and <pad>; new rows = mean)")

    processor = LlavaProcessor(image_processor=_image_processor(tower, cfg.get("image_aspect_ratio") == "pad"),
                               tokenizer=tok, patch_size=vision["patch_size"],
                               vision_feature_select_strategy=config.vision_feature_select_strategy,
                               chat_template=VICUNA_V1_CHAT_TEMPLATE, num_additional_image_tokens=1,
                               image_token=IMAGE_TOKEN)
    return config, state, processor, conv.report


__all__ = ["VICUNA_V1_CHAT_TEMPLATE", "convert_original", "is_original_layout", "resolve_vision_tower"]
