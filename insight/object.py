"""Objects mentioned in each caption, with character positions: EFUF's first data-construction step.

    python insight/object.py --captions_path captions.jsonl --output_path dataset/objects.jsonl
    python insight/object.py --captions_path captions.jsonl --backend llm --llm_path meta-llama/Llama-2-13b-chat-hf

Back ends:
* ``vocab`` (default): the synonym-vocabulary matcher CHAIR uses (COCO's 80 categories, or ``--synonyms`` for
  any vocabulary, e.g. the toy world's ``synonyms.txt``): fast, deterministic, exact character spans. Fits when
  the objects worth unlearning are the vocabulary's (COCO captions: CHAIR's 80 categories and their synonyms).
* ``llm``: EFUF's approach (it used Llama-2-13B-chat) — prompt any causal LM to list the concrete visual objects,
  then keep the phrases that occur in the caption as whole words (located case-insensitively; regex-escaped,
  unlike the original). Fits an open vocabulary (objects outside any list), at the cost of an LLM pass.

Each object is kept once per caption, at its first mention, as EFUF does (its objects are a set per caption and
each gets the first sub-sentence holding it): the vocabulary back end keeps one mention per category ("dog",
"dogs" and "puppy" are one object), the LLM back end one per listed phrase. ``--all_mentions`` keeps every mention.

Input: captions jsonl (``{"image_id", "image", "caption"}``, as evaluate/eval_caption.py writes). Output jsonl:
the input row plus ``"objects": [{"text", "category", "start", "end"}, ...]``; resumable (appends, skips rows
already done).
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: import from the repo root, never from this script's folder
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401, E702

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from common.errors import LetheError, cli_main, run_cli

EXTRACT_INSTRUCTION = (
    "Extract all the concrete visual objects mentioned in the description below. Answer with a non-repeating, "
    "comma-separated list of the objects exactly as they are written, and nothing else.\n"
    "Example:\n(Input) A train is stopped at a station while people wait on the platform.\n"
    "(Output) train, station, people, platform\n")
LLM_TEMPLATE = "[INST] <<SYS>>\n{instruction}<</SYS>>\n\n(Input) {caption}\n(Output) [/INST] "


@dataclass
class ObjectArguments:
    captions_path: str = field(default="dataset/captions.jsonl")
    output_path: str = field(default="dataset/objects.jsonl")
    backend: str = field(default="vocab", metadata={"help": "vocab | llm"})
    synonyms: Optional[str] = field(default=None, metadata={
        "help": "vocab: synonyms file, 'category, syn1, ...' per line (default: COCO's 80 categories)"})
    default_merges: bool = field(default=True, metadata={"help": "vocab: COCO's two-word merges (off for toy)"})
    all_mentions: bool = field(default=False, metadata={
        "help": "vocab: every mention of an object (default: its first mention per caption, as EFUF)"})
    llm_path: Optional[str] = field(default=None, metadata={"help": "llm: any causal LM (EFUF: Llama-2-13b-chat)"})
    llm_template: str = field(default=LLM_TEMPLATE)
    max_new_tokens: int = field(default=96, metadata={"help": "llm (the original's 50 truncated long lists)"})
    batch_size: int = field(default=16)
    device: str = field(default="auto")
    dtype: str = field(default="auto")
    trust_remote_code: bool = field(default=False)
    restart: bool = field(default=False)


def first_mentions(objects: Sequence[dict]) -> list[dict]:
    """Each object once, at its first mention: one per category (or per lower-cased text without a category)."""
    seen, out = set(), []
    for o in objects:
        key = o.get("category") or o["text"].lower()
        if key not in seen:
            seen.add(key)
            out.append(o)
    return out


def vocab_extractor(synonyms: str | None, default_merges: bool,
                    all_mentions: bool = False) -> Callable[[Sequence[str]], list[list[dict]]]:
    from common.text.objects import DEFAULT_SYNONYMS, ObjectExtractor

    ex = ObjectExtractor.canonical(synonyms or DEFAULT_SYNONYMS, default_merges=default_merges)

    def run(captions: Sequence[str]) -> list[list[dict]]:
        out = []
        for c in captions:
            objs = [{"text": m.text, "category": m.category, "start": m.start, "end": m.end} for m in ex.mentions(c)]
            out.append(objs if all_mentions else first_mentions(objs))
        return out

    return run


def parse_llm_objects(output: str, caption: str) -> list[dict]:
    """The LLM's list → objects found as whole words in the caption, in caption order, each once.

    A preamble up to the first ':' ("Sure! Here are the objects:") and a parenthesised tail are dropped; the list
    may span lines. A reply that opens with a refusal gives no objects.
    """
    text = output.strip()
    if text.lower().startswith(("i'm sorry", "i am sorry", "i cannot", "i can't")):
        return []
    if ":" in text:
        text = text.split(":", 1)[1]
    text = text.split("(")[0].replace("\n", ",")
    found, seen = [], set()
    for phrase in (p.strip(" .;\"'*-") for p in text.split(",")):
        if not phrase or phrase.lower() in seen:
            continue
        m = re.search(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)", caption, flags=re.IGNORECASE)
        if m:
            seen.add(phrase.lower())
            found.append({"text": caption[m.start():m.end()], "category": None, "start": m.start(), "end": m.end()})
    return sorted(found, key=lambda o: o["start"])


def llm_extractor(a: ObjectArguments) -> Callable[[Sequence[str]], list[list[dict]]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from common.models.base import resolve_device, resolve_dtype

    if not a.llm_path:
        raise LetheError("--backend llm needs --llm_path (any causal LM, e.g. a Llama-2-chat dir or hub id)")
    try:
        tok = AutoTokenizer.from_pretrained(a.llm_path, trust_remote_code=a.trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(a.llm_path, dtype=resolve_dtype(a.dtype),
                                                     trust_remote_code=a.trust_remote_code)
    except OSError as e:
        raise LetheError(f"{a.llm_path}: cannot load the LLM ({str(e).splitlines()[0]})") from None
    model.to(resolve_device(a.device)).eval()
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token

    @torch.inference_mode()
    def run(captions: Sequence[str]) -> list[list[dict]]:
        prompts = [a.llm_template.format(instruction=EXTRACT_INSTRUCTION, caption=c) for c in captions]
        enc = tok(prompts, return_tensors="pt", padding=True).to(model.device)
        out = model.generate(**enc, max_new_tokens=a.max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        return [parse_llm_objects(t, c) for t, c in zip(texts, captions)]

    return run


def _row_key(row: dict[str, Any]) -> str:
    return f"{row.get('image_id', '')}|{row.get('image', '')}|{row.get('caption', '')}"


@cli_main
def main(argv: list[str] | None = None) -> int:
    from common.args import parse_args
    from common.io import append_jsonl, iter_jsonl, iter_jsonl_numbered, repair_jsonl_tail

    (a,) = parse_args([ObjectArguments], argv)
    rows = []
    for n, r in iter_jsonl_numbered(a.captions_path):
        if not isinstance(r.get("caption"), str) or "image" not in r:
            raise LetheError(f"{a.captions_path}:{n}: a row needs 'image' and a 'caption' string")
        rows.append(r)
    out = Path(a.output_path)
    if a.restart and out.exists():
        out.unlink()
    repair_jsonl_tail(out)
    done = {_row_key(r) for r in iter_jsonl(out)} if out.exists() else set()
    todo = [r for r in rows if _row_key(r) not in done]
    if a.backend == "vocab":
        extract = vocab_extractor(a.synonyms, a.default_merges, a.all_mentions)
    elif a.backend == "llm":
        extract = llm_extractor(a) if todo else None
    else:
        raise LetheError(f"unknown --backend {a.backend!r}; valid: vocab, llm")
    from tqdm.auto import tqdm

    for i in tqdm(range(0, len(todo), a.batch_size), desc="objects", disable=len(todo) < 2 * a.batch_size):
        part = todo[i:i + a.batch_size]
        objs = extract([r["caption"] for r in part])
        append_jsonl(out, [{**r, "objects": o} for r, o in zip(part, objs)])
    n_obj = sum(len(r["objects"]) for r in iter_jsonl(out)) if out.exists() else 0
    print(f"{len(rows)} captions ({len(rows) - len(todo)} already done), {n_obj} objects -> {out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
