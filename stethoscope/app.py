"""The Stethoscope app: chat with an image, then inspect every answer word.

    python -m stethoscope.app --model llava --llava_path llava-hf/llava-1.5-7b-hf [--host 127.0.0.1] [--port 7860]
    python -m stethoscope.app --toy          # the toy LLaVA, with the toy calibration's threshold

Answer words (sub-tokens merged) are picked from a list; for the picked word and LLM layer the app shows the image
relevancy over the image, the relevancy of the question and of the previous answer words (bars), the logit lens
(final norm applied: probability and rank of the word's first token, top words per layer), and for the whole
answer a warning strip: the visual contribution of each word against the threshold of ``stethoscope.calibrate``'s
summary (``--calibration``). Binds 127.0.0.1 unless ``--host`` says otherwise; uploads that are not images or are
too large are refused with a message. One model serves every user: requests queue, each session keeps its own
pass in its state, and no shared state changes per request.
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: import from the repo root, never from this script's folder
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401, E702

import argparse
import io
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.errors import LetheError, cli_main, run_cli

DEFAULT_CALIBRATION = {"mode": "layer:sum", "layer": -1, "threshold": None}


# ------------------------------------------------------------------------------------------------ the analysis
@dataclass
class Session:
    """One answer under analysis (kept in a Gradio session state, never shared)."""

    trace: Any
    image: Any
    words: list[tuple[str, list[int]]]  # (word, its answer-token indices)
    relevancy: dict[int, Any] = field(default_factory=dict)  # token index -> TokenRelevancy


def merge_words(tokenizer, ids: list[int]) -> list[tuple[str, list[int]]]:
    """Answer tokens grouped into words (a word starts at a token that starts with whitespace, or after one that
    is only whitespace or punctuation)."""
    from stethoscope.calibrate import token_spans

    text = tokenizer.decode(ids)
    words: list[tuple[str, list[int]]] = []
    for k, (a, b) in enumerate(token_spans(tokenizer, ids)):
        piece = text[a:b]
        starts = not words or piece[:1].isspace() or not words[-1][0].strip() or not piece.strip() \
            or not (piece.strip()[:1].isalnum() and words[-1][0].strip()[-1:].isalnum())
        if starts:
            words.append((piece, [k]))
        else:
            words[-1] = (words[-1][0] + piece, words[-1][1] + [k])
    return [(w.strip(), ks) for w, ks in words if w.strip()]


class Analyzer:
    """The model and its explainer, shared by every session (read-only after start)."""

    def __init__(self, vlm, calibration: dict | None = None, max_new_tokens: int = 64):
        from stethoscope.relevancy import Explainer

        self.vlm, self.explainer = vlm, Explainer(vlm)
        self.n_layers = len(self.explainer.groups["llm"])
        self.calibration = {**DEFAULT_CALIBRATION, **(calibration or {})}
        self.max_new_tokens = max_new_tokens
        self._forward = threading.Lock()  # the trace hooks the shared modules: one forward at a time

    def ask(self, image, question: str) -> Session:
        if not question.strip():
            raise LetheError("ask a question about the image")
        answer = self.vlm.generate([image], [question], max_new_tokens=self.max_new_tokens, batch_size=1)[0]
        if not answer.strip():
            raise LetheError("the model gave an empty answer")
        with self._forward:
            trace = self.explainer.trace(image, question, answer)
        return Session(trace, image, merge_words(self.vlm.tokenizer, trace.answer_ids))

    def relevancy(self, s: Session, k: int):
        if k not in s.relevancy:
            s.relevancy[k] = self.explainer.explain(s.trace, k)
        return s.relevancy[k]

    def warnings(self, s: Session) -> list[tuple[str, float, bool | None]]:
        """(word, visual contribution, flagged) per word, at the calibrated kind:mode and layer."""
        from stethoscope.calibrate import vc_table

        key, layer, thr = self.calibration["mode"], int(self.calibration["layer"]), self.calibration["threshold"]
        out = []
        for word, ks in s.words:
            vc = vc_table(self.relevancy(s, ks[0]))[key][layer]
            out.append((word, vc, None if thr is None else vc <= thr))
        return out


# ------------------------------------------------------------------------------------------------ rendering
def _figure_to_array(fig) -> np.ndarray:
    import matplotlib.pyplot as plt
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def overlay(image, patches: torch.Tensor | None, size: int = 336) -> np.ndarray:
    """The image (resized square) with the patch relevancy upsampled over it (jet colormap, α 0.5); the image alone
    when the model's image tokens form no patch grid."""
    import matplotlib

    base = np.asarray(image.convert("RGB").resize((size, size))).astype(np.float32) / 255
    if patches is None:
        return (base * 255).astype(np.uint8)
    m = patches.float()[None, None]
    m = torch.nn.functional.interpolate(m, size=(size, size), mode="bilinear", align_corners=False)[0, 0]
    m = (m - m.min()) / (m.max() - m.min() + 1e-12)
    heat = matplotlib.colormaps["jet"](m.numpy())[..., :3]
    return (255 * (0.5 * base + 0.5 * heat)).clip(0, 255).astype(np.uint8)


