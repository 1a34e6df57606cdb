"""ShareGPT4V-7B: the LLaVA-1.5 architecture with its own (fine-tuned CLIP ViT-L/14-336) vision tower.

It runs as Hugging Face ``LlavaForConditionalGeneration``. ``load_model("share4v", P)`` takes a converted HF Llava
dir, or the original checkpoint dir (``Lin-Chen/ShareGPT4V-7B`` layout: LLaVA-style config with ``mm_vision_tower``),
converted in memory on the fly (``common.convert.llava``); ``python -m common.convert llava`` writes the converted
dir once. ``vision_tower=DIR`` overrides where the CLIP tower is found.
"""
from __future__ import annotations

from common.models.llava import VICUNA_V1_PROMPT, LlavaVLM


class Share4VVLM(LlavaVLM):
    """Prompted with LLaVA's ``vicuna_v1`` conversation (ShareGPT4V's evaluation and EFUF), tokenized by ShareGPT4V's
    ``tokenizer_image_token`` (the same algorithm as LLaVA's)."""

    family = "share4v"
    prompt_format = VICUNA_V1_PROMPT  # also without a chat template (a converted dir has it as its template)
    #: a converted (Hugging Face Llava) dir; the original layout's model types are accepted by accepts_config
    model_types = ("llava",)
    original_model_types = ("share4v", "llava", "llava_llama")

    @classmethod
    def accepts_config(cls, cfg: dict) -> bool | None:
        """A converted Llava dir, or the original layout (a LLaVA-style Llama config with ``mm_vision_tower``:
        ShareGPT4V's ``share4v``, LLaVA-1.5's ``llava``, LLaVA's ``llava_llama``), converted when loading."""
        from common.models.base import is_original_llava_config

        if is_original_llava_config(cfg):
            return cfg.get("model_type") in cls.original_model_types
        return super().accepts_config(cfg)

    def _fix_processor(self) -> None:
        from common.models.native import use_pil_image_processor

        use_pil_image_processor(self.processor)  # LLaVA/ShareGPT4V preprocess with CLIPImageProcessor on PIL images

    @classmethod
    def from_pretrained(cls, path: str, dtype="auto", device="auto", device_map=None,
                        attn_implementation: str | None = None, trust_remote_code: bool = False,
                        vision_tower: str | None = None, prompt_style: str | None = None,
                        **kwargs) -> "Share4VVLM":
        from common.convert.llava import convert_original, is_original_layout
        from common.models.base import check_prompt_style

        check_prompt_style(prompt_style)
        if path and is_original_layout(path):
            from common.models.native import instantiate

            config, state, processor, _ = convert_original(path, vision_tower=vision_tower)
            model = instantiate(cls.model_class(), config, state, dtype=dtype, device=device, device_map=device_map,
                                attn_implementation=attn_implementation)
            return cls(model, processor, path=path, prompt_style=prompt_style)
        return super().from_pretrained(path, dtype=dtype, device=device, device_map=device_map,
                                       attn_implementation=attn_implementation, trust_remote_code=trust_remote_code,
                                       prompt_style=prompt_style, **kwargs)
