"""Linear separability of the two modalities (Topological Perspectives, Table I and Fig. 2).

A soft-margin linear SVM (scikit-learn ``LinearSVC``, squared-hinge loss, ``C = 1.0``) is trained
to tell image vectors (label 1, the positive class) from text vectors (label 0); a
``StandardScaler`` fitted on the training part only precedes it, and optionally a PCA to the top
``n`` principal components (also fitted on the training part), as in the paper's "two principal
components suffice" experiment. Held-out accuracy, precision and recall are reported:

* ``accuracy  = (TP + TN) / n``
* ``precision = TP / (TP + FP)``  (of vectors called "image", the share that are images)
* ``recall    = TP / (TP + FN)``  (of image vectors, the share called "image")

(precision/recall are 0 when their denominator is 0).
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.metrics import accuracy_score, precision_score, recall_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from clipgeo.core.arrays import check_fraction, check_matrix, check_modalities

__all__ = [
    "evaluate_classifier",
    "fit_modality_classifier",
    "linear_separability",
    "modality_labels",
    "modality_split",
    "pca_project",
]

IMAGE_LABEL = 1
TEXT_LABEL = 0


def modality_labels(img: np.ndarray, txt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stack the modalities: ``X = [img; txt]``, ``y = [1]*n_img + [0]*n_txt`` (image = 1)."""
    img, txt = check_modalities(img, txt)
    X = np.concatenate([img, txt], axis=0)
    y = np.concatenate(
        [np.full(img.shape[0], IMAGE_LABEL, dtype=np.int64), np.full(txt.shape[0], TEXT_LABEL, dtype=np.int64)]
    )
    return X, y


def _check_xy(X: np.ndarray, y: np.ndarray, *, need_both: bool) -> tuple[np.ndarray, np.ndarray]:
    X = check_matrix(X, "X", min_rows=1)
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise ValueError(f"y: expected shape ({X.shape[0]},), got {y.shape}")
    labels = set(np.unique(y).tolist())
    if not labels <= {0, 1}:
        raise ValueError(f"y: labels must be 1 (image) or 0 (text), got {sorted(labels)}")
    if need_both and labels != {0, 1}:
        raise ValueError("y: training needs both labels, 1 (image) and 0 (text)")
    return X, y.astype(np.int64)


def fit_modality_classifier(
    X: np.ndarray,
    y: np.ndarray,
    *,
    pca_components: int | None = None,
    seed: int = 0,
    C: float = 1.0,
    max_iter: int = 10_000,
    overwrite_x: bool = False,
) -> Pipeline:
    """Fit ``[PCA(pca_components) →] StandardScaler → LinearSVC(C)`` on ``(X, y)``; return the Pipeline.

    The SVM minimises ``½||w||² + C Σ_i max(0, 1 − y'_i (w·z_i + b))²`` (scikit-learn's
    ``LinearSVC`` default squared hinge, ``y' = ±1``) over standardised features ``z``. The
    PCA (``svd_solver="covariance_eigh"``, exact) and the scaler are fitted on ``X`` only, so
    pass training data here and evaluate on held-out data with :func:`evaluate_classifier`.
    ``overwrite_x``: ``X`` is the caller's scratch float64 copy, standardised in place (the same
    fit without a second ``n × d`` float64 copy: the separability section's peak memory).
    """
    X, y = _check_xy(X, y, need_both=True)
    in_place = overwrite_x and pca_components is None and X.dtype == np.float64 and X.flags.c_contiguous
    steps: list[tuple[str, object]] = []
    if pca_components is not None:
        k = int(pca_components)
        if k < 1 or k > min(X.shape):
            raise ValueError(
                f"pca_components must be in [1, min(n, d) = {min(X.shape)}], got {pca_components}"
            )
        steps.append(("pca", PCA(n_components=k, svd_solver="covariance_eigh", random_state=seed)))
    steps.append(("scaler", StandardScaler(copy=not in_place)))
    steps.append(("svm", LinearSVC(C=C, random_state=seed, max_iter=max_iter)))
    return Pipeline(steps).fit(X, y)


