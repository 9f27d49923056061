"""Train × eval matrix of modality separability across datasets (Topological Perspectives, Table I, Fig. 2).

For every training set ``A`` and evaluation set ``B`` (datasets embedded by the same model), a
classifier from :func:`clipgeo.geometry.separability.fit_modality_classifier` (optional PCA →
standardisation → soft-margin linear SVM, image = positive class) is fitted on the *training
split* of ``A`` and scored with :func:`clipgeo.geometry.separability.evaluate_classifier` on the
*test split* of ``B``. Splits come from :func:`clipgeo.geometry.separability.modality_split`
with the same ``test_fraction`` and ``seed`` for every set (by pair when the set's arrays are
row-aligned, so an image and its caption never straddle the split), so the diagonal (``A = B``)
is the usual held-out score and every off-diagonal cell of a column is scored on the very same
vectors. An evaluation set that is not a training set is split the same way and scored on its
test split.

Variants (rows): raw or L2-normalised vectors (``normalized``), all ``d`` features or only the
top ``pca_components`` principal components of the training data (``n_features``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from clipgeo.core.arrays import check_modalities, normalize_rows
from clipgeo.geometry.separability import (
    evaluate_classifier,
    fit_modality_classifier,
    modality_split,
)

__all__ = ["separability_matrix"]


def _stack(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    X = np.concatenate([a, b], axis=0)
    y = np.concatenate([np.ones(a.shape[0], dtype=np.int64), np.zeros(b.shape[0], dtype=np.int64)])
    return X, y


def separability_matrix(
    train_sets: Mapping[str, tuple[np.ndarray, np.ndarray]],
    eval_sets: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    *,
    normalized: Sequence[bool] = (False, True),
    pca_components: Sequence[int | None] = (None, 2),
    test_fraction: float = 0.3,
    seed: int = 0,
    C: float = 1.0,
    paired: bool | None = None,
) -> pl.DataFrame:
    """Separability of image vs text vectors for every (train set, eval set, variant).

    ``train_sets`` / ``eval_sets``: ``{name: (img, txt)}``; ``eval_sets=None`` means the training
    sets. ``paired=None``: a set is split by pair exactly when ``len(img) == len(txt)`` (as
    :func:`clipgeo.geometry.separability.linear_separability`).

    Returns one row per (train_set, eval_set, normalized, n_features): ``train_set, eval_set,
    same_set`` (train = eval), ``normalized`` (bool), ``n_features`` (PCA components, or d),
    ``pca`` (bool), ``accuracy, precision, recall`` (on the eval set's test split),
    ``n_train, n_test``. Raises ``ValueError`` for bad vectors or when the sets' dimensions differ.
    """
    if not train_sets:
        raise ValueError("train_sets is empty")
    eval_sets = train_sets if eval_sets is None else eval_sets
    if not eval_sets:
        raise ValueError("eval_sets is empty")

    splits: dict[str, dict] = {}
    data: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    dims = set()
    for name, pair in {**eval_sets, **train_sets}.items():
        if name in data:
            continue
        img, txt = check_modalities(*pair, min_rows=2)
        dims.add(img.shape[1])
        data[name] = (img, txt)
        pr = img.shape[0] == txt.shape[0] if paired is None else paired
        splits[name] = modality_split(
            img.shape[0], txt.shape[0], test_fraction=test_fraction, paired=pr, seed=seed
        )
    if len(dims) > 1:
        raise ValueError(f"all sets must have the same dimension (one model), got {sorted(dims)}")

    def part(name: str, norm: bool, which: str) -> tuple[np.ndarray, np.ndarray]:
        img, txt = data[name]
        sp = splits[name]
        a, b = img[sp[f"img_{which}"]], txt[sp[f"txt_{which}"]]
        if norm:
            a, b = normalize_rows(a, "img"), normalize_rows(b, "txt")
        return _stack(a, b)

    rows = []
    for norm in normalized:
        tests = {name: part(name, bool(norm), "test") for name in eval_sets}
        for tname in train_sets:
            X_tr, y_tr = part(tname, bool(norm), "train")
            for k in pca_components:
                clf = fit_modality_classifier(X_tr, y_tr, pca_components=k, seed=seed, C=C)
                for ename in eval_sets:
                    X_te, y_te = tests[ename]
                    res = evaluate_classifier(clf, X_te, y_te)
                    rows.append({
                        "train_set": tname, "eval_set": ename, "same_set": tname == ename,
                        "normalized": bool(norm),
                        "n_features": int(k) if k is not None else int(X_tr.shape[1]),
                        "pca": k is not None,
                        "accuracy": res["accuracy"], "precision": res["precision"],
                        "recall": res["recall"], "n_train": int(y_tr.shape[0]),
                        "n_test": int(res["n"]),
                    })
    return pl.DataFrame(rows)
