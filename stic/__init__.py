"""STIC (Self-Training on Image Comprehension, Deng et al. 2024): self-constructed preference data, regularized DPO,
description-infused fine-tuning.

Data side (this package's scripts, each also ``python stic/<script>.py``):

- ``generate_pref.py``: stage-1 preference pairs (jsonl), one per image, resumable;
- ``convert_jsonl_to_json.py``: that jsonl -> a JSON list;
- ``generate_des_stage2.py``: image descriptions by the stage-1 model, with the image, resumable;
- ``add_des_to_data.py``: the descriptions infused into LLaVA-format instruction data, matched by image.

Library modules: ``prompts`` (the method's prompt strings), ``corrupt`` (the image corruptions, really applied),
``selfgen`` (what the two generation scripts share: image lists, per-image seeding, the resumable batch loop).
"""
