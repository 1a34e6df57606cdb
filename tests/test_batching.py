"""The training forward map (common/batching.py): per-sample encodings padded into a batch equal the family's own
batch, the cache changes nothing, the NLL from the labelled positions equals per_sample_nll, and the step reads
nothing back from the device."""
from __future__ import annotations

import pytest
import torch

from common.batching import (LabelIndex, SampleEncoder, SyncCounter, accepts_logits_to_keep, collate, host_side,
                             sample_nll)
from common.models import Sample, load_model

FAMILIES = ["llava", "llava_next", "blip2", "instructblip", "minigpt4", "owl", "share4v"]


def _samples(images, tmp_path):
    paths = []
    for i, im in enumerate(images):
        p = tmp_path / f"im{i}.png"
        im.save(p)
        paths.append(str(p))
    return [
        Sample(paths[0], "Please describe the image.", target=" a purple bottle and a tent", context="a red ball,",
               add_eos=False),
        Sample(paths[1], "Please describe the image.", target="a blue box"),
        Sample(paths[0], "What color is the box? Answer in a few words.", target="Blue, with a white lid",
               spans=[(0, 4, 2.0)]),
        Sample(paths[2 % len(paths)], "Is there a kite?", target="No"),
        Sample(paths[1], "Please describe the image.", target="two people near a table", context="a kite,"),
    ]


def _assert_same(batch, ref):
    assert set(batch.inputs) == set(ref.inputs)
    for k, v in ref.inputs.items():
        got = batch.inputs[k]
        if torch.is_tensor(v):
            assert got.shape == v.shape and got.dtype == v.dtype, k
            assert torch.equal(got, v), k
        else:
            assert list(got) == list(v), k
    assert torch.equal(batch.labels, ref.labels)
    assert torch.equal(batch.weights, ref.weights)


@pytest.mark.parametrize("family", FAMILIES)
def test_encoded_samples_collate_to_the_family_batch_with_and_without_cache(family, tiny_dir, images, tmp_path):
    vlm = load_model(family, tiny_dir(family), dtype="float32", device="cpu")
    samples = _samples(images, tmp_path)
    ref = vlm.build_batch(samples)
    pad = vlm.tokenizer.pad_token_id if vlm.tokenizer.pad_token_id is not None else 0
    plain = SampleEncoder(vlm, cache_mb=0)
    _assert_same(collate([plain(s) for s in samples], pad), ref)
    cached = SampleEncoder(vlm, cache_mb=64)
    first = collate([cached(s) for s in samples], pad)  # images shared by samples 0/2 and 1/4: second use cached
    again = collate([cached(s) for s in samples], pad)  # every image cached, no sample key: stand-ins only
    _assert_same(first, ref)
    _assert_same(again, ref)
    keyed = SampleEncoder(vlm, cache_mb=64)
    for _ in range(2):
        _assert_same(collate([keyed(s, key=i) for i, s in enumerate(samples)], pad), ref)
    assert (keyed.hits, keyed.misses) == (len(samples), len(samples))


def test_the_cache_stays_within_its_budget(tiny_dir, images, tmp_path):
    vlm = load_model("llava", tiny_dir("llava"), dtype="float32", device="cpu")
    samples = _samples(images, tmp_path)
    one = SampleEncoder(vlm, cache_mb=64)
    one(samples[0], key=0)
    size = one._held
    enc = SampleEncoder(vlm, cache_mb=1.5 * size / 2 ** 20)
    for i, s in enumerate(samples):
        enc(s, key=i)
        assert enc._held <= enc.cache_bytes
    assert 0 < len(enc._cache) < 2 * len(samples)


@pytest.mark.parametrize("family", ["llava", "blip2", "owl"])
def test_nll_at_the_labelled_positions_equals_per_sample_nll(family, tiny_dir, images, tmp_path):
    vlm = load_model(family, tiny_dir(family), dtype="float32", device="cpu")
    batch = vlm.build_batch(_samples(images, tmp_path))
    want = vlm.per_sample_nll(batch)
    index = LabelIndex.from_labels(batch.labels)
    got, out = sample_nll(vlm.model, dict(batch.inputs), index)
    assert torch.allclose(got, want, atol=1e-6, rtol=1e-6)
    if accepts_logits_to_keep(vlm.model):  # the LM head ran on the labelled positions only
        assert out.logits.shape[1] == len(index.keep) < batch.labels.shape[1] - 1
    full, _ = sample_nll(vlm.model, dict(batch.inputs), index, keep_logits=False)
    assert torch.allclose(full, want, atol=1e-6, rtol=1e-6)


