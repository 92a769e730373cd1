"""How good is a SimCLR representation? Weighted kNN and a linear probe on the frozen h.

    cut-hf evaluate-simclr --model outputs/simclr --data datasets/simclr_photos
    cut-hf evaluate-simclr --model outputs/simclr --data datasets/simclr_photos --random-init   # baseline

The labelled folder is either ``DIR/train/<class>/*`` + ``DIR/test/<class>/*`` or ``DIR/<class>/*``
(then split per class, ``--test-fraction``, seeded). Images are resized (shorter side) to the
training size and centre-cropped; the encoder runs in eval mode; h is taken before the
projection head, as in the paper.

* kNN: the weighted vote of InstDisc (Wu et al., 2018), also used by MoCo: cosine similarity to
  the k nearest training features, each neighbour votes exp(sim / T) for its class; k 200
  (capped at the training set size), T 0.1.
* Linear probe: multinomial logistic regression (L2, scikit-learn's lbfgs) on standardised h.

Prints a table and writes the numbers to a JSON file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import InterpolationMode

from cut_hf.data.sources import DataError
from cut_hf.images import ImageLoadError, find_images, open_image, to_channels
from cut_hf.models.simclr import SimCLR
from cut_hf.perf import default_device

logger = logging.getLogger(__name__)

TRAIN_NAMES, TEST_NAMES = ("train",), ("test", "val", "validation")


@dataclass
class LabelledImages:
    """Image files and their class indices (into ``classes``)."""

    paths: list[Path]
    labels: list[int]
    classes: list[str]


def _class_folders(root: Path) -> dict[str, list[Path]]:
    """``{class name: sorted image files}`` for each subfolder of ``root`` (:func:`~cut_hf.images.find_images`)."""
    return {sub.name: find_images(sub) for sub in sorted(p for p in root.iterdir()
                                                         if p.is_dir() and not p.name.startswith("."))}


def load_labelled(
    data_dir: str | Path, test_fraction: float = 0.2, seed: int = 0
) -> tuple[LabelledImages, LabelledImages]:
    """(train, test) from ``DIR/train/<class>``, ``DIR/test/<class>`` or ``DIR/<class>`` (split per class).

    Raises :class:`~cut_hf.data.sources.DataError` with a one-line reason for a missing folder, no classes,
    an empty class, a single class or test classes unknown to the training split.
    """
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"labelled data folder {str(root)!r} does not exist or is not a directory")
    train_dir = next((root / n for n in TRAIN_NAMES if (root / n).is_dir()), None)
    test_dir = next((root / n for n in TEST_NAMES if (root / n).is_dir()), None)
    if train_dir is not None and test_dir is not None:
        train, test = _class_folders(train_dir), _class_folders(test_dir)
        unknown = sorted(set(test) - set(train))
        if unknown:
            raise DataError(f"{test_dir} has classes the training split lacks: {unknown[:5]}")
    else:
        if not 0 < test_fraction < 1:
            raise DataError(f"--test-fraction must be in (0, 1), got {test_fraction}")
        every = _class_folders(root)
        rng = np.random.default_rng(seed)
        train, test = {}, {}
        for name, files in every.items():
            order = rng.permutation(len(files))
            n_test = max(1, round(test_fraction * len(files))) if len(files) > 1 else 0
            test[name] = sorted(files[i] for i in order[:n_test])
            train[name] = sorted(files[i] for i in order[n_test:])
    where = f"{train_dir or root}"
    if not train:
        raise DataError(f"{where} has no class subfolders: expected DIR/<class>/images or "
                        "DIR/train/<class>/ and DIR/test/<class>/")
    empty = [c for c, files in train.items() if not files]
    if empty:
        raise DataError(f"class folder(s) {empty[:5]} in {where} hold no images")
    if len(train) < 2:
        raise DataError(f"{where} has a single class ({next(iter(train))!r}); classification needs at least two")
    if not any(test.values()):
        raise DataError(f"no test images found under {root}")
    classes = sorted(train)
    index = {c: i for i, c in enumerate(classes)}

    def flatten(split: dict[str, list[Path]]) -> LabelledImages:
        pairs = [(f, index[c]) for c in classes for f in split.get(c, [])]
        return LabelledImages([p for p, _ in pairs], [y for _, y in pairs], classes)

    return flatten(train), flatten(test)


def preprocess(image: Image.Image, size: int) -> torch.Tensor:
    """Any PIL image -> (3, size, size) float in [0, 1]: shorter side resized (bicubic), centre crop."""
    x = TF.pil_to_tensor(to_channels(image, 3))  # (3, H, W) uint8
    x = TF.resize(x, [size], interpolation=InterpolationMode.BICUBIC, antialias=True)
    x = TF.center_crop(x, [size, size])
    return TF.to_dtype(x, torch.float32, scale=True)


@torch.inference_mode()
def extract_features(model: SimCLR, paths: list[Path], image_size: int, batch_size: int = 256,
                     device: str | torch.device = "cpu") -> tuple[torch.Tensor, list[int]]:
    """h for each readable image: ((M, feature_dim) float32 on the CPU, indices of the M images read).

    Unreadable files are skipped with a warning; the returned indices say which images were kept.
    """
    model.eval().to(device)
    feats: list[torch.Tensor] = []
    kept: list[int] = []
    batch: list[torch.Tensor] = []
    batch_idx: list[int] = []

    def flush() -> None:
        if batch:
            x = torch.stack(batch).to(device)  # (B, 3, S, S)
            feats.append(model.encode(x).float().cpu())
            kept.extend(batch_idx)
            batch.clear()
            batch_idx.clear()

    for i, path in enumerate(paths):
        try:
            batch.append(preprocess(open_image(path), image_size))  # decoded, EXIF applied, size-checked
            batch_idx.append(i)
        except (ImageLoadError, OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
            logger.warning("skipping unreadable image %s: %s", path, e)
            continue
        if len(batch) == batch_size:
            flush()
    flush()
    dim = model.feature_dim
    return (torch.cat(feats) if feats else torch.empty(0, dim)), kept


def knn_predict(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor, num_classes: int,
                k: int = 200, temperature: float = 0.1, chunk: int = 1024) -> torch.Tensor:
    """Weighted kNN (InstDisc / MoCo): each of the k most cosine-similar training features votes exp(sim / T).

    Args:
        train_feats: (N, D); train_labels: (N,) int64; test_feats: (M, D).
        k: neighbours, capped at N.
    Returns:
        (M,) predicted class indices.
    """
    train = torch.nn.functional.normalize(train_feats.float(), dim=1)
    k = min(k, train.shape[0])
    preds = []
    for start in range(0, test_feats.shape[0], chunk):
        q = torch.nn.functional.normalize(test_feats[start:start + chunk].float(), dim=1)  # (m, D)
        sim, idx = (q @ train.t()).topk(k, dim=1)  # (m, k)
        votes = torch.zeros(q.shape[0], num_classes)
        votes.scatter_add_(1, train_labels[idx], (sim / temperature).exp())  # (m, C)
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)


def linear_probe(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                 c: float = 1.0, max_iter: int = 2000) -> torch.Tensor:
    """Logistic regression on standardised features (fitted on the training split only) -> (M,) predictions."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_feats.numpy())
    clf = LogisticRegression(C=c, max_iter=max_iter)
    clf.fit(scaler.transform(train_feats.numpy()), train_labels.numpy())
    return torch.from_numpy(clf.predict(scaler.transform(test_feats.numpy()))).long()


