"""LLaVA-1.5 (``LlavaForConditionalGeneration``) and LLaVA-1.6 (``LlavaNextForConditionalGeneration``).

Prompts (``prompt_style="official"``, the default) are the conversations of haotian-liu/LLaVA
``llava/conversation.py`` that the papers trained and evaluated with, tokenized as its ``tokenizer_image_token`` does
(split on ``<image>``, each chunk on its own, BOS only on the first):

- LLaVA-1.5 / ShareGPT4V / EFUF: ``conv_vicuna_v1`` (``--version v1`` in training, ``--conv-mode vicuna_v1`` in the
  evaluation scripts): ``"{system} USER: <image>\\n{prompt} ASSISTANT:"``, the answer after a space, ended by ``</s>``.
- LLaVA-1.6: ``vicuna_v1`` for the Vicuna LLMs, ``mistral_instruct`` (``"[INST] <image>\\n{prompt} [/INST]"``) for
  Mistral, ``chatml_direct`` for the 34B (Nous-Hermes-2-Yi, ChatML tokens).

``prompt_style="hf"`` uses the processor's chat template (llava-hf: no system sentence) in one tokenizer pass.
"""
from __future__ import annotations

from common.models.base import VisionLanguageModel

# conv_vicuna_v1 of llava/conversation.py (sep " ", sep2 "</s>"); EFUF's args.py has the same string
VICUNA_V1_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives "
                    "helpful, detailed, and polite answers to the user's questions.")
VICUNA_V1_PROMPT = VICUNA_V1_SYSTEM + " USER: <image>\n{prompt} ASSISTANT:"
# conv_mistral_instruct (LLAMA_2 style, empty system, sep ""): "[INST] {message} [/INST]"
MISTRAL_INSTRUCT_PROMPT = "[INST] <image>\n{prompt} [/INST]"
# conv_chatml_direct (MPT style): system + "<|im_end|>", "<|im_start|>user\n{message}<|im_end|>", the assistant role
CHATML_DIRECT_PROMPT = ("<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n<image>\n{prompt}"
                        "<|im_end|><|im_start|>assistant\n")


class LlavaVLM(VisionLanguageModel):
    family = "llava"
    model_types = ("llava",)  # the Hugging Face layout (the original layout: share4v converts it)
    prompt_format = "USER: <image>\n{prompt} ASSISTANT:"  # llava-hf's format, for a processor without a template
    official_prompt_format = VICUNA_V1_PROMPT
    official_segmentwise = True

    @classmethod
    def model_class(cls):
        from transformers import LlavaForConditionalGeneration

        return LlavaForConditionalGeneration

    def remap_legacy_key(self, key: str) -> str | None:
        """Keys of the original LLaVA code (as in EFUF's ``llava-efuf-7b.pth``) → HF Llava keys."""
        if key.endswith("rotary_emb.inv_freq"):
            return None
        for old, new in (("model.mm_projector.0.", "model.multi_modal_projector.linear_1."),
                         ("model.mm_projector.2.", "model.multi_modal_projector.linear_2.")):
            if key.startswith(old):
                return new + key[len(old):]
        return key


class LlavaNextVLM(LlavaVLM):
    family = "llava_next"
    model_types = ("llava_next",)
    prompt_format = "[INST] <image>\n{prompt} [/INST]"
    connector_extra_paths = ("model.image_newline",)

    @classmethod
    def model_class(cls):
        from transformers import LlavaNextForConditionalGeneration

        return LlavaNextForConditionalGeneration

    @property
    def official_prompt_format(self) -> str | None:  # type: ignore[override]
        """The LLaVA-1.6 conversation of this checkpoint's LLM (as llava/serve/cli.py picks it, with ``vicuna_v1``
        for the Vicuna models as in the evaluation scripts); None (the chat template) for an LLM LLaVA-1.6 never
        shipped."""
        text_config = getattr(self.base.config, "text_config", None)
        kind = getattr(text_config, "model_type", None)
        if kind == "mistral":
            return MISTRAL_INSTRUCT_PROMPT
        if "<|im_start|>" in self.tokenizer.get_vocab():
            return CHATML_DIRECT_PROMPT
        if kind == "llama":
            return VICUNA_V1_PROMPT
        return None
