"""The generation half of every benchmark: batched, resumable, one jsonl line per finished item.

The model contract is ``vlm.generate(images: list[PIL.Image], prompts: list[str], max_new_tokens=int,
num_beams=int, do_sample=bool, batch_size=int) -> list[str]``; prompts are the user text (the adapter applies its
chat template). ``batch_size`` is passed only to a ``generate`` that accepts it (an explicit parameter or
``**kwargs``), so the model layer never re-splits a runner batch into its own default size; a model without the
parameter gets exactly the runner's batches. Items are mappings ``{"id", "image_path", "prompt", ...}``
(``image_path`` None for a text-only item: it gets ``None`` as its image, in batches of text-only items).

Batching. The items still to do are taken in windows of ``sort_window`` batches (consecutive in item order).
Inside a window, items with an image and text-only items form two groups (a batch never mixes them); each group
is sorted by prompt length in characters (a tokenizer-free proxy; ties keep item order) and cut into batches of
``batch_size``, so a batch pads little. Generation order inside a window is therefore by length. With greedy or
beam decoding an (image, prompt) pair already answered (POPE's splits repeat their positive questions) is taken
from a cache and does not count towards ``batch_size``, so the model is asked for full batches.

File order and resuming. The output file is always in item order, as if generated one by one: after each batch
the longest run of finished records that continues the file (in item order) is appended and fsync'ed; the rest
waits in memory until the records before it are done, at the latest at the end of its window. So a killed run
loses at most one window of finished answers, the file is always a prefix of the items still to do (in item order)
appended to what was there, and an unfinished last line left by a kill is cut before appending. Ids already in the
output file are skipped, so an interrupted run, re-run, ends with the same file as an uninterrupted one (with
greedy or beam decoding, whose answers do not depend on the batch an item lands in).
"""
from __future__ import annotations

import inspect
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
    """``common.models.base.VisionLanguageModel`` fits; ``batch_size`` may be missing (then it is not passed)."""

    def generate(self, images: list, prompts: list[str], max_new_tokens: int = ..., num_beams: int = ...,
                 do_sample: bool = ..., batch_size: int = ...) -> list[str]: ...


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


def accepts_keyword(generate: Callable[..., Any], name: str) -> bool:
    """Whether ``generate`` takes the keyword ``name`` (a parameter of that name or ``**kwargs``)."""
    try:
        params = inspect.signature(generate).parameters.values()
    except (TypeError, ValueError):  # no introspectable signature: do not guess
        return False
    return any(p.kind is p.VAR_KEYWORD or (p.name == name and p.kind is not p.POSITIONAL_ONLY) for p in params)


def _cache_key(item: Mapping[str, Any]) -> tuple[Any, str]:
    return item["image_path"], str(item["prompt"])


def _generate(vlm: VisionLanguageModel, images: list, prompts: list[str], **kw: Any) -> list[str]:
    out = vlm.generate(images, prompts, **kw)
    if not isinstance(out, (list, tuple)) or len(out) != len(prompts):
        raise RuntimeError(f"generate returned {type(out).__name__} of length "
                           f"{len(out) if hasattr(out, '__len__') else '?'} for {len(prompts)} prompts")
    return [str(t) for t in out]


def plan_batches(items: Sequence[Mapping[str, Any]], batch_size: int, sort_window: int = 16,
                 key: Callable[[Mapping[str, Any]], Any] | None = None) -> list[list[list[int]]]:
    """Windows of batches of indices into ``items``, in generation order.

    Each window covers ``batch_size * sort_window`` consecutive items; inside it, image and text-only items are
    batched apart (the group of the window's first item first), each group sorted by prompt length in characters
    (stable, so ties keep item order). With ``key`` (greedy decoding), an item whose key came earlier in generation
    order is answered from the cache and does not count towards ``batch_size``: every batch but a group's last
    asks the model for exactly ``batch_size`` answers."""
    if batch_size < 1 or sort_window < 1:
        raise LetheError("--batch_size and the sort window must be >= 1")
    size = batch_size * sort_window
    seen: set[Any] = set()
    windows: list[list[list[int]]] = []
    for start in range(0, len(items), size):
        groups: dict[bool, list[int]] = {}
        for i in range(start, min(start + size, len(items))):
            groups.setdefault(items[i]["image_path"] is None, []).append(i)
        batches: list[list[int]] = []
        for idx in groups.values():
            cur: list[int] = []
            cost = 0
            for i in sorted(idx, key=lambda i: len(str(items[i]["prompt"]))):
                k = key(items[i]) if key is not None else None
                new = key is None or k not in seen
                if new and cost == batch_size:
                    batches.append(cur)
                    cur, cost = [], 0
                cur.append(i)
                if new:
                    cost += 1
                    if key is not None:
                        seen.add(k)
            if cur:
                batches.append(cur)
        windows.append(batches)
    return windows


