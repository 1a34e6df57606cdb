"""Prompts and tokenization against the official pipelines (issue #9, points 9 and 10).

1. The rendered prompt of every family in the registry, in both prompt styles, against the official template text
   written out here (haotian-liu/LLaVA ``conversation.py``, EFUF ``common/args.py``, MiniGPT-4, mPLUG-Owl, BLIP-2).
2. The token ids of the Llama-based families converted from official files (minigpt4, owl, share4v, llava) against
   re-implementations of the official chunk-by-chunk algorithms, run on a Llama-style SentencePiece model trained
   here (no real Llama ``tokenizer.model`` is available offline) through the ``sentencepiece`` library, as the
   official pipelines' slow ``LlamaTokenizer`` did.
"""
from __future__ import annotations

import io
import json
import re
import shutil

import pytest
import torch

from common.errors import LetheError
from common.models import FAMILIES, IGNORE_INDEX, Sample, load_model

P = "Please describe the image."
VICUNA_V1 = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
             "detailed, and polite answers to the user's questions. USER: <image>\nPlease describe the image. "
             "ASSISTANT:")
OWL = ("The following is a conversation between a curious human and AI assistant. The assistant gives helpful, "
       "detailed, and polite answers to the user's questions.\nHuman: <image>\nHuman: Please describe the image.\n"
       "AI: ")
MINIGPT4 = "[INST] <Img><ImageHere></Img> Please describe the image. [/INST]"
LLAVA_HF = "USER: <image>\nPlease describe the image. ASSISTANT:"  # llava-hf's chat template (the tiny one's)
# the tiny llava_next has a Mistral LLM: llava-v1.6-mistral's mistral_instruct conversation
MISTRAL = "[INST] <image>\nPlease describe the image. [/INST]"

OFFICIAL = {"llava": VICUNA_V1, "share4v": VICUNA_V1, "llava_next": MISTRAL, "minigpt4": MINIGPT4, "minigpt": MINIGPT4,
            "owl": OWL, "blip2": "Question: Please describe the image. Answer:",
            "instructblip": "Please describe the image.", "hf": LLAVA_HF}
HF = {**OFFICIAL, "llava": LLAVA_HF}  # share4v's processor carries the vicuna_v1 template itself
NO_IMAGE = {"llava": VICUNA_V1.replace("<image>\n", ""), "minigpt4": "[INST] Please describe the image. [/INST]",
            "owl": OWL.replace("Human: <image>\nHuman: ", "Human: ")}


def _tiny(tiny_dir, family):
    return tiny_dir("minigpt4" if family == "minigpt" else family)


def test_every_registered_family_has_a_literal_template():
    assert set(OFFICIAL) == set(FAMILIES) - {"clip"}


@pytest.mark.parametrize("family", sorted(OFFICIAL))
def test_rendered_prompt_in_both_styles(tiny_dir, family):
    vlm = load_model(family, _tiny(tiny_dir, family), dtype="float32", device="cpu")
    assert vlm.prompt_style == "official"
    assert vlm.chat_prompt(P) == OFFICIAL[family]
    vlm.prompt_style = "hf"
    assert vlm.chat_prompt(P) == HF[family]
    hf = load_model(family, _tiny(tiny_dir, family), dtype="float32", device="cpu", prompt_style="hf")
    assert hf.prompt_style == "hf" and hf.chat_prompt(P) == HF[family]


@pytest.mark.parametrize("family", sorted(NO_IMAGE))
def test_text_only_prompt(tiny_dir, family):
    vlm = load_model(family, tiny_dir(family), dtype="float32", device="cpu")
    assert vlm.chat_prompt(P, with_image=False) == NO_IMAGE[family]


