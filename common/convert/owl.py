"""mPLUG-Owl (v1) official checkpoint dir → our ``OwlForConditionalGeneration``.

The official dir (``MAGAer13/mplug-owl-llama-7b``, written by ``MplugOwlForConditionalGeneration.save_pretrained``
of X-PLUG/mPLUG-Owl ``mPLUG-Owl/mplug_owl/``) holds ``config.json`` (``model_type: "mplug-owl"`` with
``vision_config``, ``visual_abstractor_config``, ``text_config``, ``num_query_tokens``), the weights
(``pytorch_model*.bin``) under the official module names, a LLaMA tokenizer and ``preprocessor_config.json``
(CLIP-style). Our module tree uses the same names, so every tensor maps to itself; the converter checks names and
shapes strictly, drops the rotary ``inv_freq`` buffers old transformers saved, and adds the ``<image>`` placeholder
to the tokenizer (the official processor used negative ids instead: 65 media tokens per image).
"""
from __future__ import annotations

from pathlib import Path

from common.convert.core import (ROTARY_BUFFER, Converter, check_complete, config_fields, llama_text_config,
                                 load_llm_tokenizer, meta_shapes, read_model_dir)
from common.errors import LetheError

OFFICIAL_MODEL_TYPE = "mplug-owl"


def is_official_layout(path: str | Path) -> bool:
    import json

    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("model_type") == OFFICIAL_MODEL_TYPE
    except ValueError:
        return False


def _image_processor(path: Path):
    """The official preprocessing: PIL bicubic resize to size×size, then CLIP normalisation."""
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    from common.models.native import read_json

    f = path / "preprocessor_config.json"
    if not f.is_file():
        raise LetheError(f"{f}: file not found (the mPLUG-Owl image processor config)")
    pc = read_json(f)
    size = pc.get("size", 224)
    if isinstance(size, dict):
        size = size.get("shortest_edge", size.get("height", 224))
    return BlipImageProcessorPil(size={"height": int(size), "width": int(size)},
                                 image_mean=pc.get("image_mean", OPENAI_CLIP_MEAN),
                                 image_std=pc.get("image_std", OPENAI_CLIP_STD), resample=3)


def official_config(path: str | Path):
    """(OwlConfig, tokenizer) of an official dir, without reading the weights."""
    from common.models.native import read_json
    from common.models.owl import IMAGE_PLACEHOLDER, OwlAbstractorConfig, OwlConfig, OwlVisionConfig

    path = Path(path)
    cfg = read_json(path / "config.json")
    if cfg.get("model_type") != OFFICIAL_MODEL_TYPE:
        raise LetheError(f"{path}/config.json: model_type {cfg.get('model_type')!r}, expected {OFFICIAL_MODEL_TYPE!r}")
    for key in ("vision_config", "visual_abstractor_config", "text_config"):
        if not isinstance(cfg.get(key), dict):
            raise LetheError(f"{path}/config.json: no {key}")
    if cfg["text_config"].get("model_type", "llama") != "llama":
        raise LetheError(f"{path}/config.json: text model {cfg['text_config'].get('model_type')!r}; only LLaMA is "
                         "supported")
    keep = lambda d, cls: {k: v for k, v in d.items() if k in config_fields(cls)}  # noqa: E731
    tok = load_llm_tokenizer(path, IMAGE_PLACEHOLDER, pad="unk")
    config = OwlConfig(vision_config=keep(cfg["vision_config"], OwlVisionConfig),
                       visual_abstractor_config=keep(cfg["visual_abstractor_config"], OwlAbstractorConfig),
                       text_config=llama_text_config(cfg["text_config"]),
                       num_query_tokens=cfg.get("num_query_tokens", 64),
                       image_token_id=tok.convert_tokens_to_ids(IMAGE_PLACEHOLDER))
    return config, tok


def convert_official(path: str | Path, **_):
    """Official dir → (OwlConfig, state dict, OwlProcessor, ConversionReport)."""
    from common.models.owl import IMAGE_PLACEHOLDER, OwlForConditionalGeneration, OwlProcessor

    path = Path(path)
    config, tok = official_config(path)
    expected = meta_shapes(OwlForConditionalGeneration, config)
    conv = Converter({"owl": read_model_dir(path)})
    state = {k: conv.take("owl", k, shape) for k, shape in expected.items()}
    conv.drop_matching("owl", ROTARY_BUFFER, "rotary buffer, recomputed")
    state = conv.finish(state)
    check_complete(state, expected, str(path))
    processor = OwlProcessor(_image_processor(path), tok, image_token=IMAGE_PLACEHOLDER,
                             num_image_tokens=config.num_image_tokens)
    return config, state, processor, conv.report