def run_generation(vlm: VisionLanguageModel, items: Sequence[Mapping[str, Any]], output_path: PathLike, *,
                   batch_size: int = 8, max_new_tokens: int = 64, num_beams: int = 1, do_sample: bool = False,
                   id_key: str = "question_id", make_record: Callable[[Mapping[str, Any], str], Record] = llava_record,
                   dar_prompt: str | None = None, dar_template: str = DAR_TEMPLATE,
                   dar_max_new_tokens: int | None = None, progress: bool = True, sort_window: int = 16,
                   generate_kwargs: Mapping[str, Any] | None = None) -> RunStats:
    """Generate an answer for every item not yet in ``output_path`` (jsonl, keyed by ``id_key``).

    With ``dar_prompt`` (STIC's describe-and-respond) each item is first described *with its image*; the answer
    prompt is ``dar_template.format(description=..., question=prompt)``, again with the image, and the record
    gets a ``description`` field; without sampling an image is described once (its description is the same for
    every question about it). Text-only items are answered directly. ``sort_window``: batches per length-sorting
    window (see the module docstring). ``generate_kwargs``: more keywords for ``vlm.generate`` (e.g.
    ``length_penalty``), passed when it takes them.
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
    gen_kw: dict[str, Any] = dict(max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=do_sample)
    # batch_size and the extra decoding keywords reach a generate that takes them (the model layer's does)
    for name, value in {"batch_size": batch_size, **(generate_kwargs or {})}.items():
        if accepts_keyword(vlm.generate, name):
            gen_kw[name] = value
    # Greedy/beam answers depend only on (image, prompt): POPE's three splits share their positive questions,
    # so identical pairs are generated once (batched == batch-size-1, so the answers are the same).
    cache: dict[tuple[Any, str], tuple[str, str | None]] = {}
    described: dict[Any, str] = {}  # DaR descriptions by image, when they are deterministic
    windows = plan_batches(todo, batch_size, sort_window, key=None if do_sample else _cache_key)
    already = len(items) - len(todo)
    from tqdm.auto import tqdm

    bar = tqdm(total=sum(len(w) for w in windows), desc="generate", unit="batch", disable=not progress,
               file=sys.stderr)
    written = 0  # todo[:written] are in the file
    try:
        for window in windows:
            ready: dict[int, Record] = {}
            for idx in window:
                batch = [todo[i] for i in idx]
                for i, rec in zip(idx, _generate_batch(vlm, batch, gen_kw, cache, described, do_sample, make_record,
                                                       dar_prompt, dar_template, dar_max_new_tokens)):
                    ready[i] = rec
                records = []
                while written in ready:
                    records.append(ready.pop(written))
                    written += 1
                if records:
                    append_jsonl(output_path, records)
                bar.update(1)
            assert not ready, "a window covers consecutive items, so it ends fully written"
    finally:
        bar.close()
    return RunStats(total=len(items), already_done=already, generated=len(todo))


def _generate_batch(vlm: VisionLanguageModel, batch: list[Mapping[str, Any]], gen_kw: dict[str, Any],
                    cache: dict[tuple[Any, str], tuple[str, str | None]], described: dict[Any, str], do_sample: bool,
                    make_record: Callable[[Mapping[str, Any], str], Record], dar_prompt: str | None,
                    dar_template: str, dar_max_new_tokens: int | None) -> list[Record]:
    """The records of one batch (all with or all without an image), in batch order."""
    with_images = batch[0]["image_path"] is not None
    keys = [_cache_key(it) for it in batch]
    gen_keys = keys if do_sample else list(dict.fromkeys(k for k in keys if k not in cache))
    results: list[tuple[str, str | None]] = []
    if gen_keys:
        images = [load_image(k[0]) for k in gen_keys] if with_images else [None] * len(gen_keys)
        prompts = [k[1] for k in gen_keys]
        descriptions: list[str | None] = [None] * len(gen_keys)
        if dar_prompt and with_images:
            describe_kw = {**gen_kw, "max_new_tokens": dar_max_new_tokens or gen_kw["max_new_tokens"]}
            if do_sample:
                descriptions = _generate(vlm, images, [dar_prompt] * len(gen_keys), **describe_kw)
            else:  # a greedy/beam description depends on the image only: once per image (POPE asks 6 per image)
                first = {}
                for k, im in zip(gen_keys, images):
                    if k[0] not in described:
                        first.setdefault(k[0], im)
                if first:
                    described.update(zip(first, _generate(vlm, list(first.values()), [dar_prompt] * len(first),
                                                          **describe_kw)))
                descriptions = [described[k[0]] for k in gen_keys]
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
    return records
