"""Relevancy of a generated answer (Chefer et al., ICCV 2021) and the logit lens, on the shared model layer.

One teacher-forced forward of (image, question, answer) keeps every attention map of the vision tower, the bridge
and the LLM (eager attention: the maps are tensors of the graph). Explaining answer token k then takes the
gradients of that token's logit **with respect to the attention maps only** (``torch.autograd.grad``: no weight
gradient is computed, nothing is accumulated, so token k's maps are the same whether or not tokens < k were
explained first; the original accumulated ``retain_grad`` gradients over tokens), and applies the rules:

* rule 5 — per layer ``Ā = mean_heads(clamp(∇A ⊙ A, min=0))``;
* LLM self-attention (rules 6/7): ``R = I``; per layer ``R ← R + Ā_l·R``; the row of the position that predicts
  token k, minus the identity, after each layer (``per_layer``: cumulative maps, as Stethoscope shows them);
* ViT self-attention: ``R_v = I``; ``R_v ← R_v + Ā·R_v`` over the vision layers; the LLM's relevancy of the image
  tokens is carried to the patch grid through ``R_v`` when the image tokens are the vision tower's patch tokens
  (one per patch, the class token dropped, as LLaVA's ``default`` feature selection).

Positions (image, question and previous-answer tokens) come from the model layer (``token_positions``), never
from template offsets. Nothing here branches on a model name.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from common.errors import LetheError
from common.models.native import AttentionProbs


@dataclass
class Trace:
    """One teacher-forced forward pass, kept with its graph for explaining its answer tokens."""

    answer_ids: list[int]
    answer_text: list[str]  # each token decoded alone
    predictor: list[int]  # position whose logits predict answer token k
    logits: torch.Tensor  # [K, V] at the predictor positions (in the graph)
    maps: dict[str, list[torch.Tensor]]  # group -> per layer [1, H, T, T] attention probabilities (graph tensors
    # themselves: a gradient is taken w.r.t. these, never w.r.t. a view made after the forward)
    hidden: list[torch.Tensor]  # LLM hidden states [T, D] per layer (embeddings first), detached
    image: torch.Tensor  # [T] bool masks of sample 0
    question: torch.Tensor
    answer: torch.Tensor
    n_patches: int | None  # vision tokens per image (class token included), when a vision map was seen
    input_ids: list[int] = field(default_factory=list)  # the traced sequence
    cache: dict[str, Any] = field(default_factory=dict)


@dataclass
class TokenRelevancy:
    """Relevancy of one answer token: per LLM layer (cumulative), over image tokens, question and previous answer
    tokens, and (when the image tokens are patch tokens) over the patch grid."""

    token: int
    text: str
    image: torch.Tensor  # [L, n_image_tokens]
    question: torch.Tensor  # [L, n_question_tokens]
    previous: torch.Tensor  # [L, k] (relevancy of the answer tokens before this one)
    patches: torch.Tensor | None  # [L, gh, gw] or None
    full: torch.Tensor  # [L, n] rows over every position 0..n-1 of the causal prefix


def gradcam(attn: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Rule 5: the head mean of the positive part of gradient ⊙ attention, float32 ([H, T, T] -> [T, T])."""
    return (grad.float() * attn.float()).clamp(min=0).mean(0)


def llm_rows(cams: Sequence[torch.Tensor], n: int) -> torch.Tensor:
    """Rules 6/7 over the LLM layers on the causal prefix of length ``n``: row n-1 of (R − I) after each layer."""
    r = torch.eye(n, dtype=torch.float32)
    rows = []
    for a in cams:
        r = r + a[:n, :n] @ r
        rows.append((r - torch.eye(n))[n - 1].clone())
    return torch.stack(rows)


def vit_rollout(cams: Sequence[torch.Tensor]) -> torch.Tensor:
    """The ViT rule: R_v = I + Ā·R_v accumulated over the vision layers ([N, N], class token included)."""
    n = cams[0].shape[-1]
    r = torch.eye(n, dtype=torch.float32)
    for a in cams:
        r = r + a @ r
    return r