def test_label_index_by_hand():
    labels = torch.tensor([[-100, -100, 5, 6, -100], [-100, 7, -100, -100, -100]])
    ix = LabelIndex.from_labels(labels)
    # position p predicts the token at p + 1: row 0 labels at 2, 3 -> positions 1, 2; row 1 at 1 -> position 0
    assert ix.keep.tolist() == [0, 1, 2]
    assert (ix.row.tolist(), ix.col.tolist(), ix.slot.tolist(), ix.label.tolist()) == \
        ([0, 0, 1], [1, 2, 0], [1, 2, 0], [5, 6, 7])
    assert ix.count.tolist() == [2, 1]


def test_sync_counter_sees_host_reads_and_skips_host_side_code():
    x = torch.arange(6.0)
    with SyncCounter() as c:
        bool(x.any())
        x[x > 2].sum()
        float(x[0])
        with host_side():
            x.tolist()
        y = x * 2 + x.index_select(0, torch.tensor([1, 2])).sum()  # no read back
    assert c.counts == {"step": {"__bool__": 1, "bool-mask indexing": 1, "__float__": 1}}
    assert y.shape == (6,)


def test_the_efuf_step_reads_nothing_back(tiny_dir, images, tmp_path):
    from finetune.loss import EfufWeights, WeightSchedule, efuf_loss

    vlm = load_model("llava", tiny_dir("llava"), dtype="float32", device="cpu")
    vlm.set_trainable("projector")
    batch = vlm.build_batch(_samples(images, tmp_path))
    weights = EfufWeights(pos=WeightSchedule(1.0, 0.5), neg=WeightSchedule(0.3, 0.0, 0.4), gold_w=0.3,
                          gold_score=40.0, sent_w=0.0, max_score=55.0)
    component, score = [0, 0, 1, 3, 3], torch.tensor([33.0, 40.0, 0.0, 20.0, 21.0])
    index = LabelIndex.from_labels(batch.labels)
    counter = SyncCounter()
    with counter, counter.model_region(vlm.model):
        nll, _ = sample_nll(vlm.model, dict(batch.inputs), index)
        loss, logs = efuf_loss(nll, component, score, weights, 0.2)
        loss.backward()
    # the model's own forward (transformers') may read back; the step's code around it must not
    assert counter.total("step") == 0, counter.counts
    assert set(logs) == {"nll_pos", "nll_gold", "nll_neg"} and all(torch.is_tensor(v) for v in logs.values())
    with counter:  # the boolean-mask loss of before reads back per component
        counter.region = "step"
        comp = torch.tensor(component)
        for c in (0, 1, 3):
            m = comp == c
            if m.any():
                float(nll.detach()[m].mean())
    assert counter.total("step") == 9


def test_length_grouped_sampling_keeps_every_example_once(tiny_dir, images, tmp_path):
    from finetune.data import EfufDataset, Item
    from finetune.train import EfufCollator, EfufConfig, EfufTrainer, efuf_examples, pad_token_id

    vlm = load_model("llava", tiny_dir("llava"), dtype="float32", device="cpu")
    vlm.set_trainable("projector")
    p = tmp_path / "im.png"
    images[0].save(p)
    neg = [Item(str(p), "Describe.", "a" * (i % 5), " b" * (1 + 7 * (i % 3)), 20.0, False) for i in range(24)]
    pos = [Item(str(p), "Describe.", "", "c" * (1 + i), 40.0, False) for i in range(5)]
    data = EfufDataset(neg, {"pos": pos}, {"pos": 1}, seed=0)
    assert data.lengths[0] == len("Describe.") + max(len(neg[0].context) + len(neg[0].target),
                                                     len(pos[data.orders["pos"][0]].target))
    cfg = EfufConfig(output_dir=str(tmp_path / "o"), per_device_train_batch_size=4, report_to="none",
                     train_sampling_strategy="group_by_length", dataloader_num_workers=0, use_cpu=True)
    trainer = EfufTrainer(model=vlm.model, args=cfg, train_dataset=efuf_examples(vlm, data),
                          data_collator=EfufCollator(pad_token_id(vlm)), vlm=vlm, weights=cfg.weights())
    order = list(trainer._get_train_sampler())
    assert sorted(order) == list(range(24))  # the same data per epoch, grouped by length
    from common.errors import LetheError

    with pytest.raises(LetheError, match="batch_rebalance is not available for EFUF"):
        EfufConfig(output_dir=str(tmp_path / "o"), train_sampling_strategy="batch_rebalance", use_cpu=True)
