"""Before/after report of SLUG's VLM mode: does the VLM still talk about the forgotten concept, and does it still
see the other objects?

    python slug/vlm_report.py --concept clock --before OUT/before --after OUT/after \\
        --coco_annotation_dir ANN [--synonyms_file synonyms.txt] \\
        --question_file POPE/llava_pope_test.jsonl --annotation_dir POPE --output_json report.json

Each phase directory holds what the evaluation scripts write (as ``scripts/efuf.sh`` runs them):
``captions.jsonl`` (``evaluate/eval_caption.py``) and ``pope_answers.jsonl`` (``evaluate/eval_pope.py``).

* **Concept mentions.** Objects are found in captions with CHAIR's extractor (``evaluate.chair.chair_extractor``,
  built from ``--chair_variant``/``--synonyms_file``/``--no_default_merges``/``--extra_merges`` exactly as
  ``evaluate/eval_auto.py`` builds it), so "clocks" and the synonym "timepiece" are the concept "clock" and
  "clockwork" is not. ``mention_rate`` = captions that mention the concept / captions; ``mention_rate_present`` and
  ``mention_rate_absent`` split it by whether the image truly holds the concept (CHAIR's ground truth,
  ``evaluate.chair.load_ground_truth``: instance annotations + objects of the reference captions). Captions of images
  without any annotation count in ``mention_rate`` only (``captions_without_annotations``). A rate whose
  denominator is 0 is ``null``.
* **POPE.** The answers are scored with ``evaluate.pope.score_pope`` twice: on the questions whose object is *not*
  the concept (``pope_other_f1`` = the unweighted mean of the per-category F1, as ``eval_pope.py``'s ``mean_f1``)
  and, for information, on the concept's own questions (``pope_concept_f1``). A question is the concept's when its
  object, read by the same extractor, names the concept's category (singular, plural or a synonym).

The output json: ``{"concept", "concept_forms", "before": {...}, "after": {...}, "change": {...}, "settings"}``;
``change`` = after - before of ``mention_rate``, ``pope_other_f1`` (and of the other rates, null where undefined).
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: import from the repo root, never from this script's folder
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401, E702

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from common.errors import LetheError, cli_main, run_cli
from common.io import atomic_write_json, iter_jsonl_numbered
from common.text.objects import ObjectExtractor

PHASES = ("before", "after")
CAPTIONS_FILE = "captions.jsonl"
ANSWERS_FILE = "pope_answers.jsonl"
CHANGE_KEYS = ("mention_rate", "mention_rate_present", "mention_rate_absent", "pope_other_f1", "pope_concept_f1")


def build_parser() -> argparse.ArgumentParser:
    from evaluate.chair import CHAIR_VARIANTS
    from evaluate.cli import DEFAULT_VQA_SUFFIX

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concept", required=True, help="the forgotten concept (a category, a plural or a synonym)")
    p.add_argument("--before", required=True, help=f"dir with {CAPTIONS_FILE} and {ANSWERS_FILE} before unlearning")
    p.add_argument("--after", required=True, help=f"dir with {CAPTIONS_FILE} and {ANSWERS_FILE} after unlearning")
    p.add_argument("--coco_annotation_dir", required=True, help="dir with instances_*.json and captions_*.json")
    p.add_argument("--synonyms_file", "--synonyms", dest="synonyms_file", default=None,
                   help="caption vocabulary, one line per category 'category, syn1, ...' (default: the CHAIR "
                        "variant's COCO list); the same file as eval_auto.py's --synonyms")
    p.add_argument("--chair_variant", choices=CHAIR_VARIANTS, default="canonical",
                   help="the CHAIR extractor's rules (as eval_auto.py)")
    p.add_argument("--no_default_merges", action="store_true",
                   help="canonical variant: drop the COCO two-word merges (for a custom vocabulary, as eval_auto.py)")
    p.add_argument("--extra_merges", nargs="*", default=[], help="more two-word phrases kept as one token")
    p.add_argument("--question_file", required=True, help="LLaVA POPE question jsonl")
    p.add_argument("--annotation_dir", required=True, help="dir with coco_pope_{category}.json label files")
    p.add_argument("--instruction_suffixes", nargs="*", default=[DEFAULT_VQA_SUFFIX],
                   help="suffixes stripped from question texts before the object is parsed (as eval_pope.py)")
    p.add_argument("--allow_partial", action="store_true",
                   help="score answers files that miss some questions (as eval_pope.py); the json says so")
    p.add_argument("--output_json", required=True)
    return p


# ------------------------------------------------------------------------------------------------ the concept
def resolve_concept(concept: str, extractor: ObjectExtractor, vocabulary: str) -> str:
    """The category ``concept`` names in the extractor's vocabulary ("clocks"/"timepiece" -> "clock")."""
    cats = sorted(set(extractor.extract(concept).categories))
    if not cats:
        raise LetheError(f"concept {concept!r} is not in the caption vocabulary ({vocabulary}); give its category "
                         "name or a synonym, or the vocabulary that has it with --synonyms_file")
    if len(cats) > 1:
        raise LetheError(f"concept {concept!r} names several categories of the caption vocabulary "
                         f"({', '.join(cats)}); give one")
    return cats[0]


