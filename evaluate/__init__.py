"""Lethe's evaluation suite (this package shadows Hugging Face's ``evaluate``, which Lethe does not use).

Scoring is pure and fast and reproduces the official scorers' numbers: ``chair`` (Rohrbach et al.'s chair.py),
``pope`` (LLaVA's eval_pope.py parsing), ``mme`` (MME's calculation.py), ``gqa`` (LLaVA conversion + GQA eval.py
accuracy), ``sqa`` (LLaVA's eval_science_qa.py), ``qbench`` and ``mmbench`` (option-letter accuracy, MMBench's
circular evaluation). Generation is separate (``runner``) and resumable. Each ``eval_*.py`` is a CLI that runs
as ``python evaluate/eval_x.py`` or ``python -m evaluate.eval_x``.
"""