def default_image_size(model: SimCLR) -> int:
    """32 for the CIFAR stem, else 224."""
    return 32 if model.cifar_stem else 224


def evaluate(model: SimCLR, data_dir: str | Path, image_size: int | None = None, k: int = 200,
             knn_temperature: float = 0.1, probe_c: float = 1.0, batch_size: int = 256,
             device: str | torch.device | None = None, test_fraction: float = 0.2, seed: int = 0) -> dict[str, Any]:
    """kNN and linear-probe top-1 accuracy of ``model``'s h on a labelled folder; a JSON-ready dict."""
    device = device or default_device()
    size = image_size or default_image_size(model)
    train, test = load_labelled(data_dir, test_fraction, seed)
    was_training = model.training
    train_f, train_kept = extract_features(model, train.paths, size, batch_size, device)
    test_f, test_kept = extract_features(model, test.paths, size, batch_size, device)
    model.train(was_training)
    if len(train_kept) == 0 or len(test_kept) == 0:
        raise DataError(f"no readable images in the {'training' if not train_kept else 'test'} split of {data_dir}")
    train_y = torch.tensor([train.labels[i] for i in train_kept])
    test_y = torch.tensor([test.labels[i] for i in test_kept])
    knn = knn_predict(train_f, train_y, test_f, len(train.classes), k, knn_temperature)
    lin = linear_probe(train_f, train_y, test_f, c=probe_c)
    return {
        "knn_top1": float((knn == test_y).float().mean()),
        "linear_top1": float((lin == test_y).float().mean()),
        "k": min(k, len(train_kept)),
        "knn_temperature": knn_temperature,
        "probe_c": probe_c,
        "num_train": len(train_kept),
        "num_test": len(test_kept),
        "skipped_files": (len(train.paths) - len(train_kept)) + (len(test.paths) - len(test_kept)),
        "num_classes": len(train.classes),
        "chance": float(torch.bincount(test_y, minlength=len(train.classes)).max() / len(test_y)),
        "image_size": size,
        "feature_dim": model.feature_dim,
    }
