"""Fused row kernels of the streamed passes (numba, compiled once and cached on disk, GIL released).

Each kernel makes **one** pass over a block of rows where numpy would make five or six (decode,
norms, divide, sum, norms again, centre), so the reader thread of a pass keeps up with the
BLAS products of the calling thread.

* :func:`unit_block_f16` / :func:`unit_block` — per row ``i`` of a block: (decode float16 through
  a 65,536-entry table, exact), ``L_i = ‖x_i‖`` (a zero or non-finite row stops the kernel and
  its index is returned), ``x̂_i = x_i / L_i``, ``‖x̂_i‖``, ``Σ x̂_i``; optionally ``Σ x_i`` and the
  raw rows minus a shift into a second buffer, and the paired cosine ``x̂_i · p̂_i`` with the same
  row of a partner block given as ``partner − … + partner_shift``; the block is left holding
  ``x̂_i − shift``. Sums of squares are reassociated (vectorised); every other operation is
  IEEE float64, so the results equal numpy's up to summation order.
* :func:`per_sample_block` — per row of the per-sample pass: (decode), optionally ``x ← x̂``,
  ``‖x_i‖``, three dot products ``x_i · V`` (the unit sum and the two mean directions),
  ``c_i = x_i − μ``, ``‖c_i‖`` (float64) and ``c_i`` as float32 for the whitening product.
* :func:`row_sq_norms` — ``Σ_j p_ij²`` of float32 rows, accumulated in float64.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["F16_TABLE", "per_sample_block", "row_sq_norms", "unit_block", "unit_block_f16"]

#: float64 value of every float16 bit pattern (index: the pattern as uint16).
F16_TABLE = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float64)

_FM = {"reassoc", "contract"}   # vectorise the reductions; keep NaN/inf semantics (the row check)


@numba.njit(nogil=True, cache=True, fastmath=_FM, inline="always")
def _finish_row(x, i, s, shift, raw_out, raw_shift, partner, partner_shift, lengths, ulen, usum, xsum, pdot):
    d = x.shape[1]
    length = math.sqrt(s)
    if not (length > 0.0 and length < np.inf):
        return True
    lengths[i] = length
    if raw_out.shape[0] > 0:
        for j in range(d):
            xsum[j] += x[i, j]
            raw_out[i, j] = x[i, j] - raw_shift[j]
    s2 = 0.0
    p = 0.0
    paired = partner.shape[0] > 0
    for j in range(d):
        u = x[i, j] / length
        s2 += u * u
        usum[j] += u
        if paired:
            p += u * (partner[i, j] + partner_shift[j])
        x[i, j] = u - shift[j]
    ulen[i] = math.sqrt(s2)
    if paired:
        pdot[i] = p
    return False


@numba.njit(nogil=True, cache=True, fastmath=_FM)
def unit_block_f16(bits, table, x, n, shift, raw_out, raw_shift, partner, partner_shift,
                   lengths, ulen, usum, xsum, pdot):
    """The module's kernel over float16 rows given as their bits (``bits``: uint16 (≥ n, d)),
    decoded into ``x`` (float64 (≥ n, d)) through ``table`` (:data:`F16_TABLE`). Empty (0-row)
    ``raw_out`` / ``partner`` switch those parts off. Returns −1, or the first bad row."""
    d = x.shape[1]
    for i in range(n):
        s = 0.0
        for j in range(d):
            v = table[bits[i, j]]
            x[i, j] = v
            s += v * v
        if _finish_row(x, i, s, shift, raw_out, raw_shift, partner, partner_shift, lengths, ulen, usum, xsum, pdot):
            return i
    return -1


@numba.njit(nogil=True, cache=True, fastmath=_FM)
def unit_block(x, n, shift, raw_out, raw_shift, partner, partner_shift, lengths, ulen, usum, xsum, pdot):
    """The module's kernel over rows already decoded into ``x`` (float64 (≥ n, d)).

    >>> x = np.array([[3.0, 4.0], [0.0, 2.0]]); z, e = np.zeros(2), np.empty((0, 2))
    >>> L, ul, us, pd = np.empty(2), np.empty(2), np.zeros(2), np.empty(2)
    >>> unit_block(x, 2, z, e, z, e, z, L, ul, us, np.zeros(2), pd), L.tolist(), us.tolist()
    (-1, [5.0, 2.0], [0.6, 1.8])
    """
    d = x.shape[1]
    for i in range(n):
        s = 0.0
        for j in range(d):
            s += x[i, j] * x[i, j]
        if _finish_row(x, i, s, shift, raw_out, raw_shift, partner, partner_shift, lengths, ulen, usum, xsum, pdot):
            return i
    return -1


@numba.njit(nogil=True, cache=True, fastmath=_FM)
def per_sample_block(bits, table, x, n, decode, normalize, mean, vecs, c32, length, radius, dots):
    """The per-sample kernel over ``n`` rows: ``decode`` — ``x`` is filled from float16 ``bits``
    through ``table`` (else ``x`` holds the float64 rows already); ``normalize`` — rows become
    ``x̂ = x/‖x‖`` first. Then ``length = ‖x‖``, ``dots[:, k] = x · vecs[k]`` (``vecs``: (3, d)),
    ``radius = ‖x − mean‖`` and ``c32 = float32(x − mean)``. Returns −1, or the first row whose
    norm is zero or not finite."""
    d = x.shape[1]
    for i in range(n):
        s = 0.0
        if decode:
            for j in range(d):
                v = table[bits[i, j]]
                x[i, j] = v
                s += v * v
        else:
            for j in range(d):
                s += x[i, j] * x[i, j]
        norm = math.sqrt(s)
        if not (norm > 0.0 and norm < np.inf):
            return i
        if normalize:
            s = 0.0
            for j in range(d):
                v = x[i, j] / norm
                x[i, j] = v
                s += v * v
            norm = math.sqrt(s)
        length[i] = norm
        a0 = 0.0
        a1 = 0.0
        a2 = 0.0
        r = 0.0
        for j in range(d):
            v = x[i, j]
            a0 += v * vecs[0, j]
            a1 += v * vecs[1, j]
            a2 += v * vecs[2, j]
            c = v - mean[j]
            r += c * c
            c32[i, j] = c
        dots[i, 0] = a0
        dots[i, 1] = a1
        dots[i, 2] = a2
        radius[i] = math.sqrt(r)
    return -1


@numba.njit(nogil=True, cache=True, fastmath=_FM)
def row_sq_norms(p, n, out):
    """``out[i] = Σ_j p[i, j]²`` for the first ``n`` rows of a float32 ``p``, in float64."""
    for i in range(n):
        s = 0.0
        for j in range(p.shape[1]):
            v = np.float64(p[i, j])
            s += v * v
        out[i] = s
