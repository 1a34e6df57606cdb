"""mPLUG-Owl (v1, LLaMA-7B): CLIP-style ViT-L/14 → visual abstractor (learned queries cross-attending to the patches,
then ``visual_fc`` and a learned ``vit_eos`` token: 64 + 1 image tokens) → LLaMA.

Written natively (no remote code) with the official module and parameter names of X-PLUG/mPLUG-Owl
``mPLUG-Owl/mplug_owl/modeling_mplug_owl.py`` (``vision_model``, ``query_tokens``, ``abstractor``,
``language_model``), so an official checkpoint (``MAGAer13/mplug-owl-llama-7b``) maps one to one; the converter
(``common.convert.owl``) only checks it strictly and adds the tokenizer's image placeholder. Numerics follow the
official code: the vision attention splits ``query_key_value`` per head as ``[heads, 3, head_dim]``; the abstractor's
keys/values are ``cat(norm1(queries), normk(image))``, its residual is the *normalised* queries, its MLP is
``w2(ffn_ln(silu(w1 x) * w3 x))``; ``norm1``/``normk``/``norm2`` use LayerNorm's default eps (1e-5), the others the
config's ``layer_norm_eps``; all these norms run in float32.
"""
from __future__ import annotations

import math
import re

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedConfig
from transformers import initialization as init
from transformers.configuration_utils import SubConfigSpec

from common.models.native import (AttentionProbs, ImageTextForConditionalGeneration, ImageTokenProcessor,
                                  LayerNormFp32, NativeVLM, register_auto)

IMAGE_PLACEHOLDER = "<image>"
SYSTEM = ("The following is a conversation between a curious human and AI assistant. The assistant gives helpful, "
          "detailed, and polite answers to the user's questions.")
PROMPT_FORMAT = SYSTEM + "\nHuman: <image>\nHuman: {prompt}\nAI: "
# mPLUG-Owl's training data code cuts the conversation at these (and at the media tokens)
TRAINING_DELIMITERS = ("AI: ", "\nHuman: ")


class OwlVisionConfig(PreTrainedConfig):
    model_type = "lethe_mplug_owl_vision"
    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 14
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-6
    attention_dropout: float = 0.0
    initializer_range: float = 0.02


class OwlAbstractorConfig(PreTrainedConfig):
    model_type = "lethe_mplug_owl_abstractor"
    hidden_size: int = 1024
    num_hidden_layers: int = 6
    num_attention_heads: int = 16
    intermediate_size: int = 4096
    attention_probs_dropout_prob: float = 0.1
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-6
    encoder_hidden_size: int = 1024


class OwlConfig(PreTrainedConfig):
    model_type = "lethe_mplug_owl"
    sub_configs_defaults = {
        "vision_config": OwlVisionConfig,
        "visual_abstractor_config": OwlAbstractorConfig,
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
    }
    vision_config: dict | PreTrainedConfig | None = None
    visual_abstractor_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    num_query_tokens: int = 64
    image_token_id: int = 32000
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False

    @property
    def num_image_tokens(self) -> int:
        return self.num_query_tokens + 1  # + vit_eos


def _attention(module: nn.Module, q, k, v, scale: float, dropout: float):
    """softmax(q k^T * scale) v, by the configured attention implementation (eager: the official math)."""
    p = dropout if module.training else 0.0
    impl = getattr(module.config, "_attn_implementation", None) or "sdpa"
    if impl == "eager":
        probs = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * scale, dim=-1)
        probs = module.attention_probs(probs)
        return torch.matmul(nn.functional.dropout(probs, p=p, training=module.training), v)
    return nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=p, scale=scale)


class OwlVisionEmbeddings(nn.Module):
    def __init__(self, config: OwlVisionConfig):
        super().__init__()
        d = config.hidden_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.patch_embed = nn.Conv2d(config.num_channels, d, kernel_size=config.patch_size, stride=config.patch_size,
                                     bias=False)
        n = (config.image_size // config.patch_size) ** 2
        self.position_embedding = nn.Parameter(torch.zeros(1, n + 1, d))
        self.pre_layernorm = LayerNormFp32(d, eps=config.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixel_values.to(self.patch_embed.weight.dtype)).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], 1, -1).to(x.dtype), x], dim=1)
        x = x + self.position_embedding[:, : x.shape[1]].to(x.dtype)
        return self.pre_layernorm(x)


