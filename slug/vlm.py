"""SLUG's VLM mode: the edited CLIP vision tensor written into the VLM's vision tower (as SLUG's LLaVA notebook
copies the edited ``vision_model`` into LLaVA).

The VLM's tower must be the CLIP's own vision tower: both are put in HF ``CLIPVisionModel`` form
(``ClipModel.to_hf_vision_model``; open_clip's fused ``in_proj`` becomes q/k/v) and compared tensor by tensor
before anything is written. Only the blocks the VLM reads are candidates: with ``vision_feature_layer`` = k (LLaVA:
−2, the penultimate hidden state) blocks at and after hidden state k, the final norm and the projection never reach
the language model, so an edit there could not change what the VLM sees.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from common.errors import LetheError
from slug.layers import block_index, tower_of


def _strip(key: str) -> str:
    return key.removeprefix("vision_model.")


class VisionTransplant:
    def __init__(self, family: str, path: str, clip, device: str = "auto"):
        from common.models import load_model

        self.family, self.path, self.clip = family, path, clip
        self.vlm = load_model(family, path, dtype="float32", device=device if device != "auto" else "cpu")
        self.tower = self.vlm.vision_tower
        mine = {_strip(k): v for k, v in self.tower.state_dict().items()}
        theirs = {_strip(k): v for k, v in clip.to_hf_vision_model().state_dict().items()}
        common_keys = sorted(set(mine) & set(theirs) - {k for k in mine if k.endswith("position_ids")})
        differ = [k for k in common_keys if mine[k].shape != theirs[k].shape
                  or not torch.allclose(mine[k].float().cpu(), theirs[k].float().cpu(), atol=1e-6, rtol=0)]
        if len(common_keys) < 4 or differ:
            raise LetheError(f"{path}: the {family} vision tower is not this CLIP's vision tower "
                             f"({len(differ)} of {len(common_keys)} tensors differ, e.g. {differ[:1]}); give the "
                             "CLIP the VLM was built from with --clip_path")
        self.before = theirs
        layers = self.vlm.vision_layers()
        cfg = getattr(self.vlm.model, "config", None)
        k = getattr(cfg, "vision_feature_layer", -1) if cfg is not None else -1
        if isinstance(k, (list, tuple)):  # several feature layers: the deepest one counts
            k = max(i if i >= 0 else len(layers) + 1 + i for i in k)
        self.used_blocks = k if k >= 0 else len(layers) + 1 + k  # hidden state k = output of block k-1
        print(f"VLM mode: {family} {path}: its vision tower is this CLIP's; it reads blocks 0..{self.used_blocks - 1} "
              f"of {len(layers)} (vision_feature_layer {k})", flush=True)

    def allowed(self, name: str) -> bool:
        b = block_index(name)
        return tower_of(name) == "vision" and b is not None and b < self.used_blocks

    def write(self, out: Path, trace: dict[str, Any]) -> dict[str, Any]:
        """Copy the changed tower tensors into the VLM and save them as its method checkpoint."""
        after = {_strip(k): v for k, v in self.clip.to_hf_vision_model().state_dict().items()}
        changed = [k for k in self.before if not torch.equal(self.before[k], after[k])]
        if not changed:
            raise LetheError("the SLUG edit changed no tensor of the vision tower")
        params = {_strip(n): p for n, p in self.tower.named_parameters()}
        for p in self.vlm.model.parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            for k in changed:
                params[k].copy_(after[k].to(params[k].device, params[k].dtype))
                params[k].requires_grad_(True)
        self.vlm.scope = "slug"
        path = self.vlm.save_checkpoint(out, {"slug_layer": trace["layer"], "slug_lambda": trace["lambda"]})
        print(f"wrote {path} ({len(changed)} tensor(s) of the {self.family} vision tower); evaluate with "
              f"--{self.family}_ckpt_load_path {out}")
        return {"family": self.family, "path": self.path, "checkpoint": str(out), "tensors": changed,
                "used_blocks": self.used_blocks}

    # ------------------------------------------------------------------ the VLM as the search's judge
    @torch.no_grad()
    def sync(self) -> None:
        """Copy the CLIP's vision tower, as it is now (edited or restored), into the VLM's tower."""
        now = {_strip(k): v for k, v in self.clip.to_hf_vision_model().state_dict().items()}
        params = {_strip(n): p for n, p in self.tower.named_parameters()}
        for k, v in now.items():
            if k in params and not torch.equal(params[k], v.to(params[k].device, params[k].dtype)):
                params[k].copy_(v.to(params[k].device, params[k].dtype))


class VLMJudge:
    """Forget and retain scores read from the VLM itself, for the search in VLM mode.

    Every image of the zero-shot sets is shown to the VLM with POPE's question for its own class ("Is there a
    {class} in the image?" + the evaluation scripts' answer suffix), greedy, answers read as POPE reads them.
    ``forget`` = the share of the concept's images answered *yes* (the VLM still sees the concept); ``retain`` = the
    share of the other classes' images answered *yes* (it still sees everything else). Both as ``top1`` so the
    search treats them like zero-shot accuracies."""

    metric = "VLM yes-rate"

    def __init__(self, transplant: VisionTransplant, sets, question: str = "Is there a {} in the image?",
                 batch_size: int = 64):
        from evaluate.cli import DEFAULT_VQA_SUFFIX, with_suffix
        from evaluate.pope import parse_pope_answer

        self.t, self.sets, self.batch_size, self.parse = transplant, sets, batch_size, parse_pope_answer
        self.prompts = {name: [with_suffix(question.format(s.class_names[lab].replace("_", " ")), DEFAULT_VQA_SUFFIX)
                               for lab in s.labels] for name, s in sets.items()}
        self._images: dict[str, list] = {}

    def _imgs(self, name: str) -> list:
        if name not in self._images:
            from common.io import load_image

            self._images[name] = [load_image(p) for p in self.sets[name].images]
        return self._images[name]

    def evaluate(self, changed: str | None = None) -> dict[str, dict[str, float]]:
        self.t.sync()
        out = {}
        for name in self.sets:
            answers = self.t.vlm.generate(self._imgs(name), self.prompts[name], max_new_tokens=4,
                                          batch_size=self.batch_size)
            out[name] = {"top1": sum(self.parse(a) == "yes" for a in answers) / len(answers)}
        return out