def handle_residual(r: torch.Tensor) -> torch.Tensor:
    """Eq. 8+9: the relevancy without its identity, each row normalised to sum 1, plus the identity (rows that
    sum to 0 stay 0)."""
    eye = torch.eye(r.shape[-1], dtype=r.dtype)
    x = r - eye
    x = torch.nan_to_num(x / x.sum(-1, keepdim=True), nan=0.0, posinf=0.0, neginf=0.0)
    return x + eye


def bridge_rollout(cams: Sequence[torch.Tensor], r_vision: torch.Tensor) -> torch.Tensor:
    """Rules 6/7 + 10 for a query bridge (BLIP-2's Q-Former, mPLUG-Owl's abstractor): the relevancy of the
    vision tokens for each query token, ``[S, N_v]``. Square maps are the queries' self-attention (``R_ss += Ā·R_ss``,
    ``R_si += Ā·R_si``); ``[Q, N_v]`` maps are their cross-attention to the vision tokens
    (``R_si[:Q] += R̄_ssᵀ[:Q, :Q]·Ā·R̄_vv``, with ``R̄`` = :func:`handle_residual`); a ``[Q, Q + N_v]`` map attends
    to [queries; vision tokens] at once (mPLUG-Owl) and takes the self rule on its first Q columns, then the cross
    rule on the rest."""
    n_v = r_vision.shape[0]
    s = next((a.shape[0] for a in cams if a.shape[0] == a.shape[1]), None) \
        or max(a.shape[0] for a in cams)
    r_ss = torch.eye(s)
    r_si = torch.zeros(s, n_v)
    rv_bar = handle_residual(r_vision)
    for a in cams:
        if a.shape[0] == a.shape[1] == s:
            r_si = r_si + a @ r_si
            r_ss = r_ss + a @ r_ss
            continue
        q = a.shape[0]
        if a.shape[1] == q + n_v:  # keys = [queries; vision tokens] (mPLUG-Owl's abstractor): both rules
            a_self, a = a[:, :q], a[:, q:]
            r_si = r_si.clone()
            r_ss = r_ss.clone()
            r_si[:q] = r_si[:q] + a_self @ r_si[:q]
            r_ss[:q, :q] = r_ss[:q, :q] + a_self @ r_ss[:q, :q]
        if a.shape[1] == n_v:
            r_si = r_si.clone()
            r_si[:q] = r_si[:q] + handle_residual(r_ss[:q, :q]).T @ a @ rv_bar
    return r_si


