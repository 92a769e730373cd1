"""Card metadata the Hub reads: evaluation scores as ``model-index`` (huggingface_hub's ``EvalResult``).

Training (``--eval-every``) and ``cut-hf evaluate --update-card`` both describe their scores with
:func:`translation_eval_results`, so a model's card lists them the same way whoever measured them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard

__all__ = ["METRIC_NAMES", "add_eval_results", "translation_eval_results"]

#: Score key -> (model-index metric type, its display name). FID and KID are lower-is-better.
METRIC_NAMES = {"fid": ("fid", "FID"), "kid_mean": ("kid", "KID"), "psnr": ("psnr", "PSNR"),
                "ssim": ("ssim", "SSIM")}


def translation_eval_results(scores: Mapping[str, Any], dataset_name: str, dataset_type: str | None = None,
                             split: str | None = None, note: str | None = None) -> list[EvalResult]:
    """One ``EvalResult`` (task image-to-image) per known score in ``scores`` (:data:`METRIC_NAMES`).

    Args:
        scores: e.g. ``{"fid": 61.2, "kid_mean": 0.021}``; other keys and None values are left out.
        dataset_name: what the scores were measured on, in words (a folder name, ``horse2zebra testB``).
        dataset_type: the Hub dataset id when there is one (else ``dataset_name``).
        split: the split, where it has a name.
        note: said after each metric's name, e.g. ``tiny test features, not comparable``.
    """
    return [EvalResult(task_type="image-to-image", dataset_type=dataset_type or dataset_name,
                       dataset_name=dataset_name, dataset_split=split, metric_type=kind,
                       metric_name=f"{label} ({note})" if note else label, metric_value=round(float(scores[key]), 6))
            for key, (kind, label) in METRIC_NAMES.items() if scores.get(key) is not None]


def add_eval_results(card_path: str | os.PathLike, results: Sequence[EvalResult], model_name: str) -> None:
    """Put ``results`` in the ``model-index`` of the card at ``card_path``; a result of the same
    metric on the same dataset and split replaces the old one."""
    path = Path(card_path)
    card = ModelCard.load(path)
    new = {(r.metric_type, r.dataset_name, r.dataset_split) for r in results}
    kept = [r for r in card.data.eval_results or [] if (r.metric_type, r.dataset_name, r.dataset_split) not in new]
    card.data.eval_results = kept + list(results)
    card.data.model_name = card.data.model_name or model_name
    card.save(path)
