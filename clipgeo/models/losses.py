"""Contrastive objectives of CLIP (InfoNCE) and CLOOB (InfoLOOB + modern Hopfield retrieval).

Every function takes **L2-normalised** embeddings as rows: ``img`` and ``txt`` of shape
``(N, d)`` where row ``i`` of ``img`` and row ``i`` of ``txt`` are a matching pair and all
other rows are negatives. Nothing here normalises the inputs of the losses for you (the
Hopfield retrieval re-normalises its *outputs*, as CLOOB does).

References:
    * CLIP: Radford et al., "Learning Transferable Visual Models From Natural Language
      Supervision", 2021.
    * CLOOB: Fürst et al., "CLOOB: Modern Hopfield Networks with InfoLOOB Outperform CLIP",
      NeurIPS 2022 (and the official code, github.com/ml-jku/cloob).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

__all__ = [
    "CLOOB_INV_TAU",
    "CLOOB_HOPFIELD_BETA",
    "info_nce",
    "info_loob",
    "hopfield_retrieval",
    "cloob_hopfield_embeddings",
    "cloob_loss",
]

#: CLOOB's fixed inverse temperature tau^-1 (not learned).
CLOOB_INV_TAU: float = 30.0
#: CLOOB's fixed Hopfield inverse temperature beta.
CLOOB_HOPFIELD_BETA: float = 8.0

Direction = Literal["both", "img2txt", "txt2img"]


def _check_pair(img: torch.Tensor, txt: torch.Tensor) -> None:
    if img.ndim != 2 or txt.ndim != 2 or img.shape != txt.shape:
        raise ValueError(
            f"img and txt must both be (N, d) with the same shape; got {tuple(img.shape)} "
            f"and {tuple(txt.shape)}"
        )


def info_nce(img: torch.Tensor, txt: torch.Tensor, logit_scale: float | torch.Tensor) -> torch.Tensor:
    r"""CLIP's symmetric InfoNCE loss.

    With logits :math:`s = \text{logit\_scale}\cdot \text{img}\,\text{txt}^\top` (``N x N``)::

        L = 1/2 * [ mean_i CE(s[i, :], i) + mean_j CE(s[:, j], j) ]
          = 1/2 * [ -1/N sum_i log( exp(s_ii) / sum_j exp(s_ij) )
                    -1/N sum_j log( exp(s_jj) / sum_i exp(s_ij) ) ]

    The positive *is* part of each denominator, so ``L >= 0``; for perfectly aligned,
    mutually orthogonal pairs ``L = log(1 + (N-1) exp(-logit_scale)) -> 0`` as the scale grows.

    Args:
        img: ``(N, d)`` L2-normalised image embeddings.
        txt: ``(N, d)`` L2-normalised text embeddings; row ``i`` matches ``img[i]``.
        logit_scale: multiplicative inverse temperature (CLIP: ``exp`` of a learned scalar,
            clamped to at most 100).

    Returns:
        scalar tensor.
    """
    _check_pair(img, txt)
    logits = logit_scale * img @ txt.T
    labels = torch.arange(img.shape[0], device=img.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def _loob_one_direction(logits: torch.Tensor) -> torch.Tensor:
    """Mean over rows ``i`` of ``-s_ii + logsumexp_{j != i} s_ij`` (rows are the anchors)."""
    n = logits.shape[0]
    if n < 2:
        raise ValueError("InfoLOOB needs at least 2 pairs (the denominator excludes the positive)")
    eye = torch.eye(n, dtype=torch.bool, device=logits.device)
    positives = logits.diagonal()
    negatives = torch.logsumexp(logits.masked_fill(eye, float("-inf")), dim=1)
    return (negatives - positives).mean()


def info_loob(
    img: torch.Tensor,
    txt: torch.Tensor,
    inv_tau: float | torch.Tensor = CLOOB_INV_TAU,
    *,
    direction: Direction = "both",
) -> torch.Tensor:
    r"""CLOOB's InfoLOOB ("leave one out bound") loss.

    With :math:`s = \text{inv\_tau}\cdot \text{img}\,\text{txt}^\top`::

        L_img2txt = -1/N sum_i log( exp(s_ii) / sum_{j != i} exp(s_ij) )   # anchor img_i
        L_txt2img = -1/N sum_i log( exp(s_ii) / sum_{j != i} exp(s_ji) )   # anchor txt_i
        L         = (L_img2txt + L_txt2img) / 2                            # direction="both"

    Unlike InfoNCE the positive is **excluded** from the denominator, so the loss is not
    bounded below by 0: it **can be (very) negative**. For perfectly aligned orthogonal
    pairs it equals ``-inv_tau + log(N-1)``, decreasing without bound as ``inv_tau`` grows.

    Args:
        img: ``(N, d)`` L2-normalised image embeddings, ``N >= 2``.
        txt: ``(N, d)`` L2-normalised text embeddings; row ``i`` matches ``img[i]``.
        inv_tau: fixed inverse temperature (CLOOB: 30, not learned).
        direction: ``"both"`` (average of the two directions, default), ``"img2txt"`` or
            ``"txt2img"`` (one direction only, as in each of CLOOB's two terms).

    Returns:
        scalar tensor.
    """
    _check_pair(img, txt)
    logits = inv_tau * img @ txt.T
    if direction == "img2txt":
        return _loob_one_direction(logits)
    if direction == "txt2img":
        return _loob_one_direction(logits.T)
    if direction == "both":
        return 0.5 * (_loob_one_direction(logits) + _loob_one_direction(logits.T))
    raise ValueError(f"direction must be 'both', 'img2txt' or 'txt2img', got {direction!r}")


def hopfield_retrieval(
    state: torch.Tensor, stored: torch.Tensor, beta: float | torch.Tensor = CLOOB_HOPFIELD_BETA
) -> torch.Tensor:
    r"""One update step of a modern (continuous) Hopfield network, re-normalised.

    ::

        retrieved = softmax(beta * state @ stored.T, dim=-1) @ stored
        return retrieved / ||retrieved||_2     (row-wise)

    Each state pattern (row of ``state``) is replaced by a softmax-weighted average of the
    stored patterns (rows of ``stored``); as ``beta -> inf`` this is the stored pattern
    nearest (largest dot product) to the state. In CLOOB the stored patterns are the
    embeddings of the current batch.

    Args:
        state: ``(M, d)`` query patterns.
        stored: ``(K, d)`` stored patterns.
        beta: inverse temperature of the retrieval (CLOOB: 8).

    Returns:
        ``(M, d)`` L2-normalised retrieved patterns.
    """
    if state.ndim != 2 or stored.ndim != 2 or state.shape[1] != stored.shape[1]:
        raise ValueError(
            f"state (M, d) and stored (K, d) must share d; got {tuple(state.shape)} "
            f"and {tuple(stored.shape)}"
        )
    weights = torch.softmax(beta * state @ stored.T, dim=-1)
    return F.normalize(weights @ stored, dim=-1)


def cloob_hopfield_embeddings(
    img: torch.Tensor, txt: torch.Tensor, beta: float | torch.Tensor = CLOOB_HOPFIELD_BETA
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""CLOOB's four Hopfield-retrieved embeddings, with the batch as stored patterns.

    With ``U = img`` (stored image embeddings) and ``V = txt`` (stored text embeddings)::

        U_x = hopfield_retrieval(img, U, beta)   # image retrieved from stored images
        U_y = hopfield_retrieval(txt, U, beta)   # text  retrieved from stored images
        V_x = hopfield_retrieval(img, V, beta)   # image retrieved from stored texts
        V_y = hopfield_retrieval(txt, V, beta)   # text  retrieved from stored texts

    ``(U_x, U_y)`` is the image-retrieved pair and ``(V_x, V_y)`` the text-retrieved pair
    (both members of a pair live in the span of the same stored set, which is what
    reinforces their covariance structure).

    Returns:
        ``(U_x, U_y, V_x, V_y)``, each ``(N, d)`` and L2-normalised.
    """
    _check_pair(img, txt)
    return (
        hopfield_retrieval(img, img, beta),
        hopfield_retrieval(txt, img, beta),
        hopfield_retrieval(img, txt, beta),
        hopfield_retrieval(txt, txt, beta),
    )


def cloob_loss(
    img: torch.Tensor,
    txt: torch.Tensor,
    inv_tau: float | torch.Tensor = CLOOB_INV_TAU,
    beta: float | torch.Tensor = CLOOB_HOPFIELD_BETA,
) -> torch.Tensor:
    r"""The full CLOOB objective: InfoLOOB on the Hopfield-retrieved pairs.

    As in the CLOOB paper (eq. for :math:`L_\text{InfoLOOB}`) and its official code, each
    retrieved pair contributes one direction::

        s^U = inv_tau * U_x @ U_y.T,   s^V = inv_tau * V_x @ V_y.T
        L = -1/N sum_i log( exp(s^U_ii) / sum_{j != i} exp(s^U_ij) )    # anchor U_x_i
            -1/N sum_i log( exp(s^V_ii) / sum_{j != i} exp(s^V_ji) )    # anchor V_y_i
          = info_loob(U_x, U_y, direction="img2txt") + info_loob(V_x, V_y, direction="txt2img")

    (The official code additionally multiplies by ``tau``, a constant gradient scale that
    does not change the optimum; it is omitted here.) Can be negative, like InfoLOOB.
    """
    u_x, u_y, v_x, v_y = cloob_hopfield_embeddings(img, txt, beta)
    return info_loob(u_x, u_y, inv_tau, direction="img2txt") + info_loob(
        v_x, v_y, inv_tau, direction="txt2img"
    )
