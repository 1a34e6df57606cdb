"""Method checkpoints: trainable-only safetensors, legacy .pth, key reports, atomic writes."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from common.checkpoint import read_state_dict, resolve_checkpoint_file
from common.errors import LetheError
from common.io import atomic_write_json
from common.models import load_model


def _llava(tiny_dir, **kw):
    return load_model("llava", tiny_dir("llava"), dtype="float32", device="cpu", **kw)


def test_saves_only_trainable_tensors_with_metadata(tiny_dir, tmp_path):
    vlm = _llava(tiny_dir)
    names = vlm.set_trainable("projector")
    path = vlm.save_checkpoint(tmp_path / "step_000010.safetensors")
    assert sorted(load_file(str(path))) == sorted(names)
    _, meta = read_state_dict(path)
    assert meta["family"] == "llava" and meta["scope"] == "projector"
    with pytest.raises(LetheError, match="no trainable parameters"):
        vlm.model.requires_grad_(False)
        vlm.save_checkpoint(tmp_path / "x")


def test_newest_file_of_a_directory_is_loaded(tmp_path):
    for step in (5, 50, 10):
        (tmp_path / f"step_{step:06d}.safetensors").write_bytes(b"")
    assert resolve_checkpoint_file(tmp_path).name == "step_000050.safetensors"
    (tmp_path / "empty").mkdir()
    with pytest.raises(LetheError, match="no checkpoint file"):
        resolve_checkpoint_file(tmp_path / "empty")


def _efuf_style_pth(vlm, path, scale=1.0):
    """The released llava-efuf-7b.pth layout: original LLaVA projector keys + rotary buffers, under 'model'."""
    proj = vlm.model.model.multi_modal_projector
    state = {"model.mm_projector.0.weight": proj.linear_1.weight.detach() * 0 + scale,
             "model.mm_projector.0.bias": proj.linear_1.bias.detach() * 0 + scale,
             "model.mm_projector.2.weight": proj.linear_2.weight.detach() * 0 - scale,
             "model.mm_projector.2.bias": proj.linear_2.bias.detach() * 0 - scale,
             "model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(8),
             "model.layers.1.self_attn.rotary_emb.inv_freq": torch.ones(8)}
    torch.save({"model": {k: v.to(torch.bfloat16) for k, v in state.items()}}, path)


def test_efuf_pth_changes_exactly_the_projector(tiny_dir, tmp_path):
    vlm = _llava(tiny_dir)
    before = {k: v.clone() for k, v in vlm.model.state_dict().items()}
    _efuf_style_pth(vlm, tmp_path / "llava-efuf.pth", scale=0.25)
    report = vlm.load_checkpoint(tmp_path / "llava-efuf.pth")
    assert len(report.loaded) == 4 and len(report.dropped) == 2 and not report.unexpected
    after = vlm.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"model.multi_modal_projector.linear_1.weight", "model.multi_modal_projector.linear_1.bias",
                       "model.multi_modal_projector.linear_2.weight", "model.multi_modal_projector.linear_2.bias"}
    assert torch.all(after["model.multi_modal_projector.linear_1.weight"] == 0.25)
    assert after["model.multi_modal_projector.linear_1.weight"].dtype == torch.float32


def test_misshaped_and_unexpected_tensors_fail_with_their_name(tiny_dir, tmp_path):
    vlm = _llava(tiny_dir)
    torch.save({"model.mm_projector.0.weight": torch.zeros(3, 3)}, tmp_path / "bad.pth")
    with pytest.raises(LetheError, match=r"model\.mm_projector\.0\.weight.*shape \(3, 3\)"):
        vlm.load_checkpoint(tmp_path / "bad.pth")
    torch.save({"model.not_a_module.weight": torch.zeros(3)}, tmp_path / "extra.pth")
    with pytest.raises(LetheError, match="not_a_module.*refusing a partial load"):
        vlm.load_checkpoint(tmp_path / "extra.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"garbage")
    with pytest.raises(LetheError, match="junk.safetensors"):
        vlm.load_checkpoint(tmp_path / "junk.safetensors")
    with pytest.raises(LetheError, match="checkpoint not found"):
        vlm.load_checkpoint(tmp_path / "missing.pth")


class _Evil:  # any non-tensor object: unpickling it could run code
    pass


def test_pickled_objects_are_refused(tiny_dir, tmp_path):
    torch.save({"model": {"x": _Evil()}}, tmp_path / "evil.pth")
    with pytest.raises(LetheError, match="weights_only=True"):
        _llava(tiny_dir).load_checkpoint(tmp_path / "evil.pth")


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    from common.io import atomic_path

    target = tmp_path / "out.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text().strip().replace(" ", "").replace("\n", "") == '{"a":1}'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_files_get_ordinary_permissions(tmp_path):
    import os

    atomic_write_json(tmp_path / "p.json", {})
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "p.json").stat().st_mode & 0o777 == 0o666 & ~mask


def test_atomic_files_keep_ordinary_permissions_whatever_the_writer_does(tmp_path):
    """A writer that replaces the temporary file with a 0600 one (as safetensors' save_file does) still leaves a
    file with open()'s permissions (0666 minus the umask)."""
    import os

    from common.io import atomic_path

    old = os.umask(0o027)
    try:
        with atomic_path(tmp_path / "w.bin") as tmp:
            tmp.unlink()
            fd = os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
    finally:
        os.umask(old)
    assert (tmp_path / "w.bin").stat().st_mode & 0o777 == 0o640


def test_saved_checkpoints_get_ordinary_permissions(tiny_dir, tmp_path):
    """safetensors' save_file makes 0600 files; a saved checkpoint must be readable like any output (0644 under
    umask 022), for a file path and for a directory."""
    import os

    from common.checkpoint import save_trainable

    vlm = _llava(tiny_dir)
    vlm.set_trainable("projector")
    old = os.umask(0o022)
    try:
        a = save_trainable(vlm, tmp_path / "x.safetensors")
        b = vlm.save_checkpoint(tmp_path / "dir")
    finally:
        os.umask(old)
    assert b == tmp_path / "dir" / "trainable.safetensors"
    assert a.stat().st_mode & 0o777 == 0o644 and b.stat().st_mode & 0o777 == 0o644


def test_loading_prints_one_line_with_the_tensor_count_and_the_file(tiny_dir, tmp_path, capsys):
    """load_method_checkpoint (what load_model(..., ckpt_load_path=...) calls) says what it loaded, from where."""
    vlm = _llava(tiny_dir)
    _efuf_style_pth(vlm, tmp_path / "llava-efuf.pth")
    capsys.readouterr()
    vlm.load_checkpoint(tmp_path)  # a directory: its newest checkpoint file
    out, err = capsys.readouterr()
    assert out == ""  # stdout stays for a CLI's results
    assert err.splitlines() == [f"loaded 4 tensors from {tmp_path / 'llava-efuf.pth'} (dropped 2 legacy buffers)"]
