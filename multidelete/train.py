"""Step 1 of MultiDelete: train the original model on a retrieval task — CLIP's contrastive loss on every train
pair (Df and Dr together), the model that unlearning then starts from and keeps as its teacher.

    python multidelete/train.py --cfg-path configs/clip/retrieval_toy.yaml --learning_rate 1e-4 \\
        --num_train_epochs 2 --per_device_train_batch_size 64 --output_dir output/original/clip/toy_retrieval
    python multidelete/unlearn.py --cfg-path ... --clip_ckpt_load_path output/original/clip/toy_retrieval ...

Same flags, Trainer, checkpoints, resume and final evaluation as ``unlearn.py`` (whose ``ft`` this is, on all
the train pairs instead of Dr).
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: import from the repo root, never from this script's folder
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401, E702

from common.errors import cli_main, run_cli
from multidelete.unlearn import run


@cli_main
def main(argv: list[str] | None = None) -> int:
    return run(argv, original=True)


if __name__ == "__main__":
    run_cli(main)
