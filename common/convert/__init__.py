"""Converters from the original projects' checkpoints to ours: ``python -m common.convert <subcommand> ...``.

    llava     original LLaVA-1.5 / ShareGPT4V dir (+ its CLIP vision tower) → Hugging Face Llava dir
    share4v   the same (ShareGPT4V-7B is a LLaVA-1.5 architecture with its own vision tower)
    minigpt4  MiniGPT-4 official layout (eva_vit_g.pth + projection .pth + Llama-2 dir, or a yaml) → our dir
    owl       mPLUG-Owl official dir (MAGAer13/mplug-owl-llama-7b layout) → our dir
    efuf      an EFUF method checkpoint (.pth with the original code's keys, e.g. llava-efuf-7b.pth) → a clean
              trainable-only safetensors with our keys, checked against a base model (--base)

Every converter maps names strictly: official tensors it cannot place, missing tensors and wrong shapes are errors
naming the file and the tensor (no silent partial conversion); what it knowingly drops (rotary buffers, ...) is
reported.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import torch

from common.errors import LetheError, cli_main, run_cli


def write_converted(out: str | Path, config, state: dict[str, torch.Tensor], processor) -> Path:
    """Write a converted model as a Hugging Face style dir (safetensors, config, processor, generation config).

    Written into a temporary dir beside ``out`` and renamed at the end: a crash leaves no half-written ``out``.
    """
    from transformers import GenerationConfig

    from common.convert.core import save_model_dir

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LetheError(f"{out}: already exists and is not empty; choose a new output dir")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save_model_dir(tmp, state)
        config.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        tok = processor.tokenizer
        GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         do_sample=False).save_pretrained(tmp)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def convert_llava(src: str, out: str, vision_tower: str | None = None):
    from common.convert.llava import convert_original

    config, state, processor, report = convert_original(src, vision_tower=vision_tower)
    return write_converted(out, config, state, processor), report


def convert_minigpt4(src: str, out: str, eva_vit: str | None = None, ckpt: str | None = None,
                     llama: str | None = None):
    from common.convert.minigpt4 import convert_official

    config, state, processor, report = convert_official(src, eva_vit=eva_vit, ckpt=ckpt, llama=llama)
    return write_converted(out, config, state, processor), report


def convert_owl(src: str, out: str):
    from common.convert.owl import convert_official

    config, state, processor, report = convert_official(src)
    return write_converted(out, config, state, processor), report


def _base_config(family: str, base: str):
    """The model config of ``base``: a Hugging Face style dir, or an original layout of the families we convert
    (read without loading the LLM weights)."""
    from transformers import AutoConfig

    from common.convert import llava, minigpt4, owl

    if family in ("llava", "share4v") and llava.is_original_layout(base):
        return llava.original_config(base)[0]
    if family == "minigpt4" and minigpt4.is_official_layout(base):
        return minigpt4.official_config(base)[0]
    if family == "owl" and owl.is_official_layout(base):
        return owl.official_config(base)[0]
    if not (Path(base) / "config.json").is_file():
        raise LetheError(f"{base}: --base must be a model dir (config.json not found)")
    try:
        return AutoConfig.from_pretrained(base)
    except Exception as e:  # noqa: BLE001
        raise LetheError(f"{base}/config.json: cannot read the model config ({str(e).splitlines()[0]})") from None


def _expected_shapes(family_cls, family: str, base: str) -> dict[str, tuple[int, ...]]:
    from transformers import PreTrainedModel

    config = _base_config(family, base)
    model_cls = family_cls.model_class()
    with torch.device("meta"):
        model = model_cls(config) if issubclass(model_cls, PreTrainedModel) else model_cls.from_config(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def convert_efuf(src: str, family: str, base: str, out: str):
    """EFUF ``.pth`` (original keys, maybe rotary buffers, maybe under "model") → trainable-only safetensors."""
    from safetensors.torch import save_file

    from common.checkpoint import read_state_dict, resolve_checkpoint_file
    from common.convert.core import ConversionReport
    from common.io import atomic_path
    from common.models import family_class

    cls = family_class(family)
    f = resolve_checkpoint_file(src)
    state, _ = read_state_dict(f)
    expected = _expected_shapes(cls, family, base)
    adapter = cls.__new__(cls)  # remap_legacy_key needs no loaded model
    report = ConversionReport()
    clean: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, tensor in state.items():
        new = adapter.remap_legacy_key(key)
        if new is None:
            report.dropped.append((str(f), key, "rotary buffer, recomputed"))
            continue
        if new not in expected:
            unexpected.append(key)
            continue
        if tuple(tensor.shape) != expected[new]:
            raise LetheError(f"{f}: tensor {key!r} has shape {tuple(tensor.shape)}, the model expects {expected[new]}")
        clean[new] = tensor.detach().contiguous()
    if unexpected:
        raise LetheError(f"{f}: {len(unexpected)} tensors match nothing in the {family} model "
                         f"(e.g. {', '.join(unexpected[:3])}); refusing a partial conversion")
    if not clean:
        raise LetheError(f"{f}: no tensor of this checkpoint matches the {family} model")
    connector = tuple(p + "." for p in (*cls.projector_paths, *cls.connector_extra_paths)) + \
        tuple(cls.connector_extra_paths)
    scope = "projector" if all(k.startswith(connector) or k in connector for k in clean) else ""
    out_path = Path(out)
    if out_path.suffix != ".safetensors":
        out_path = out_path / "trainable.safetensors"
    meta = {"format": "lethe-trainable-v1", "family": family, "scope": scope, "converted_from": str(f)}
    with atomic_path(out_path, suffix=".safetensors") as tmp:
        save_file(clean, str(tmp), metadata=meta)
    report.converted = len(clean)
    return out_path, report


@cli_main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m common.convert", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:9]))
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("llava", "share4v"):
        p = sub.add_parser(name, help="original LLaVA-1.5 / ShareGPT4V dir → Hugging Face Llava dir")
        p.add_argument("--src", required=True, help="original checkpoint dir (config.json with mm_vision_tower)")
        p.add_argument("--out", required=True, help="output dir (new)")
        p.add_argument("--vision_tower", help="CLIP vision tower dir (default: mm_vision_tower of the config)")
    p = sub.add_parser("minigpt4", help="MiniGPT-4 official layout → our MiniGPT-4 dir")
    p.add_argument("--src", required=True, help="dir with eva_vit_g.pth, the MiniGPT-4 .pth and the Llama-2 dir, "
                                                "or a yaml (ckpt, llama_model, eva_vit)")
    p.add_argument("--out", required=True)
    p.add_argument("--eva_vit", help="EVA ViT-g weights (default: SRC/eva_vit_g.pth)")
    p.add_argument("--ckpt", help="MiniGPT-4 projection checkpoint (default: the other .pth in SRC)")
    p.add_argument("--llama", help="Hugging Face Llama-2-chat dir (default: the model subdir of SRC)")
    p = sub.add_parser("owl", help="mPLUG-Owl official dir → our mPLUG-Owl dir")
    p.add_argument("--src", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("efuf", help="EFUF .pth (original keys) → trainable-only safetensors with our keys")
    p.add_argument("--src", required=True, help="the .pth (e.g. llava-efuf-7b.pth) or a dir (newest file)")
    p.add_argument("--model", required=True, help="family of the base model (llava, share4v, minigpt4, owl, ...)")
    p.add_argument("--base", required=True, help="the base model the checkpoint belongs to (for checking): a "
                                                 "converted dir or the original layout")
    p.add_argument("--out", required=True, help="output .safetensors file (or a dir: DIR/trainable.safetensors)")
    a = ap.parse_args(argv)
    if a.cmd in ("llava", "share4v"):
        path, report = convert_llava(a.src, a.out, a.vision_tower)
    elif a.cmd == "minigpt4":
        path, report = convert_minigpt4(a.src, a.out, a.eva_vit, a.ckpt, a.llama)
    elif a.cmd == "owl":
        path, report = convert_owl(a.src, a.out)
    else:
        path, report = convert_efuf(a.src, a.model, a.base, a.out)
    print(report.summary())
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
