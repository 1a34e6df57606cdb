"""Bad input ends in one ``error:`` line (issue #10: 9, 10, 13): non-UTF-8 data files, mistyped flags and flags of
another family, checkpoints of another family, and quiet model loading."""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field

import pytest

from common.args import ModelArguments, parse_args
from common.errors import LetheError
from common.generate import main as generate_main
from common.io import iter_jsonl, iter_jsonl_numbered, load_done_ids, read_json, read_jsonl


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


# ============================================================================ 9a: a non-UTF-8 byte in a data file
LATIN1 = "caf\u00e9".encode("latin-1")  # b"caf\xe9": not UTF-8


def _jsonl_with_bad_byte(path, bad_line: int = 3):
    lines = [json.dumps({"id": i, "text": "ok"}).encode() + b"\n" for i in range(1, 5)]
    lines[bad_line - 1] = b'{"id": %d, "text": "' % bad_line + LATIN1 + b'"}\n'
    path.write_bytes(b"".join(lines))
    offset = sum(len(x) for x in lines[:bad_line - 1]) + lines[bad_line - 1].index(b"\xe9")
    return path, offset


@pytest.mark.parametrize("reader", [read_jsonl, lambda p: list(iter_jsonl(p)), lambda p: list(iter_jsonl_numbered(p)),
                                    lambda p: load_done_ids(p, "id")])
def test_jsonl_readers_name_the_line_and_byte_of_a_non_utf8_byte(tmp_path, reader):
    path, offset = _jsonl_with_bad_byte(tmp_path / "rows.jsonl")
    with pytest.raises(LetheError) as e:
        reader(path)
    assert str(e.value) == f"{path}:3: not UTF-8 text (byte 0xe9 at byte offset {offset}); save the file as UTF-8"


def test_read_json_names_the_line_of_a_non_utf8_byte(tmp_path):
    path = tmp_path / "data.json"
    data = b'{\n  "a": 1,\n  "b": "' + LATIN1 + b'"\n}\n'
    path.write_bytes(data)
    offset = data.index(b"\xe9")  # 23
    with pytest.raises(LetheError, match=rf"^{path}:3: not UTF-8 text \(byte 0xe9 at byte offset {offset}\)"):
        read_json(path)


def test_readers_skip_a_byte_order_mark(tmp_path):
    (tmp_path / "a.json").write_bytes(b"\xef\xbb\xbf" + b'{"x": 1}')
    (tmp_path / "a.jsonl").write_bytes(b"\xef\xbb\xbf" + b'{"id": 1}\n{"id": 2}\n')
    assert read_json(tmp_path / "a.json") == {"x": 1}
    assert read_jsonl(tmp_path / "a.jsonl") == [{"id": 1}, {"id": 2}]
    assert load_done_ids(tmp_path / "a.jsonl", "id") == {"1", "2"}


