"""Tiny random checkpoints of the real model classes, built fully offline.

``python -m common.tiny --family llava --out DIR [--seed 0]`` writes a directory that loads exactly like a real
checkpoint (``load_model("llava", DIR)``): model weights (safetensors), config, a tokenizer trained in-process on a
small built-in corpus (byte-level BPE; a Llama-style SentencePiece model for the families converted from official
layouts: minigpt4, owl, share4v), an image processor and a processor with a chat template in the family's real
format. Tests and benchmarks use these; nothing in the product knows they are tiny.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Iterable

import torch

from common.errors import LetheError, cli_main, run_cli

IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = ["<pad>", "<unk>", "<s>", "</s>", IMAGE_TOKEN]

# A small English corpus so that the tokenizer covers ordinary caption / question text.
_BASE_CORPUS = """\
a photo of a cat sitting on a red couch next to a small dog.
there is a man riding a bicycle down the street while a woman walks her dog.
two people are standing near a table with plates, cups, forks and a pizza.
the image shows a kitchen with a white refrigerator, an oven and a sink.
a giraffe is standing in a field of tall grass under a blue sky with clouds.
is there a person in the image? answer the question using a single word or phrase.
please describe the image in great detail. your response should have at least 100 words.
answer with the option's letter from the given choices directly. yes no maybe.
a red circle, a green square, a blue triangle, a yellow star and a purple cross on a grey background.
the ball is to the left of the box. the kite is above the cup. how many objects are there?
what color is the umbrella? which of these objects is the largest one? the clarity is high, medium or low.
a train on the tracks, a bus at the stop, a car parked by the road and a truck behind it.
a bowl of fruit with an apple, a banana, an orange and some grapes on a wooden table.
the quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9 10 100
USER: ASSISTANT: [INST] [/INST] Question: Answer: Human: AI: <Img> </Img> ### .,;:!?'"()-
"""


def build_tokenizer(corpus: Iterable[str] | None = None, vocab_size: int = 600,
                    chat_template: str | None = None, add_bos: bool = True,
                    add_eos: bool = False):
    """A byte-level BPE fast tokenizer trained in-process (deterministic), with Llama-like specials.

    ``add_bos`` makes ``tokenizer(text)`` prepend ``<s>`` as Llama tokenizers do.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    lines = list(corpus) if corpus is not None else _BASE_CORPUS.splitlines()
    tk = Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(lines, trainer=trainer)
    if add_bos:
        bos, eos = tk.token_to_id("<s>"), tk.token_to_id("</s>")
        end = " </s>" if add_eos else ""
        tk.post_processor = processors.TemplateProcessing(single="<s> $A" + end, pair="<s> $A <s> $B" + end,
                                                          special_tokens=[("<s>", bos), ("</s>", eos)])
    else:
        tk.post_processor = processors.ByteLevel(trim_offsets=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                  pad_token="<pad>", extra_special_tokens={"image_token": IMAGE_TOKEN})
    if chat_template is not None:
        tok.chat_template = chat_template
    return tok


# Chat templates in the real checkpoints' formats (jinja: newlines written as {{ '\n' }}).
LLAVA_CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}{{ 'USER: ' }}{% elif m['role'] == 'assistant' %}"
    "{{ 'ASSISTANT: ' }}{% endif %}{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}{{ '<image>\\n' }}{% endif %}{% endfor %}"
    "{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{% if m['role'] == 'assistant' %}{{ '</s>' }}{% endif %}{{ ' ' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
LLAVA_NEXT_CHAT_TEMPLATE = (  # llava-v1.6-mistral: "[INST] <image>\n{prompt} [/INST]"
    "{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' }}{% endif %}"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}{{ '<image>\\n' }}{% endif %}{% endfor %}"
    "{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{% if m['role'] == 'user' %}{{ ' [/INST]' }}{% else %}{{ '</s>' }}{% endif %}{% endfor %}"
)


def _text_config(tok, hidden: int, layers: int, kind: str = "llama") -> dict:
    common = dict(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                  max_position_embeddings=512, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                  eos_token_id=tok.eos_token_id)
    if kind == "llama":
        return dict(model_type="llama", intermediate_size=2 * hidden, num_key_value_heads=2, **common)
    if kind == "mistral":
        return dict(model_type="mistral", intermediate_size=2 * hidden, num_key_value_heads=2, sliding_window=None,
                    **common)
    if kind == "opt":
        return dict(model_type="opt", ffn_dim=2 * hidden, word_embed_proj_dim=hidden, **common)
    raise ValueError(kind)