def evaluate_classifier(clf: Pipeline, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Accuracy, precision and recall (image = positive class) of ``clf`` on ``(X, y)``, and ``n``."""
    X, y = _check_xy(X, y, need_both=False)
    pred = clf.predict(X)
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "precision": float(precision_score(y, pred, pos_label=IMAGE_LABEL, zero_division=0)),
        "recall": float(recall_score(y, pred, pos_label=IMAGE_LABEL, zero_division=0)),
        "n": float(y.shape[0]),
    }


def _n_test(n: int, test_fraction: float) -> int:
    # at least one item on each side of the split
    return int(min(max(round(test_fraction * n), 1), n - 1))


def modality_split(
    n_img: int,
    n_txt: int,
    *,
    test_fraction: float = 0.3,
    paired: bool = False,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Row indices of a train/test split: keys ``img_train, img_test, txt_train, txt_test``.

    ``paired=True`` (requires ``n_img == n_txt``; row i of each modality is pair i): one random
    set of ``round(test_fraction * n)`` *pair* indices is held out for both modalities, so an
    image and its caption always land in the same split and the test set cannot be solved by
    memorising a partner seen in training. Otherwise each modality is split independently with
    the same fraction. Each part gets at least one row. Deterministic in ``seed``.
    """
    check_fraction(test_fraction, "test_fraction")
    if n_img < 2 or n_txt < 2:
        raise ValueError(f"a modality needs at least 2 vectors to split, got {n_img} images and {n_txt} texts")
    rng = np.random.default_rng(seed)
    if paired:
        if n_img != n_txt:
            raise ValueError(f"a paired split needs equal lengths, got {n_img} images and {n_txt} texts")
        perm = rng.permutation(n_img)
        k = _n_test(n_img, test_fraction)
        test, train = np.sort(perm[:k]), np.sort(perm[k:])
        return {"img_train": train, "img_test": test, "txt_train": train.copy(), "txt_test": test.copy()}
    out: dict[str, np.ndarray] = {}
    for name, n in (("img", n_img), ("txt", n_txt)):
        perm = rng.permutation(n)
        k = _n_test(n, test_fraction)
        out[f"{name}_train"], out[f"{name}_test"] = np.sort(perm[k:]), np.sort(perm[:k])
    return out


def linear_separability(
    img: np.ndarray,
    txt: np.ndarray,
    *,
    test_fraction: float = 0.3,
    pca_components: int | None = None,
    seed: int = 0,
    paired: bool | None = None,
    C: float = 1.0,
) -> dict[str, float]:
    """Held-out linear separability of image vs text vectors (Table I; Fig. 2 with ``pca_components=2``).

    Splits with :func:`modality_split`: by *pair* index when the arrays are paired (``paired=None``
    means "paired exactly when ``len(img) == len(txt)``", the row-aligned convention; pass
    ``paired=False`` for equal-length unpaired sets), otherwise per modality. Fits
    :func:`fit_modality_classifier` on the training part (PCA and scaler fitted there too) and
    evaluates on the test part.

    Returns ``accuracy, precision, recall`` (held-out; image = positive class), ``n_train``,
    ``n_test``, ``n_features`` (PCA components used, or d), ``paired_split`` (1.0 / 0.0).

    Parameters
    ----------
    img : array-like, shape (n_img, d)
        Image vectors (raw or normalised, as the question asks).
    txt : array-like, shape (n_txt, d)
        Text vectors.
    test_fraction : float
        Share of the pairs (or of each modality) held out, in (0, 1).
    pca_components : int, optional
        Fit on this many principal components (fitted on the training part); default: all d.
    seed : int
        Seed of the split and the classifier.
    paired : bool, optional
        Split by pair index (see above; default: when the lengths are equal).
    C : float
        The linear SVM's penalty (:func:`fit_modality_classifier`; larger = less regularised).

    Returns
    -------
    dict of str to float
        The keys above (counts as floats).

    Examples
    --------
    Modalities planted ten standard deviations apart are separated perfectly on held-out pairs:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> img = rng.normal(size=(100, 4)) + [5.0, 0.0, 0.0, 0.0]
    >>> txt = rng.normal(size=(100, 4)) - [5.0, 0.0, 0.0, 0.0]
    >>> r = linear_separability(img, txt)
    >>> r["accuracy"], r["n_train"], r["n_test"], r["paired_split"]
    (1.0, 140.0, 60.0, 1.0)
    """
    img, txt = check_modalities(img, txt)
    if paired is None:
        paired = img.shape[0] == txt.shape[0]
    split = modality_split(img.shape[0], txt.shape[0], test_fraction=test_fraction, paired=paired, seed=seed)
    # the training rows stacked once into float64, this function's own copy: standardised in place
    X_train, y_train = _stack(img[split["img_train"]], txt[split["txt_train"]], np.float64)
    n_train = y_train.shape[0]
    clf = fit_modality_classifier(X_train, y_train, pca_components=pca_components, seed=seed, C=C, overwrite_x=True)
    del X_train, y_train
    X_test, y_test = _stack(img[split["img_test"]], txt[split["txt_test"]])
    res = evaluate_classifier(clf, X_test, y_test)
    return {
        "accuracy": res["accuracy"],
        "precision": res["precision"],
        "recall": res["recall"],
        "n_train": float(n_train),
        "n_test": res["n"],
        "n_features": float(pca_components if pca_components is not None else img.shape[1]),
        "paired_split": 1.0 if paired else 0.0,
    }


def _stack(a: np.ndarray, b: np.ndarray, dtype: type | None = None) -> tuple[np.ndarray, np.ndarray]:
    X = np.concatenate([a, b], axis=0, dtype=dtype)
    y = np.concatenate([np.ones(a.shape[0], dtype=np.int64), np.zeros(b.shape[0], dtype=np.int64)])
    return X, y


def pca_project(
    X: np.ndarray,
    n_components: int = 2,
    fit_on: np.ndarray | None = None,
) -> np.ndarray:
    """Project ``X`` onto the top ``n_components`` principal axes of ``fit_on`` (default ``X``).

    ``Z = (X − mean(F)) V_k`` where ``V_k`` holds the top-k eigenvectors of the covariance of
    ``F = fit_on`` (exact, via scikit-learn's ``covariance_eigh`` solver; sign convention fixed by
    scikit-learn's ``svd_flip``). Returns an ``(n, n_components)`` array, e.g. for the Fig. 2
    scatter of ``X = [img; txt]``.
    """
    X = check_matrix(X, "X", min_rows=1)
    F = X if fit_on is None else check_matrix(fit_on, "fit_on", min_rows=2)
    if F.shape[1] != X.shape[1]:
        raise ValueError(f"mismatched dimensions: X has d={X.shape[1]}, fit_on has d={F.shape[1]}")
    k = int(n_components)
    if k < 1 or k > min(F.shape):
        raise ValueError(f"n_components must be in [1, {min(F.shape)}], got {n_components}")
    pca = PCA(n_components=k, svd_solver="covariance_eigh").fit(F)
    return pca.transform(X)
