"""Tiny random checkpoints of the real model classes, built fully offline.

``python -m common.tiny --family llava --out DIR [--seed 0]`` writes a directory that loads exactly like a real
checkpoint (``load_model("llava", DIR)``): model weights (safetensors), config, a byte-level BPE tokenizer trained
in-process on a small built-in corpus, an image processor and a processor with a chat template in the family's
real format. Tests and benchmarks use these; nothing in the product knows they are tiny.
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


def tiny_llava_next(hidden=64, layers=2, image_size=32, patch=8):
    from transformers import (LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextImageProcessor,
                              LlavaNextProcessor)

    tok = build_tokenizer(chat_template=LLAVA_NEXT_CHAT_TEMPLATE)
    pins = [[image_size, image_size], [image_size, 2 * image_size], [2 * image_size, image_size],
            [2 * image_size, 2 * image_size]]
    cfg = LlavaNextConfig(vision_config=dict(model_type="clip_vision_model", **_clip_vision(hidden, layers, image_size, patch)),
                          text_config=_text_config(tok, hidden, layers, "mistral"),
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


def write_tiny(family: str, out: str | Path, seed: int = 0) -> Path:
    """Build the tiny checkpoint of ``family`` with ``seed`` and save it under ``out``."""
    out = Path(out)
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
    a = ap.parse_args(argv)
    path = write_tiny(a.family, a.out, a.seed)
    print(f"wrote tiny {a.family} checkpoint to {path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
