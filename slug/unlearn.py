"""SLUG step 3: pick layers by importance and alignment, search one step size per layer, keep the best layer.

    python slug/unlearn.py --clip_path P --grads_dir results/slug/grads/X --concept "Elon Musk" \\
        --celeba_root data/celeba --identity_names names.txt --retain_folder data/ImageNet/val --output_dir out
    python slug/unlearn.py --config configs/slug/toy.yaml          # the toy world
    python slug/unlearn.py --config configs/slug/toy.yaml --vlm llava --vlm_path checkpoints/toy/llava  # VLM mode

1. Importance ‖g_f‖/‖θ‖ and alignment |cos(g_r, g_f)| of every eligible tensor (``slug/layers.py``), the Pareto
   front per tower (plots ``pareto_<tower>.png``).
2. For each front layer: θ_l ← θ_l − λ·g_f,l with λ found by bisection (``slug/search.py``) until forget top-1 ≤
   ``--forget_target`` (default: chance, 1/#classes) **and** retain top-1 ≥ the original's − ``--max_retain_drop``
   (or ``--retain_min``); plot ``search.png``.
3. The layer kept: among those that met both, the highest retain accuracy (then the lowest forget accuracy, then
   the smallest step). Written: ``trainable.safetensors`` holding only the edited tensor (load it with
   ``--clip_ckpt_load_path OUT`` in every eval script), ``trace.json`` (every number above).

VLM mode (``--vlm FAMILY --vlm_path P``): the CLIP is the one the VLM's vision tower was built from (checked tensor
by tensor); only the vision layers the VLM reads (up to its ``vision_feature_layer``) are candidates, and the
edited tensor is also written into the VLM's tower as a method checkpoint ``OUT/vlm/trainable.safetensors``
(``--{family}_ckpt_load_path OUT/vlm`` in the evaluation scripts).
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: import from the repo root, never from this script's folder
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401, E702

import difflib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from common.errors import LetheError, cli_main, run_cli
from slug.zeroshot import EvalSetArguments


@dataclass
class SlugArguments:
    grads_dir: str = field(default="results/slug/grads", metadata={"help": "the output of slug/compute_grad.py"})
    output_dir: str = field(default="results/slug/run", metadata={"help": "checkpoint, trace and plots"})
    towers: str = field(default="vision,text", metadata={"help": "towers whose Pareto layers are tried"})
    layers: Optional[str] = field(default=None, metadata={
        "help": "comma-separated tensor names to try instead of the Pareto fronts"})
    max_candidates: int = field(default=0, metadata={"help": "per tower, the N most important front layers (0: all)"})
    forget_target: float = field(default=-1.0, metadata={
        "help": "forget top-1 to reach (<0: chance = 1/#classes)"})
    max_retain_drop: float = field(default=0.05, metadata={"help": "retain top-1 may fall this much at most"})
    retain_min: Optional[float] = field(default=None, metadata={"help": "absolute retain top-1 bound (overrides)"})
    max_iterations: int = field(default=10, metadata={"help": "trials per layer"})
    initial_ratio_divisor: float = field(default=10.0, metadata={"help": "λ0 = (‖θ‖/‖g_f‖) / this"})
    vlm: Optional[str] = field(default=None, metadata={"help": "VLM mode: the family (e.g. llava) of --vlm_path"})
    vlm_path: Optional[str] = field(default=None, metadata={"help": "VLM mode: the VLM checkpoint"})
    vlm_judge: bool = field(default=True, metadata={
        "help": "VLM mode: search on the VLM's own answers (POPE's question per image: forget = yes-rate on the "
                "concept's images, retain = yes-rate on the others'); false: on the CLIP's zero-shot accuracy"})
    plots: bool = field(default=True, metadata={"help": "write pareto_<tower>.png and search.png"})


def load_grads(grads_dir: str | Path, clip) -> tuple[dict[str, torch.Tensor], dict]:
    """The forget gradients and statistics of ``slug/compute_grad.py``, checked against this model (same weights:
    gradients of another checkpoint, even of the same architecture, are refused)."""
    from common.retrieval.metrics import model_fingerprint

    from safetensors.torch import load_file

    from common.io import read_json

    d = Path(grads_dir)
    f, s = d / "forget_grads.safetensors", d / "stats.json"
    for p in (f, s):
        if not p.is_file():
            raise LetheError(f"{p}: not found (run slug/compute_grad.py with --grads_dir {d} first)")
    grads, stats = load_file(str(f)), read_json(s)
    if stats.get("model_fingerprint") and stats["model_fingerprint"] != model_fingerprint(clip):
        raise LetheError(f"{d}: the gradients were computed on another checkpoint (its weights differ from "
                         f"--clip_path {clip.path} and any --clip_ckpt_load_path given)")
    params = dict(clip.model.named_parameters())
    for name, g in grads.items():
        if name not in params:
            raise LetheError(f"{f}: tensor {name!r} is not in this model (gradients of another checkpoint?)")
        if tuple(g.shape) != tuple(params[name].shape):
            raise LetheError(f"{f}: {name} has shape {tuple(g.shape)}, the model's is {tuple(params[name].shape)}")
    missing = [n for n in grads if n not in stats.get("tensors", {})]
    if missing:
        raise LetheError(f"{s}: no statistics for {missing[0]!r}")
    return grads, stats


def candidates(stats: dict, args: SlugArguments, allowed=None) -> tuple[list, dict[str, list[str]], list[str]]:
    """(all LayerStats, the front per tower, the names to try)."""
    from slug.layers import front_by_tower, layer_stat

    towers = [t.strip() for t in args.towers.split(",") if t.strip()]
    all_stats = [layer_stat(n, s) for n, s in stats["tensors"].items()]
    pool = [s for s in all_stats if s.tower in towers and (allowed is None or allowed(s.name))]
    fronts = front_by_tower(pool, towers)
    if args.layers:
        names = [n.strip() for n in args.layers.split(",") if n.strip()]
        known = {s.name for s in pool}
        for n in names:
            if n not in known:
                close = difflib.get_close_matches(n, sorted(known), n=3)
                raise LetheError(f"--layers: no eligible tensor {n!r}"
                                 + (f"; close: {', '.join(close)}" if close else f" ({len(known)} eligible)"))
        return all_stats, fronts, names
    chosen = []
    for t in towers:
        front = fronts.get(t, [])
        chosen += front[:args.max_candidates] if args.max_candidates else front
    if not chosen:
        raise LetheError(f"no candidate layer in towers {towers}")
    return all_stats, fronts, chosen


class LayerEditor:
    """Sets one tensor to θ0 − λ·g and restores it; the model is never left edited by a search."""

    def __init__(self, model: torch.nn.Module, grads: dict[str, torch.Tensor]):
        self.params, self.grads = dict(model.named_parameters()), grads
        self.originals: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def apply(self, name: str, lam: float) -> None:
        p = self.params[name]
        theta0 = self.originals.setdefault(name, p.detach().clone())
        p.copy_((theta0.float() - lam * self.grads[name].to(p.device).float()).to(p.dtype))

    @torch.no_grad()
    def restore(self, name: str) -> None:
        if name in self.originals:
            self.params[name].copy_(self.originals.pop(name))


def pick(results: dict[str, Any]) -> tuple[str | None, str]:
    """(layer, why) among the searched layers: of those that met both bounds, the highest retain accuracy (then
    the lowest forget accuracy, then the smallest step); when none did, the best effort — the lowest forget
    accuracy any layer reached with retain above the bound."""
    ok = {n: r for n, r in results.items() if r["success"]}
    if ok:
        best = sorted(ok, key=lambda n: (-ok[n]["retain_top1"], ok[n]["forget_top1"], ok[n]["lambda"], n))[0]
        r = ok[best]
        return best, (f"{best}: forget {r['forget_top1']:.3f}, retain {r['retain_top1']:.3f} at λ {r['lambda']:.3g} "
                      f"— the highest retain accuracy of the {len(ok)} layer(s) that met both bounds")
    within = {n: r for n, r in results.items() if r["lambda"] is not None}
    if not within:
        return None, "no layer kept retain accuracy above the bound at any step tried"
    best = sorted(within, key=lambda n: (within[n]["forget_top1"], -within[n]["retain_top1"], within[n]["lambda"],
                                         n))[0]
    r = within[best]
    return best, (f"{best}: forget {r['forget_top1']:.3f}, retain {r['retain_top1']:.3f} at λ {r['lambda']:.3g} — "
                  "best effort: no layer reached the forget target with retain above the bound; this is the lowest "
                  "forget accuracy reached within the retain bound")


def run_search(clip, grads, stats, sets, args: SlugArguments, ev_args: EvalSetArguments,
               allowed=None, judge=None, log=print) -> dict[str, Any]:
    """Everything but writing: the trace dict (and the model left at the chosen edit, when there is one)."""
    from slug.layers import tower_of
    from slug.search import initial_lambda, search
    from slug.zeroshot import Evaluator

    t0 = time.perf_counter()
    all_stats, fronts, names = candidates(stats, args, allowed)
    evaluator = judge or Evaluator(clip, list(sets.values()), ev_args.templates, ev_args.eval_batch_size)
    metric = getattr(evaluator, "metric", "zero-shot top-1")
    original = evaluator.evaluate()
    n_classes = len(sets["forget"].class_names)
    target = args.forget_target if args.forget_target >= 0 else 1.0 / n_classes
    retain_key = "retain" if "retain" in sets else "celeba"
    bound = args.retain_min if args.retain_min is not None else original[retain_key]["top1"] - args.max_retain_drop
    log(f"[{metric}] original: forget {original['forget']['top1']:.3f}, {retain_key} "
        f"{original[retain_key]['top1']:.3f}; target forget <= {target:.3f}, {retain_key} >= {bound:.3f}; "
        f"{len(names)} candidate layer(s)")
    editor = LayerEditor(clip.model, grads)
    by_name = {s.name: s for s in all_stats}
    results: dict[str, Any] = {}
    for name in names:
        st = by_name[name]
        tower = tower_of(name)

        def trial(lam: float, name=name, tower=tower):
            editor.apply(name, lam)
            r = evaluator.evaluate(changed=tower)
            return r["forget"]["top1"], r[retain_key]["top1"], r

        lam0 = initial_lambda(st.weight_norm, st.grad_norm, args.initial_ratio_divisor)
        res = search(trial, lam0, target, bound, args.max_iterations)
        editor.restore(name)
        best = res.best_effort
        results[name] = {"tower": tower, "importance": st.importance, "alignment": st.alignment, "lambda0": lam0,
                         "success": res.success, "lambda": best.lam if best else None,
                         "forget_top1": best.forget_top1 if best else None,
                         "retain_top1": best.retain_top1 if best else None,
                         "trials": [t.as_dict() for t in res.trials]}
        log(f"  {name}: {'met both bounds' if res.success else 'bounds not met'} after {len(res.trials)} trial(s)"
            + (f"; {'λ' if res.success else 'best within the retain bound: λ'} {best.lam:.3g}: forget "
               f"{best.forget_top1:.3f}, retain {best.retain_top1:.3f}" if best else ""))
    layer, why = pick(results)
    final = None
    if layer is not None:
        editor.apply(layer, results[layer]["lambda"])
        editor.originals.clear()  # keep the edit
        final = evaluator.evaluate(changed=tower_of(layer))
    success = layer is not None and results[layer]["success"]
    log(("picked " if layer else "") + why)
    return {"concept": ev_args.concept, "original": original, "target": target, "bound": bound,
            "bound_set": retain_key, "fronts": fronts, "layers": {s.name: s.as_dict() for s in all_stats},
            "candidates": names, "metric": metric, "results": results, "layer": layer, "why": why,
            "lambda": results[layer]["lambda"] if layer else None, "final": final,
            "search_seconds": time.perf_counter() - t0,
            "grad_seconds": stats.get("seconds"), "success": success}


def plot(trace: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common.io import atomic_path

    written = []
    for tower, front in trace["fronts"].items():
        pts = [s for s in trace["layers"].values() if s["tower"] == tower and s["importance"] > 0]
        if not pts:
            continue
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.scatter([max(p["alignment"], 1e-12) for p in pts], [p["importance"] for p in pts], s=12, c="grey",
                   label="tensors")
        fp = sorted((trace["layers"][n] for n in front), key=lambda p: p["alignment"])
        ax.plot([max(p["alignment"], 1e-12) for p in fp], [p["importance"] for p in fp], "o-", c="tab:red",
                ms=5, label="Pareto front")
        if trace["layer"] in front:
            c = trace["layers"][trace["layer"]]
            ax.scatter([c["alignment"]], [c["importance"]], marker="*", s=160, c="gold", edgecolors="k",
                       zorder=5, label="picked")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("gradient alignment |cos(g_r, g_f)|")
        ax.set_ylabel("importance ‖g_f‖/‖θ‖")
        ax.set_title(f"{tower} tower")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"pareto_{tower}.png"
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
        written.append(path)
    if trace["results"]:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
        for name, r in trace["results"].items():
            steps = [t["step"] for t in r["trials"]]
            short = name.replace("transformer.resblocks.", "b").replace("encoder.layers.", "L")
            axes[0].plot(steps, [t["lam"] for t in r["trials"]], "o-", ms=3, label=short)
            axes[1].plot(steps, [t["forget_top1"] for t in r["trials"]], "o-", ms=3)
            axes[1].plot(steps, [t["retain_top1"] for t in r["trials"]], "x--", ms=3)
        axes[0].set_yscale("log")
        axes[0].set_xlabel("trial")
        axes[0].set_ylabel("λ")
        axes[1].axhline(trace["target"], c="tab:red", lw=0.8, ls=":")
        axes[1].axhline(trace["bound"], c="tab:green", lw=0.8, ls=":")
        axes[1].set_xlabel("trial")
        axes[1].set_ylabel("top-1 (o forget, x retain)")
        axes[0].legend(fontsize=6)
        fig.tight_layout()
        path = out / "search.png"
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
        written.append(path)
    return written


@cli_main
def main(argv: list[str] | None = None) -> int:
    from common.args import ModelArguments, parse_clip_args
    from common.checkpoint import run_provenance
    from common.io import atomic_write_json
    from slug.zeroshot import build_sets

    margs, args, ev_args = parse_clip_args([ModelArguments, SlugArguments, EvalSetArguments], argv,
                                           "give the CLIP with --clip_path (a VLM with --vlm/--vlm_path)")
    if bool(args.vlm) != bool(args.vlm_path):
        raise LetheError("VLM mode needs both --vlm FAMILY and --vlm_path P")
    sets = build_sets(ev_args)
    clip = margs.load()
    grads, stats = load_grads(args.grads_dir, clip)
    vlm = allowed = judge = None
    if args.vlm:
        from slug.vlm import VisionTransplant

        vlm = VisionTransplant(args.vlm, args.vlm_path, clip, device=margs.device)
        allowed = vlm.allowed
        args.towers = "vision"
        if args.vlm_judge:
            from slug.vlm import VLMJudge

            judge = VLMJudge(vlm, sets, batch_size=ev_args.eval_batch_size)
    trace = run_search(clip, grads, stats, sets, args, ev_args, allowed, judge)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    trace["provenance"] = run_provenance("slug", {"model": margs, "slug": args, "sets": ev_args})
    if trace["layer"]:
        params = dict(clip.model.named_parameters())
        for n, p in params.items():
            p.requires_grad_(n == trace["layer"])
        clip.scope = "slug"
        clip.save_checkpoint(out, {"slug_layer": trace["layer"], "slug_lambda": trace["lambda"]})
        print(f"wrote {out / 'trainable.safetensors'} (1 tensor: {trace['layer']}); evaluate with "
              f"--clip_ckpt_load_path {out}")
        if vlm is not None:
            trace["vlm"] = vlm.write(out / "vlm", trace)
    if args.plots:
        plot(trace, out)
    atomic_write_json(out / "trace.json", trace)
    print(f"trace: {out / 'trace.json'}")
    if not trace["layer"]:
        print(f"error: {trace['why']} (see {out / 'trace.json'}; loosen --max_retain_drop)", file=sys.stderr)
        return 1
    if not trace["success"]:
        print(f"warning: the forget target {trace['target']:.3f} was not reached; kept the best effort (see "
              f"{out / 'trace.json'}; --max_retain_drop trades retain accuracy for forgetting)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