def _clip_vision(hidden: int, layers: int, image_size: int, patch: int) -> dict:
    return dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=4,
                image_size=image_size, patch_size=patch, projection_dim=hidden)


def _finish(model, tok) -> None:
    gc = model.generation_config
    gc.pad_token_id, gc.eos_token_id, gc.bos_token_id = tok.pad_token_id, tok.eos_token_id, tok.bos_token_id
    gc.do_sample = False


def tiny_llava(hidden=64, layers=2, image_size=32, patch=8):
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tok = build_tokenizer(chat_template=LLAVA_CHAT_TEMPLATE)
    n_img = (image_size // patch) ** 2
    cfg = LlavaConfig(vision_config=dict(model_type="clip_vision_model", **_clip_vision(hidden, layers, image_size, patch)),
                      text_config=_text_config(tok, hidden, layers), image_token_index=tok.convert_tokens_to_ids(IMAGE_TOKEN),
                      image_seq_length=n_img, vision_feature_layer=-2, vision_feature_select_strategy="default",
                      projector_hidden_act="gelu")
    model = LlavaForConditionalGeneration(cfg)
    ip = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=patch, chat_template=LLAVA_CHAT_TEMPLATE,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1)
    _finish(model, tok)
    return model, proc


def tiny_llava_next(hidden=64, layers=2, image_size=32, patch=8, text_kind="mistral"):
    """LLaVA-1.6 with a Mistral LLM (llava-v1.6-mistral); ``text_kind="llama"``: a Vicuna-like one."""
    from transformers import (LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextImageProcessor,
                              LlavaNextProcessor)

    tok = build_tokenizer(chat_template=LLAVA_NEXT_CHAT_TEMPLATE)
    pins = [[image_size, image_size], [image_size, 2 * image_size], [2 * image_size, image_size],
            [2 * image_size, 2 * image_size]]
    cfg = LlavaNextConfig(vision_config=dict(model_type="clip_vision_model", **_clip_vision(hidden, layers, image_size, patch)),
                          text_config=_text_config(tok, hidden, layers, text_kind),
                          image_token_index=tok.convert_tokens_to_ids(IMAGE_TOKEN), image_grid_pinpoints=pins,
                          image_seq_length=(image_size // patch) ** 2, vision_feature_layer=-2,
                          vision_feature_select_strategy="default")
    model = LlavaNextForConditionalGeneration(cfg)
    ip = LlavaNextImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
                                 image_grid_pinpoints=pins)
    proc = LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=patch, chat_template=LLAVA_NEXT_CHAT_TEMPLATE,
                              vision_feature_select_strategy="default", num_additional_image_tokens=1)
    _finish(model, tok)
    return model, proc


def _qformer_config(tok, hidden: int, layers: int) -> dict:
    return dict(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                intermediate_size=2 * hidden, encoder_hidden_size=hidden, cross_attention_frequency=1,
                pad_token_id=tok.pad_token_id)


def _blip_vision(hidden: int, layers: int, image_size: int, patch: int) -> dict:
    return dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=4,
                image_size=image_size, patch_size=patch)


def tiny_blip2(hidden=64, layers=2, image_size=32, patch=8, num_query_tokens=8):
    from tokenizers import AddedToken
    from transformers import BlipImageProcessor, Blip2Config, Blip2ForConditionalGeneration, Blip2Processor

    tok = build_tokenizer()  # BLIP-2 has no chat template: the family formats "Question: {q} Answer:"
    cfg = Blip2Config(vision_config=_blip_vision(hidden, layers, image_size, patch),
                      qformer_config=_qformer_config(tok, hidden, layers),
                      text_config=_text_config(tok, hidden, layers, "opt"), num_query_tokens=num_query_tokens,
                      image_token_index=tok.convert_tokens_to_ids(IMAGE_TOKEN))
    model = Blip2ForConditionalGeneration(cfg)
    ip = BlipImageProcessor(size={"height": image_size, "width": image_size})
    proc = Blip2Processor(image_processor=ip, tokenizer=tok, num_query_tokens=num_query_tokens)
    proc.image_token = AddedToken(IMAGE_TOKEN, normalized=False, special=True)
    _finish(model, tok)
    return model, proc


