"""BLIP-2 and InstructBLIP: ViT + Q-Former (+ query tokens) + language projection + LLM."""
from __future__ import annotations

from typing import Any

import torch

from common.models.base import VisionLanguageModel


class Blip2VLM(VisionLanguageModel):
    family = "blip2"
    model_types = ("blip-2",)
    vision_paths = ("vision_model",)
    projector_paths = ("language_projection",)
    connector_extra_paths = ("qformer", "query_tokens")
    llm_paths = ("language_model",)
    # The processor prepends the query-token placeholders itself: the text carries no <image>.
    # The BLIP-2 paper's zero-shot VQA prompt for the OPT models (FlanT5: "... Short answer:"); both prompt styles.
    prompt_format = "Question: {prompt} Answer:"
    lora_target_modules = ("q_proj", "k_proj", "v_proj", "out_proj", "o_proj")

    @classmethod
    def model_class(cls):
        from transformers import Blip2ForConditionalGeneration

        return Blip2ForConditionalGeneration

    def _fix_processor(self) -> None:
        # transformers' BLIP-2 processors need image_token as an AddedToken (a str fails at __call__).
        from tokenizers import AddedToken

        tok = getattr(self.processor, "image_token", None)
        if isinstance(tok, str):
            self.processor.image_token = AddedToken(tok, normalized=False, special=True)


class InstructBlipVLM(Blip2VLM):
    family = "instructblip"
    model_types = ("instructblip",)
    prompt_format = "{prompt}"  # LAVIS InstructBLIP: the instruction as is

    @classmethod
    def model_class(cls):
        from transformers import InstructBlipForConditionalGeneration

        return InstructBlipForConditionalGeneration

    def _processor_call(self, images, texts, prompts, training: bool = False, encoded=None) -> dict[str, torch.Tensor]:
        """The Q-Former sees the instruction only, never the answer being trained on."""
        inputs = super()._processor_call(images, texts, prompts, training=training, encoded=encoded)
        q: Any = self.processor.qformer_tokenizer(list(prompts), padding=True, return_tensors="pt")
        inputs["qformer_input_ids"], inputs["qformer_attention_mask"] = q["input_ids"], q["attention_mask"]
        return inputs