def concept_matcher(concept: str, category: str, extractor: ObjectExtractor) -> Callable[[str], bool]:
    """``is_concept(object)`` for the object of a POPE question: the extractor's category of the object is the
    concept's; an object outside the vocabulary is the concept only when it reads as the same tokens."""
    concept_tokens = extractor.tokens(concept)

    def is_concept(obj: str) -> bool:
        cats = extractor.extract(obj).categories
        if cats:
            return category in cats
        return extractor.tokens(obj) == concept_tokens

    return is_concept


# --------------------------------------------------------------------------------------------------- captions
def _rate(a: int, b: int) -> float | None:
    return a / b if b else None


def caption_stats(captions: Sequence[Any], extractor: ObjectExtractor, category: str,
                  gt_objects: Mapping[int, set[str]]) -> dict[str, Any]:
    """Captions that mention ``category``, overall and split by whether the image holds it."""
    n = mentions = n_present = m_present = n_absent = m_absent = unannotated = 0
    for cap in captions:
        said = category in extractor.extract(cap.caption).categories
        n += 1
        mentions += said
        gt = gt_objects.get(cap.image_id)
        if gt is None:
            unannotated += 1
        elif category in gt:
            n_present += 1
            m_present += said
        else:
            n_absent += 1
            m_absent += said
    return {
        "num_captions": n, "mentions": mentions, "mention_rate": _rate(mentions, n),
        "num_present": n_present, "mentions_present": m_present, "mention_rate_present": _rate(m_present, n_present),
        "num_absent": n_absent, "mentions_absent": m_absent, "mention_rate_absent": _rate(m_absent, n_absent),
        "captions_without_annotations": unannotated,
    }


# ------------------------------------------------------------------------------------------------------- POPE
def _subset_labels(labels: Mapping[str, Any], keep: Callable[[str], bool]) -> dict[str, Any]:
    from evaluate.pope import LabelTable

    return {cat: LabelTable(t.path, {k: v for k, v in t.labels.items() if keep(k[1])}) for cat, t in labels.items()}


def _pope_summary(result: Mapping[str, Any] | None, prefix: str) -> dict[str, Any]:
    from evaluate.pope import pope_categories, pope_missing

    if result is None:
        return {f"{prefix}_f1": None, f"{prefix}_f1_per_category": {}, f"{prefix}_accuracy": None,
                f"{prefix}_num_answers": 0, f"{prefix}_missing_answers": {}}
    return {f"{prefix}_f1": result["mean_f1"],
            f"{prefix}_f1_per_category": {cat: m["f1"] for cat, m in pope_categories(result).items()},
            f"{prefix}_accuracy": result["mean"]["accuracy"],
            f"{prefix}_num_answers": result["mean"]["num_answers"],
            f"{prefix}_missing_answers": pope_missing(result)}


def pope_stats(answers_path: Path, questions: Mapping[str, Any], labels: Mapping[str, Any],
               is_concept: Callable[[str], bool], questions_name: str, allow_partial: bool) -> dict[str, Any]:
    """POPE on the other objects' questions and, separately, on the concept's own questions."""
    from evaluate.pope import score_pope

    concept_q = {qid: q for qid, q in questions.items() if is_concept(q.object)}
    other_q = {qid: q for qid, q in questions.items() if qid not in concept_q}
    if not other_q:
        raise LetheError(f"{questions_name}: every question asks about the concept; no other objects to score")
    concept_a: list[tuple[int, dict]] = []
    other_a: list[tuple[int, dict]] = []
    for lineno, ans in iter_jsonl_numbered(answers_path):
        # an answer without a (known) question goes to the "other" scorer, which names it
        (concept_a if str(ans.get("question_id")) in concept_q else other_a).append((lineno, ans))
    name = str(answers_path)
    other = score_pope(other_a, other_q, _subset_labels(labels, lambda o: not is_concept(o)), answers_name=name,
                       questions_name=questions_name, allow_partial=allow_partial)
    concept = None
    if concept_q and (concept_a or not allow_partial):
        concept = score_pope(concept_a, concept_q, _subset_labels(labels, is_concept), answers_name=name,
                             questions_name=questions_name, allow_partial=allow_partial)
    return {**_pope_summary(other, "pope_other"), **_pope_summary(concept, "pope_concept"),
            "pope_other_num_questions": len(other_q), "pope_concept_num_questions": len(concept_q)}