def test_llava_next_conversation_follows_its_llm():
    """llava-v1.6-vicuna: vicuna_v1; -mistral: mistral_instruct; -34b (ChatML tokens): chatml_direct."""
    from common.models.llava import LlavaNextVLM
    from common.tiny import tiny_llava_next

    torch.manual_seed(0)
    model, proc = tiny_llava_next(text_kind="llama")
    vlm = LlavaNextVLM(model, proc)
    assert vlm.chat_prompt(P) == VICUNA_V1
    assert LlavaNextVLM(model, proc, prompt_style="hf").chat_prompt(P) == MISTRAL  # the processor's template
    proc.tokenizer.add_tokens(["<|im_start|>", "<|im_end|>"], special_tokens=True)
    assert vlm.chat_prompt(P) == ("<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n<image>\n"
                                  "Please describe the image.<|im_end|><|im_start|>assistant\n")
    model, proc = tiny_llava_next()
    assert LlavaNextVLM(model, proc).chat_prompt(P) == MISTRAL


def test_llava_training_text_is_the_vicuna_v1_conversation(tiny_dir, images):
    """conv_vicuna_v1 with the answer: "... ASSISTANT: {answer}</s>" (sep " ", sep2 "</s>")."""
    vlm = load_model("llava", tiny_dir("llava"), dtype="float32", device="cpu")
    b = vlm.build_batch([Sample(images[0], P, target="A red ball.")])
    assert b.texts == [VICUNA_V1 + " A red ball.</s>"]


def test_prompt_style_is_checked_and_reaches_the_cli(tiny_dir):
    from common.args import ModelArguments, parse_args

    with pytest.raises(LetheError, match="unknown prompt style 'chat'; valid: official, hf"):
        load_model("llava", tiny_dir("llava"), dtype="float32", device="cpu", prompt_style="chat")
    vlm = load_model("owl", tiny_dir("owl"), dtype="float32", device="cpu")
    with pytest.raises(LetheError, match="unknown prompt style"):
        vlm.prompt_style = "vicuna"
    (a,) = parse_args([ModelArguments], ["--model", "llava", "--llava_path", tiny_dir("llava"), "--prompt_style",
                                         "hf", "--dtype", "float32", "--device", "cpu"])
    assert a.prompt_style == "hf" and a.load().chat_prompt(P) == LLAVA_HF
    (a,) = parse_args([ModelArguments], ["--model", "llava", "--llava_path", tiny_dir("llava")])
    assert a.prompt_style is None
    with pytest.raises(SystemExit):
        parse_args([ModelArguments], ["--model", "llava", "--prompt_style", "chat"])


def test_hf_style_generation_is_batched_as_the_official_one(tiny_dir, images):
    prompts = [P, "Is there a cat?", "What color is the ball?", "Count."]
    for style in ("official", "hf"):
        vlm = load_model("share4v", tiny_dir("share4v"), dtype="float32", device="cpu", prompt_style=style)
        batched = vlm.generate(images, prompts, max_new_tokens=6, batch_size=4)
        assert batched == [vlm.generate([im], [p], max_new_tokens=6)[0] for im, p in zip(images, prompts)]


# ---------------------------------------------------------------- token ids: the official algorithms, re-derived
BOS, EOS = 1, 2
IMAGE = -200  # LLaVA's IMAGE_TOKEN_INDEX; here the marker of one image in every reference
CORPUS = """\
a man rides a bicycle down the street next to a red bus and two cars.
the kitchen has a white refrigerator, a sink and 3 chairs around a wooden table.
please describe the image in detail. is there a dog? how many people are there?
answer the question using a single word or phrase. what color is the umbrella?
USER: ASSISTANT: Human: AI: [INST] [/INST] <Img> </Img> The following is a conversation between a curious human.
A chat between a curious user and an artificial intelligence assistant gives helpful, detailed, polite answers.
"""
# a LLaMA / Llama-2 era tokenizer_config.json: no "legacy" key
TOKENIZER_CONFIG = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
                    "unk_token": "<unk>", "pad_token": None, "clean_up_tokenization_spaces": False,
                    "model_max_length": 2048, "tokenizer_class": "LlamaTokenizer"}
PROMPTS = [P, "How many dogs are there?\nAnswer the question using a single word or phrase.",
           "  is there a red bus? 12 cars", "What color is the umbrella?"]
TARGETS = ["A man rides a bicycle.", "2", "Yes, there is one.", " red"]


