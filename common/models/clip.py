"""The ``clip`` family: open_clip and Hugging Face ``CLIPModel`` behind one adapter.

Interface: ``preprocess(images) -> pixel tensor``, ``tokenize(texts)``, ``encode_image``, ``encode_text``
(L2-normalised by default), ``logit_scale`` (the exponentiated scale, e.g. 100 for OpenAI CLIP) and
``similarity(image_features, text_features)`` = logit_scale · cosine, the score EFUF thresholds.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from common.errors import LetheError
from common.io import atomic_path, atomic_write_json, read_json
from common.models.base import get_submodule, resolve_device

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def detect_backend(path: str) -> str:
    """``open_clip`` for an open_clip dir / ``hf-hub:`` / ``ARCH/PRETRAINED`` name, else ``hf``."""
    p = Path(path)
    if p.is_dir():
        if (p / "open_clip_config.json").is_file():
            return "open_clip"
        if (p / "config.json").is_file():
            return "hf"
        raise LetheError(f"{path}: neither an open_clip dir (open_clip_config.json) nor a HF CLIP dir (config.json)")
    if path.startswith(("hf-hub:", "local-dir:")):
        return "open_clip"
    if p.is_absolute() or path.startswith("."):
        raise LetheError(f"{path}: CLIP checkpoint directory not found")
    arch = path.split("/")[0]
    try:
        import open_clip

        if arch in open_clip.list_models():
            return "open_clip"
    except ImportError:
        pass
    return "hf"


def save_open_clip(model, model_cfg: dict, out: str | Path, preprocess_cfg: dict | None = None) -> None:
    """Write an open_clip ``local-dir:`` checkpoint: open_clip_config.json + open_clip_model.safetensors."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pre = preprocess_cfg or {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD), "interpolation": "bicubic",
                             "resize_mode": "shortest"}
    atomic_write_json(out / "open_clip_config.json", {"model_cfg": model_cfg, "preprocess_cfg": pre})
    with atomic_path(out / "open_clip_model.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))


def open_clip_quick_gelu(name: str, pretrained: str | None) -> bool:
    """Whether ``name`` + ``pretrained`` must be built with QuickGELU (open_clip's ``force_quick_gelu``).

    The OpenAI weights (and a few others) were trained with QuickGELU, but the plain arch names (``ViT-B-32``) build
    GELU and open_clip only warns: every score would shift and EFUF's 23 / 32 thresholds would no longer separate
    what they should. So a known tag is built with the activation its weights were trained with (``ViT-B-32/openai``
    becomes what ``ViT-B-32-quickgelu/openai`` builds).
    """
    if not pretrained:
        return False
    import open_clip

    tag_quick = bool((open_clip.get_pretrained_cfg(name, pretrained) or {}).get("quick_gelu", False))
    return tag_quick and not bool((open_clip.get_model_config(name) or {}).get("quick_gelu", False))


class ClipModel:
    family = "clip"
    #: config.json model types of the Hugging Face backend (an open_clip dir has open_clip_config.json instead)
    model_types = ("clip",)

    @classmethod
    def accepts_config(cls, cfg: dict) -> bool | None:
        """Whether this family loads a checkpoint with this config (see ``check_checkpoint_family``)."""
        if not cfg.get("model_type"):
            return None
        return cfg["model_type"] in (*cls.model_types, "open_clip")

    def __init__(self, model: nn.Module, backend: str, preprocess=None, tokenizer=None, processor=None,
                 path: str | None = None):
        self.model, self.backend, self.path = model, backend, path
        self._preprocess, self._tokenizer, self.processor = preprocess, tokenizer, processor
        self.scope: str | None = None

    @classmethod
    def from_pretrained(cls, path: str, backend: str | None = None, device: str | None = "auto",
                        dtype: str | torch.dtype | None = "float32", **_: Any) -> "ClipModel":
        if not path:
            raise LetheError("--clip_path is required (an open_clip dir / name or a HF CLIP dir / id)")
        backend = backend or detect_backend(path)
        dev = resolve_device(device)
        if backend == "open_clip":
            import open_clip

            name, pretrained = path, None
            if Path(path).is_dir():
                name = "local-dir:" + str(Path(path).resolve())
            elif not path.startswith(("hf-hub:", "local-dir:")) and "/" in path:
                name, pretrained = path.split("/", 1)
            quick_gelu = open_clip_quick_gelu(name, pretrained)
            try:
                model, _, preprocess = open_clip.create_model_and_transforms(
                    name, pretrained=pretrained, weights_only=True, force_quick_gelu=quick_gelu)
            except (OSError, RuntimeError, ValueError) as e:
                raise LetheError(f"{path}: cannot load open_clip model ({str(e).splitlines()[0]})") from None
            tokenizer = open_clip.get_tokenizer(name)
            obj = cls(model, "open_clip", preprocess=preprocess, tokenizer=tokenizer, path=path)
        elif backend == "hf":
            from transformers import CLIPModel, CLIPProcessor

            from common.models.base import check_checkpoint_family

            check_checkpoint_family(path, cls)
            try:
                model = CLIPModel.from_pretrained(path)
                processor = CLIPProcessor.from_pretrained(path)
            except OSError as e:
                raise LetheError(f"{path}: cannot load HF CLIP ({str(e).splitlines()[0]})") from None
            obj = cls(model, "hf", processor=processor, path=path)
        else:
            raise LetheError(f"unknown CLIP backend {backend!r}; valid: open_clip, hf")
        from common.models.base import resolve_dtype

        obj.model.to(device=dev, dtype=resolve_dtype(dtype)).eval()
        return obj

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # ------------------------------------------------------------------ inputs
    def preprocess(self, images: Sequence[Any]) -> torch.Tensor:
        """PIL images (or paths) → normalised pixel tensor [N, 3, H, W] (the checkpoint's own transform)."""
        from common.io import load_image

        ims = [load_image(im) if isinstance(im, (str, Path)) else im.convert("RGB") for im in images]
        if self.backend == "open_clip":
            return torch.stack([self._preprocess(im) for im in ims])
        return self.processor.image_processor(ims, return_tensors="pt")["pixel_values"]

    def tokenize(self, texts: Sequence[str]):
        if self.backend == "open_clip":
            return self._tokenizer(list(texts))
        return dict(self.processor.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt"))

    # ------------------------------------------------------------------ features
    def encode_image(self, pixel_values: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        pv = pixel_values.to(self.device, self.dtype)
        if self.backend == "open_clip":
            f = self.model.encode_image(pv)
        else:
            f = self.model.get_image_features(pixel_values=pv)
            f = getattr(f, "pooler_output", f)
        return nn.functional.normalize(f, dim=-1) if normalize else f

    def encode_text(self, texts_or_tokens, normalize: bool = True) -> torch.Tensor:
        tokens = self.tokenize(texts_or_tokens) if isinstance(texts_or_tokens, (list, tuple)) else texts_or_tokens
        if self.backend == "open_clip":
            f = self.model.encode_text(tokens.to(self.device))
        else:
            f = self.model.get_text_features(**{k: v.to(self.device) for k, v in tokens.items()})
            f = getattr(f, "pooler_output", f)
        return nn.functional.normalize(f, dim=-1) if normalize else f

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.exp()

    def similarity(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """logit_scale · cosine similarity, [N_images, N_texts] (features must be normalised)."""
        return self.logit_scale * image_features @ text_features.T

    # ------------------------------------------------------------------ structure
    @property
    def vision_tower(self) -> nn.Module:
        return self.model.visual if self.backend == "open_clip" else self.model.vision_model

    @property
    def text_tower(self) -> nn.Module:
        return self.model.transformer if self.backend == "open_clip" else self.model.text_model

    def vision_layers(self) -> nn.ModuleList:
        path = "transformer.resblocks" if self.backend == "open_clip" else "encoder.layers"
        return get_submodule(self.vision_tower, path)

    def text_layers(self) -> nn.ModuleList:
        return self.model.transformer.resblocks if self.backend == "open_clip" else self.model.text_model.encoder.layers

    def set_trainable(self, scope: str = "full", vision_layers: Sequence[int] | None = None) -> list[str]:
        """``full``, ``vision``, ``text`` or ``vision_layers`` (all layers, or the given indices)."""
        self.model.requires_grad_(False)
        if scope == "full":
            self.model.requires_grad_(True)
        elif scope == "vision":
            self.vision_tower.requires_grad_(True)
        elif scope == "text":
            self.text_tower.requires_grad_(True)
        elif scope == "vision_layers":
            layers = self.vision_layers()
            for i in (range(len(layers)) if vision_layers is None else vision_layers):
                layers[i].requires_grad_(True)
        else:
            raise LetheError(f"unknown CLIP trainable scope {scope!r}; valid: full, vision, text, vision_layers")
        self.scope = scope
        return [n for n, p in self.model.named_parameters() if p.requires_grad]

    def to_hf_vision_model(self):
        """The vision tower as a HF ``CLIPVisionModel`` (what LLaVA uses), with the same weights and outputs.

        open_clip ViT → HF key mapping: conv1 → patch_embedding, ln_pre → pre_layrnorm, in_proj → q/k/v_proj,
        c_fc/c_proj → fc1/fc2, ln_post → post_layernorm; activation exact GELU (open_clip's default).
        """
        from transformers import CLIPVisionConfig, CLIPVisionModel

        if self.backend == "hf":
            import copy

            return copy.deepcopy(self.model.vision_model)
        v = self.model.visual
        if getattr(v, "attn_pool", None) is not None or not hasattr(v, "conv1"):
            raise LetheError("only plain open_clip ViT towers convert to a HF CLIPVisionModel")
        width = v.conv1.out_channels
        blocks = v.transformer.resblocks
        mlp = blocks[0].mlp.c_fc.out_features
        cfg = CLIPVisionConfig(hidden_size=width, intermediate_size=mlp, num_hidden_layers=len(blocks),
                               num_attention_heads=blocks[0].attn.num_heads,
                               image_size=v.image_size[0] if isinstance(v.image_size, tuple) else v.image_size,
                               patch_size=v.conv1.kernel_size[0], hidden_act="gelu",
                               layer_norm_eps=v.ln_pre.eps, projection_dim=self.model.text_projection.shape[-1]
                               if torch.is_tensor(getattr(self.model, "text_projection", None)) else width)
        sd = {"embeddings.class_embedding": v.class_embedding, "embeddings.patch_embedding.weight": v.conv1.weight,
              "embeddings.position_embedding.weight": v.positional_embedding,
              "pre_layrnorm.weight": v.ln_pre.weight, "pre_layrnorm.bias": v.ln_pre.bias,
              "post_layernorm.weight": v.ln_post.weight, "post_layernorm.bias": v.ln_post.bias}
        for i, b in enumerate(blocks):
            pre = f"encoder.layers.{i}."
            for name, w in zip(("q_proj", "k_proj", "v_proj"), b.attn.in_proj_weight.chunk(3)):
                sd[pre + f"self_attn.{name}.weight"] = w
            for name, w in zip(("q_proj", "k_proj", "v_proj"), b.attn.in_proj_bias.chunk(3)):
                sd[pre + f"self_attn.{name}.bias"] = w
            sd.update({pre + "self_attn.out_proj.weight": b.attn.out_proj.weight,
                       pre + "self_attn.out_proj.bias": b.attn.out_proj.bias,
                       pre + "layer_norm1.weight": b.ln_1.weight, pre + "layer_norm1.bias": b.ln_1.bias,
                       pre + "layer_norm2.weight": b.ln_2.weight, pre + "layer_norm2.bias": b.ln_2.bias,
                       pre + "mlp.fc1.weight": b.mlp.c_fc.weight, pre + "mlp.fc1.bias": b.mlp.c_fc.bias,
                       pre + "mlp.fc2.weight": b.mlp.c_proj.weight, pre + "mlp.fc2.bias": b.mlp.c_proj.bias})
        out = CLIPVisionModel(cfg)
        target = out.state_dict()
        missing = set(target) - set(sd) - {k for k in target if k.endswith("position_ids")}
        if missing:
            raise LetheError(f"open_clip → HF vision conversion left tensors unset: {sorted(missing)[:3]}")
        out.load_state_dict({k: t.detach().clone() for k, t in sd.items()}, strict=False)
        return out

    def save_checkpoint(self, path: str | Path, extra_metadata: dict | None = None) -> Path:
        from common.checkpoint import save_trainable

        return save_trainable(self, path, extra_metadata)

    def load_checkpoint(self, path: str | Path, strict: bool = True):
        from common.checkpoint import load_method_checkpoint

        return load_method_checkpoint(self, path, strict=strict)

    def save_pretrained(self, out: str | Path) -> Path:
        """Save in the format it was loaded from (open_clip local dir, or HF CLIP dir)."""
        out = Path(out)
        if self.backend == "open_clip":
            src = Path(self.path) / "open_clip_config.json" if self.path else None
            if src is None or not src.is_file():
                raise LetheError("saving an open_clip model needs its open_clip_config.json (load it from a dir)")
            cfg = read_json(src)
            save_open_clip(self.model, cfg.get("model_cfg", cfg), out, cfg.get("preprocess_cfg"))
        else:
            self.model.save_pretrained(out)
            self.processor.save_pretrained(out)
        return out