def tiny_instructblip(hidden=64, layers=2, image_size=32, patch=8, num_query_tokens=8):
    from tokenizers import AddedToken
    from transformers import (BlipImageProcessor, InstructBlipConfig, InstructBlipForConditionalGeneration,
                              InstructBlipProcessor)

    tok = build_tokenizer()
    qtok = build_tokenizer(add_bos=False)
    cfg = InstructBlipConfig(vision_config=_blip_vision(hidden, layers, image_size, patch),
                             qformer_config=_qformer_config(qtok, hidden, layers),
                             text_config=_text_config(tok, hidden, layers), num_query_tokens=num_query_tokens,
                             image_token_index=tok.convert_tokens_to_ids(IMAGE_TOKEN))
    model = InstructBlipForConditionalGeneration(cfg)
    ip = BlipImageProcessor(size={"height": image_size, "width": image_size})
    proc = InstructBlipProcessor(image_processor=ip, tokenizer=tok, qformer_tokenizer=qtok,
                                 num_query_tokens=num_query_tokens)
    proc.image_token = AddedToken(IMAGE_TOKEN, normalized=False, special=True)
    _finish(model, tok)
    return model, proc


def tiny_hf_clip(hidden=64, layers=2, image_size=32, patch=8):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tok = build_tokenizer(add_bos=True, add_eos=True)  # as CLIP's tokenizer: HF CLIP pools at the EOS token
    cfg = CLIPConfig(text_config=dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                                      num_hidden_layers=layers, num_attention_heads=4, max_position_embeddings=64,
                                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                      eos_token_id=tok.eos_token_id, projection_dim=hidden),
                     vision_config=_clip_vision(hidden, layers, image_size, patch), projection_dim=hidden)
    model = CLIPModel(cfg)
    ip = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    return model, CLIPProcessor(image_processor=ip, tokenizer=tok)


def open_clip_tiny_config(width=64, layers=2, image_size=32, patch=8, embed_dim=64, context_length=32) -> dict:
    return {"embed_dim": embed_dim,
            "vision_cfg": {"image_size": image_size, "layers": layers, "width": width, "patch_size": patch,
                           "head_width": 16},
            "text_cfg": {"context_length": context_length, "vocab_size": 49408, "width": width, "heads": 4,
                         "layers": layers}}


def write_open_clip(out: Path, seed: int) -> None:
    import open_clip

    from common.models.clip import save_open_clip

    cfg = open_clip_tiny_config()
    torch.manual_seed(seed)
    model = open_clip.CLIP(**cfg)
    save_open_clip(model, cfg, out)


BUILDERS: dict[str, Callable] = {
    "llava": tiny_llava,
    "llava_next": tiny_llava_next,
    "blip2": tiny_blip2,
    "instructblip": tiny_instructblip,
    "hf": tiny_llava,  # any AutoModelForImageTextToText checkpoint; a Llava is one
    "clip": tiny_hf_clip,
}
TINY_FAMILIES = [*BUILDERS, "open_clip"]


def write_tiny(family: str, out: str | Path, seed: int = 0, layout: str = "hf") -> Path:
    """Build the tiny checkpoint of ``family`` with ``seed`` and save it under ``out``.

    ``layout="official"`` writes the original project's checkpoint layout instead (families in OFFICIAL_WRITERS).
    """
    out = Path(out)
    if layout == "official":
        if family not in OFFICIAL_WRITERS:
            raise LetheError(f"no official layout for {family!r}; it exists for: {', '.join(OFFICIAL_WRITERS)}")
        torch.manual_seed(seed)
        OFFICIAL_WRITERS[family](out)
        return out
    if layout != "hf":
        raise LetheError(f"unknown layout {layout!r}; valid: hf, official")
    if family == "open_clip":
        write_open_clip(out, seed)
        return out
    if family not in BUILDERS:
        raise LetheError(f"unknown family {family!r}; tiny checkpoints exist for: {', '.join(TINY_FAMILIES)}")
    torch.manual_seed(seed)
    model, proc = BUILDERS[family]()
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return out


