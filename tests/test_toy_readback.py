"""Every official-format file of the toy world is read back by the project's readers: the truth scores perfectly."""
from __future__ import annotations

import json

from common.io import append_jsonl, read_json, read_jsonl


def test_coco_files_load_and_chair_of_reference_captions_is_perfect(toy_world, tmp_path):
    from evaluate.eval_auto import main as eval_auto

    refs = read_json(toy_world / "annotations" / "captions_val.json")
    first = {}
    for a in refs["annotations"]:
        first.setdefault(a["image_id"], a["caption"])
    caps = tmp_path / "caps.jsonl"
    append_jsonl(caps, [{"image_id": i, "image": "", "caption": c} for i, c in first.items()])
    out = tmp_path / "chair.json"
    assert eval_auto(["--caption_eval_path", str(caps), "--coco_annotation_dir", str(toy_world / "annotations"),
                      "--synonyms", str(toy_world / "synonyms.txt"), "--no_default_merges",
                      "--output_json", str(out)]) == 0
    m = read_json(out)
    assert m["CHAIRs"] == 0 and m["CHAIRi"] == 0 and m["num_captions"] == 24 and m["object_mentions"] > 24


def test_pope_labels_score_perfectly(toy_world, tmp_path):
    from evaluate.eval_pope import main as eval_pope

    labels = {}
    for cat in ("random", "popular", "adversarial"):
        for row in read_jsonl(toy_world / "pope" / f"coco_pope_{cat}.json"):
            labels[row["question_id"]] = row["label"]
    answers = tmp_path / "answers.jsonl"
    qs = read_jsonl(toy_world / "pope" / "llava_pope_test.jsonl")
    append_jsonl(answers, [{"question_id": q["question_id"], "prompt": q["text"],
                            "text": "Yes" if labels[q["question_id"]] == "yes" else "No"} for q in qs])
    out = tmp_path / "pope.json"
    assert eval_pope(["--score_only", "--answers_file", str(answers), "--question_file",
                      str(toy_world / "pope" / "llava_pope_test.jsonl"), "--annotation_dir",
                      str(toy_world / "pope"), "--output_json", str(out)]) == 0
    m = read_json(out)
    assert m["mean_f1"] == 1.0 and all(m[c]["accuracy"] == 1.0 for c in ("random", "popular", "adversarial"))
    assert abs(m["random"]["yes_ratio"] - 0.5) < 1e-9


def test_mme_truth_gets_full_points(toy_world, tmp_path):
    from evaluate.mme import read_benchmark, score_results_dir, write_results_dir

    qs = read_benchmark(toy_world / "mme")
    assert {q.subtask for q in qs} == {"existence", "count", "position", "color"} and len(qs) == 4 * 4 * 2
    write_results_dir(qs, {q.id: q.gt for q in qs}, tmp_path / "res")
    m = score_results_dir(tmp_path / "res")
    assert all(v["score"] == 200.0 for v in m["subtasks"].values())


def test_gqa_sqa_qbench_truth_scores_perfectly(toy_world, tmp_path):
    from evaluate.eval_gqa import main as eval_gqa
    from evaluate.eval_qbench import main as eval_qbench
    from evaluate.eval_sqa import main as eval_sqa

    gqa = read_json(toy_world / "gqa" / "testdev_balanced_questions.json")
    ans = tmp_path / "gqa.jsonl"
    append_jsonl(ans, [{"question_id": k, "prompt": v["question"], "text": v["answer"].capitalize() + "."}
                       for k, v in gqa.items()])
    assert eval_gqa(["--score_only", "--questions_json", str(toy_world / "gqa" / "testdev_balanced_questions.json"),
                     "--answers_file", str(ans), "--output_json", str(tmp_path / "gqa.json")]) == 0
    assert read_json(tmp_path / "gqa.json")["accuracy"] == 1.0

    problems = read_json(toy_world / "scienceqa" / "problems.json")
    test_ids = read_json(toy_world / "scienceqa" / "pid_splits.json")["test"]
    res = tmp_path / "sqa.jsonl"
    append_jsonl(res, [{"question_id": pid, "prompt": "", "text": "ABCDE"[problems[pid]["answer"]]}
                       for pid in test_ids])
    assert eval_sqa(["--score_only", "--base_dir", str(toy_world / "scienceqa"), "--result_file", str(res),
                     "--output_json", str(tmp_path / "sqa.json")]) == 0
    m = read_json(tmp_path / "sqa.json")
    assert m["accuracy"] == 1.0 and m["total"] == len(test_ids) and m["img_accuracy"] == 1.0

    qb = read_json(toy_world / "qbench" / "llvisionqa_dev.json")
    qa = tmp_path / "qb.jsonl"
    append_jsonl(qa, [{"question_id": str(q.get("id", i)), "prompt": q["question"],
                       "text": "ABCD"[q["candidates"].index(q["correct_ans"])]} for i, q in enumerate(qb)])
    assert eval_qbench(["--score_only", "--questions_json", str(toy_world / "qbench" / "llvisionqa_dev.json"),
                        "--answers_file", str(qa), "--output_json", str(tmp_path / "qb.json")]) == 0
    assert read_json(tmp_path / "qb.json")["accuracy"] == 1.0


def test_instruction_mix_is_llava_format(toy_world):
    rows = json.loads((toy_world / "llava" / "llava_v1_5_mix665k.json").read_text())
    assert len(rows) == 120
    for r in rows:
        assert (toy_world / r["image"]).is_file()
        conv = r["conversations"]
        assert conv[0]["from"] == "human" and conv[0]["value"].startswith("<image>\n")
        assert [c["from"] for c in conv] == ["human", "gpt"] * (len(conv) // 2)
