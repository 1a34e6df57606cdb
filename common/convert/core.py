"""The strict key-mapping engine every converter uses.

A converter reads the official files into :class:`Source` objects, then asks for each tensor the target model needs
(``take``), declares what it knowingly leaves out (``drop``, with a reason), and ``finish`` refuses any official
tensor that was neither taken nor dropped: no silent partial conversion. Missing or misshaped tensors fail with the
file and the tensor's name. The target's expected names and shapes come from the model class instantiated on the
meta device, so nothing large is allocated.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch

from common.errors import LetheError

ROTARY_BUFFER = re.compile(r"(^|\.)rotary_emb\.inv_freq$")


@dataclass
class Source:
    """The tensors of one official file (or sharded set of files), by their official names."""

    path: str
    tensors: dict[str, torch.Tensor]


@dataclass
class ConversionReport:
    converted: int = 0
    dropped: list[tuple[str, str, str]] = field(default_factory=list)  # (path, key, reason)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"converted {self.converted} tensors"]
        reasons: dict[str, list[str]] = {}
        for path, key, reason in self.dropped:
            reasons.setdefault(f"{Path(path).name}: {reason}", []).append(key)
        for what, keys in reasons.items():
            lines.append(f"dropped {len(keys)} ({what}), e.g. {', '.join(keys[:2])}")
        lines.extend(self.notes)
        return "\n".join(lines)


class Converter:
    """Tracks which official tensors were used; see the module docstring."""

    def __init__(self, sources: dict[str, Source]):
        self.sources = sources
        self.used: dict[str, set[str]] = {role: set() for role in sources}
        self.report = ConversionReport()

    def has(self, role: str, key: str) -> bool:
        return key in self.sources[role].tensors

    def take(self, role: str, key: str, shape: Iterable[int] | None = None) -> torch.Tensor:
        src = self.sources[role]
        if key not in src.tensors:
            raise LetheError(f"{src.path}: tensor {key!r} is missing")
        t = src.tensors[key]
        if shape is not None and tuple(t.shape) != tuple(shape):
            raise LetheError(f"{src.path}: tensor {key!r} has shape {tuple(t.shape)}, expected {tuple(shape)}")
        self.used[role].add(key)
        return t

    def drop(self, role: str, key: str, reason: str) -> None:
        self.used[role].add(key)
        self.report.dropped.append((self.sources[role].path, key, reason))

    def drop_matching(self, role: str, pattern: re.Pattern | Callable[[str], bool], reason: str) -> None:
        match = pattern.search if isinstance(pattern, re.Pattern) else pattern
        for key in self.sources[role].tensors:
            if key not in self.used[role] and match(key):
                self.drop(role, key, reason)

    def finish(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for role, src in self.sources.items():
            left = sorted(k for k in src.tensors if k not in self.used[role])
            if left:
                raise LetheError(f"{src.path}: {len(left)} tensors are not mapped to the model "
                                 f"(e.g. {', '.join(left[:3])}); refusing a partial conversion")
        self.report.converted = len(state)
        return state


def meta_shapes(model_cls, config) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the persistent state of ``model_cls(config)``, without allocating it."""
    with torch.device("meta"):
        model = model_cls(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_complete(state: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], what: str) -> None:
    """The converted state must be exactly the model's state (an internal consistency check of a mapping)."""
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise LetheError(f"{what}: conversion does not match the model (missing {missing[:3]}, extra {extra[:3]})")
    for k, shape in expected.items():
        if tuple(state[k].shape) != shape:
            raise LetheError(f"{what}: converted tensor {k!r} has shape {tuple(state[k].shape)}, the model "
                             f"expects {shape}")


def read_tensors(path: str | Path) -> Source:
    """One checkpoint file (.safetensors/.pth/.bin/.pt) as a :class:`Source` (``weights_only`` torch loads)."""
    from common.checkpoint import read_state_dict

    path = Path(path)
    if not path.is_file():
        raise LetheError(f"{path}: file not found")
    state, _ = read_state_dict(path)
    return Source(str(path), dict(state))


def read_model_dir(path: str | Path) -> Source:
    """All weights of a Hugging Face style model dir: sharded or single, safetensors or PyTorch ``.bin``."""
    import json

    path = Path(path)
    if not path.is_dir():
        raise LetheError(f"{path}: directory not found")
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = path / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError):
                raise LetheError(f"{index}: not a valid checkpoint index (no weight_map)") from None
            tensors: dict[str, torch.Tensor] = {}
            for shard in sorted(set(weight_map.values())):
                if not (path / shard).is_file():
                    raise LetheError(f"{path / shard}: shard listed in {index_name} not found")
                tensors.update(read_tensors(path / shard).tensors)
            return Source(str(path), tensors)
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            return Source(str(path), read_tensors(path / name).tensors)
    raise LetheError(f"{path}: no model weights (model.safetensors, pytorch_model.bin or a sharded index)")