@cli_main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m common.tiny", description=__doc__.splitlines()[0])
    ap.add_argument("--family", required=True, help=f"one of: {', '.join(TINY_FAMILIES)}")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layout", default="hf", choices=["hf", "official"],
                    help="hf (default) or the original project's checkpoint layout (minigpt4, owl, share4v, llava)")
    a = ap.parse_args(argv)
    path = write_tiny(a.family, a.out, a.seed, a.layout)
    print(f"wrote tiny {a.family} checkpoint{' (official layout)' if a.layout == 'official' else ''} to {path}")
    return 0


# ---------------------------------------------------------------------------------------------------------------------
# MiniGPT-4, mPLUG-Owl, ShareGPT4V: tiny checkpoints in our layout and in the original projects' layouts.
# The official layouts use the real key names and tensor roles at tiny sizes, and a Llama SentencePiece tokenizer
# (tokenizer.model, no "legacy" key) as the original LLM dirs ship it, so loading them exercises the legacy flag and
# the chunk-by-chunk tokenization of the official pipelines; the hf-layout tiny checkpoint of each family is the
# converter's output for its official tiny checkpoint, so both describe the same weights and tokenizer.

LLAMA_TOKENIZER_CONFIG = {  # a LLaMA-1 / Llama-2 era tokenizer_config.json: no "legacy" key (unset or nonexistent)
    "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
    "pad_token": None, "clean_up_tokenization_spaces": False, "model_max_length": 2048, "padding_side": "right",
    "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer"}


def llama_sentencepiece_model(vocab_size: int = 600, corpus: Iterable[str] | None = None) -> bytes:
    """A SentencePiece BPE model trained in-process (deterministic) with the settings of Llama's tokenizer.model:
    byte fallback, a dummy prefix ("▁" before the text), digits split, identity normalisation, whitespace kept,
    <unk>=0, <s>=1, </s>=2, no pad piece."""
    import io

    import sentencepiece as spm

    lines = list(corpus) if corpus is not None else _BASE_CORPUS.splitlines()
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buf, model_type="bpe",
                                   vocab_size=vocab_size, hard_vocab_limit=False, byte_fallback=True,
                                   add_dummy_prefix=True, split_digits=True, remove_extra_whitespaces=False,
                                   normalization_rule_name="identity", allow_whitespace_only_pieces=True,
                                   unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2)
    return buf.getvalue()


