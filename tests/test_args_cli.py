"""Args (dataclasses + yaml + EFUF flags) and the CLIs' one-line errors."""
from __future__ import annotations

import pytest

from common.args import ModelArguments, RunArguments, parse_args, save_config
from common.errors import LetheError
from common.generate import main as generate_main
from common.tiny import main as tiny_main


def test_efuf_flag_style_maps_to_the_generic_fields():
    m, r = parse_args([ModelArguments, RunArguments],
                      ["--model", "blip2", "--blip2_path", "P", "--blip2_ckpt_load_path", "C",
                       "--blip2_ckpt_save_path", "S", "--wandb_user", "U", "--run_name", "R"])
    assert (m.model, m.model_path, m.ckpt_load_path, m.ckpt_save_path) == ("blip2", "P", "C", "S")
    assert (r.wandb_user, r.run_name) == ("U", "R")
    m, = parse_args([ModelArguments], ["--model=llava", "--llava_path=Q"])
    assert m.model_path == "Q"


def test_yaml_gives_defaults_and_flags_override(tmp_path):
    cfg = tmp_path / "x.yaml"
    cfg.write_text("model: instructblip\ninstructblip_path: FROM_YAML\ndtype: float32\nseed: 7\n")
    m, r = parse_args([ModelArguments, RunArguments], ["--config", str(cfg), "--dtype", "bfloat16"])
    assert (m.model, m.model_path, m.dtype, r.seed) == ("instructblip", "FROM_YAML", "bfloat16", 7)
    out = save_config(tmp_path / "run", m, r)
    m2, r2 = parse_args([ModelArguments, RunArguments], ["--config", str(out)])
    assert (m2, r2) == (m, r)


def test_unknown_model_names_the_valid_ones():
    with pytest.raises(LetheError, match=r"unknown model 'gpt5'; valid: llava, llava_next, blip2"):
        parse_args([ModelArguments], ["--model", "gpt5"])


def test_unknown_yaml_key_and_malformed_yaml(tmp_path):
    (tmp_path / "k.yaml").write_text("model: llava\nlearning_rat: 3\n")
    with pytest.raises(LetheError, match=r"k.yaml: unknown key 'learning_rat'"):
        parse_args([ModelArguments], ["--config", str(tmp_path / "k.yaml")])
    (tmp_path / "m.yaml").write_text("model: llava\nllava_path: [oops\n")
    with pytest.raises(LetheError, match=r"m.yaml:3: malformed YAML"):
        parse_args([ModelArguments], ["--config", str(tmp_path / "m.yaml")])
    (tmp_path / "l.yaml").write_text("- a\n- b\n")
    with pytest.raises(LetheError, match="must be a mapping"):
        parse_args([ModelArguments], ["--config", str(tmp_path / "l.yaml")])


def _one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1
    return err[0]


@pytest.fixture
def png(tmp_path, images):
    p = tmp_path / "ok.png"
    images[0].save(p)
    return str(p)


def test_generate_cli_end_to_end(tiny_dir, png, tmp_path, capsys):
    out = tmp_path / "gen.jsonl"
    rc = generate_main(["--model", "llava", "--llava_path", tiny_dir("llava"), "--image", png, png,
                        "--max_new_tokens", "4", "--output_jsonl", str(out)])
    assert rc == 0
    from common.io import read_jsonl

    rows = read_jsonl(out)
    assert len(rows) == 2 and rows[0]["text"] == rows[1]["text"] and rows[0]["image"] == png


@pytest.mark.parametrize("case", ["unknown_family", "missing_path", "bad_image", "bad_yaml", "tiny_family"])
def test_bad_input_is_one_clear_line_and_nonzero_exit(case, tiny_dir, png, tmp_path, capsys):
    bad_png = tmp_path / "bad.png"
    bad_png.write_bytes(b"this is not a png")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model: llava\nllava_path: {unclosed\n")
    argv = {"unknown_family": ["--model", "lava", "--image", png],
            "missing_path": ["--model", "llava", "--llava_path", str(tmp_path / "nowhere"), "--image", png],
            "bad_image": ["--model", "llava", "--llava_path", tiny_dir("llava"), "--image", str(bad_png)],
            "bad_yaml": ["--config", str(bad_yaml), "--image", png]}
    expected = {"unknown_family": "unknown model 'lava'", "missing_path": "nowhere: checkpoint directory not found",
                "bad_image": "bad.png: cannot decode image", "bad_yaml": "bad.yaml:3: malformed YAML",
                "tiny_family": "unknown family 'gpt'"}[case]
    if case == "tiny_family":
        rc = tiny_main(["--family", "gpt", "--out", str(tmp_path / "t")])
    else:
        rc = generate_main(argv[case])
    assert rc == 2
    assert expected in _one_error_line(capsys)


def test_generate_refuses_a_model_that_does_not_generate(tiny_dir, png, capsys):
    assert generate_main(["--model", "clip", "--clip_path", tiny_dir("open_clip"), "--image", png]) == 2
    assert "does not generate text" in _one_error_line(capsys)
