"""The one interface every vision-language family implements (ARCHITECTURE §2).

A family adapter owns everything model-specific (module paths, prompt format, processor quirks) so that method code
never branches on the model name. ``VisionLanguageModel`` implements the whole interface on top of a Hugging Face
``PreTrainedModel`` + processor; families only declare where their parts live and override the few hooks where
their processor differs.
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from common.errors import LetheError

IGNORE_INDEX = -100
SCOPES = ("projector", "lora", "llm", "full", "vision_layers")
#: "official": the original project's conversation, tokenized as its pipeline does; "hf": the processor's chat
#: template (the family's plain format without one), tokenized in one pass by the processor
PROMPT_STYLES = ("official", "hf")


@dataclass
class Sample:
    """One training/scoring example for the forward map.

    The assistant turn is ``context + target``: ``context`` is conditioning only, ``target`` gets labels.
    ``spans`` are ``(start, end, weight)`` character ranges in ``target`` coordinates; target tokens overlapping a
    span get its weight, the other target tokens get ``default_weight``.
    """

    image: Any  # PIL.Image.Image | str | Path | None
    prompt: str
    target: str = ""
    context: str = ""
    spans: Sequence[tuple[int, int, float]] = ()
    default_weight: float = 1.0
    add_eos: bool = True


@dataclass
class Batch:
    """A padded batch: ``inputs`` go to the model; ``labels`` are target-only; ``weights`` per token."""

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    weights: torch.Tensor
    texts: list[str] = field(default_factory=list)

    def to(self, device) -> "Batch":
        return Batch({k: v.to(device) if torch.is_tensor(v) else v for k, v in self.inputs.items()},
                     self.labels.to(device), self.weights.to(device), self.texts)


def check_prompt_style(style: str | None) -> str | None:
    """``style`` if it is one of :data:`PROMPT_STYLES` (or None: the family's default), else a LetheError."""
    if style is not None and style not in PROMPT_STYLES:
        raise LetheError(f"unknown prompt style {style!r}; valid: {', '.join(PROMPT_STYLES)}")
    return style


def resolve_attn_implementation(requested: str | None = None) -> str:
    """flash_attention_2 on CUDA when importable, else sdpa (unless the user asked for one)."""
    if requested:
        return requested
    if torch.cuda.is_available():
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2"
        except ImportError:
            pass
    return "sdpa"


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise LetheError(f"unknown dtype {dtype!r}; valid: auto, {', '.join(table)}")
    return table[dtype]


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def get_submodule(root: nn.Module, path: str) -> nn.Module | nn.Parameter | None:
    obj: Any = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


# ---------------------------------------------------------------------------------------------------- checkpoint family
def is_original_llava_config(cfg: dict) -> bool:
    """An original LLaVA-1.5 / ShareGPT4V ``config.json`` (a Llama config plus ``mm_*`` fields, no ``text_config``):
    only the ``share4v`` family loads it (converting it on the fly); transformers' Llava would build a random model."""
    return "text_config" not in cfg and ("mm_vision_tower" in cfg or "mm_projector_type" in cfg)


def is_image_text_to_text_config(cfg: dict) -> bool | None:
    """Whether ``AutoModelForImageTextToText`` builds this config (native families included once registered);
    None when transformers does not know the model type (it may be remote code: the loader decides)."""
    from transformers import AutoModelForImageTextToText
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = cfg.get("model_type")
    if not isinstance(model_type, str) or "auto_map" in cfg:
        return None
    try:
        config_cls = CONFIG_MAPPING[model_type]
    except KeyError:
        return None
    return config_cls in AutoModelForImageTextToText._model_mapping


def checkpoint_config(path: str) -> dict | None:
    """The ``config.json`` of a checkpoint dir (or of a Hub id already in the local cache / reachable), read before
    any weights; ``{"model_type": "open_clip"}`` for an open_clip dir; None when there is nothing to read."""
    from common.io import read_json

    p = Path(path)
    if p.is_dir():
        if (p / "config.json").is_file():
            f = p / "config.json"
        elif (p / "open_clip_config.json").is_file():
            return {"model_type": "open_clip"}
        else:
            return None
    elif not p.exists() and path.count("/") == 1 and not p.is_absolute() and not path.startswith("."):
        try:  # a Hub id: the loader fetches this file first anyway
            from transformers.utils import cached_file

            found = cached_file(path, "config.json", _raise_exceptions_for_missing_entries=False,
                                _raise_exceptions_for_connection_errors=False,
                                _raise_exceptions_for_gated_repo=False)
        except Exception:  # noqa: BLE001 (no network, no such repo, ...: the loader says it better)
            return None
        if not found:
            return None
        f = Path(found)
    else:
        return None
    cfg = read_json(f)
    return cfg if isinstance(cfg, dict) else None


def suggest_family(cfg: dict, exclude: str | None = None) -> str | None:
    """The first registered family that loads a checkpoint with this config (``hf`` only if no other does)."""
    from common.models import FAMILIES

    fallback = None
    for name, cls in FAMILIES.items():
        if name == exclude or getattr(cls, "family", name) != name or not hasattr(cls, "accepts_config"):
            continue  # the asked family itself, aliases (minigpt), foreign classes
        if cls.accepts_config(cfg) is True:
            if name == "hf":
                fallback = name
                continue
            return name
    return fallback


def check_checkpoint_family(path: str, family_cls: type, family: str | None = None) -> None:
    """Refuse a checkpoint of another family before any weights are read (transformers would build the asked class
    with random weights and fail later in a shape error, or build a 7B model from defaults).

    The message names the checkpoint's ``model_type`` and ``architectures`` and, where a registered family loads
    it, the ``--model`` to use.
    """
    cfg = checkpoint_config(path)
    if cfg is None:
        return
    family = family or family_cls.family
    verdict = family_cls.accepts_config(cfg)
    if verdict is True or (verdict is None and suggest_family(cfg, exclude=family) in (None, "hf")):
        return  # None: a model type transformers does not know and no family claims (remote code?): let it try
    model_type = cfg.get("model_type") or "unknown"
    archs = cfg.get("architectures") or []
    what = f"an {model_type}" if model_type[:1].lower() in "aeiou" else f"a {model_type}"
    what += " checkpoint"
    original = is_original_llava_config(cfg)
    if original:
        what += " in the original LLaVA layout"
    if isinstance(archs, list) and archs:
        what += f" ({', '.join(map(str, archs))})"
    msg = f"{path} is {what}, not {family}"
    suggestion = suggest_family(cfg, exclude=family)
    if suggestion:
        msg += f"; use --model {suggestion}"
        if original and suggestion == "share4v":
            msg += (f" (it converts this layout when loading) or convert it once: python -m common.convert llava "
                    f"--src {path} --out DIR")
    elif family == "hf":
        msg += " (--model hf loads image-text-to-text models)"
    raise LetheError(msg)


@contextlib.contextmanager
def quiet_loading(verbose: bool = False):
    """Model loading without transformers' progress bars ("Loading weights: 100%|...") and info logs, unless
    ``verbose``. Warnings and errors still show; Hub download bars too (a download is real waiting). The previous
    settings come back afterwards."""
    if verbose:
        yield
        return
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as hf_logging

    bars, hub_bars = hf_logging.is_progress_bar_enabled(), not hub_utils.are_progress_bars_disabled()
    level = hf_logging.get_verbosity()
    if bars:
        hf_logging.disable_progress_bar()
        if hub_bars:
            hub_utils.enable_progress_bars()
    if level < hf_logging.WARNING:
        hf_logging.set_verbosity_warning()
    try:
        yield
    finally:
        if level < hf_logging.WARNING:
            hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
            if not hub_bars:
                hub_utils.disable_progress_bars()


class VisionLanguageModel:
    """Adapter over a Hugging Face image-text-to-text model and its processor."""

    family: str = "hf"
    #: candidate attribute paths (first found wins), relative to the transformers model
    vision_paths: tuple[str, ...] = ("model.vision_tower", "vision_tower", "model.vision_model", "vision_model")
    projector_paths: tuple[str, ...] = ("model.multi_modal_projector", "multi_modal_projector",
                                        "model.mm_projector", "language_projection")
    llm_paths: tuple[str, ...] = ("model.language_model", "language_model")
    #: extra connector parts trained with the projector (e.g. Q-Former, query tokens, image_newline)
    connector_extra_paths: tuple[str, ...] = ()
    #: used when the processor has no chat template; ``{prompt}`` is the user text
    prompt_format: str = "USER: <image>\n{prompt} ASSISTANT:"
    #: the original project's prompt (``prompt_style="official"``); None: the same as ``"hf"``
    official_prompt_format: str | None = None
    #: the original pipeline tokenizes the text chunk by chunk around the image placeholders (BOS on the first chunk
    #: only), not in one pass: LLaVA's ``tokenizer_image_token``, MiniGPT-4's ``get_context_emb``, mPLUG-Owl's
    #: processor. With a SentencePiece (Llama) tokenizer the token after a placeholder differs between the two.
    official_segmentwise: bool = False
    default_prompt_style: str = "official"
    lora_target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    #: ``model_type`` values (config.json) of the checkpoints this family loads; None: any image-text-to-text model
    model_types: tuple[str, ...] | None = None

    def __init__(self, model, processor, path: str | None = None, prompt_style: str | None = None):
        self.model = model
        self.processor = processor
        self.path = path
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.scope: str | None = None
        self.lora_config: dict | None = None
        self.prompt_style = prompt_style  # type: ignore[assignment]  # None: the family's default
        self._fix_processor()

    @property
    def prompt_style(self) -> str:
        """``"official"`` (default) or ``"hf"``; see :data:`PROMPT_STYLES`. Settable after loading."""
        return self._prompt_style

    @prompt_style.setter
    def prompt_style(self, style: str | None) -> None:
        self._prompt_style = check_prompt_style(style) or self.default_prompt_style

    # ------------------------------------------------------------------ loading
    @classmethod
    def accepts_config(cls, cfg: dict) -> bool | None:
        """Whether this family loads a checkpoint with this ``config.json`` (None: cannot tell, let the loader try)."""
        if is_original_llava_config(cfg):
            return False
        if cls.model_types is None:
            return is_image_text_to_text_config(cfg)
        if not cfg.get("model_type"):
            return None  # an old config without one: let the loader try
        return cfg["model_type"] in cls.model_types

    @classmethod
    def model_class(cls):
        from transformers import AutoModelForImageTextToText

        return AutoModelForImageTextToText

    @classmethod
    def from_pretrained(cls, path: str, dtype: str | torch.dtype | None = "auto", device: str | None = "auto",
                        device_map: str | dict | None = None, attn_implementation: str | None = None,
                        trust_remote_code: bool = False, prompt_style: str | None = None,
                        **kwargs) -> "VisionLanguageModel":
        from transformers import AutoProcessor

        check_prompt_style(prompt_style)
        if not path:
            raise LetheError(f"--{cls.family}_path is required (a Hugging Face id or a local checkpoint dir)")
        p = Path(path)
        if (p.is_absolute() or path.startswith(".") or p.exists() or path.count("/") != 1) and not p.is_dir():
            raise LetheError(f"{path}: checkpoint directory not found")
        check_checkpoint_family(path, cls)
        torch_dtype = resolve_dtype(dtype)
        attn = resolve_attn_implementation(attn_implementation)
        load_kw = dict(dtype=torch_dtype, trust_remote_code=trust_remote_code, **kwargs)
        if device_map is not None:
            load_kw["device_map"] = device_map
        try:
            try:
                model = cls.model_class().from_pretrained(path, attn_implementation=attn, **load_kw)
            except (ValueError, ImportError) as e:  # a class without sdpa/flash support: fall back to eager
                if attn == "eager" or "attn" not in str(e).lower() and "attention" not in str(e).lower():
                    raise
                model = cls.model_class().from_pretrained(path, attn_implementation="eager", **load_kw)
            processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
        except OSError as e:
            raise LetheError(f"{path}: cannot load checkpoint ({str(e).splitlines()[0]})") from None
        if device_map is None:
            model.to(resolve_device(device))
        model.eval()
        return cls(model, processor, path=path, prompt_style=prompt_style)

    def _fix_processor(self) -> None:
        """Hook for processor quirks after loading (see BLIP-2)."""

    # ------------------------------------------------------------------ structure
    @property
    def base(self) -> nn.Module:
        """The transformers model, unwrapped from PEFT if LoRA was applied."""
        m = self.model
        if hasattr(m, "peft_config") and hasattr(m, "get_base_model"):
            return m.get_base_model()
        return m

    def _find(self, paths: Sequence[str], what: str, required: bool = True):
        for p in paths:
            mod = get_submodule(self.base, p)
            if mod is not None:
                return p, mod
        if required:
            raise LetheError(f"{self.family}: cannot find the {what} in {type(self.base).__name__} "
                             f"(looked for {', '.join(paths)})")
        return None, None

    @property
    def vision_tower(self) -> nn.Module:
        return self._find(self.vision_paths, "vision tower")[1]

    @property
    def language_model(self) -> nn.Module:
        return self._find(self.llm_paths, "language model")[1]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def lm_head(self) -> nn.Module:
        return self.base.get_output_embeddings()

    @property
    def decoder(self) -> nn.Module:
        """The decoder stack of the LLM (the module holding the layers and the final norm)."""
        lm = self.language_model
        for p in ("model.decoder", "model", "decoder"):
            sub = get_submodule(lm, p)
            if sub is not None and hasattr(sub, "layers"):
                return sub
        return lm

    @property
    def final_norm(self) -> nn.Module:
        dec = self.decoder
        for name in ("norm", "final_layer_norm", "ln_f"):
            mod = getattr(dec, name, None)
            if isinstance(mod, nn.Module):
                return mod
        raise LetheError(f"{self.family}: cannot find the LLM's final norm")

    @property
    def image_token_id(self) -> int | None:
        cfg = self.base.config
        for name in ("image_token_id", "image_token_index"):
            v = getattr(cfg, name, None)
            if v is not None:
                return int(v)
        return None

    def connector_parts(self) -> dict[str, nn.Module | nn.Parameter]:
        """The vision→LLM connector: what EFUF trains (``projector`` scope)."""
        parts = {}
        path, mod = self._find(self.projector_paths, "projector")
        parts[path] = mod
        for p in self.connector_extra_paths:
            mod = get_submodule(self.base, p)
            if mod is not None:
                parts[p] = mod
        return parts

    # ------------------------------------------------------------------ prompting
    def chat_prompt(self, prompt: str, with_image: bool = True) -> str:
        """The full model input text for one user turn, ending where the assistant's answer starts.

        ``prompt_style="official"``: the original project's conversation (``official_prompt_format``);
        ``"hf"`` (or a family without an official format): the processor's chat template, else ``prompt_format``.
        """
        official = self.official_prompt_format if self.prompt_style == "official" else None
        if official is not None:
            return self._fill(official, prompt, with_image)
        template = getattr(self.processor, "chat_template", None)
        if template:
            content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": prompt}]
            return self.processor.apply_chat_template([{"role": "user", "content": content}],
                                                      add_generation_prompt=True, tokenize=False)
        return self._fill(self.prompt_format, prompt, with_image)

    @staticmethod
    def _fill(template: str, prompt: str, with_image: bool) -> str:
        text = template.replace("{prompt}", prompt)
        return text if with_image else text.replace("<image>\n", "").replace("<image>", "")

    @property
    def assistant_sep(self) -> str:
        """Separator between the generation prompt and the answer text (" " after "ASSISTANT:")."""
        probe = self.chat_prompt("x")
        return "" if probe[-1:].isspace() else " "

    # ------------------------------------------------------------------ tokenization
    @property
    def segmentwise(self) -> bool:
        """Whether texts are tokenized chunk by chunk around the image placeholders (the official pipelines)."""
        return self.prompt_style == "official" and self.official_segmentwise

    @property
    def image_placeholder(self) -> str:
        """The image placeholder in the prompt text (``<image>``, MiniGPT-4's ``<ImageHere>``)."""
        tok = getattr(self.processor, "image_token", None) or "<image>"
        return getattr(tok, "content", None) or str(tok)

    def _chunk_pattern(self, training: bool) -> str:
        """Regex of the delimiters the official pipeline cuts the text at (each kept as a chunk of its own).

        ``training`` is true for the forward map (prompt + answer), false for generation prompts."""
        return re.escape(self.image_placeholder)

    @property
    def _metaspace_skips_prefix(self) -> bool:
        """Whether the tokenizer adds SentencePiece's dummy "▁" to "a" but not to " a" (transformers 5's Llama
        tokenizer: its Metaspace pre-tokenizer prepends only to text not already starting with "▁")."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None:
            return False

        def pre(text: str) -> str:
            if backend.normalizer is not None:
                text = backend.normalizer.normalize_str(text)
            if backend.pre_tokenizer is not None:
                text = "".join(piece for piece, _ in backend.pre_tokenizer.pre_tokenize_str(text))
            return text

        return pre("a") == "\u2581a" and pre(" a") == "\u2581a"

    def encode_texts(self, texts: Sequence[str], training: bool = False) -> tuple[list[list[int]],
                                                                                    list[list[tuple[int, int]]]]:
        """Token ids and character offsets of each text as this family's pipeline tokenizes it, every image
        placeholder being one image token (the processor expands it to the image's tokens).

        One tokenizer pass, or (``segmentwise``) the official chunk-by-chunk algorithm: the text is cut at the
        delimiters of :meth:`_chunk_pattern`; the first chunk is tokenized with the special tokens (BOS), every
        other text chunk without; placeholders become the image token. Both ways use one batched tokenizer call
        (two with chunks) whatever the number of texts.
        """
        texts = list(texts)
        if not self.segmentwise:
            enc = self.tokenizer(texts, return_offsets_mapping=True)
            return [list(x) for x in enc["input_ids"]], [[tuple(o) for o in x] for x in enc["offset_mapping"]]
        placeholder = self.image_placeholder
        img_id = self.tokenizer.convert_tokens_to_ids(placeholder)
        pattern = re.compile(f"({self._chunk_pattern(training)})")
        plans: list[list[tuple[str, int, int]]] = []  # per text: ("first"|"text"|"image", start, end)
        firsts: list[str] = []
        rest: list[str] = []
        for text in texts:
            plan, pos = [], 0
            pieces = pattern.split(text)
            for k, piece in enumerate(pieces):
                start, pos = pos, pos + len(piece)
                if k == 0:
                    plan.append(("first", start, pos))
                    firsts.append(piece)
                elif piece == placeholder and k % 2 == 1:
                    plan.append(("image", start, pos))
                elif piece:
                    plan.append(("text", start, pos))
                    rest.append(piece)
            plans.append(plan)
        # SentencePiece (the official slow tokenizers) puts its dummy "▁" before every chunk; transformers 5's
        # Metaspace pre-tokenizer skips it before a leading space: give such a chunk the space it would add
        skips = self._metaspace_skips_prefix
        lead = [" " if skips and c[:1] == " " else "" for c in firsts + rest]
        first_enc = self.tokenizer([x + c for x, c in zip(lead, firsts)], return_offsets_mapping=True)
        rest_enc = self.tokenizer([x + c for x, c in zip(lead[len(firsts):], rest)], add_special_tokens=False,
                                  return_offsets_mapping=True) if rest else None
        all_ids, all_offsets = [], []
        n_rest = 0
        for i, plan in enumerate(plans):
            ids: list[int] = []
            offsets: list[tuple[int, int]] = []
            for kind, start, end in plan:
                if kind == "image":
                    ids.append(img_id)
                    offsets.append((start, end))
                    continue
                if kind == "first":
                    chunk_ids, chunk_off = first_enc["input_ids"][i], first_enc["offset_mapping"][i]
                    shift = len(lead[i])
                else:
                    chunk_ids, chunk_off = rest_enc["input_ids"][n_rest], rest_enc["offset_mapping"][n_rest]
                    shift = len(lead[len(firsts) + n_rest])
                    n_rest += 1
                ids.extend(chunk_ids)
                if shift:  # the added space's "▁" gets the span of the chunk's own first space
                    chunk_off = [(max(a - 1, 0), max(b - 1, 1)) if b > a else (a, b) for a, b in chunk_off]
                # the first chunk starts at 0 (its BOS keeps the empty (0, 0) span of a special token)
                offsets.extend((a + start, b + start) for a, b in chunk_off)
            all_ids.append(ids)
            all_offsets.append(offsets)
        return all_ids, all_offsets

    def _segmentwise_inputs(self, inputs: dict[str, Any], texts: list[str], training: bool,
                            encoded: list[list[int]] | None = None) -> dict[str, Any]:
        """Replace the processor's one-pass ``input_ids`` by the official chunk-by-chunk ids (``encoded``: those of
        :meth:`encode_texts`, if already made), keeping the processor's expansion of each image placeholder (its
        run of image tokens) and its image tensors."""
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        img_id = self.image_token_id
        if img_id is None:
            raise LetheError(f"{self.family}: no image token id in the model config; cannot tokenize by segments")
        seqs = encoded if encoded is not None else self.encode_texts(texts, training=training)[0]
        rows: list[list[int]] = []
        for i, seq in enumerate(seqs):
            values, counts = torch.unique_consecutive(ids[i][mask[i].bool()], return_counts=True)
            runs = counts[values == img_id].tolist()  # the processor's run of image tokens per placeholder
            if len(runs) != seq.count(img_id):
                raise LetheError(f"{self.family}: sample {i} has {seq.count(img_id)} image placeholders but the "
                                 f"processor made {len(runs)} runs of image tokens (adjacent placeholders?)")
            row, k = [], 0
            for t in seq:
                if t == img_id:
                    row.extend([img_id] * runs[k])
                    k += 1
                else:
                    row.append(t)
            rows.append(row)
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        left = self.tokenizer.padding_side == "left"
        new_ids = torch.full((len(rows), width), pad, dtype=ids.dtype)
        new_mask = torch.zeros((len(rows), width), dtype=mask.dtype)
        for i, r in enumerate(rows):
            sl = slice(width - len(r), width) if left else slice(0, len(r))
            new_ids[i, sl] = torch.tensor(r, dtype=ids.dtype)
            new_mask[i, sl] = 1
        per_token = [k for k, v in inputs.items() if torch.is_tensor(v) and v.shape == ids.shape
                     and k not in ("input_ids", "attention_mask")]
        if per_token:
            raise LetheError(f"{self.family}: the processor returns per-token {', '.join(per_token)}; segment-wise "
                             "tokenization cannot rebuild them (use prompt_style='hf')")
        inputs["input_ids"], inputs["attention_mask"] = new_ids, new_mask
        return inputs

    # ------------------------------------------------------------------ forward map
    def _processor_call(self, images: list | None, texts: list[str], prompts: list[str], training: bool = False,
                        encoded: list[list[int]] | None = None) -> dict[str, torch.Tensor]:
        """Model inputs of ``texts`` (+ images): the processor's, with the official ids where ``segmentwise``
        (``encoded``: the ids of :meth:`encode_texts` when the caller has them)."""
        kw: dict[str, Any] = dict(text=texts, padding=True, return_tensors="pt")
        if images is not None:
            kw["images"] = images
        inputs = dict(self.processor(**kw))
        if self.segmentwise:
            inputs = self._segmentwise_inputs(inputs, list(texts), training, encoded)
        return inputs

    @staticmethod
    def _images(samples_images: Sequence[Any]) -> list | None:
        from common.io import load_image

        if all(im is None for im in samples_images):
            return None
        if any(im is None for im in samples_images):
            raise LetheError("a batch mixes samples with and without images; batch them separately")
        return [load_image(im) if isinstance(im, (str, Path)) else im.convert("RGB") for im in samples_images]

    def build_batch(self, samples: Sequence[Sample], padding_side: str = "right") -> Batch:
        """Samples → one padded batch with labels on the target only and per-token weights.

        The processor builds the model inputs (it expands image placeholders; the ids are the official pipeline's
        where ``segmentwise``); labels and weights come from :meth:`encode_texts` of the same text (character
        offsets), aligned on the tokens after the last image token.
        """
        if not samples:
            raise LetheError("build_batch got no samples")
        sep = self.assistant_sep
        eos = self.tokenizer.eos_token or ""
        texts, prompts, starts = [], [], []
        for s in samples:
            prompt_text = self.chat_prompt(s.prompt, with_image=s.image is not None)
            head = prompt_text + (sep + s.context if s.context or s.target else "")
            texts.append(head + s.target + (eos if s.add_eos else ""))
            prompts.append(prompt_text)
            starts.append(len(head))
        images = self._images([s.image for s in samples])
        all_ids, all_offsets = self.encode_texts(texts, training=True)  # batched (fast tokenizer, no padding)
        old_side = self.tokenizer.padding_side
        self.tokenizer.padding_side = padding_side
        try:
            inputs = self._processor_call(images, texts, prompts, training=True, encoded=all_ids)
        finally:
            self.tokenizer.padding_side = old_side
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        labels = torch.full_like(ids, IGNORE_INDEX)
        weights = torch.zeros(ids.shape, dtype=torch.float32)
        img_id = self.image_token_id
        for i, (s, text, start) in enumerate(zip(samples, texts, starts)):
            my_ids, offsets = all_ids[i], all_offsets[i]
            last_img = max((j for j, t in enumerate(my_ids) if t == img_id), default=-1)
            tail_ids, tail_off = my_ids[last_img + 1:], offsets[last_img + 1:]
            valid = mask[i].nonzero().flatten()
            pos = valid[len(valid) - len(tail_ids):]
            if len(pos) != len(tail_ids) or ids[i, pos].tolist() != tail_ids:
                raise LetheError(f"{self.family}: processor and tokenizer disagree on sample {i}; "
                                 "cannot place labels (is the image placeholder in the template?)")
            end = len(text)
            answer_sep = start - len(sep) if not s.context else start  # where the separator before the answer is
            for p, tid, (a, b) in zip(pos.tolist(), tail_ids, tail_off):
                # SentencePiece leaves the separator's "▁" a token of its own before e.g. a digit ("ASSISTANT:",
                # "▁", "2"); the official pipelines label it with the answer (LLaVA's preprocess_v1 masks the
                # instruction up to the colon, EFUF/MiniGPT-4/mPLUG-Owl tokenize the answer with its dummy prefix)
                sep_token = answer_sep <= a < b == start and text[a:b].isspace()
                if not sep_token and (b <= start or a >= end or (a == b == 0 and tid != self.tokenizer.eos_token_id)):
                    continue  # prompt / context token, or a special token with no characters
                labels[i, p] = tid
                w = s.default_weight
                for sa, sb, sw in s.spans:
                    if a < start + sb and b > start + sa:
                        w = sw
                weights[i, p] = w
        return Batch(inputs, labels, weights, texts)

    # ------------------------------------------------------------------ scoring
    def model_forward(self, batch: Batch, **kwargs):
        return self.model(**batch.inputs, **kwargs)

    def token_logprobs(self, batch: Batch, logits: torch.Tensor | None = None) -> torch.Tensor:
        """log p(label token | prefix) at each labelled position ([B, T], 0 where the label is ignored).

        Only the labelled positions go through log-softmax (memory: never a [B, T, V] float32 tensor).
        """
        if logits is None:
            logits = self.model_forward(batch).logits
        labels = batch.labels.to(logits.device)
        out = torch.zeros(labels.shape, dtype=torch.float32, device=logits.device)
        sel = labels[:, 1:] != IGNORE_INDEX
        if sel.any():
            rows = logits[:, :-1][sel].float()
            lp = torch.log_softmax(rows, dim=-1).gather(-1, labels[:, 1:][sel].unsqueeze(-1)).squeeze(-1)
            out[:, 1:][sel] = lp
        return out

    def per_sample_nll(self, batch: Batch, weighted: bool = False, logits: torch.Tensor | None = None) -> torch.Tensor:
        """Mean target-token NLL per sample ([B]); with ``weighted``, Σ w·nll / #target tokens."""
        lp = self.token_logprobs(batch, logits)
        mask = (batch.labels != IGNORE_INDEX).to(lp.device)
        w = batch.weights.to(lp.device) if weighted else mask.float()
        n = mask.sum(1).clamp(min=1)
        return -(lp * w).sum(1) / n

    # ------------------------------------------------------------------ generation
    @torch.inference_mode()
    def generate(self, images: Sequence[Any], prompts: Sequence[str], max_new_tokens: int = 64,
                 batch_size: int = 16, num_beams: int = 1, do_sample: bool = False, progress: bool = False,
                 static_cache: bool = False, **gen_kwargs) -> list[str]:
        """Batched, left-padded, KV-cached generation; greedy output equals batch-size-1 output.

        ``prompts`` are user texts; the family's chat template is applied here. Without sampling, the prompts are
        generated in order of their length in characters (batches of similar lengths pad little) and the answers
        come back in the given order; with sampling the given order is kept (a seeded run draws as before).
        ``static_cache``: a preallocated KV cache, which transformers compiles the decoding step for on a GPU
        (no per-token graph building; the first batch pays the compilation).
        """
        if len(images) != len(prompts):
            raise LetheError(f"generate got {len(images)} images and {len(prompts)} prompts")
        from tqdm.auto import tqdm

        outs: list[str | None] = [None] * len(prompts)
        was_training = self.model.training
        self.model.eval()
        old_side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "left"
        try:
            texts = [self.chat_prompt(p, with_image=im is not None) for p, im in zip(prompts, images)]
            order = list(range(len(prompts)))
            if not do_sample and len(prompts) > batch_size:
                order.sort(key=lambda i: len(texts[i]))
            for b in tqdm(range(0, len(order), batch_size), desc="generate", disable=not progress):
                rows = order[b:b + batch_size]
                ims = self._images([images[i] for i in rows])
                inputs = self._processor_call(ims, [texts[i] for i in rows], [prompts[i] for i in rows])
                inputs = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in inputs.items()}
                if "pixel_values" in inputs:
                    inputs["pixel_values"] = inputs["pixel_values"].to(next(self.model.parameters()).dtype)
                kw = dict(max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=do_sample,
                          pad_token_id=self.tokenizer.pad_token_id)
                if not do_sample:
                    kw.update(temperature=None, top_p=None, top_k=None)
                if static_cache:
                    kw["cache_implementation"] = "static"
                kw.update(gen_kwargs)
                seq = self.model.generate(**inputs, **kw)
                new = seq[:, inputs["input_ids"].shape[1]:]
                for i, t in zip(rows, self.tokenizer.batch_decode(new, skip_special_tokens=True)):
                    outs[i] = t.strip()
        finally:
            self.tokenizer.padding_side = old_side
            self.model.train(was_training)
        return [o if o is not None else "" for o in outs]

    # ------------------------------------------------------------------ trainable scopes
    def set_trainable(self, scope: str = "projector", lora_r: int = 8, lora_alpha: int = 16,
                      lora_dropout: float = 0.0, vision_layers: Sequence[int] | None = None) -> list[str]:
        """Freeze everything, then unfreeze ``scope``; returns the trainable parameter names."""
        if scope not in SCOPES:
            raise LetheError(f"unknown trainable scope {scope!r}; valid: {', '.join(SCOPES)}")
        if scope == "lora":
            self._apply_lora(lora_r, lora_alpha, lora_dropout)
        self.model.requires_grad_(False)
        if scope == "full":
            self.model.requires_grad_(True)
        elif scope == "llm":
            self.language_model.requires_grad_(True)
            self.lm_head.requires_grad_(True)
        elif scope == "projector":
            for part in self.connector_parts().values():
                part.requires_grad_(True)
        elif scope == "vision_layers":
            layers = self.vision_layers()
            chosen = range(len(layers)) if vision_layers is None else vision_layers
            for i in chosen:
                if not -len(layers) <= i < len(layers):
                    raise LetheError(f"vision layer {i} out of range (the vision tower has {len(layers)} layers)")
                layers[i].requires_grad_(True)
        elif scope == "lora":
            for n, p in self.model.named_parameters():
                if "lora_" in n:
                    p.requires_grad_(True)
        self.scope = scope
        return [n for n, p in self.model.named_parameters() if p.requires_grad]

    def vision_layers(self) -> nn.ModuleList:
        vt = self.vision_tower
        for p in ("vision_model.encoder.layers", "encoder.layers", "blocks", "transformer.resblocks"):
            mod = get_submodule(vt, p)
            if isinstance(mod, nn.ModuleList):
                return mod
        raise LetheError(f"{self.family}: cannot find the vision tower's layers")

    def llm_lora_config(self, r: int = 8, alpha: int = 16, dropout: float = 0.0):
        """A ``peft.LoraConfig`` on the language model's linear layers only (the vision tower, the projector and the
        LM head untouched), whatever the family calls them: a regex anchored at the LLM's module path."""
        from peft import LoraConfig

        llm_path, _ = self._find(self.llm_paths, "language model")
        targets = "|".join(self.lora_target_modules)
        return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                          target_modules=rf"^{re.escape(llm_path)}\..*\.({targets})$")

    def _apply_lora(self, r: int, alpha: int, dropout: float) -> None:
        from peft import get_peft_model

        if hasattr(self.model, "peft_config"):
            return
        self.model = get_peft_model(self.model, self.llm_lora_config(r, alpha, dropout))
        self.lora_config = dict(r=r, alpha=alpha, dropout=dropout)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.model.named_parameters() if p.requires_grad}

    @contextlib.contextmanager
    def adapter_disabled(self):
        """The frozen base model (PEFT's adapter-disabled trick): a reference model without a second copy."""
        if hasattr(self.model, "disable_adapter"):
            with self.model.disable_adapter():
                yield
        else:
            yield

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path: str | Path, extra_metadata: dict | None = None) -> Path:
        from common.checkpoint import save_trainable

        return save_trainable(self, path, extra_metadata)

    def load_checkpoint(self, path: str | Path, strict: bool = True):
        from common.checkpoint import load_method_checkpoint

        return load_method_checkpoint(self, path, strict=strict)

    def remap_legacy_key(self, key: str) -> str | None:
        """Map a key of the original code's checkpoints to ours (None: a key to drop, e.g. rotary buffers)."""
        if key.endswith("rotary_emb.inv_freq"):
            return None
        return key

    # ------------------------------------------------------------------ introspection
    def attention_modules(self) -> dict[str, list[tuple[str, nn.Module]]]:
        """Attention modules of the vision tower, the bridge (projector/Q-Former/abstractor) and the LLM."""
        groups: dict[str, list[tuple[str, nn.Module]]] = {"vision": [], "bridge": [], "llm": []}
        vis_path, _ = self._find(self.vision_paths, "vision tower")
        llm_path, _ = self._find(self.llm_paths, "language model")
        bridge = list(self.connector_parts())
        for name, mod in self.base.named_modules():
            cls = type(mod).__name__
            if not cls.endswith("Attention") or not hasattr(mod, "forward"):
                continue
            if any(name.startswith(n + ".") for n, _ in groups["vision"] + groups["bridge"] + groups["llm"]):
                continue  # an inner module of an attention block already listed
            if name.startswith(vis_path + "."):
                groups["vision"].append((name, mod))
            elif name.startswith(llm_path + "."):
                groups["llm"].append((name, mod))
            elif any(name.startswith(b + ".") for b in bridge):
                groups["bridge"].append((name, mod))
        return groups

    def token_positions(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Boolean masks [B, T] of image tokens, question (prompt text) tokens and answer (target) tokens."""
        ids, mask = batch.inputs["input_ids"], batch.inputs["attention_mask"].bool()
        image = ids == self.image_token_id if self.image_token_id is not None else torch.zeros_like(mask)
        answer = batch.labels != IGNORE_INDEX
        special = torch.zeros_like(mask)
        for tid in self.tokenizer.all_special_ids:
            special |= ids == tid
        question = mask & ~image & ~answer & ~special
        return {"image": image, "question": question, "answer": answer}