def bars(labels: list[str], values: list[float], title: str) -> np.ndarray:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(3.0, 0.35 * len(labels) + 1), 2.4))
    ax.bar(range(len(values)), values, color="tab:blue")
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_title(title, fontsize=9)
    return _figure_to_array(fig)


def lens_strip(lens: dict[str, Any]) -> np.ndarray:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = lens["prob"].numpy()
    fig, ax = plt.subplots(figsize=(max(3.0, 0.6 * len(p) + 1), 1.4))
    ax.imshow(p[None], cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i, (top, rank) in enumerate(zip(lens["top"], lens["rank"].tolist())):
        ax.text(i, 0, f"{top[0][0].strip() or '␣'}\n{p[i]:.2f} #{rank + 1}", ha="center", va="center", fontsize=7)
    ax.set_yticks([])
    ax.set_xticks(range(len(p)), ["emb"] + [f"L{i}" for i in range(1, len(p))], fontsize=7)
    ax.set_title("logit lens: P(token) and rank per layer; top word", fontsize=8)
    return _figure_to_array(fig)


def token_labels(tokenizer, ids: list[int]) -> list[str]:
    return [tokenizer.decode([i]).strip() or "␣" for i in ids]


# ------------------------------------------------------------------------------------------------ input checks
def load_upload(path: str | None, max_mb: float, max_side: int):
    """The uploaded file as PIL RGB, or a LetheError saying why not."""
    from PIL import Image, UnidentifiedImageError

    if not path:
        raise LetheError("upload an image first")
    p = Path(path)
    size_mb = p.stat().st_size / 2**20
    if size_mb > max_mb:
        raise LetheError(f"the upload is {size_mb:.1f} MB; the limit is {max_mb:g} MB")
    try:
        with Image.open(p) as im:
            if max(im.size) > max_side:
                raise LetheError(f"the image is {im.size[0]}×{im.size[1]} px; the limit is {max_side} px a side")
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError):
        raise LetheError(f"{p.name} is not an image this app can read") from None


