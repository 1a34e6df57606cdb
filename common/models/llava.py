"""LLaVA-1.5 (``LlavaForConditionalGeneration``) and LLaVA-1.6 (``LlavaNextForConditionalGeneration``)."""
from __future__ import annotations

from common.models.base import VisionLanguageModel


class LlavaVLM(VisionLanguageModel):
    family = "llava"
    prompt_format = "USER: <image>\n{prompt} ASSISTANT:"

    @classmethod
    def model_class(cls):
        from transformers import LlavaForConditionalGeneration

        return LlavaForConditionalGeneration

    def remap_legacy_key(self, key: str) -> str | None:
        """Keys of the original LLaVA code (as in EFUF's ``llava-efuf-7b.pth``) → HF Llava keys."""
        if key.endswith("rotary_emb.inv_freq"):
            return None
        for old, new in (("model.mm_projector.0.", "model.multi_modal_projector.linear_1."),
                         ("model.mm_projector.2.", "model.multi_modal_projector.linear_2.")):
            if key.startswith(old):
                return new + key[len(old):]
        return key


class LlavaNextVLM(LlavaVLM):
    family = "llava_next"
    prompt_format = "[INST] <image>\n{prompt} [/INST]"
    connector_extra_paths = ("model.image_newline",)

    @classmethod
    def model_class(cls):
        from transformers import LlavaNextForConditionalGeneration

        return LlavaNextForConditionalGeneration
