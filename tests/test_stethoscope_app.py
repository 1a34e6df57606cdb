"""The Stethoscope app: its pieces, and the whole page driven in Debian's Chromium by Playwright (headless)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ARTIFACTS = Path(os.environ.get("LETHE_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))


@pytest.fixture(scope="module")
def analyzer(tiny_dir):
    from common.models import load_model
    from stethoscope.app import Analyzer

    vlm = load_model("llava", tiny_dir("llava"), dtype="float32", device="cpu", attn_implementation="eager")
    return Analyzer(vlm, {"mode": "layer:sum", "layer": 1, "threshold": 0.05}, max_new_tokens=8)


def _picture(path: Path) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(path)
    return path


def test_words_merge_sub_tokens_and_cover_the_answer(analyzer):
    from stethoscope.app import merge_words

    tok = analyzer.vlm.tokenizer
    ids = tok("a red ball, and boxes", add_special_tokens=False)["input_ids"]
    words = merge_words(tok, ids)
    assert [w for w, _ in words] == ["a", "red", "ball", ",", "and", "boxes"]
    assert sorted(k for _, ks in words for k in ks) == list(range(len(ids)))


def test_uploads_that_are_not_images_or_too_large_are_refused(tmp_path):
    from common.errors import LetheError
    from stethoscope.app import build_parser, load_upload

    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(LetheError, match="not an image"):
        load_upload(str(text), 10, 4096)
    big = tmp_path / "big.png"
    Image.new("RGB", (600, 20)).save(big)
    with pytest.raises(LetheError, match="limit is 512 px"):
        load_upload(str(big), 10, 512)
    with pytest.raises(LetheError, match="limit is 1e-05 MB"):
        load_upload(str(big), 1e-5, 4096)
    assert load_upload(str(_picture(tmp_path / "ok.png")), 10, 4096).size == (48, 48)
    a = build_parser().parse_args(["--llava_path", "x"])
    assert (a.host, a.port, a.model_path) == ("127.0.0.1", 7860, "x")  # loopback unless told otherwise


def test_overlay_paints_the_relevancy_over_the_image(analyzer, tmp_path):
    from stethoscope.app import overlay

    im = Image.open(_picture(tmp_path / "p.png"))
    plain = overlay(im, None, size=64)
    m = torch.zeros(4, 4)
    m[0, 0] = 1.0
    hot = overlay(im, m, size=64)
    assert plain.shape == hot.shape == (64, 64, 3)
    assert not np.array_equal(plain, hot)
    assert hot[:8, :8, 0].mean() > hot[-8:, -8:, 0].mean()  # jet: red where the relevancy is high


def test_concurrent_sessions_keep_their_own_answers(analyzer, tmp_path):
    """Two sessions analysed in turn: each keeps its own trace and relevancy; the shared model is unchanged."""
    before = {k: v.clone() for k, v in analyzer.vlm.model.state_dict().items()}
    im = Image.open(_picture(tmp_path / "p.png")).convert("RGB")
    a = analyzer.ask(im, "Describe the image.")
    b = analyzer.ask(im.transpose(Image.FLIP_LEFT_RIGHT), "What is shown?")
    ra = analyzer.relevancy(a, 0)
    analyzer.relevancy(b, 0)
    assert torch.equal(analyzer.relevancy(a, 0).full, ra.full) and a.relevancy is not b.relevancy
    warn = analyzer.warnings(a)
    assert len(warn) == len(a.words) and all(isinstance(f, bool) for _, _, f in warn)
    assert all(torch.equal(before[k], v) for k, v in analyzer.vlm.model.state_dict().items())


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.fail("Debian's chromium is not installed: `bash scripts/test.sh` installs it (apt-get install chromium)")
    return exe


def test_the_app_in_a_real_browser(analyzer, tmp_path):
    """Upload an image, ask, pick a word: the heatmap and both bar charts render; the screenshot is kept in
    test-artifacts/stethoscope_app.png."""
    from playwright.sync_api import sync_playwright

    from launch import free_port
    from stethoscope.app import build_app

    port = free_port()
    demo = build_app(analyzer)
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    picture = _picture(tmp_path / "upload.png")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "stethoscope_app.png"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=_chromium(), headless=True, args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])
            page = browser.new_page(viewport={"width": 1280, "height": 1800})
            page.goto(f"http://127.0.0.1:{port}/", wait_until="load")
            page.locator("#ask").wait_for(state="visible", timeout=60_000)
            page.locator("#image input[type=file]").set_input_files(str(picture))
            page.locator("#question textarea").fill("Describe the image.")
            page.locator("#ask").click()
            first_word = page.locator("#words label").first
            first_word.wait_for(state="visible", timeout=60_000)
            assert page.locator("#warnings").inner_text().strip()  # the warning strip is filled
            first_word.click()
            for elem in ("heatmap", "question_bars", "answer_bars", "lens"):
                img = page.locator(f"#{elem} img")
                img.wait_for(state="visible", timeout=60_000)
                page.wait_for_function("(el) => el.complete && el.naturalWidth > 0", arg=img.element_handle(),
                                       timeout=30_000)
            assert "LLM layer" in page.locator("#info").inner_text()
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
    finally:
        demo.close()
    assert shot.stat().st_size > 10_000