# ------------------------------------------------------------------------------------------------ the UI
def build_app(analyzer: Analyzer, max_mb: float = 10.0, max_side: int = 4096):
    import gradio as gr

    tok = analyzer.vlm.tokenizer
    n_layers = analyzer.n_layers

    def ask(path, question):
        try:
            image = load_upload(path, max_mb, max_side)
            s = analyzer.ask(image, question)
            warn = analyzer.warnings(s)
        except LetheError as e:
            raise gr.Error(str(e))
        choices = [f"{i}: {w}" for i, (w, _) in enumerate(s.words)]
        strip = [(f"{w} ", ("warning" if flag else "ok") if flag is not None else f"VC {vc:.3g}")
                 for w, vc, flag in warn]
        answer = tok.decode(s.trace.answer_ids)
        return (s, answer, gr.update(choices=choices, value=None), strip,
                f"threshold: VC ≤ {analyzer.calibration['threshold']:.4g} at {analyzer.calibration['mode']}, layer "
                f"{analyzer.calibration['layer']}" if analyzer.calibration["threshold"] is not None else
                "no calibration loaded: visual contributions shown without a threshold")

    def show(s, pick, layer):
        if s is None or not pick:
            return None, None, None, None, ""
        w = int(pick.split(":", 1)[0])
        word, ks = s.words[w]
        k = ks[0]
        rel = analyzer.relevancy(s, k)
        layer = int(layer)
        heat = overlay(s.image, None if rel.patches is None else rel.patches[layer])
        tr = s.trace
        qpos = torch.nonzero(tr.question[:tr.predictor[k] + 1]).flatten()
        image_pos = torch.nonzero(tr.image).flatten()
        # the user's turn: the prompt tokens after the image (a system prompt before it is not shown)
        shown = qpos > image_pos[-1] if len(image_pos) else torch.ones_like(qpos, dtype=torch.bool)
        q_labels = token_labels(tok, tr_ids(tr, qpos[shown].tolist()))
        q_bar = bars(q_labels, rel.question[layer][shown].tolist(), "relevancy of the question tokens")
        prev_labels = token_labels(tok, tr.answer_ids[:k]) or ["(none)"]
        prev_vals = rel.previous[layer].tolist() or [0.0]
        p_bar = bars(prev_labels, prev_vals, "relevancy of the previous answer tokens")
        lens = analyzer.explainer.logit_lens(tr, k)
        info = (f"'{word}' (token {k}: {tr.answer_text[k]!r}), LLM layer {layer}: image relevancy "
                f"{float(rel.image[layer].sum()):.4g}, text {float(rel.question[layer].sum() + rel.previous[layer].sum()):.4g}")
        return heat, q_bar, p_bar, lens_strip(lens), info

    with gr.Blocks(title="Lethe Stethoscope") as demo:
        gr.Markdown("## Stethoscope — relevancy, logit lens and hallucination warnings")
        state = gr.State(None)
        with gr.Row():
            image = gr.Image(type="filepath", label="image", elem_id="image")
            with gr.Column():
                question = gr.Textbox(label="question", value="Please describe the image.", elem_id="question")
                ask_btn = gr.Button("Ask", variant="primary", elem_id="ask")
                answer = gr.Textbox(label="answer", interactive=False, elem_id="answer")
        warnings = gr.HighlightedText(label="hallucination warning per word", elem_id="warnings",
                                      color_map={"warning": "red", "ok": "green"})
        threshold = gr.Markdown(elem_id="threshold")
        words = gr.Radio(choices=[], label="answer words (pick one)", elem_id="words")
        layer = gr.Slider(0, n_layers - 1, value=n_layers - 1, step=1, label=f"LLM layer (0-{n_layers - 1})",
                          elem_id="layer")
        info = gr.Markdown(elem_id="info")
        with gr.Row():
            heat = gr.Image(label="image relevancy", elem_id="heatmap", interactive=False)
            lens = gr.Image(label="logit lens", elem_id="lens", interactive=False)
        with gr.Row():
            q_bar = gr.Image(label="question relevancy", elem_id="question_bars", interactive=False)
            p_bar = gr.Image(label="previous-answer relevancy", elem_id="answer_bars", interactive=False)
        ask_btn.click(ask, [image, question], [state, answer, words, warnings, threshold], concurrency_limit=1)
        for event in (words.change, layer.release):
            event(show, [state, words, layer], [heat, q_bar, p_bar, lens, info])
    return demo.queue(default_concurrency_limit=1)


def tr_ids(trace, positions: list[int]) -> list[int]:
    """Token ids at positions of the traced sequence (kept by the trace)."""
    return [trace.input_ids[p] for p in positions]


def read_calibration(path: str | None) -> dict | None:
    if not path:
        return None
    from common.io import read_json

    if not Path(path).is_file():
        raise LetheError(f"--calibration {path}: not found (run python -m stethoscope.calibrate first)")
    c = read_json(path)
    missing = [k for k in ("mode", "layer", "threshold") if k not in c]
    if missing:
        raise LetheError(f"{path}: not a calibration summary (no {', '.join(missing)})")
    return c


def build_parser() -> argparse.ArgumentParser:
    from common.args import one_line_errors
    from stethoscope.calibrate import add_model_arguments

    p = argparse.ArgumentParser(prog="python -m stethoscope.app", description=__doc__.split("\n")[0])
    p.add_argument("--toy", action="store_true", help="the toy LLaVA and the toy calibration")
    add_model_arguments(p)
    p.add_argument("--calibration", default=None, help="stethoscope.calibrate's summary.json (the threshold)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--max_new_tokens", type=int, default=64)
    p.add_argument("--max_image_mb", type=float, default=10.0)
    p.add_argument("--max_image_side", type=int, default=4096)
    return one_line_errors(p)


@cli_main
def main(argv: list[str] | None = None) -> int:
    import sys

    from common.models import load_model

    a = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if a.toy:
        a.model_path = a.model_path or "checkpoints/toy/llava"
        a.calibration = a.calibration or "results/stethoscope_toy/summary.json"
    if not a.model_path:
        raise LetheError(f"--{a.model}_path is required (or --toy)")
    vlm = load_model(a.model, a.model_path, dtype="auto", device=a.device, attn_implementation="eager")
    analyzer = Analyzer(vlm, read_calibration(a.calibration), a.max_new_tokens)
    demo = build_app(analyzer, a.max_image_mb, a.max_image_side)
    demo.launch(server_name=a.host, server_port=a.port, show_error=True)
    return 0


if __name__ == "__main__":
    run_cli(main)