class Explainer:
    """Relevancy and logit lens for any family of the model layer (loaded with ``attn_implementation="eager"``)."""

    def __init__(self, vlm):
        self.vlm = vlm
        self.groups = vlm.attention_modules()
        if not self.groups["llm"]:
            raise LetheError(f"{vlm.family}: no attention module found in the language model")
        for p in vlm.model.parameters():  # maps only: no weight gradient is ever computed
            p.requires_grad_(False)
        impl = getattr(getattr(vlm.base, "config", None), "_attn_implementation", None)
        if impl not in (None, "eager"):
            raise LetheError(f"{vlm.family}: relevancy needs the attention maps; load the model with "
                             f"attn_implementation='eager' (it uses {impl!r})")

    # ------------------------------------------------------------------ the forward pass
    @staticmethod
    def _capture(block: torch.nn.Module, into: list) -> list:
        """Hooks that append the attention probabilities of each call of ``block`` to ``into``: the first
        ``[B, H, Tq, Tk]`` tensor returned as the second output by the block or one of its submodules (HF
        attention blocks return them themselves, or from an inner attention module, e.g. BLIP-2's Q-Former)."""
        slot: list = []

        def start(_module, args, kwargs):
            """Also puts a block whose input hangs off no leaf (BLIP-2's learned queries, fixed parameters) into
            the graph: its hidden states become a leaf, so its map has a gradient too (nothing upstream is cut —
            there is nothing upstream)."""
            slot.clear()
            if args and torch.is_tensor(args[0]) and args[0].is_floating_point() and not args[0].requires_grad:
                args = (args[0].detach().requires_grad_(True), *args[1:])
            elif torch.is_tensor(kwargs.get("hidden_states")) and not kwargs["hidden_states"].requires_grad:
                kwargs = {**kwargs, "hidden_states": kwargs["hidden_states"].detach().requires_grad_(True)}
            return args, kwargs

        def seen(module, _inputs, output):
            if slot:
                return
            if isinstance(module, AttentionProbs) and torch.is_tensor(output) and output.dim() == 4:
                slot.append(output)  # a native family's probabilities (common.models.native.AttentionProbs)
            elif isinstance(output, tuple) and len(output) > 1 and torch.is_tensor(output[1]) \
                    and output[1].dim() == 4:
                slot.append(output[1])

        def done(_module, _inputs, output):
            seen(_module, _inputs, output)
            if slot:
                into.append(slot[0])

        hooks = [block.register_forward_pre_hook(start, with_kwargs=True)]
        hooks += [m.register_forward_hook(seen) for m in block.modules() if m is not block]
        hooks.append(block.register_forward_hook(done))
        return hooks

    def trace(self, image, question: str, answer: str) -> Trace:
        """Teacher-force ``answer`` after ``question`` about ``image``; keep the maps and logits with their graph."""
        from common.models import Sample

        vlm = self.vlm
        batch = vlm.build_batch([Sample(image, question, target=answer, add_eos=False)]).to(vlm.device)
        pos = {k: v[0].cpu() for k, v in vlm.token_positions(batch).items()}
        maps: dict[str, list[torch.Tensor]] = {g: [] for g in self.groups}
        hooks = []
        for group, mods in self.groups.items():
            for _, mod in mods:
                hooks += self._capture(mod, maps[group])
        pixels = [k for k, v in batch.inputs.items() if torch.is_tensor(v) and v.is_floating_point()]
        inputs = dict(batch.inputs)
        for k in pixels:  # the pixels are the graph's leaf: every map downstream is a tensor of the graph
            inputs[k] = inputs[k].detach().clone().requires_grad_(True)
        try:
            with torch.enable_grad():
                out = vlm.model(**inputs, output_hidden_states=True, use_cache=False)
        finally:
            for h in hooks:
                h.remove()
        if len(maps["llm"]) != len(self.groups["llm"]):
            raise LetheError(f"{vlm.family}: the LLM returned no attention maps (load with attn_implementation='eager')")
        labels = batch.labels[0].cpu()
        where = torch.nonzero(labels != -100).flatten().tolist()
        if not where:
            raise LetheError("the answer is empty after tokenization")
        ids = [int(labels[i]) for i in where]
        predictor = [i - 1 for i in where]
        logits = out.logits[0, predictor]
        states = getattr(out, "hidden_states", None)
        if states is None:  # BLIP-2 / InstructBLIP: the LLM's own output
            states = getattr(getattr(out, "language_model_outputs", None), "hidden_states", None)
        hidden = [h[0].detach() for h in states] if states is not None else []
        tok = vlm.tokenizer
        texts = [tok.decode([i]) for i in ids]
        vis = maps.get("vision") or []
        return Trace(ids, texts, predictor, logits, maps, hidden, pos["image"], pos["question"], pos["answer"],
                     vis[0].shape[-1] if vis else None, batch.inputs["input_ids"][0].tolist())

    # ------------------------------------------------------------------ relevancy
    def explain(self, tr: Trace, k: int) -> TokenRelevancy:
        """Relevancy maps of answer token ``k`` (fresh gradients: independent of any other token's)."""
        if not 0 <= k < len(tr.answer_ids):
            raise LetheError(f"answer token {k} out of range (the answer has {len(tr.answer_ids)} tokens)")
        flat = [(g, i) for g in ("vision", "bridge", "llm") for i in range(len(tr.maps[g]))]
        tensors = [tr.maps[g][i] for g, i in flat]
        target = tr.logits[k, tr.answer_ids[k]]
        grads = torch.autograd.grad(target, tensors, retain_graph=True, allow_unused=True)
        cams: dict[str, list[torch.Tensor]] = {"vision": [], "bridge": [], "llm": []}
        for (g, _), a, d in zip(flat, tensors, grads):
            a = a.detach()[0].cpu()
            cams[g].append(gradcam(a, torch.zeros_like(a) if d is None else d[0].cpu()))
        n = tr.predictor[k] + 1
        rows = llm_rows(cams["llm"], n)
        image_pos = torch.nonzero(tr.image[:n]).flatten()
        question_pos = torch.nonzero(tr.question[:n]).flatten()
        previous_pos = torch.tensor(tr.predictor[1:k + 1], dtype=torch.long)  # answer tokens before k
        patches = self._patches(rows[:, image_pos], cams, tr.n_patches)
        return TokenRelevancy(tr.answer_ids[k], tr.answer_text[k], rows[:, image_pos], rows[:, question_pos],
                              rows[:, previous_pos], patches, rows)

    @staticmethod
    def _patches(r_image: torch.Tensor, cams: dict[str, list[torch.Tensor]], n_patches: int | None):
        """The image tokens' relevancy carried to the patch grid, [L, side, side], or None when the image tokens
        map to no square patch grid (LLaVA-NeXT's crops): through the ViT rollout when they are the vision tower's
        patch tokens (one each, or a run of consecutive ones each), through the bridge when they are its query
        outputs (the class token dropped at the end)."""
        if not cams["vision"] or not n_patches:
            return None
        rv = vit_rollout(cams["vision"])
        n_img = r_image.shape[-1]
        if cams["bridge"]:
            r_si = bridge_rollout(cams["bridge"], rv)
            # image tokens past the bridge's queries (mPLUG-Owl's appended vit_eos) hold no pixel information
            used = min(n_img, r_si.shape[0])
            per_patch = (r_image[:, :used] @ r_si[:used])[:, 1:]
        elif n_img == n_patches - 1:
            per_patch = r_image @ rv[1:, 1:]
        elif n_img == n_patches:
            per_patch = r_image @ rv
        elif (n_patches - 1) % n_img == 0:  # each image token = a run of consecutive patch tokens (MiniGPT-4)
            group = (n_patches - 1) // n_img
            per_patch = r_image.repeat_interleave(group, dim=1) @ rv[1:, 1:]
        else:
            return None
        side = math.isqrt(per_patch.shape[-1])
        if side * side != per_patch.shape[-1]:
            return None
        return per_patch.view(len(per_patch), side, side)

    def explain_all(self, tr: Trace) -> list[TokenRelevancy]:
        """Every answer token at once (each still from its own fresh gradients)."""
        return [self.explain(tr, k) for k in range(len(tr.answer_ids))]

    # ------------------------------------------------------------------ logit lens
    @torch.no_grad()
    def logit_lens(self, tr: Trace, k: int, top_k: int = 5) -> dict[str, Any]:
        """Per layer: the final norm then the LM head on the hidden state that predicts token k — the probability
        and rank of the generated token and the top-k words. The last layer's is the model's own distribution."""
        if not tr.hidden:
            raise LetheError(f"{self.vlm.family}: the model returned no hidden states")
        q = tr.predictor[k]
        norm, head = self.vlm.final_norm, self.vlm.lm_head
        h = torch.stack([x[q] for x in tr.hidden]).to(self.vlm.device)
        # the last hidden state is already normed by the model; the others are residual-stream states
        normed = torch.cat([norm(h[:-1]), h[-1:]])
        probs = torch.softmax(head(normed).float(), dim=-1).cpu()
        tok = tr.answer_ids[k]
        p = probs[:, tok]
        rank = (probs > p[:, None]).sum(1)
        top = probs.topk(top_k, dim=-1)
        decode = self.vlm.tokenizer.decode
        return {"prob": p, "rank": rank, "probs": probs,
                "top": [[(decode([int(i)]), float(v)) for v, i in zip(vals, idx)]
                        for vals, idx in zip(top.values, top.indices)]}
