"""Shared machinery of the families written natively from transformers building blocks (MiniGPT-4, mPLUG-Owl).

Each native family is a ``transformers.PreTrainedModel`` + ``GenerationMixin`` with its own config, so
``save_pretrained``/``from_pretrained``, KV-cached ``generate`` and left padding work as for any HF model. The text
carries one image placeholder token that the processor expands to the family's number of image tokens (exactly as
``LlavaProcessor`` does); the model embeds the text, then scatters the image features over the placeholder
positions. The placeholder may lie outside the LLM's vocabulary (the official LLMs have no such token): its id is
never looked up in the embedding table and the LM head never predicts it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.processing_utils import ProcessorMixin

from common.errors import LetheError
from common.models.base import (VisionLanguageModel, check_prompt_style, resolve_attn_implementation,
                                resolve_device, resolve_dtype)


class AttentionProbs(nn.Identity):
    """The attention probabilities of a native attention module pass through here (eager attention only): the
    identity, a module so that introspection (``stethoscope``) can hook the maps. No parameters: checkpoints are
    unchanged."""


class LayerNormFp32(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back (the official MiniGPT-4 ``ln_vision`` and mPLUG-Owl norms)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return nn.functional.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).type_as(x)


class ImageTokenProcessor(ProcessorMixin):
    """Image processor + tokenizer; each image placeholder in the text becomes ``num_image_tokens`` copies."""

    def __init__(self, image_processor=None, tokenizer=None, image_token: str = "<image>", num_image_tokens: int = 1,
                 chat_template=None, **kwargs):
        self.image_token = image_token
        self.num_image_tokens = int(num_image_tokens)
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        super().__init__(image_processor, tokenizer, chat_template=chat_template)

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        return self.image_token * self.num_image_tokens


class ImageTextPreTrainedModel(PreTrainedModel):
    """Common flags of the native image+text models (the LLM is a nested ``*ForCausalLM`` at ``language_model``)."""

    base_model_prefix = "lethe"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _skip_keys_device_placement = ["past_key_values"]
    language_model: nn.Module

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    def get_decoder(self):
        return self.language_model.get_decoder()

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[n_images, num_image_tokens, llm_hidden]: what replaces the placeholder tokens.

        Abstract: every native family (MiniGPT-4, mPLUG-Owl) defines its own vision → LLM path."""
        raise NotImplementedError(f"{type(self).__name__} must define get_image_features")

    def forward(self, input_ids: torch.LongTensor | None = None, pixel_values: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, position_ids: torch.LongTensor | None = None,
                past_key_values=None, inputs_embeds: torch.Tensor | None = None,
                labels: torch.LongTensor | None = None, use_cache: bool | None = None,
                logits_to_keep: int | torch.Tensor = 0, **kwargs):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            image_mask = input_ids == self.config.image_token_id
            inputs_embeds = self.get_input_embeddings()(input_ids.masked_fill(image_mask, 0))
            if pixel_values is not None:
                feats = self.get_image_features(pixel_values)
                n_tokens, n_feats = int(image_mask.sum()), feats.shape[0] * feats.shape[1]
                if n_tokens != n_feats:
                    raise ValueError(f"{n_tokens} image placeholder tokens for {feats.shape[0]} images of "
                                     f"{feats.shape[1]} tokens each")
                inputs_embeds = inputs_embeds.masked_scatter(
                    image_mask.unsqueeze(-1).to(inputs_embeds.device),
                    feats.to(inputs_embeds.device, inputs_embeds.dtype))
        return self.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                   position_ids=position_ids, past_key_values=past_key_values, labels=labels,
                                   use_cache=use_cache, logits_to_keep=logits_to_keep, **kwargs)


class ImageTextForConditionalGeneration(ImageTextPreTrainedModel, GenerationMixin):
    """Marker base: generation comes from ``GenerationMixin`` (pixel values are used at prefill only)."""


