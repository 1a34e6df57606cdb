"""Shared CLIP image–text retrieval layer (MultiDelete's CLIP unlearning, SLUG): splits, Df/Dr selection, metrics.

    from common.retrieval import load_karpathy, sample_forget, embed_split, recall_at_k, df_dr_auroc
    split = load_karpathy("dataset_coco.json", "coco/images", "test")
    df, dr = sample_forget(split, df_size=500, seed=42)
    img, txt = embed_split(clip, split, cache_path="emb/test.safetensors")
    recall_at_k(img, txt, split.img2txt, split.txt2img)   # fractions in [0, 1]
"""
from common.retrieval.data import (KARPATHY_SPLITS, SALMUBENCH_SPLITS, BytesImage, DatasetImage, ImageSource,
                                   RetrievalSplit, forget_by_concepts, forget_by_keys, load_coco_captions,
                                   load_karpathy, load_salmubench, load_toy_retrieval, read_key_list, sample_forget)
from common.retrieval.metrics import (chance_recall, df_dr_auroc, embed_split, membership_inference,
                                      model_fingerprint, pair_scores, recall_at_k, retrieval_ranks, split_fingerprint)

__all__ = [
    "KARPATHY_SPLITS", "SALMUBENCH_SPLITS", "BytesImage", "DatasetImage", "ImageSource", "RetrievalSplit",
    "forget_by_concepts", "forget_by_keys", "load_coco_captions", "load_karpathy", "load_salmubench",
    "load_toy_retrieval", "read_key_list", "sample_forget", "chance_recall", "df_dr_auroc", "embed_split",
    "membership_inference", "model_fingerprint", "pair_scores", "recall_at_k", "retrieval_ranks", "split_fingerprint",
]