# ----------------------------------------------------------------------------------------------------- report
def _require(path: Path, writer: str) -> Path:
    if not path.is_file():
        raise LetheError(f"{path}: file not found (written by {writer})")
    return path


def _diff(a: Any, b: Any) -> float | None:
    return None if a is None or b is None else b - a


def build_report(args: argparse.Namespace) -> dict[str, Any]:
    from evaluate.chair import chair_extractor, load_ground_truth, read_captions
    from evaluate.pope import read_labels, read_pope_questions

    dirs = {"before": Path(args.before), "after": Path(args.after)}
    files = {}
    for phase, d in dirs.items():  # every input checked before any work
        files[phase] = (_require(d / CAPTIONS_FILE, "evaluate/eval_caption.py"),
                        _require(d / ANSWERS_FILE, "evaluate/eval_pope.py"))
    _require(Path(args.question_file), "the POPE question file")
    if not Path(args.annotation_dir).is_dir():
        raise LetheError(f"{args.annotation_dir}: POPE label directory not found")
    if not Path(args.coco_annotation_dir).is_dir():
        raise LetheError(f"{args.coco_annotation_dir}: COCO annotation directory not found")

    extractor = chair_extractor(args.chair_variant, args.synonyms_file, default_merges=not args.no_default_merges,
                                extra_merges=args.extra_merges)
    vocabulary = str(args.synonyms_file) if args.synonyms_file else f"the {args.chair_variant} CHAIR vocabulary"
    category = resolve_concept(args.concept, extractor, vocabulary)
    is_concept = concept_matcher(args.concept, category, extractor)

    captions = {phase: read_captions(files[phase][0]) for phase in PHASES}
    ids = {phase: {c.image_id for c in caps} for phase, caps in captions.items()}
    if ids["before"] != ids["after"]:
        print(f"warning: the before and after captions cover different images ({len(ids['before'])} and "
              f"{len(ids['after'])}, {len(ids['before'] & ids['after'])} in common)", file=sys.stderr)
    gt = load_ground_truth(args.coco_annotation_dir, extractor, ids["before"] | ids["after"])
    questions = read_pope_questions(args.question_file, args.instruction_suffixes)
    labels = read_labels(args.annotation_dir, args.instruction_suffixes)

    report: dict[str, Any] = {"concept": category,
                              "concept_forms": sorted(f for f, c in extractor.synonyms.items() if c == category)}
    for phase in PHASES:
        report[phase] = {"captions_file": str(files[phase][0]), "answers_file": str(files[phase][1]),
                         **caption_stats(captions[phase], extractor, category, gt.objects),
                         **pope_stats(files[phase][1], questions, labels, is_concept, str(args.question_file),
                                      args.allow_partial)}
    report["change"] = {k: _diff(report["before"][k], report["after"][k]) for k in CHANGE_KEYS}
    report["settings"] = {
        "concept_arg": args.concept, "before": str(dirs["before"]), "after": str(dirs["after"]),
        "coco_annotation_dir": str(args.coco_annotation_dir), "annotation_files": gt.files,
        "synonyms_file": args.synonyms_file, "chair_variant": args.chair_variant,
        "default_merges": not args.no_default_merges, "extra_merges": list(args.extra_merges),
        "question_file": str(args.question_file), "annotation_dir": str(args.annotation_dir),
        "allow_partial": args.allow_partial,
    }
    return report


def table_rows(report: Mapping[str, Any]) -> list[list[Any]]:
    b, a = report["before"], report["after"]
    rows = [["captions", b["num_captions"], a["num_captions"], None],
            ["mentions", b["mentions"], a["mentions"], a["mentions"] - b["mentions"]]]
    for key in CHANGE_KEYS:
        rows.append([key, b[key], a[key], report["change"][key]])
        if key in ("pope_other_f1", "pope_concept_f1"):
            per = key + "_per_category"
            for cat in sorted(set(b[per]) | set(a[per])):
                x, y = b[per].get(cat), a[per].get(cat)
                rows.append([f"  {cat}", x, y, _diff(x, y)])
    return rows


def _partial(report: Mapping[str, Any]) -> Iterable[str]:
    for phase in PHASES:
        for prefix in ("pope_other", "pope_concept"):
            missing = report[phase][f"{prefix}_missing_answers"]
            if missing:
                yield f"{phase} {prefix}: {sum(missing.values())} questions without an answer"


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    from common.args import strict_parse
    from evaluate.util import print_table

    args = strict_parse(build_parser(), list(sys.argv[1:] if argv is None else argv))
    report = build_report(args)
    atomic_write_json(args.output_json, report)
    print_table(table_rows(report), ["metric", "before", "after", "change"],
                title=f"SLUG VLM report: concept {report['concept']!r}")
    for line in _partial(report):
        print(f"warning: partial POPE result: {line}", file=sys.stderr)
    print(f"wrote {args.output_json}")
    return 0


if __name__ == "__main__":
    run_cli(main)
