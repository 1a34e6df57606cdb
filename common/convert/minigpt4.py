"""MiniGPT-4 (Llama-2 variant) official layout → our ``MiniGPT4ForConditionalGeneration``.

The official model (Vision-CAIR/MiniGPT-4: ``minigpt4/models/minigpt4.py``, ``minigpt_base.py``, ``eva_vit.py``,
``configs/models/minigpt4_llama2.yaml``) is assembled from three pieces, which is the layout users arrive with:

- ``eva_vit_g.pth``: the EVA ViT-g state dict LAVIS downloads (``cls_token``, ``pos_embed``, ``patch_embed.proj.*``,
  ``blocks.{i}.norm1/norm2.*``, ``blocks.{i}.attn.qkv.weight`` + ``attn.q_bias``/``attn.v_bias`` (the k bias is
  structurally zero), ``blocks.{i}.attn.proj.*``, ``blocks.{i}.mlp.fc1/fc2.*``). ``create_eva_vit_g`` builds 39 blocks
  of width 1408 with 1408 // 88 heads and loads with ``strict=False``: blocks beyond (and a final ``norm``/``head``,
  if the file has them) are ignored; we drop them too and report it.
- the MiniGPT-4 checkpoint (``pretrained_minigpt4_llama2_7b.pth``): ``{"model": {"llama_proj.weight",
  "llama_proj.bias"}}`` (only trainable tensors are saved). ``ln_vision`` is frozen and never saved, so the official
  model runs it as a freshly initialised LayerNorm (weight 1, bias 0); if a checkpoint carries ``ln_vision.*`` we use it.
- a Hugging Face Llama-2-chat dir (``llama_model`` in the yaml).

``load_model("minigpt4", P)`` accepts P = a directory holding ``eva_vit_g.pth``, exactly one other checkpoint file and
exactly one Llama dir (a subdirectory with ``config.json``), or a yaml file with ``ckpt``, ``llama_model`` and
``eva_vit`` (top level or under ``model:``; relative paths are relative to the yaml).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from common.convert.core import (ROTARY_BUFFER, Converter, check_complete, load_llm_tokenizer, meta_shapes,
                                 read_model_dir, read_tensors)
from common.errors import LetheError

EVA_FILE = "eva_vit_g.pth"
CKPT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
EVA_HEAD_DIM = 88  # create_eva_vit_g: num_heads = 1408 // 88
EVA_G_WIDTH, EVA_G_DEPTH = 1408, 39
# parts of an EVA-CLIP visual state dict that LAVIS/MiniGPT-4's VisionTransformer does not build (commented out there)
EVA_UNUSED = re.compile(r"^(norm|fc_norm|head)\.(weight|bias)$")


def is_official_layout(path: str | Path) -> bool:
    p = Path(path)
    if p.is_file():
        return p.suffix in (".yaml", ".yml")
    return p.is_dir() and not (p / "config.json").is_file()


def resolve_official(path: str | Path, eva_vit: str | None = None, ckpt: str | None = None,
                     llama: str | None = None) -> tuple[Path, Path, Path]:
    """(EVA ViT weights, MiniGPT-4 checkpoint, Llama dir) of an official layout; explicit arguments win."""
    p = Path(path)
    found: dict[str, Path | None] = {"eva_vit": None, "ckpt": None, "llama": None}
    if p.is_file() and p.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise LetheError(f"{p}: malformed yaml ({str(e).splitlines()[0]})") from None
        data = data.get("model", data) if isinstance(data, dict) else {}
        for key, name in (("eva_vit", "eva_vit"), ("ckpt", "ckpt"), ("llama", "llama_model")):
            if data.get(name):
                q = Path(str(data[name]))
                found[key] = q if q.is_absolute() else p.parent / q
        if found["eva_vit"] is None and (p.parent / EVA_FILE).is_file():
            found["eva_vit"] = p.parent / EVA_FILE
    elif p.is_dir():
        if (p / EVA_FILE).is_file():
            found["eva_vit"] = p / EVA_FILE
        ckpts = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in CKPT_SUFFIXES and f.name != EVA_FILE)
        if len(ckpts) > 1 and ckpt is None:
            raise LetheError(f"{p}: several checkpoint files ({', '.join(f.name for f in ckpts)}); keep only the "
                             "MiniGPT-4 projection checkpoint beside eva_vit_g.pth")
        found["ckpt"] = ckpts[0] if ckpts else None
        llamas = sorted(d for d in p.iterdir() if d.is_dir() and (d / "config.json").is_file())
        if len(llamas) > 1 and llama is None:
            raise LetheError(f"{p}: several model dirs ({', '.join(d.name for d in llamas)}); keep only the Llama-2 "
                             "dir")
        found["llama"] = llamas[0] if llamas else None
    else:
        raise LetheError(f"{p}: MiniGPT-4 checkpoint not found (a directory or a yaml file)")
    for key, value in (("eva_vit", eva_vit), ("ckpt", ckpt), ("llama", llama)):
        if value:
            found[key] = Path(value)
    what = {"eva_vit": f"the EVA ViT-g weights ({EVA_FILE})",
            "ckpt": "the MiniGPT-4 checkpoint (e.g. pretrained_minigpt4_llama2_7b.pth)",
            "llama": "the Llama-2 model dir (a subdirectory with config.json)"}
    for key, desc in what.items():
        f = found[key]
        if f is None:
            raise LetheError(f"{p}: MiniGPT-4 official layout needs {desc}; not found")
        if key == "llama" and not (f / "config.json").is_file():
            raise LetheError(f"{f}/config.json: file not found ({desc})")
        if key != "llama" and not f.is_file():
            raise LetheError(f"{f}: file not found ({desc})")
    return found["eva_vit"], found["ckpt"], found["llama"]  # type: ignore[return-value]


def eva_vision_config(eva: dict[str, torch.Tensor], path: str) -> dict:
    """The Blip2VisionConfig of an EVA ViT state dict (shapes; heads and depth as ``create_eva_vit_g``)."""
    for key in ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.mlp.fc1.weight"):
        if key not in eva:
            raise LetheError(f"{path}: tensor {key!r} is missing (not an EVA ViT state dict?)")
    width = eva["cls_token"].shape[-1]
    patch = eva["patch_embed.proj.weight"].shape[-1]
    grid = math.isqrt(eva["pos_embed"].shape[1] - 1)
    if grid * grid != eva["pos_embed"].shape[1] - 1:
        raise LetheError(f"{path}: tensor 'pos_embed' has shape {tuple(eva['pos_embed'].shape)}, not 1 + a square "
                         "number of patches")
    blocks = {int(m.group(1)) for k in eva if (m := re.match(r"blocks\.(\d+)\.", k))}
    depth = EVA_G_DEPTH if width == EVA_G_WIDTH else len(blocks)
    if width % EVA_HEAD_DIM:
        raise LetheError(f"{path}: width {width} is not a multiple of the EVA head size {EVA_HEAD_DIM}")
    return dict(hidden_size=width, intermediate_size=eva["blocks.0.mlp.fc1.weight"].shape[0],
                num_hidden_layers=depth, num_attention_heads=width // EVA_HEAD_DIM, image_size=grid * patch,
                patch_size=patch, hidden_act="gelu", layer_norm_eps=1e-6, qkv_bias=True)


def eva_key(key: str) -> str | None:
    """One-to-one EVA ViT key → our key (None for q_bias/v_bias, which combine into ``qkv.bias``)."""
    simple = {"cls_token": "embeddings.class_embedding", "pos_embed": "embeddings.position_embedding",
              "patch_embed.proj.weight": "embeddings.patch_embedding.weight",
              "patch_embed.proj.bias": "embeddings.patch_embedding.bias"}
    if key in simple:
        return "vision_model." + simple[key]
    m = re.match(r"blocks\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)$", key)
    if not m:
        return None
    part = {"norm1": "layer_norm1", "norm2": "layer_norm2", "attn.qkv": "self_attn.qkv",
            "attn.proj": "self_attn.projection", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}[m.group(2)]
    return f"vision_model.encoder.layers.{m.group(1)}.{part}.{m.group(3)}"


def remap_legacy_key(key: str) -> str | None:
    """A key of the original MiniGPT-4 model (``visual_encoder``/``ln_vision``/``llama_proj``/``llama_model``) → ours."""
    if ROTARY_BUFFER.search(key):
        return None
    if key.startswith("llama_model."):
        return "language_model." + key[len("llama_model."):]
    if key.startswith("ln_vision."):
        return "vision_model.post_layernorm." + key[len("ln_vision."):]
    if key.startswith("visual_encoder."):
        return eva_key(key[len("visual_encoder."):]) or key
    return key


def official_config(path: str | Path, eva_vit: str | None = None, ckpt: str | None = None,
                    llama: str | None = None):
    """(MiniGPT4Config, tokenizer, EVA tensors, (eva file, checkpoint file, Llama dir)) without reading the LLM."""
    from transformers import AutoConfig

    from common.models.minigpt4 import IMAGE_PLACEHOLDER, MiniGPT4Config

    eva_file, ckpt_file, llama_dir = resolve_official(path, eva_vit, ckpt, llama)
    eva = read_tensors(eva_file)
    vision = eva_vision_config(eva.tensors, eva.path)
    try:
        text_config = AutoConfig.from_pretrained(str(llama_dir))
    except Exception as e:  # noqa: BLE001
        raise LetheError(f"{llama_dir}/config.json: cannot read the Llama config ({str(e).splitlines()[0]})") from None
    tok = load_llm_tokenizer(llama_dir, IMAGE_PLACEHOLDER, pad="unk")
    config = MiniGPT4Config(vision_config=vision, text_config=text_config.to_dict(),
                            image_token_id=tok.convert_tokens_to_ids(IMAGE_PLACEHOLDER))
    return config, tok, eva, (eva_file, ckpt_file, llama_dir)


def convert_official(path: str | Path, eva_vit: str | None = None, ckpt: str | None = None,
                     llama: str | None = None, **_):
    """Official layout → (MiniGPT4Config, state dict with our keys, MiniGPT4Processor, ConversionReport)."""
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    from common.models.minigpt4 import IMAGE_PLACEHOLDER, MiniGPT4ForConditionalGeneration, MiniGPT4Processor

    config, tok, eva, (_, ckpt_file, llama_dir) = official_config(path, eva_vit, ckpt, llama)
    proj, llm = read_tensors(ckpt_file), read_model_dir(llama_dir)
    vision = config.vision_config.to_dict()
    expected = meta_shapes(MiniGPT4ForConditionalGeneration, config)

    conv = Converter({"eva": eva, "ckpt": proj, "llm": llm})
    state: dict[str, torch.Tensor] = {}
    width = vision["hidden_size"]
    for key in list(eva.tensors):
        target = eva_key(key)
        if target is not None and target in expected:
            state[target] = conv.take("eva", key, expected[target])
    for i in range(vision["num_hidden_layers"]):
        q = conv.take("eva", f"blocks.{i}.attn.q_bias", (width,))
        v = conv.take("eva", f"blocks.{i}.attn.v_bias", (width,))
        state[f"vision_model.encoder.layers.{i}.self_attn.qkv.bias"] = torch.cat([q, torch.zeros_like(v), v])
    conv.drop_matching("eva", lambda k: (m := re.match(r"blocks\.(\d+)\.", k)) is not None
                       and int(m.group(1)) >= vision["num_hidden_layers"],
                       f"create_eva_vit_g builds {vision['num_hidden_layers']} blocks (strict=False load)")
    conv.drop_matching("eva", EVA_UNUSED, "not in create_eva_vit_g's model (final norm/head; strict=False load)")
    if conv.has("ckpt", "ln_vision.weight"):
        for p in ("weight", "bias"):
            state[f"vision_model.post_layernorm.{p}"] = conv.take("ckpt", f"ln_vision.{p}", (width,))
    else:
        state["vision_model.post_layernorm.weight"] = torch.ones(width)
        state["vision_model.post_layernorm.bias"] = torch.zeros(width)
        conv.report.notes.append(f"{ckpt_file.name} has no ln_vision: identity LayerNorm (weight 1, bias 0), as the "
                                 "official Llama-2 MiniGPT-4 runs it (frozen at its initial values)")
    for p in ("weight", "bias"):
        state[f"llama_proj.{p}"] = conv.take("ckpt", f"llama_proj.{p}", expected[f"llama_proj.{p}"])
    conv.drop_matching("ckpt", ROTARY_BUFFER, "rotary buffer, recomputed")
    for target, shape in expected.items():
        if target.startswith("language_model."):
            state[target] = conv.take("llm", target[len("language_model."):], shape)
    conv.drop_matching("llm", ROTARY_BUFFER, "rotary buffer, recomputed")
    state = conv.finish(state)
    check_complete(state, expected, str(path))

    size = config.vision_config.image_size
    processor = MiniGPT4Processor(BlipImageProcessorPil(size={"height": size, "width": size}), tok,
                                  image_token=IMAGE_PLACEHOLDER, num_image_tokens=config.num_image_tokens)
    return config, state, processor, conv.report