def save_model_dir(out: str | Path, state: dict[str, torch.Tensor], max_shard_size: str = "5GB") -> None:
    """Write weights as (sharded) safetensors in the Hugging Face layout."""
    from huggingface_hub import save_torch_state_dict

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_torch_state_dict({k: v.contiguous() for k, v in state.items()}, str(out), max_shard_size=max_shard_size)


LLAMA_TOKENIZER_CLASSES = ("LlamaTokenizer", "LlamaTokenizerFast", "MplugOwlTokenizer")


def official_legacy(model_dir: str | Path) -> bool | None:
    """The ``legacy`` flag the official pipeline's Llama tokenizer ran with: the value its tokenizer_config.json
    states, else True (None: not a Llama SentencePiece tokenizer).

    The original LLaMA-1 / Llama-2 era tokenizers were legacy: transformers ≤ 4.30 (MiniGPT-4: 4.30, mPLUG-Owl:
    4.28.1) had no flag and behaved so, 4.31 – 4.x (LLaVA, EFUF: 4.31) defaulted an unset flag to True. transformers 5
    defaults it to False, which drops the "▁" that SentencePiece puts before the text after a special token.
    """
    import json

    model_dir = Path(model_dir)
    try:
        cfg = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cfg = {}
    if not isinstance(cfg, dict):
        cfg = {}
    if cfg.get("tokenizer_class") not in LLAMA_TOKENIZER_CLASSES and not (model_dir / "tokenizer.model").is_file():
        return None
    legacy = cfg.get("legacy")
    return True if legacy is None else bool(legacy)


def load_llm_tokenizer(model_dir: str | Path, image_token: str, pad: str = "unk"):
    """The LLM's (fast) tokenizer with the image placeholder added as a special token.

    ``pad``: ``"unk"`` reuses the unknown token when the tokenizer has no pad token (mPLUG-Owl's tokenizer does this;
    it keeps every id inside the LLM's vocabulary), ``"<pad>"`` adds a new ``<pad>`` token (llava-hf's choice).
    The tokenizer must prepend BOS, as the official pipelines all do. A Llama SentencePiece tokenizer gets the
    ``legacy`` flag the official pipeline ran with (:func:`official_legacy`); it is saved with a converted dir.
    """
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    from transformers.utils import logging as hf_logging

    legacy = official_legacy(model_dir)
    kw = {} if legacy is None else {"legacy": legacy}
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # AutoTokenizer warns about the (unknown) original model_type in config.json
    try:
        tok = AutoTokenizer.from_pretrained(str(model_dir), **kw)
    except Exception as e:  # noqa: BLE001 - tokenizer loading raises many types (OSError, ValueError, ImportError)
        raise LetheError(f"{model_dir}: cannot load the tokenizer ({str(e).splitlines()[0]})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    if legacy is not None:
        tok.init_kwargs["legacy"] = legacy  # transformers 5 does not keep it: saved, a converted dir reloads alike
    if image_token not in tok.get_vocab():
        tok.add_tokens([AddedToken(image_token, special=True, normalized=False)], special_tokens=True)
    if tok.pad_token is None:
        if pad == "unk" and tok.unk_token is not None:
            tok.pad_token = tok.unk_token
        else:
            tok.add_special_tokens({"pad_token": "<pad>"})
    if tok.bos_token_id is not None and tok("a")["input_ids"][:1] != [tok.bos_token_id]:
        try:
            tok.add_bos_token = True
        except AttributeError:
            pass
        if tok("a")["input_ids"][:1] != [tok.bos_token_id]:
            raise LetheError(f"{model_dir}: the tokenizer does not prepend BOS ({tok.bos_token}); the official "
                             "pipeline does. Set add_bos_token in its tokenizer_config.json")
    return tok


def config_fields(config_cls) -> set[str]:
    """The declared fields of a (dataclass) transformers config class."""
    import dataclasses

    return {f.name for f in dataclasses.fields(config_cls)}


def llama_text_config(d: dict) -> dict:
    """A LlamaConfig dict from an old-style config (LLaVA, mPLUG-Owl): declared Llama fields + the rope ones."""
    from transformers import LlamaConfig

    keep = (config_fields(LlamaConfig) | {"rope_theta", "rope_scaling"}) - {"architectures", "transformers_version",
                                                                             "dtype"}
    out = {k: v for k, v in d.items() if k in keep and v is not None}
    out["model_type"] = "llama"
    return out