def test_done_ids_ignore_a_last_line_cut_inside_a_character(tmp_path):
    """A writer killed mid-line may stop inside a multi-byte character: that unfinished line is not an error."""
    path = tmp_path / "out.jsonl"
    full = json.dumps({"id": 2, "text": "\u00e9t\u00e9"}, ensure_ascii=False).encode()
    path.write_bytes(b'{"id": 1}\n' + full[:full.index(b"\xc3") + 1])
    assert load_done_ids(path, "id") == {"1"}
    path.write_bytes(b'{"id": 1}\n7\n')
    with pytest.raises(LetheError, match=r"out.jsonl:2: expected a JSON object, got int"):
        load_done_ids(path, "id")
    # a U+2028 inside a string (json.dumps(ensure_ascii=False) writes it raw) is not a line break
    path.write_text(json.dumps({"id": 1, "text": "a\u2028b"}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert load_done_ids(path, "id") == {"1"} and read_jsonl(path)[0]["text"] == "a\u2028b"


def test_cli_with_a_non_utf8_objects_file_is_one_line(tiny_dir, tmp_path, capsys):
    from insight.clip import main as clip_main

    path, offset = _jsonl_with_bad_byte(tmp_path / "objects.jsonl", bad_line=2)
    rc = clip_main(["--objects_path", str(path), "--output_path", str(tmp_path / "s.jsonl"),
                    "--clip_path", tiny_dir("open_clip"), "--device", "cpu"])
    assert rc == 2
    assert _one_error_line(capsys) == (f"error: {path}:2: not UTF-8 text (byte 0xe9 at byte offset {offset}); "
                                       "save the file as UTF-8")


def test_a_non_utf8_config_json_names_its_line(tiny_dir, tmp_path):
    import shutil

    from common.models import load_model

    ckpt = tmp_path / "llava"
    shutil.copytree(tiny_dir("llava"), ckpt)
    raw = (ckpt / "config.json").read_bytes()
    (ckpt / "config.json").write_bytes(raw.replace(b'"llava"', b'"llava\xff"', 1))
    line = raw[:raw.index(b'"llava"')].count(b"\n") + 1
    with pytest.raises(LetheError, match=rf"config.json:{line}: not UTF-8 text \(byte 0xff"):
        load_model("llava", str(ckpt), dtype="float32", device="cpu")


# ======================================================================= 9c: mistyped flags, another family's flags
@dataclass
class TrainArgs:
    learning_rate: float = field(default=1e-5)
    num_train_epochs: int = field(default=1)


@pytest.mark.parametrize("argv, message", [
    (["--learnin_rate", "3e-5"], "unknown flag --learnin_rate (did you mean --learning_rate?)"),
    (["--learning-rats=3e-5"], "unknown flag --learning-rats (did you mean --learning_rate?)"),
    (["--model", "llava", "--lava_path", "X"], "unknown flag --lava_path (did you mean --llava_path?)"),
    (["--zzzz", "1"], "unknown flag --zzzz (see --help for the flags)"),
    (["3e-5"], "unexpected argument '3e-5' (a value without a flag before it?)"),
    (["--model", "llava", "--owl_path", "X"],
     "--owl_path belongs to model owl while --model is llava; use --llava_path or --model owl"),
    (["--model", "llava", "--owl_ckpt_load_path", "X"],
     "--owl_ckpt_load_path belongs to model owl while --model is llava; use --llava_ckpt_load_path or --model owl"),
    (["--model", "llava", "--llava_next_path", "X"],
     "--llava_next_path belongs to model llava_next while --model is llava; use --llava_path or --model llava_next"),
    (["--owl_path", "X"],  # --model defaults to llava
     "--owl_path belongs to model owl while --model is llava; use --llava_path or --model owl"),
])
def test_parse_args_errors_are_one_clear_line(argv, message):
    with pytest.raises(LetheError) as e:
        parse_args([ModelArguments, TrainArgs], argv)
    assert str(e.value) == message


@pytest.mark.parametrize("argv, message", [
    (["--learning_rate", "fast"], "argument --learning_rate/--learning-rate: invalid float value: 'fast'"),
    (["--prompt_style", "chat"], "argument --prompt_style/--prompt-style: invalid choice: 'chat' "
                                 "(choose from 'official', 'hf')"),
])
def test_argparse_own_errors_are_one_line_and_status_2(argv, message, capsys):
    """A bad value: argparse's message without its usage block, and argparse's exit status 2."""
    with pytest.raises(SystemExit) as e:
        parse_args([ModelArguments, TrainArgs], argv)
    assert e.value.code == 2
    assert capsys.readouterr().err == f"error: {message}\n"


def test_family_flags_of_the_same_family_under_its_other_name():
    """``minigpt`` is EFUF's name for ``minigpt4``: either spelling of the flag works with either --model."""
    for model, flag in (("minigpt", "minigpt4"), ("minigpt4", "minigpt"), ("minigpt4", "minigpt4")):
        (m,) = parse_args([ModelArguments], ["--model", model, f"--{flag}_path", "P"])
        assert m.model_path == "P"
    (m,) = parse_args([ModelArguments], ["--model", "llava", "--llava-path", "Q"])
    assert m.model_path == "Q"


def test_yaml_keys_of_another_family_or_mistyped(tmp_path):
    (tmp_path / "o.yaml").write_text("model: llava\nowl_path: X\n")
    with pytest.raises(LetheError) as e:
        parse_args([ModelArguments, TrainArgs], ["--config", str(tmp_path / "o.yaml")])
    assert str(e.value) == (f"{tmp_path / 'o.yaml'}: key 'owl_path' belongs to model owl while the model is llava; "
                            "use llava_path or model: owl")
    (tmp_path / "t.yaml").write_text("learnin_rate: 3\n")
    with pytest.raises(LetheError) as e:
        parse_args([ModelArguments, TrainArgs], ["--config", str(tmp_path / "t.yaml")])
    assert str(e.value) == f"{tmp_path / 't.yaml'}: unknown key 'learnin_rate' (did you mean 'learning_rate'?)"


def test_the_clis_print_one_line_for_a_mistyped_or_foreign_flag(tiny_dir, capsys):
    from insight.clip import main as clip_main

    assert clip_main(["--num_workes", "0"]) == 2
    assert _one_error_line(capsys) == "error: unknown flag --num_workes (did you mean --num_workers?)"
    assert generate_main(["--model", "llava", "--owl_path", tiny_dir("owl"), "--image", "x.png"]) == 2
    assert _one_error_line(capsys) == ("error: --owl_path belongs to model owl while --model is llava; "
                                       "use --llava_path or --model owl")
    assert generate_main(["--model", "llava", "--max_new_tokns", "3"]) == 2
    assert _one_error_line(capsys) == "error: unknown flag --max_new_tokns (did you mean --max_new_tokens?)"


def test_strict_parse_for_plain_argparse_clis(capsys):
    from common.args import strict_parse

    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--model_path")
    ap.add_argument("--batch_size", type=int, default=8)
    with pytest.raises(LetheError, match=r"^unknown flag --batch_sise \(did you mean --batch_size\?\)$"):
        strict_parse(ap, ["--batch_sise", "3"])
    with pytest.raises(LetheError, match=r"^--owl_path belongs to model owl while --model is llava; "
                                         r"use --llava_path or --model owl$"):
        strict_parse(ap, ["--model", "llava", "--owl_path", "X"], model="llava")
    with pytest.raises(SystemExit):
        strict_parse(ap, ["--batch_size", "x"])
    assert capsys.readouterr().err == "error: argument --batch_size: invalid int value: 'x'\n"
    assert strict_parse(ap, ["--batch_size", "3"]).batch_size == 3


# ============================================================================ 10: a checkpoint of another family
MISMATCH = [  # (--model, checkpoint, message after "<path> is ")
    ("owl", "llava", "a llava checkpoint (LlavaForConditionalGeneration), not owl; use --model llava"),
    ("llava", "blip2", "a blip-2 checkpoint (Blip2ForConditionalGeneration), not llava; use --model blip2"),
    ("minigpt4", "llava", "a llava checkpoint (LlavaForConditionalGeneration), not minigpt4; use --model llava"),
    ("llava_next", "llava", "a llava checkpoint (LlavaForConditionalGeneration), not llava_next; use --model llava"),
    ("llava", "llava_next",
     "a llava_next checkpoint (LlavaNextForConditionalGeneration), not llava; use --model llava_next"),
    ("llava", "owl", "a lethe_mplug_owl checkpoint (OwlForConditionalGeneration), not llava; use --model owl"),
    ("owl", "minigpt4",
     "a lethe_minigpt4 checkpoint (MiniGPT4ForConditionalGeneration), not owl; use --model minigpt4"),
    ("blip2", "instructblip",
     "an instructblip checkpoint (InstructBlipForConditionalGeneration), not blip2; use --model instructblip"),
    ("instructblip", "blip2",
     "a blip-2 checkpoint (Blip2ForConditionalGeneration), not instructblip; use --model blip2"),
    ("share4v", "llava_next",
     "a llava_next checkpoint (LlavaNextForConditionalGeneration), not share4v; use --model llava_next"),
    ("share4v", "owl", "a lethe_mplug_owl checkpoint (OwlForConditionalGeneration), not share4v; use --model owl"),
    ("hf", "clip", "a clip checkpoint (CLIPModel), not hf; use --model clip"),
    ("clip", "llava", "a llava checkpoint (LlavaForConditionalGeneration), not clip; use --model llava"),
    ("llava", "open_clip", "an open_clip checkpoint, not llava; use --model clip"),
    ("minigpt", "blip2", "a blip-2 checkpoint (Blip2ForConditionalGeneration), not minigpt4; use --model blip2"),
]


@pytest.fixture
def no_weights(monkeypatch):
    """``no_weights()`` makes any model built from then on fail the test: the mismatch must be caught from
    config.json alone."""
    from transformers import PreTrainedModel

    def boom(*args, **kwargs):
        raise AssertionError("a model was built")

    def block():
        monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(boom))
        monkeypatch.setattr(PreTrainedModel, "__init__", boom)

    return block


@pytest.mark.parametrize("family, ckpt, message", MISMATCH, ids=[f"{f}-on-{c}" for f, c, _ in MISMATCH])
def test_checkpoint_of_another_family_is_refused_before_loading(family, ckpt, message, tiny_dir, no_weights):
    from common.models import load_model

    path = tiny_dir(ckpt)
    no_weights()
    with pytest.raises(LetheError) as e:
        load_model(family, path, dtype="float32", device="cpu")
    assert str(e.value) == f"{path} is {message}"


@pytest.mark.parametrize("family, layout, message", [
    ("llava", "llava", "a llava checkpoint in the original LLaVA layout (LlavaLlamaForCausalLM), not llava; use "
                       "--model share4v (it converts this layout when loading) or convert it once: "
                       "python -m common.convert llava --src {path} --out DIR"),
    ("hf", "share4v", "a share4v checkpoint in the original LLaVA layout (Share4VLlamaForCausalLM), not hf; use "
                      "--model share4v (it converts this layout when loading) or convert it once: "
                      "python -m common.convert llava --src {path} --out DIR"),
    ("hf", "owl", "a mplug-owl checkpoint (MplugOwlForConditionalGeneration), not hf; use --model owl"),
    ("blip2", "owl", "a mplug-owl checkpoint (MplugOwlForConditionalGeneration), not blip2; use --model owl"),
])
def test_original_layouts_of_another_family_are_refused(family, layout, message, official_dir, no_weights):
    """An original LLaVA dir under --model llava used to build a 7B Llava from defaults (killed for memory)."""
    from common.models import load_model

    path = str(official_dir(layout))
    no_weights()
    with pytest.raises(LetheError) as e:
        load_model(family, path, dtype="float32", device="cpu")
    assert str(e.value) == f"{path} is " + message.format(path=path)


@pytest.mark.parametrize("family, ckpt", [("llava", "share4v"), ("share4v", "llava"), ("hf", "llava"), ("hf", "owl"),
                                          ("hf", "minigpt4"), ("minigpt", "minigpt4"), ("clip", "clip"),
                                          ("clip", "open_clip")])
def test_checkpoints_a_family_loads_pass_the_check(family, ckpt, tiny_dir):
    from common.models import family_class
    from common.models.base import check_checkpoint_family

    check_checkpoint_family(tiny_dir(ckpt), family_class(family), family)


@pytest.mark.parametrize("family, layout", [("share4v", "share4v"), ("share4v", "llava"), ("owl", "owl")])
def test_original_layouts_pass_the_check_of_their_family(family, layout, official_dir):
    from common.models import family_class
    from common.models.base import check_checkpoint_family

    check_checkpoint_family(str(official_dir(layout)), family_class(family), family)


def test_generate_cli_with_another_familys_checkpoint_is_one_line(tiny_dir, tmp_path, images, capsys):
    png = tmp_path / "a.png"
    images[0].save(png)
    llava = tiny_dir("llava")
    assert generate_main(["--model", "owl", "--owl_path", llava, "--image", str(png)]) == 2
    assert _one_error_line(capsys) == (f"error: {llava} is a llava checkpoint (LlavaForConditionalGeneration), "
                                       "not owl; use --model llava")


# ============================================================================ 13: quiet model loading
def _loading_bars(text: str) -> bool:
    return "Loading weights" in text


@pytest.fixture
def bars_enabled():
    """Progress bars switched on (an environment may disable them, e.g. HF_HUB_DISABLE_PROGRESS_BARS), then put back."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    yield
    if not was:
        hf_logging.disable_progress_bar()


def test_loading_is_quiet_by_default_and_shows_progress_with_verbose(tiny_dir, capsys, bars_enabled):
    from transformers.utils import logging as hf_logging

    from common.models import load_model

    capsys.readouterr()
    load_model("llava", tiny_dir("llava"), dtype="float32", device="cpu")
    quiet = capsys.readouterr()
    assert not _loading_bars(quiet.err + quiet.out)
    assert hf_logging.is_progress_bar_enabled()  # the switch is put back after loading
    load_model("llava", tiny_dir("llava"), dtype="float32", device="cpu", verbose=True)
    loud = capsys.readouterr()
    assert _loading_bars(loud.err + loud.out)


def test_verbose_flag_of_the_model_arguments(tiny_dir, capsys, bars_enabled):
    for verbose in (False, True):
        (m,) = parse_args([ModelArguments], ["--model", "clip", "--clip_path", tiny_dir("clip"), "--device", "cpu",
                                             *(["--verbose"] if verbose else [])])
        assert m.verbose is verbose
        capsys.readouterr()
        m.load()
        out = capsys.readouterr()
        assert _loading_bars(out.err + out.out) is verbose


def test_mme_and_mmbench_files_that_are_not_utf8(tmp_path):
    from evaluate.mmbench import read_tsv
    from evaluate.mme import read_results_file

    mme = tmp_path / "existence.txt"
    mme.write_bytes(b"a.jpg\tIs there a dog?\tYes\tYes\nb.jpg\tIs there a cat?\tNo\tN\xe9\n")
    with pytest.raises(LetheError, match=r"existence.txt:2: not UTF-8 text \(byte 0xe9"):
        read_results_file(mme)
    tsv = tmp_path / "mmbench.tsv"
    tsv.write_bytes(b"index\tquestion\tA\tB\tanswer\n0\tcaf\xe9?\tx\ty\tA\n")
    with pytest.raises(LetheError, match=r"mmbench.tsv:2: not UTF-8 text \(byte 0xe9"):
        read_tsv(tsv)
