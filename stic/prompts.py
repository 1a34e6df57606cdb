"""STIC's prompts, exactly as the original ``stic/generate_pref.py`` has them.

- :data:`DETAILED_PROMPT`: the step-by-step description prompt; its answer on the clean image is the preferred one.
- :data:`PLAIN_PROMPTS`: the 8 plain description prompts; a pair is stored under one of them (the model learns to
  answer *plain* prompts in detail), and stage 2 describes images with one of them.
- :data:`HALLUCINATION_PROMPTS`: the 8 hallucination-inducing prompts (one kind of dispreferred answer).
- :data:`DAR_PROMPT`: the describe step of describe-and-respond, owned by ``evaluate.runner`` and re-exported here.
"""
from __future__ import annotations

from evaluate.runner import DAR_PROMPT

# The original string's continuation lines carry 4 leading spaces (an indented triple-quoted literal).
DETAILED_PROMPT = "\n    ".join([
    "Please provide a detailed description of the image, focusing on the following.",
    "Identify the main subjects (people, animals, objects) in the image and describe what they are doing.",
    "Describe the setting of the image. Is it indoors or outdoors? What kind of environment or location does it "
    "depict?",
    "What mood does the image convey? Are there any specific elements (such as lighting, weather, expressions) that "
    "contribute to this atmosphere?",
    "Describe the dominant colors and the overall composition. How do these elements affect the image's impact?",
    "Point out any details or symbols that might be relevant to understanding the image's meaning or context.",
    "If applicable, provide interpretations of what the image might represent or communicate.",
])

PLAIN_PROMPTS: tuple[str, ...] = (
    "Illustrate the details of the picture.",
    "Summarize the visual content presented.",
    "Explain what is depicted in the photograph.",
    "Outline the key elements captured in the image.",
    "Detail the composition and subjects within the frame.",
    "Convey the atmosphere and mood represented in the snapshot.",
    "Interpret the scene shown in the image.",
    "Identify and describe the main focal points in the visual.",
)

HALLUCINATION_PROMPTS: tuple[str, ...] = (
    "Describe the image with imaginative objects that may exist in the scene.",
    "Enrich the description by adding hypothetical objects or characters that could be part of the scene.",
    "Suggest and detail practical items or people that could logically inhabit the image's setting.",
    "Incorporate elements that, though absent, would seamlessly fit into the context of the picture.",
    "Imagine and describe additional everyday objects or activities taking place just out of frame.",
    "Augment the scene with details of potential events or items that are plausible.",
    "Conceive of and detail natural elements, such as weather or animals, that could realistically enter the scene. "
    "Make the description affirmative.",
    "Invent and incorporate details of practical tools, vehicles, or gadgets that could be expected in a similar "
    "scenario.",
)

__all__ = ["DAR_PROMPT", "DETAILED_PROMPT", "HALLUCINATION_PROMPTS", "PLAIN_PROMPTS"]