def register_auto(config_cls, model_cls, processor_cls) -> None:
    """Let the Auto classes (and so ``AutoProcessor`` in the generic loader) find a native family."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    for register in (lambda: AutoConfig.register(config_cls.model_type, config_cls),
                     lambda: AutoModelForImageTextToText.register(config_cls, model_cls),
                     lambda: AutoProcessor.register(config_cls, processor_cls)):
        try:
            register()
        except ValueError:  # already registered (module imported twice)
            pass


def use_pil_image_processor(processor) -> None:
    """Swap a processor's image processor for its PIL-backend twin (same settings).

    The official pipelines resize PIL images (torchvision ``Resize`` on PIL input, ``CLIPImageProcessor``); transformers
    5 reloads a saved image processor with its torchvision backend, whose resize differs slightly. Both loading paths
    (converted dir, official layout) go through here, so they preprocess identically and as the originals do.
    """
    import transformers

    ip = getattr(processor, "image_processor", None)
    name = type(ip).__name__
    if ip is None or name.endswith("Pil"):
        return
    pil_cls = getattr(transformers, name + "Pil", None)
    if pil_cls is None:
        return
    settings = {k: v for k, v in ip.to_dict().items() if k not in ("image_processor_type", "processor_class")}
    processor.image_processor = pil_cls(**settings)


def read_json(path: Path) -> dict:
    """A checkpoint's JSON file; missing, non-UTF-8 or malformed: one LetheError naming ``file:line``."""
    from common.io import read_json as read

    return read(path)


def instantiate(model_cls, config, state_dict: dict[str, torch.Tensor], dtype="auto", device="auto",
                device_map=None, attn_implementation: str | None = None):
    """Build ``model_cls`` from an in-memory (already checked) state dict, as ``from_pretrained`` would."""
    kw: dict[str, Any] = dict(config=config, state_dict=state_dict, dtype=resolve_dtype(dtype))
    if device_map is not None:
        kw["device_map"] = device_map
    attn = resolve_attn_implementation(attn_implementation)
    try:
        model = model_cls.from_pretrained(None, attn_implementation=attn, **kw)
    except (ValueError, ImportError) as e:
        if attn == "eager" or ("attn" not in str(e).lower() and "attention" not in str(e).lower()):
            raise
        model = model_cls.from_pretrained(None, attn_implementation="eager", **kw)
    if device_map is None:
        model.to(resolve_device(device))
    model.eval()
    return model


class NativeVLM(VisionLanguageModel):
    """Adapter base of the native families: the generic machinery plus loading of the official layouts.

    Their prompt is the official one in both prompt styles (there is no Hugging Face pipeline to follow);
    ``prompt_style="official"`` (default) tokenizes it chunk by chunk as the official code does, ``"hf"`` in one
    processor pass."""

    vision_paths = ("vision_model",)
    llm_paths = ("language_model",)
    official_segmentwise = True
    #: module with ``is_official_layout(path)`` and ``convert_official(path, **kw)`` for the original checkpoints
    converter_module: str | None = None

    def _fix_processor(self) -> None:
        use_pil_image_processor(self.processor)

    @classmethod
    def _converter(cls):
        import importlib

        return importlib.import_module(cls.converter_module) if cls.converter_module else None

    @classmethod
    def is_official_layout(cls, path: str) -> bool:
        conv = cls._converter()
        return bool(conv and conv.is_official_layout(path))

    @classmethod
    def load_official(cls, path: str, **kwargs):
        """(config, state dict, processor) converted in memory from the official layout at ``path``."""
        config, state, processor, _ = cls._converter().convert_official(path, **kwargs)
        return config, state, processor

    @classmethod
    def from_pretrained(cls, path: str, dtype="auto", device="auto", device_map=None,
                        attn_implementation: str | None = None, trust_remote_code: bool = False,
                        prompt_style: str | None = None, **kwargs) -> "NativeVLM":
        check_prompt_style(prompt_style)
        if path and cls.is_official_layout(path):
            config, state, processor = cls.load_official(path, **kwargs)
            model = instantiate(cls.model_class(), config, state, dtype=dtype, device=device,
                                device_map=device_map, attn_implementation=attn_implementation)
            return cls(model, processor, path=path, prompt_style=prompt_style)
        return super().from_pretrained(path, dtype=dtype, device=device, device_map=device_map,
                                       attn_implementation=attn_implementation,
                                       trust_remote_code=trust_remote_code, prompt_style=prompt_style, **kwargs)
