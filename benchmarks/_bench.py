"""What every benchmark shares: a fixed thread count, CPU and wall time of each side, and one machine-readable line.

Each benchmark ends with ``RESULT {"bench": ..., "ratio": ..., "identical": ..., "threads": ..., ...}`` (json on one
line), the ratio being the original side's median CPU time over ours unless the benchmark says otherwise.
"""
from __future__ import annotations

import json
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field


def fix_threads(n: int) -> int:
    """Set torch's intra-op thread count (0: leave it) and return the count in force: a benchmark's ratio swings
    several-fold on a busy machine when the count is left to chance."""
    import torch

    if n > 0:
        torch.set_num_threads(n)
    return torch.get_num_threads()


@dataclass
class Timings:
    """CPU and wall seconds of every run of each side."""

    cpu: dict[str, list[float]] = field(default_factory=dict)
    wall: dict[str, list[float]] = field(default_factory=dict)

    @contextmanager
    def measure(self, side: str):
        c, w = time.process_time(), time.perf_counter()
        try:
            yield
        finally:
            self.cpu.setdefault(side, []).append(time.process_time() - c)
            self.wall.setdefault(side, []).append(time.perf_counter() - w)

    def median(self, side: str, kind: str = "cpu") -> float:
        return statistics.median((self.cpu if kind == "cpu" else self.wall)[side])

    def ratio(self, slow: str = "original", fast: str = "ours", kind: str = "cpu") -> float:
        f = self.median(fast, kind)
        return self.median(slow, kind) / f if f > 0 else float("inf")

    def line(self, slow: str = "original", fast: str = "ours") -> str:
        runs = len(self.cpu[slow])
        return (f"{slow} {self.median(slow):.3f} CPU s / {self.median(slow, 'wall'):.3f} wall s; {fast} "
                f"{self.median(fast):.3f} CPU s / {self.median(fast, 'wall'):.3f} wall s (medians of {runs} run(s)); "
                f"ratio {self.ratio(slow, fast):.2f}x CPU, {self.ratio(slow, fast, 'wall'):.2f}x wall")


def result(bench: str, ratio: float, identical: bool, threads: int, **extra) -> dict:
    """Print the benchmark's ``RESULT {...}`` line and return its dict."""
    row = {"bench": bench, "ratio": round(float(ratio), 4), "identical": bool(identical), "threads": int(threads),
           **extra}
    print("RESULT " + json.dumps(row, sort_keys=False, default=float), flush=True)
    return row


def build_llava(arch: str, device: str, tmp):
    """The tiny LLaVA checkpoint (float32, written under ``tmp``), or LLaVA-1.5-7B's architecture (Vicuna-7B +
    CLIP ViT-L/14-336, 576 image tokens, 7.06 B parameters) with random weights in bf16, built on ``device`` (nothing
    downloaded; the tiny checkpoint's tokenizer stands in: ids stay below the 32,064-token vocabulary)."""
    from pathlib import Path

    import torch

    from common.models import load_model
    from common.tiny import write_tiny

    tiny = write_tiny("llava", Path(tmp) / "llava")
    if arch == "tiny":
        return load_model("llava", str(tiny), dtype="float32", device=device)
    if arch != "llava-1.5-7b":
        raise SystemExit(f"unknown --arch {arch!r}: tiny or llava-1.5-7b")
    from transformers import (AutoProcessor, CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration,
                              LlavaProcessor)

    from common.models.llava import LlavaVLM

    small = AutoProcessor.from_pretrained(str(tiny))
    tok = small.tokenizer
    cfg = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096,
                           num_hidden_layers=24, num_attention_heads=16, image_size=336, patch_size=14,
                           projection_dim=768, hidden_act="quick_gelu"),
        text_config=dict(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=32, vocab_size=32064,
                         max_position_embeddings=4096, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id),
        image_token_index=tok.convert_tokens_to_ids("<image>"), image_seq_length=576, vision_feature_layer=-2,
        vision_feature_select_strategy="default", projector_hidden_act="gelu")
    with torch.device(device):
        model = LlavaForConditionalGeneration._from_config(cfg, attn_implementation="sdpa", dtype=torch.bfloat16)
    model.eval()
    ip = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=14, chat_template=small.chat_template,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1)
    return LlavaVLM(model, proc, path=None)