def write_llama_tokenizer(out: Path, vocab_size: int = 600, model: bytes | None = None) -> None:
    """The tokenizer files of an official LLaMA / Llama-2 / Vicuna dir: ``tokenizer.model`` (SentencePiece),
    ``tokenizer_config.json`` without a ``legacy`` key, ``special_tokens_map.json``."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.model").write_bytes(model if model is not None else llama_sentencepiece_model(vocab_size))
    (out / "tokenizer_config.json").write_text(json.dumps(LLAMA_TOKENIZER_CONFIG, indent=2))
    (out / "special_tokens_map.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>",
                                                             "unk_token": "<unk>"}, indent=2))


def llama_style_tokenizer(vocab_size: int = 600):
    """The official-layout Llama tokenizer (:func:`write_llama_tokenizer`) as the converters load it: a SentencePiece
    Llama tokenizer with <unk>=0, <s>=1, </s>=2, BOS prepended, legacy, no pad token, no image token."""
    import tempfile

    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as d:
        write_llama_tokenizer(Path(d), vocab_size)
        return AutoTokenizer.from_pretrained(d, legacy=True)


def _tiny_llama(hidden: int = 64, layers: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = llama_style_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=None)
    model = LlamaForCausalLM(cfg)
    _finish(model, tok)
    return model, tok


def _rotary_buffers(layers: int, hidden: int, heads: int = 4, prefix: str = "model.") -> dict:
    """The ``rotary_emb.inv_freq`` buffers transformers 4.2x/4.3x saved in every LLaMA checkpoint."""
    dim = hidden // heads
    inv = 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))
    return {f"{prefix}layers.{i}.self_attn.rotary_emb.inv_freq": inv.clone() for i in range(layers)}


def _rand(*shape: int, std: float = 0.05) -> torch.Tensor:
    return torch.randn(*shape) * std


def write_official_minigpt4(out: Path, width: int = 176, depth: int = 2, image_size: int = 56, patch: int = 14) -> None:
    """``eva_vit_g.pth`` (LAVIS EVA ViT keys) + ``pretrained_minigpt4.pth`` ({"model": llama_proj}) + a Llama dir.

    Width 176 keeps EVA's head size 88 (2 heads); depth 2; MLP int(width * 4.3637) as create_eva_vit_g.
    """
    out.mkdir(parents=True, exist_ok=True)
    mlp = int(width * 4.3637)
    grid = image_size // patch
    eva = {"cls_token": _rand(1, 1, width, std=0.02), "pos_embed": _rand(1, grid * grid + 1, width, std=0.02),
           "patch_embed.proj.weight": _rand(width, 3, patch, patch, std=0.02), "patch_embed.proj.bias": _rand(width)}
    for i in range(depth):
        b = f"blocks.{i}."
        eva.update({b + "norm1.weight": 1 + _rand(width, std=0.1), b + "norm1.bias": _rand(width),
                    b + "attn.q_bias": _rand(width, std=0.1), b + "attn.v_bias": _rand(width, std=0.1),
                    b + "attn.qkv.weight": _rand(3 * width, width), b + "attn.proj.weight": _rand(width, width),
                    b + "attn.proj.bias": _rand(width), b + "norm2.weight": 1 + _rand(width, std=0.1),
                    b + "norm2.bias": _rand(width), b + "mlp.fc1.weight": _rand(mlp, width), b + "mlp.fc1.bias": _rand(mlp),
                    b + "mlp.fc2.weight": _rand(width, mlp), b + "mlp.fc2.bias": _rand(width)})
    torch.save(eva, out / "eva_vit_g.pth")
    llm, tok = _tiny_llama()
    hidden = llm.config.hidden_size
    torch.save({"model": {"llama_proj.weight": _rand(hidden, 4 * width, std=0.02), "llama_proj.bias": _rand(hidden)}},
               out / "pretrained_minigpt4.pth")
    llm.save_pretrained(out / "Llama-2-7b-chat-hf")
    write_llama_tokenizer(out / "Llama-2-7b-chat-hf", len(tok))


def _owl_official_config(text: dict) -> dict:
    return {"model_type": "mplug-owl", "architectures": ["MplugOwlForConditionalGeneration"], "num_query_tokens": 8,
            "vision_config": {"model_type": "mplug_owl_vision_model", "hidden_size": 64, "intermediate_size": 128,
                              "projection_dim": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                              "num_channels": 3, "image_size": 32, "patch_size": 8, "hidden_act": "quick_gelu",
                              "layer_norm_eps": 1e-6, "attention_dropout": 0.0, "initializer_range": 0.02,
                              "initializer_factor": 1.0, "use_flash_attn": False},
            "visual_abstractor_config": {"model_type": "mplug_owl_visual_abstract", "hidden_size": 64,
                                         "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 96,
                                         "attention_probs_dropout_prob": 0.1, "initializer_range": 0.02,
                                         "layer_norm_eps": 1e-6, "encoder_hidden_size": 64},
            "text_config": text}


def write_official_owl(out: Path) -> None:
    """The MAGAer13/mplug-owl-llama-7b layout: config.json (model_type mplug-owl), pytorch_model.bin with the official
    module names (+ rotary buffers), a LLaMA tokenizer and a CLIP-style preprocessor_config.json."""
    import json

    from transformers import CLIPImageProcessor

    from common.convert.core import llama_text_config
    from common.models.owl import OwlConfig, OwlForConditionalGeneration

    out.mkdir(parents=True, exist_ok=True)
    llm, tok = _tiny_llama()
    text = llama_text_config(llm.config.to_dict())
    cfg = _owl_official_config(text)
    strip = lambda d: {k: v for k, v in d.items() if k != "model_type"}  # noqa: E731
    ours = OwlConfig(vision_config=strip(cfg["vision_config"]),
                     visual_abstractor_config=strip(cfg["visual_abstractor_config"]), text_config=text,
                     num_query_tokens=cfg["num_query_tokens"], image_token_id=len(tok))
    model = OwlForConditionalGeneration(ours)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state.update(_rotary_buffers(text["num_hidden_layers"], text["hidden_size"], prefix="language_model.model."))
    torch.save(state, out / "pytorch_model.bin")
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    write_llama_tokenizer(out, len(tok))
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(out)


def _write_official_llava(out: Path, model_type: str, tower_id: str) -> None:
    """An original LLaVA-1.5-style dir: Llama config + mm_* fields, pytorch_model.bin with ``model.*``,
    ``lm_head.weight``, ``model.mm_projector.{0,2}.*`` and rotary buffers; the CLIP tower in a subdir named like the
    last part of ``mm_vision_tower``."""
    import json

    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    out.mkdir(parents=True, exist_ok=True)
    llm, tok = _tiny_llama()
    hidden, layers = llm.config.hidden_size, llm.config.num_hidden_layers
    vcfg = CLIPVisionConfig(**_clip_vision(64, 2, 32, 8))
    tower_dir = out / tower_id.split("/")[-1]
    tower_dir.mkdir()
    vcfg.save_pretrained(tower_dir)  # the released towers were saved by transformers 4.x: "vision_model." prefix
    torch.save({f"vision_model.{k}": v.contiguous() for k, v in CLIPVisionModel(vcfg).state_dict().items()},
               tower_dir / "pytorch_model.bin")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(tower_dir)
    state = {k: v.contiguous() for k, v in llm.state_dict().items()}
    state.update({"model.mm_projector.0.weight": _rand(hidden, vcfg.hidden_size, std=0.02),
                  "model.mm_projector.0.bias": _rand(hidden), "model.mm_projector.2.weight": _rand(hidden, hidden),
                  "model.mm_projector.2.bias": _rand(hidden)})
    state.update(_rotary_buffers(layers, hidden))
    torch.save(state, out / "pytorch_model.bin")
    arch = {"llava": "LlavaLlamaForCausalLM", "share4v": "Share4VLlamaForCausalLM"}[model_type]
    cfg = {k: v for k, v in llm.config.to_dict().items() if k not in ("dtype", "transformers_version")}
    cfg.update({"architectures": [arch], "model_type": model_type, "mm_vision_tower": tower_id,
                "mm_hidden_size": vcfg.hidden_size, "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2,
                "mm_vision_select_feature": "patch", "image_aspect_ratio": "pad", "mm_use_im_start_end": False,
                "mm_use_im_patch_token": False, "tune_mm_mlp_adapter": False, "freeze_mm_mlp_adapter": False,
                "use_mm_proj": True, "torch_dtype": "float32"})
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    write_llama_tokenizer(out, len(tok))


def write_official_share4v(out: Path) -> None:
    _write_official_llava(out, "share4v", "Lin-Chen/ShareGPT4V-7B_Pretrained_vit-large336-l12")


def write_official_llava(out: Path) -> None:
    _write_official_llava(out, "llava", "openai/clip-vit-large-patch14-336")


def _from_official(writer: Callable, convert: Callable, model_cls):
    """Build the hf-layout tiny model: write the official tiny layout, convert it, load the converted tensors."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        writer(Path(tmp) / "official")
        config, state, proc, _ = convert(Path(tmp) / "official")
    model = model_cls(config)
    model.load_state_dict(state, strict=True)
    model.eval()
    tok = proc.tokenizer
    _finish(model, tok)
    return model, proc


def tiny_minigpt4():
    from common.convert.minigpt4 import convert_official
    from common.models.minigpt4 import MiniGPT4ForConditionalGeneration

    return _from_official(write_official_minigpt4, convert_official, MiniGPT4ForConditionalGeneration)


def tiny_owl():
    from common.convert.owl import convert_official
    from common.models.owl import OwlForConditionalGeneration

    return _from_official(write_official_owl, convert_official, OwlForConditionalGeneration)


def tiny_share4v():
    from transformers import LlavaForConditionalGeneration

    from common.convert.llava import convert_original

    return _from_official(write_official_share4v, convert_original, LlavaForConditionalGeneration)


BUILDERS.update({"minigpt4": tiny_minigpt4, "owl": tiny_owl, "share4v": tiny_share4v})
TINY_FAMILIES.extend(["minigpt4", "owl", "share4v"])
OFFICIAL_WRITERS: dict[str, Callable[[Path], None]] = {
    "minigpt4": write_official_minigpt4, "owl": write_official_owl, "share4v": write_official_share4v,
    "llava": write_official_llava}


if __name__ == "__main__":
    run_cli(main)