@pytest.fixture(scope="module")
def spm_model():
    """A SentencePiece BPE model with the trainer settings of Llama's tokenizer.model (byte fallback, dummy prefix,
    split digits, identity normalisation, whitespace kept, <unk>=0 <s>=1 </s>=2)."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS.splitlines()), model_writer=buf, model_type="bpe",
                                   vocab_size=400, hard_vocab_limit=False, byte_fallback=True, add_dummy_prefix=True,
                                   split_digits=True, remove_extra_whitespaces=False,
                                   normalization_rule_name="identity", allow_whitespace_only_pieces=True, unk_id=0,
                                   bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2)
    proc = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    assert proc.get_piece_size() <= 600  # fits the tiny LLMs' embeddings
    return buf.getvalue(), proc


def _put_tokenizer(llm_dir, model: bytes) -> None:
    for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        (llm_dir / f).unlink(missing_ok=True)
    (llm_dir / "tokenizer.model").write_bytes(model)
    (llm_dir / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG))


@pytest.fixture(scope="module")
def official_dirs(tmp_path_factory, spm_model):
    """Official-layout tiny checkpoints whose LLM dir carries the SentencePiece model trained here, and their
    converted dirs ("FAMILY-hf": the legacy flag goes through a save and reload); llava: the converted dir only
    (the llava family loads Hugging Face Llava dirs)."""
    from common.convert import main as convert_main
    from common.tiny import write_tiny

    root = tmp_path_factory.mktemp("prompts")
    out = {}
    for family in ("minigpt4", "owl", "share4v", "llava"):
        d = write_tiny(family, root / family, layout="official")
        _put_tokenizer(d / "Llama-2-7b-chat-hf" if family == "minigpt4" else d, spm_model[0])
        out[family] = d
        assert convert_main([family, "--src", str(d), "--out", str(root / f"{family}-hf")]) == 0
        out[f"{family}-hf"] = root / f"{family}-hf"
    out["llava"] = out.pop("llava-hf")
    return out


def slow_llama_tokenize(sp, text: str, add_bos: bool) -> list[int]:
    """transformers' slow LlamaTokenizer (legacy) as the official pipelines ran it: special tokens (here </s>) split
    out, every other piece SentencePiece-encoded on its own (with its dummy prefix), BOS first if asked."""
    ids = [BOS] if add_bos else []
    for k, piece in enumerate(text.split("</s>")):
        if k:
            ids.append(EOS)
        if piece:
            ids.extend(sp.encode(piece))
    return ids


def ref_llava(sp, prompt: str) -> list[int]:
    """haotian-liu/LLaVA llava/mm_utils.py tokenizer_image_token (ShareGPT4V's is the same)."""
    prompt_chunks = [slow_llama_tokenize(sp, chunk, add_bos=True) for chunk in prompt.split("<image>")]

    def insert_separator(x, sep):
        return [ele for sublist in zip(x, [sep] * len(x)) for ele in sublist][:-1]

    input_ids, offset = [], 0
    if len(prompt_chunks) > 0 and len(prompt_chunks[0]) > 0 and prompt_chunks[0][0] == BOS:
        offset = 1
        input_ids.append(prompt_chunks[0][0])
    for x in insert_separator(prompt_chunks, [IMAGE] * (offset + 1)):
        input_ids.extend(x[offset:])
    return input_ids


def ref_minigpt4(sp, prompt: str) -> list[int]:
    """Vision-CAIR/MiniGPT-4 minigpt_base.py get_context_emb: segments split at <ImageHere>, BOS on the first only,
    the image embeddings between them."""
    segs = prompt.split("<ImageHere>")
    seg_tokens = [slow_llama_tokenize(sp, seg, add_bos=i == 0) for i, seg in enumerate(segs)]
    mixed = [t for pair in zip(seg_tokens[:-1], [[IMAGE]] * (len(segs) - 1)) for part in pair for t in part]
    return mixed + seg_tokens[-1]


def ref_owl_processor(sp, prompt: str) -> list[int]:
    """X-PLUG/mPLUG-Owl mplug_owl/processing_mplug_owl.py _tokenize_prompt (add_BOS=True)."""
    enc = [BOS]
    if "<image>" not in prompt:
        return enc + slow_llama_tokenize(sp, prompt, add_bos=False)
    for chunk in [x for x in re.split("(<image>)", prompt) if len(x) > 0]:
        enc += [IMAGE] if chunk == "<image>" else slow_llama_tokenize(sp, chunk, add_bos=False)
    return enc


def ref_owl_training(sp, conversation: str) -> list[int]:
    """mPLUG-Owl pipeline/data_utils/xgpt3_dataset.py _extract_text_token_from_conversation (image-text branch;
    EFUF's OWl.preprocess_text follows it): cut at media tokens, "AI: " and "\\nHuman: "; EOS after each answer."""
    chunks = [x for x in re.split("(<image>|AI: |\nHuman: )", conversation) if len(x) > 0]
    enc: list[int] = []
    for idx, chunk in enumerate(chunks):
        if idx == 0:
            enc = [BOS] + slow_llama_tokenize(sp, chunk, add_bos=False)
        elif chunk == "<image>":
            enc += [IMAGE]
        else:
            enc += slow_llama_tokenize(sp, chunk, add_bos=False)
            if chunks[idx - 1] == "AI: ":
                enc += [EOS]
    return enc


def _ours(vlm, ids: torch.Tensor, mask: torch.Tensor) -> list[int]:
    """Unpadded ids with each run of image tokens as one IMAGE marker."""
    out: list[int] = []
    for t in ids[mask.bool()].tolist():
        if t == vlm.image_token_id:
            if out[-1:] != [IMAGE]:
                out.append(IMAGE)
        else:
            out.append(t)
    return out


REFERENCE = {"llava": ref_llava, "share4v": ref_llava, "minigpt4": ref_minigpt4, "owl": ref_owl_processor}


@pytest.mark.parametrize("checkpoint", ["llava", "share4v", "minigpt4", "owl", "share4v-hf", "minigpt4-hf", "owl-hf"])
def test_token_ids_equal_the_official_pipeline(official_dirs, spm_model, images, checkpoint):
    """Generation prompts and training texts (with their labels) tokenize to the official pipeline's ids."""
    sp = spm_model[1]
    family = checkpoint.removesuffix("-hf")
    vlm = load_model(family, str(official_dirs[checkpoint]), dtype="float32", device="cpu")
    texts = [vlm.chat_prompt(p) for p in PROMPTS]
    for padding_side in ("left", "right"):
        vlm.tokenizer.padding_side = padding_side
        inputs = vlm._processor_call(images, texts, PROMPTS)  # what generate() feeds the model
        for i, text in enumerate(texts):
            want = REFERENCE[family](sp, text)
            assert want.count(IMAGE) == 1
            assert _ours(vlm, inputs["input_ids"][i], inputs["attention_mask"][i]) == want, (family, text)
    # the forward map (prompt + answer + </s>): LLaVA's preprocess_v1 and MiniGPT-4 cut it as the prompt,
    # mPLUG-Owl's training data code also at "AI: " / "\nHuman: "
    samples = [Sample(im, p, target=t) for im, p, t in zip(images, PROMPTS, TARGETS)]
    batch = vlm.build_batch(samples)
    for i, (s, text) in enumerate(zip(samples, batch.texts)):
        if family == "owl":
            want = ref_owl_training(sp, text[:-len("</s>")])
        else:
            want = REFERENCE[family](sp, text)
        assert _ours(vlm, batch.inputs["input_ids"][i], batch.inputs["attention_mask"][i]) == want, (family, text)
        labels = batch.labels[i][batch.labels[i] != IGNORE_INDEX].tolist()
        assert labels == want[-len(labels):] and labels[-1] == EOS
        assert vlm.tokenizer.decode(labels[:-1]).strip() == s.target.strip()
        # the answer's tokens as the official code labels them: all of "2" = "▁", "2" (LLaVA masks the instruction
        # up to "ASSISTANT:"; MiniGPT-4 / mPLUG-Owl tokenize the answer alone, dummy prefix included)
        assert labels[:-1] == sp.encode(s.target)
    with torch.no_grad():
        assert torch.isfinite(vlm.per_sample_nll(batch)).all()
    # chunks that start with spaces: SentencePiece still puts its dummy "▁" first (transformers 5's Metaspace
    # pre-tokenizer does not, by itself)
    for text in ["  " + texts[0], " " + texts[0].replace(vlm.image_placeholder, vlm.image_placeholder + " ")]:
        (ids,), _ = vlm.encode_texts([text])
        assert [IMAGE if t == vlm.image_token_id else t for t in ids] == REFERENCE[family](sp, text), (family, text)


@pytest.mark.parametrize("family", ["share4v", "minigpt4", "owl"])
def test_one_tokenizer_pass_without_legacy_is_what_differs(official_dirs, spm_model, family):
    """The bug this guards against: transformers 5 reads a missing ``legacy`` as False, and one pass over the whole
    prompt then drops the "▁" SentencePiece puts before the text after the image placeholder."""
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    sp = spm_model[1]
    llm_dir = official_dirs[family] / "Llama-2-7b-chat-hf" if family == "minigpt4" else official_dirs[family]
    vlm = load_model(family, str(official_dirs[family]), dtype="float32", device="cpu")
    placeholder = vlm.image_placeholder
    plain = AutoTokenizer.from_pretrained(str(llm_dir))  # as transformers 5 loads it
    plain.add_tokens([AddedToken(placeholder, special=True, normalized=False)], special_tokens=True)
    text = vlm.chat_prompt(P)
    one_pass = [IMAGE if t == plain.convert_tokens_to_ids(placeholder) else t for t in plain(text)["input_ids"]]
    want = REFERENCE[family](sp, text)
    after = want.index(IMAGE) + 1
    assert sp.id_to_piece(want[after]).startswith("▁") and one_pass[after] != want[after]
    assert one_pass[:after] == want[:after]


@pytest.mark.parametrize("checkpoint", ["llava", "share4v", "minigpt4", "owl", "share4v-hf", "minigpt4-hf", "owl-hf"])
def test_converted_tokenizers_are_legacy(official_dirs, checkpoint):
    """The official legacy flag reaches the loaded tokenizer, also through a converted dir's save and reload; even
    one tokenizer pass (prompt_style="hf") then keeps the "▁" after the image placeholder."""
    vlm = load_model(checkpoint.removesuffix("-hf"), str(official_dirs[checkpoint]), dtype="float32", device="cpu")
    tok = vlm.tokenizer
    ids = tok(f"USER: {vlm.image_placeholder}\nis there", add_special_tokens=False)["input_ids"]
    after = ids.index(tok.convert_tokens_to_ids(vlm.image_placeholder)) + 1
    assert tok.convert_ids_to_tokens(ids[after:after + 2]) == ["▁", "<0x0A>"]


def test_official_legacy_flag(tmp_path, spm_model):
    from common.convert.core import load_llm_tokenizer, official_legacy

    d = tmp_path / "llm"
    d.mkdir()
    _put_tokenizer(d, spm_model[0])
    assert official_legacy(d) is True
    tok = load_llm_tokenizer(d, "<image>")
    assert tok.legacy is True and tok.init_kwargs["legacy"] is True
    tok.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "tokenizer_config.json").read_text())["legacy"] is True
    (d / "tokenizer_config.json").write_text(json.dumps({**TOKENIZER_CONFIG, "legacy": False}))
    assert official_legacy(d) is False and load_llm_tokenizer(d, "<image>").legacy is False
    shutil.rmtree(d)
    d.mkdir()
    (d / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer"}))
    assert official_legacy(d) is None


def test_hf_style_is_one_processor_pass(official_dirs, images):
    """prompt_style="hf" leaves the ids to the processor (one tokenizer pass), as the transformers pipelines do."""
    vlm = load_model("llava", str(official_dirs["llava"]), dtype="float32", device="cpu", prompt_style="hf")
    text = vlm.chat_prompt(P)
    inputs = vlm._processor_call(images[:1], [text], [P])
    direct = vlm.processor(images=images[:1], text=[text], return_tensors="pt")
    assert torch.equal(inputs["input_ids"], direct["input_ids"])
