"""The shared model layer: one interface, one registry.

    from common.models import load_model
    vlm = load_model("llava", path)                      # VisionLanguageModel
    vlm.generate(images, prompts, max_new_tokens=32)     # -> list[str]
    clip = load_model("clip", clip_path)                 # ClipModel (open_clip or HF backend)
"""
from __future__ import annotations

import warnings
from typing import Any

from common.errors import LetheError
from common.models.base import (IGNORE_INDEX, PROMPT_STYLES, SCOPES, Batch, Sample, VisionLanguageModel,
                                quiet_loading)
from common.models.blip2 import Blip2VLM, InstructBlipVLM
from common.models.clip import ClipModel
from common.models.llava import LlavaNextVLM, LlavaVLM

# peft and trl ask models for this deprecated property (transformers 5.x); nothing for a user to act on
warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)

FAMILIES: dict[str, type] = {
    "llava": LlavaVLM,
    "llava_next": LlavaNextVLM,
    "blip2": Blip2VLM,
    "instructblip": InstructBlipVLM,
    "hf": VisionLanguageModel,
    "clip": ClipModel,
}


def register_family(name: str, cls: type) -> None:
    FAMILIES[name] = cls


def family_class(name: str) -> type:
    if name not in FAMILIES:
        raise LetheError(f"unknown model {name!r}; valid: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def load_model(family: str, path: str, ckpt_load_path: str | None = None, lora_path: str | None = None,
               verbose: bool = False, **kwargs: Any):
    """Load ``family`` from ``path`` (hub id or dir); optionally a method checkpoint and/or a LoRA adapter.

    A checkpoint of another family is refused from its config.json before any weights are read. Loading is quiet
    (no "Loading weights" progress bars, no info logs; warnings stay) unless ``verbose``.

    kwargs: ``dtype`` ("auto", "float32", "bfloat16", ...), ``device``, ``device_map``, ``attn_implementation``,
    ``trust_remote_code`` (off unless asked), ``prompt_style`` ("official", the default: the original project's
    conversation and tokenization; "hf": the processor's chat template in one tokenizer pass), ``backend`` for clip.
    """
    cls = family_class(family)
    with quiet_loading(verbose):
        model = cls.from_pretrained(path, **kwargs)
        if lora_path:
            if not isinstance(model, VisionLanguageModel):
                raise LetheError(f"--lora_path is not supported for {family}")
            from peft import PeftModel

            model.model = PeftModel.from_pretrained(model.model, lora_path)
            model.model.eval()
        if ckpt_load_path:
            model.load_checkpoint(ckpt_load_path)
    return model


__all__ = ["FAMILIES", "IGNORE_INDEX", "PROMPT_STYLES", "SCOPES", "Batch", "ClipModel", "Sample",
           "VisionLanguageModel", "family_class", "load_model", "register_family"]

# Families transformers lacks (written natively) and ShareGPT4V (HF Llava, converted from its original layout).
from common.models.minigpt4 import MiniGPT4VLM  # noqa: E402
from common.models.owl import OwlVLM  # noqa: E402
from common.models.share4v import Share4VVLM  # noqa: E402

register_family("minigpt4", MiniGPT4VLM)
register_family("owl", OwlVLM)
register_family("share4v", Share4VVLM)
register_family("minigpt", MiniGPT4VLM)  # EFUF's name for it: --model minigpt --minigpt_path P keeps working
