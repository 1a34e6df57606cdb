"""The clip family: open_clip and HF CLIPModel behind one adapter."""
from __future__ import annotations

import pytest
import torch

from common.errors import LetheError
from common.models import ClipModel, load_model


@pytest.fixture(params=["open_clip", "clip"])
def clip(request, tiny_dir):
    return load_model("clip", tiny_dir(request.param), device="cpu")


def test_backend_detected_from_the_directory(tiny_dir):
    assert load_model("clip", tiny_dir("open_clip")).backend == "open_clip"
    assert load_model("clip", tiny_dir("clip")).backend == "hf"


def test_encode_normalised_and_similarity_is_scaled_cosine(clip, images):
    assert isinstance(clip, ClipModel)
    pv = clip.preprocess(images)
    assert pv.shape[0] == 4 and pv.shape[1] == 3
    img = clip.encode_image(pv)
    txt = clip.encode_text(["a photo containing a ball.", "a photo containing a box."])
    assert img.shape[0] == 4 and txt.shape[0] == 2 and img.shape[1] == txt.shape[1]
    assert torch.allclose(img.norm(dim=-1), torch.ones(4), atol=1e-5)
    sim = clip.similarity(img, txt)
    raw_i, raw_t = clip.encode_image(pv, normalize=False), clip.encode_text(["a photo containing a ball."],
                                                                            normalize=False)
    cos = torch.nn.functional.cosine_similarity(raw_i[1], raw_t[0], dim=0)
    assert torch.isclose(sim[1, 0], clip.logit_scale * cos, atol=1e-4)
    # a batch of texts encodes as each text alone
    assert torch.allclose(clip.encode_text(["a photo containing a box."])[0], txt[1], atol=1e-5)


def test_scopes_and_checkpoint_round_trip(clip, images, tmp_path):
    names = clip.set_trainable("vision_layers", vision_layers=[1])
    assert names and all(("resblocks.1." in n) or ("layers.1." in n) for n in names)
    pv = clip.preprocess(images)
    with torch.no_grad():
        for n, p in clip.model.named_parameters():
            if p.requires_grad:
                p.add_(0.1)
        want = clip.encode_image(pv)
    clip.save_checkpoint(tmp_path / "ck")
    fresh = load_model("clip", clip.path, ckpt_load_path=str(tmp_path / "ck"))
    with torch.no_grad():
        assert torch.equal(fresh.encode_image(pv), want)
    with pytest.raises(LetheError, match="unknown CLIP trainable scope"):
        clip.set_trainable("projector")


def test_save_pretrained_round_trip(clip, images, tmp_path):
    pv = clip.preprocess(images)
    with torch.no_grad():
        want = clip.encode_image(pv)
    clip.save_pretrained(tmp_path / "copy")
    again = load_model("clip", str(tmp_path / "copy"))
    with torch.no_grad():
        assert torch.equal(again.encode_image(again.preprocess(images)), want)


def test_bad_clip_path(tmp_path):
    with pytest.raises(LetheError, match="neither an open_clip dir"):
        load_model("clip", str(tmp_path))
    with pytest.raises(LetheError, match="not found"):
        load_model("clip", str(tmp_path / "missing"))


def test_open_clip_tower_converts_to_hf_clip_vision_model(tiny_dir, images):
    clip = load_model("clip", tiny_dir("open_clip"))
    hf = clip.to_hf_vision_model().eval()
    pv = clip.preprocess(images)
    with torch.no_grad():
        ours = hf(pixel_values=pv, output_hidden_states=True)
        v = clip.model.visual
        x = v.conv1(pv).flatten(2).transpose(1, 2)
        x = torch.cat([v.class_embedding.expand(x.shape[0], 1, -1), x], 1) + v.positional_embedding
        x = v.transformer(v.ln_pre(x))
        assert (ours.last_hidden_state - x).abs().max() < 1e-5
        assert (ours.pooler_output - v.ln_post(x[:, 0])).abs().max() < 1e-5
        # and the open_clip image embedding is the HF pooled output through open_clip's projection
        emb = clip.encode_image(pv, normalize=False)
        assert (ours.pooler_output @ v.proj - emb).abs().max() < 1e-5


def test_openai_weights_are_built_with_the_quickgelu_they_were_trained_with(monkeypatch):
    """``ViT-B-32/openai``: open_clip's plain ViT-B-32 config builds GELU and only warns; we build QuickGELU."""
    import open_clip

    from common.models.clip import open_clip_quick_gelu

    assert open_clip_quick_gelu("ViT-B-32", "openai") is True
    assert open_clip_quick_gelu("ViT-B-32-quickgelu", "openai") is False  # the arch already has it
    assert open_clip_quick_gelu("ViT-B-32", "laion2b_s34b_b79k") is False  # GELU-trained weights
    assert open_clip_quick_gelu("ViT-B-32", None) is False

    real = open_clip.create_model_and_transforms
    seen = {}

    def no_download(name, pretrained=None, **kw):  # the real architecture, without fetching the weights
        seen.update(name=name, pretrained=pretrained, **kw)
        return real(name, pretrained=None, **{k: v for k, v in kw.items() if k != "weights_only"})

    monkeypatch.setattr(open_clip, "create_model_and_transforms", no_download)
    clip = load_model("clip", "ViT-B-32/openai", device="cpu")
    assert (seen["name"], seen["pretrained"], seen["force_quick_gelu"]) == ("ViT-B-32", "openai", True)
    acts = {type(m).__name__ for m in clip.model.visual.modules() if "GELU" in type(m).__name__}
    assert acts == {"QuickGELU"}
    x = torch.linspace(-3, 3, 7)
    act = next(m for m in clip.model.visual.modules() if type(m).__name__ == "QuickGELU")
    assert torch.allclose(act(x), x * torch.sigmoid(1.702 * x))


def test_default_clip_is_the_one_efuf_scored_with():
    from common.models.clip import detect_backend
    from insight.clip import ClipScoreArguments

    assert ClipScoreArguments().clip_path == "openai/clip-vit-base-patch32"
    assert detect_backend(ClipScoreArguments().clip_path) == "hf"  # HF CLIPModel: its config sets quick_gelu