class OwlVisionAttention(nn.Module):
    def __init__(self, config: OwlVisionConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // self.num_heads
        self.query_key_value = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.attention_probs = AttentionProbs()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        # official layout: [b, n, heads, 3, head_dim] → [3, b, heads, n, head_dim]
        qkv = self.query_key_value(x).reshape(b, n, self.num_heads, 3, self.head_dim).permute(3, 0, 2, 1, 4)
        out = _attention(self, qkv[0], qkv[1], qkv[2], self.head_dim ** -0.5, self.config.attention_dropout)
        return self.dense(out.transpose(1, 2).reshape(b, n, d))


class OwlVisionMLP(nn.Module):
    def __init__(self, config: OwlVisionConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)
        return self.fc2(x * torch.sigmoid(1.702 * x))  # QuickGELU


class OwlVisionEncoderLayer(nn.Module):
    def __init__(self, config: OwlVisionConfig):
        super().__init__()
        self.self_attn = OwlVisionAttention(config)
        self.input_layernorm = LayerNormFp32(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = OwlVisionMLP(config)
        self.post_attention_layernorm = LayerNormFp32(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class OwlVisionEncoder(nn.Module):
    def __init__(self, config: OwlVisionConfig):
        super().__init__()
        self.layers = nn.ModuleList([OwlVisionEncoderLayer(config) for _ in range(config.num_hidden_layers)])


class OwlVisionModel(nn.Module):
    def __init__(self, config: OwlVisionConfig):
        super().__init__()
        self.config = config
        self.embeddings = OwlVisionEmbeddings(config)
        self.encoder = OwlVisionEncoder(config)
        self.post_layernorm = LayerNormFp32(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(pixel_values)
        for layer in self.encoder.layers:
            x = layer(x)
        return self.post_layernorm(x)


class OwlAbstractorMultiHeadAttention(nn.Module):
    def __init__(self, config: OwlAbstractorConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // self.num_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.encoder_hidden_size, config.hidden_size)
        self.value = nn.Linear(config.encoder_hidden_size, config.hidden_size)
        self.attention_probs = AttentionProbs()

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, queries: torch.Tensor, keys_values: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.query(queries)), self._heads(self.key(keys_values)), self._heads(self.value(keys_values))
        out = _attention(self, q, k, v, 1.0 / math.sqrt(self.head_dim), self.config.attention_probs_dropout_prob)
        return out.transpose(1, 2).reshape(queries.shape[0], queries.shape[1], -1)


class OwlAbstractorMLP(nn.Module):
    def __init__(self, config: OwlAbstractorConfig):
        super().__init__()
        self.w1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.w2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.w3 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.ffn_ln = LayerNormFp32(config.intermediate_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.ffn_ln(nn.functional.silu(self.w1(x)) * self.w3(x)))


class OwlAbstractorCrossOutput(nn.Module):
    def __init__(self, config: OwlAbstractorConfig):
        super().__init__()
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.norm2 = LayerNormFp32(config.hidden_size)
        self.mlp = OwlAbstractorMLP(config)

    def forward(self, context: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        x = residual + self.out_proj(context)
        return x + self.mlp(self.norm2(x))


class OwlAbstractorAttention(nn.Module):
    def __init__(self, config: OwlAbstractorConfig):
        super().__init__()
        self.attention = OwlAbstractorMultiHeadAttention(config)
        self.output = OwlAbstractorCrossOutput(config)
        self.norm1 = LayerNormFp32(config.hidden_size)
        self.normk = LayerNormFp32(config.hidden_size)

    def forward(self, queries: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        queries = self.norm1(queries)
        keys_values = torch.cat([queries, self.normk(image)], dim=1)
        return self.output(self.attention(queries, keys_values), queries)


class OwlAbstractorLayer(nn.Module):
    def __init__(self, config: OwlAbstractorConfig):
        super().__init__()
        self.crossattention = OwlAbstractorAttention(config)

    def forward(self, queries: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.crossattention(queries, image)


class OwlAbstractorEncoder(nn.Module):
    def __init__(self, config: OwlAbstractorConfig):
        super().__init__()
        self.layers = nn.ModuleList([OwlAbstractorLayer(config) for _ in range(config.num_hidden_layers)])


class OwlVisualAbstractor(nn.Module):
    def __init__(self, config: OwlAbstractorConfig, language_hidden_size: int):
        super().__init__()
        self.encoder = OwlAbstractorEncoder(config)
        self.visual_fc = nn.Linear(config.hidden_size, language_hidden_size)
        self.vit_eos = nn.Parameter(torch.zeros(1, 1, language_hidden_size))

    def forward(self, queries: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        for layer in self.encoder.layers:
            queries = layer(queries, image)
        out = self.visual_fc(queries)
        return torch.cat([out, self.vit_eos.expand(out.shape[0], 1, -1).to(out.dtype)], dim=1)


class OwlForConditionalGeneration(ImageTextForConditionalGeneration):
    config: OwlConfig
    config_class = OwlConfig
    _no_split_modules = ["OwlVisionEncoderLayer", "OwlAbstractorLayer", "LlamaDecoderLayer"]

    def __init__(self, config: OwlConfig):
        super().__init__(config)
        self.vision_model = OwlVisionModel(config.vision_config)
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens,
                                                     config.visual_abstractor_config.hidden_size))
        self.abstractor = OwlVisualAbstractor(config.visual_abstractor_config, config.text_config.hidden_size)
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, OwlVisionEmbeddings):
            init.trunc_normal_(module.cls_token, mean=0.0, std=std)
            init.trunc_normal_(module.position_embedding, mean=0.0, std=std)
        elif isinstance(module, OwlVisualAbstractor):
            init.trunc_normal_(module.vit_eos, mean=0.0, std=std)
        elif isinstance(module, OwlForConditionalGeneration):
            init.normal_(module.query_tokens, mean=0.0, std=std)

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        image = self.vision_model(pixel_values)
        queries = self.query_tokens.expand(image.shape[0], -1, -1).to(image.dtype)
        return self.abstractor(queries, image)


class OwlProcessor(ImageTokenProcessor):
    """mPLUG-Owl preprocessing (PIL bicubic resize to the square input size, CLIP mean/std) + the LLaMA tokenizer."""


register_auto(OwlConfig, OwlForConditionalGeneration, OwlProcessor)


class OwlVLM(NativeVLM):
    """Tokenized as mPLUG-Owl's code does: generation prompts as ``MplugOwlProcessor`` (``_tokenize_prompt``: BOS,
    then the text split at ``<image>``, each chunk tokenized on its own); training texts as its instruction-tuning
    data code (``xgpt3_dataset._extract_text_token_from_conversation``, which EFUF's ``OWl.preprocess_text``
    follows): also cut at ``"AI: "`` and ``"\\nHuman: "``, the answer after ``"AI: "`` a chunk of its own."""

    family = "owl"
    model_types = ("lethe_mplug_owl", "mplug-owl")  # ours, and the official MAGAer13/mplug-owl-llama-7b layout
    projector_paths = ("abstractor",)
    connector_extra_paths = ("query_tokens",)
    prompt_format = PROMPT_FORMAT
    official_prompt_format = PROMPT_FORMAT
    converter_module = "common.convert.owl"

    @classmethod
    def model_class(cls):
        return OwlForConditionalGeneration

    def _chunk_pattern(self, training: bool) -> str:
        pattern = super()._chunk_pattern(training)
        if training:
            pattern += "|" + "|".join(re.escape(d) for d in TRAINING_DELIMITERS)
        return pattern

    def chat_prompt(self, prompt: str, with_image: bool = True) -> str:
        if with_image:
            return PROMPT_FORMAT.format(prompt=prompt)
        return f"{SYSTEM}\nHuman: {prompt}\nAI: "

    def remap_legacy_key(self, key: str) -> str | None:
        """EFUF's owl checkpoints already use the official names (``query_tokens``, ``abstractor.*``)."""
        from common.convert.core import ROTARY_BUFFER

        return None if ROTARY_BUFFER.search(key) else key
