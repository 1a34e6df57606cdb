"""The generation half of every benchmark: batched, resumable, one jsonl line per finished item.

The model contract is ``vlm.generate(images: list[PIL.Image], prompts: list[str], max_new_tokens=int,
num_beams=int, do_sample=bool) -> list[str]``; prompts are the user text (the adapter applies its chat template).
Items are mappings ``{"id", "image_path", "prompt", ...}`` (``image_path`` None for a text-only item: it
gets ``None`` as its image, in batches of text-only items). Ids already in the output file are skipped, every
finished batch is appended and fsync'ed, and an unfinished last line left by a killed run is cut before appending,
so an interrupted run, re-run, ends with the same file as an uninterrupted one.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

from common.errors import LetheError
from common.io import load_image, PathLike, append_jsonl, load_done_ids, repair_jsonl_tail

Record = dict[str, Any]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
DAR_PROMPT = "Detail the composition and subjects within the frame."  # STIC's describe prompt
DAR_TEMPLATE = "Image description:\n{description}\n\n{question}"


class VisionLanguageModel(Protocol):
    def generate(self, images: list, prompts: list[str], max_new_tokens: int = ..., num_beams: int = ...,
                 do_sample: bool = ...) -> list[str]: ...


def find_image(folder: PathLike, stem: str) -> Path | None:
    """``folder/stem.<ext>`` for the usual image extensions (either case), or None."""
    folder = Path(folder)
    for suffix in IMAGE_SUFFIXES:
        for cand in (folder / (stem + suffix), folder / (stem + suffix.upper())):
            if cand.is_file():
                return cand
    return None


def llava_record(item: Mapping[str, Any], text: str) -> Record:
    """LLaVA's answer-file line: ``question_id``, ``prompt``, ``text`` (+ the item's ``record`` extras)."""
    return {"question_id": item["id"], "prompt": item["prompt"], "text": text, **item.get("record", {})}


@dataclass
class RunStats:
    total: int
    already_done: int
    generated: int


def _generate(vlm: VisionLanguageModel, images: list, prompts: list[str], **kw: Any) -> list[str]:
    out = vlm.generate(images, prompts, **kw)
    if not isinstance(out, (list, tuple)) or len(out) != len(prompts):
        raise RuntimeError(f"generate returned {type(out).__name__} of length "
                           f"{len(out) if hasattr(out, '__len__') else '?'} for {len(prompts)} prompts")
    return [str(t) for t in out]


def _batches(items: Sequence[Mapping[str, Any]], size: int) -> list[list[Mapping[str, Any]]]:
    """Consecutive batches of at most ``size`` items; a batch never mixes items with and without an image."""
    out: list[list[Mapping[str, Any]]] = []
    for it in items:
        if out and len(out[-1]) < size and (out[-1][0]["image_path"] is None) == (it["image_path"] is None):
            out[-1].append(it)
        else:
            out.append([it])
    return out


def run_generation(vlm: VisionLanguageModel, items: Sequence[Mapping[str, Any]], output_path: PathLike, *,
                   batch_size: int = 8, max_new_tokens: int = 64, num_beams: int = 1, do_sample: bool = False,
                   id_key: str = "question_id", make_record: Callable[[Mapping[str, Any], str], Record] = llava_record,
                   dar_prompt: str | None = None, dar_template: str = DAR_TEMPLATE,
                   dar_max_new_tokens: int | None = None, progress: bool = True) -> RunStats:
    """Generate an answer for every item not yet in ``output_path`` (jsonl, keyed by ``id_key``).

    With ``dar_prompt`` (STIC's describe-and-respond) each item is first described *with its image*; the answer
    prompt is ``dar_template.format(description=..., question=prompt)``, again with the image, and the record
    gets a ``description`` field. Text-only items are answered directly.
    """
    if batch_size < 1:
        raise LetheError("--batch_size must be >= 1")
    seen: set[str] = set()
    for it in items:
        for key in ("id", "image_path", "prompt"):
            if key not in it:
                raise LetheError(f"generation item without {key!r}: {dict(it)!r:.200}")
        sid = str(it["id"])
        if sid in seen:
            raise LetheError(f"duplicate item id {it['id']!r}")
        seen.add(sid)
    repair_jsonl_tail(output_path)
    done = load_done_ids(output_path, id_key)
    todo = [it for it in items if str(it["id"]) not in done]
    gen_kw = dict(max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=do_sample)
    # Greedy/beam answers depend only on (image, prompt): POPE's three splits share their positive questions,
    # so identical pairs are generated once (batched == batch-size-1, so the answers are the same).
    cache: dict[tuple[Any, str], tuple[str, str | None]] = {}
    batches = _batches(todo, batch_size)
    already = len(items) - len(todo)
    from tqdm.auto import tqdm

    for batch in tqdm(batches, desc="generate", unit="batch", disable=not progress, file=sys.stderr):
        with_images = batch[0]["image_path"] is not None
        keys = [(it["image_path"], str(it["prompt"])) for it in batch]
        gen_keys = keys if do_sample else list(dict.fromkeys(k for k in keys if k not in cache))
        results: list[tuple[str, str | None]] = []
        if gen_keys:
            images = [load_image(k[0]) for k in gen_keys] if with_images else [None] * len(gen_keys)
            prompts = [k[1] for k in gen_keys]
            descriptions: list[str | None] = [None] * len(gen_keys)
            if dar_prompt and with_images:
                descriptions = _generate(vlm, images, [dar_prompt] * len(gen_keys),
                                         **{**gen_kw, "max_new_tokens": dar_max_new_tokens or max_new_tokens})
                prompts = [dar_template.format(description=d, question=p) for d, p in zip(descriptions, prompts)]
            results = list(zip(_generate(vlm, images, prompts, **gen_kw), descriptions))
        if do_sample:
            per_item = results
        else:
            cache.update(zip(gen_keys, results))
            per_item = [cache[k] for k in keys]
        records = []
        for it, (text, description) in zip(batch, per_item):
            rec = make_record(it, text)
            if description is not None:
                rec["description"] = description
            records.append(rec)
        append_jsonl(output_path, records)
    return RunStats(total=len(items), already_done=already, generated=len(todo))
