"""MiniGPT-4, the Llama-2 variant EFUF used: EVA ViT-g → ``ln_vision`` → 4 adjacent patches concatenated →
``llama_proj`` (one linear layer) → Llama-2-chat, prompted ``[INST] <Img><ImageHere></Img> {prompt} [/INST]``.

Written from transformers building blocks: ``Blip2VisionModel`` is the EVA ViT-g (39 blocks, the last of EVA-CLIP
removed as in BLIP-2) and its ``post_layernorm`` is MiniGPT-4's ``ln_vision`` (a float32 LayerNorm, eps 1e-5);
``LlamaForCausalLM`` is the LLM. The loader accepts a converted Hugging Face style dir or the official layout
(``eva_vit_g.pth`` + the MiniGPT-4 projection checkpoint + a Hugging Face Llama-2 dir; see
``common.convert.minigpt4``).
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, Blip2VisionConfig, Blip2VisionModel, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from common.models.native import (ImageTextForConditionalGeneration, ImageTokenProcessor, LayerNormFp32, NativeVLM,
                                  register_auto)

IMAGE_PLACEHOLDER = "<ImageHere>"
PROMPT_FORMAT = "[INST] <Img><ImageHere></Img> {prompt} [/INST]"
# create_eva_vit_g in MiniGPT-4/LAVIS eva_vit.py: patch 14, width 1408, depth 39, 1408 // 88 heads, mlp ratio 4.3637
EVA_VIT_G = dict(hidden_size=1408, intermediate_size=6144, num_hidden_layers=39, num_attention_heads=16,
                 image_size=224, patch_size=14, hidden_act="gelu", layer_norm_eps=1e-6, qkv_bias=True)


class MiniGPT4Config(PreTrainedConfig):
    model_type = "lethe_minigpt4"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=Blip2VisionConfig, init_kwargs=EVA_VIT_G),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
    }
    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    image_token_id: int = 32000
    patches_per_token: int = 4  # adjacent patch features concatenated per LLM token
    ln_vision_eps: float = 1e-5
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False

    @property
    def num_image_tokens(self) -> int:
        v = self.vision_config
        return (v.image_size // v.patch_size) ** 2 // self.patches_per_token


class MiniGPT4ForConditionalGeneration(ImageTextForConditionalGeneration):
    config: MiniGPT4Config
    config_class = MiniGPT4Config
    _no_split_modules = ["Blip2EncoderLayer", "LlamaDecoderLayer"]

    def __init__(self, config: MiniGPT4Config):
        super().__init__(config)
        v = config.vision_config
        if (v.image_size // v.patch_size) ** 2 % config.patches_per_token:
            raise ValueError(f"{(v.image_size // v.patch_size) ** 2} patches do not group by "
                             f"{config.patches_per_token}")
        self.vision_model = Blip2VisionModel(v)
        # MiniGPT-4's ln_vision: LayerNorm(num_features) computed in float32, default eps
        self.vision_model.post_layernorm = LayerNormFp32(v.hidden_size, eps=config.ln_vision_eps)
        self.llama_proj = nn.Linear(v.hidden_size * config.patches_per_token, config.text_config.hidden_size)
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        self.post_init()

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dtype = self.vision_model.embeddings.patch_embedding.weight.dtype
        feats = self.vision_model(pixel_values=pixel_values.to(dtype)).last_hidden_state  # ln_vision applied
        feats = feats[:, 1:, :]  # drop CLS
        b, n, d = feats.shape
        feats = feats.reshape(b, n // self.config.patches_per_token, d * self.config.patches_per_token)
        return self.llama_proj(feats.to(self.llama_proj.weight.dtype))


class MiniGPT4Processor(ImageTokenProcessor):
    """Blip2ImageEvalProcessor-equivalent preprocessing (224² bicubic, CLIP mean/std) + the Llama-2 tokenizer."""


register_auto(MiniGPT4Config, MiniGPT4ForConditionalGeneration, MiniGPT4Processor)


class MiniGPT4VLM(NativeVLM):
    """Tokenized as ``MiniGPT4.get_context_emb`` (minigpt_base.py): the prompt split at ``<ImageHere>``, each
    segment tokenized on its own, BOS on the first only. (Its training tokenizes the answer separately too; the
    forward map keeps the answer with the text after the image, which gives the same tokens for an answer after
    ``[/INST] ``.)"""

    family = "minigpt4"
    model_types = ("lethe_minigpt4",)  # our layout (the official one has no config.json: see the converter)
    projector_paths = ("llama_proj",)
    prompt_format = PROMPT_FORMAT
    official_prompt_format = PROMPT_FORMAT
    converter_module = "common.convert.minigpt4"

    @classmethod
    def model_class(cls):
        return MiniGPT4ForConditionalGeneration

    def chat_prompt(self, prompt: str, with_image: bool = True) -> str:
        if with_image:
            return PROMPT_FORMAT.format(prompt=prompt)
        return f"[INST] {prompt} [/INST]"

    def remap_legacy_key(self, key: str) -> str | None:
        """Keys of the original MiniGPT-4 code (EFUF's minigpt checkpoints: ``llama_proj.*`` + buffers) → ours."""
        from common.convert.minigpt4 import remap_legacy_key

        return remap_legacy_key(key)
