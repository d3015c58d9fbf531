"""Effective rank of a layer's activations: NORTH*'s growth trigger (torch only).

Maile, Rachelson, Luga & Wilson, "When, where, and how to add new neurons to ANNs" (AutoML-Conf
2022), §3 (the orthogonality-based metrics; ``countsvd`` in their code): the effective
dimension of a layer with ``m`` units is the number of singular values of ``H/√n`` above a
threshold, ``H`` the (n, m) activations on ``n`` rows. A layer whose units are (nearly) all
independent directions is saturated and may take more units; a layer with redundant units
(duplicated or collinear activations) has room left. docs/methods.md, "NORTH*", gives the formulas and
where this module deviates from the paper's code (the threshold is relative to the largest
singular value).
"""

from __future__ import annotations

import math

import torch

__all__ = ["channel_rows", "effective_rank", "independence", "saturation_level", "singular_values"]


def singular_values(H: torch.Tensor) -> torch.Tensor:
    """Singular values (min(n, m),) float64, descending, of ``H / √n`` for activations ``H`` (n, m).

    Raises ``ValueError`` if ``H`` is not 2-D or has no rows.
    """
    if H.dim() != 2 or H.shape[0] < 1:
        raise ValueError(f"activations of shape {tuple(H.shape)} are invalid: pass a (rows, units) matrix with rows >= 1")
    H = H.detach().double()
    return torch.linalg.svdvals(H / H.shape[0] ** 0.5)


def effective_rank(H: torch.Tensor, threshold: float = 0.01) -> int:
    """Effective rank of activations ``H`` (n, m): ``#{j : s_j > threshold · s_max}``, ``s`` the
    singular values of ``H/√n`` (:func:`singular_values`); 0 for an all-zero ``H``.

    NORTH*'s ``countsvd`` (Maile et al. 2022, §3; docs/methods.md R1) counts ``s_j > 0.01`` in absolute terms; the
    threshold here is relative to the largest singular value, so the count does not change when a
    layer's activations are scaled (a deviation, docs/methods.md). ``threshold`` in (0, 1).
    """
    if not 0 < threshold < 1:
        raise ValueError(f"threshold={threshold!r} is invalid: use a fraction of the largest singular value in (0, 1), e.g. 0.01")
    s = singular_values(H)
    if len(s) == 0 or float(s[0]) <= 0:
        return 0
    return int((s > threshold * s[0]).sum())


def saturation_level(gamma: float, width: int) -> int:
    """``⌊gamma · width⌋``: a layer of ``width`` units (or a block of ``width`` channels) is saturated
    when the effective rank of its activations exceeds this (NORTH*, Maile et al. 2022, §3;
    docs/methods.md R2). The floor carries a 1e-9 slack so that, e.g., 0.97 · 100 counts as 97."""
    return math.floor(gamma * width + 1e-9)


def channel_rows(maps: torch.Tensor) -> torch.Tensor:
    """Feature maps (B, C, H, W) unfolded per position into rows (B·H·W, C): the matrix whose
    effective rank counts a conv layer's independent channels (NeurOps' ``effective_rank`` of
    conv activations does the same)."""
    if maps.dim() != 4:
        raise ValueError(f"feature maps of shape {tuple(maps.shape)} are invalid: pass (batch, channels, height, width)")
    return maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1])


def independence(H: torch.Tensor, F: torch.Tensor) -> torch.Tensor:
    """For candidate activations ``F`` (n, P) against a layer's activations ``H`` (n, m): the
    share of each candidate's norm outside the column span of ``H``, ``‖(I − Π_H) f_p‖ / ‖f_p‖``
    (P,) in [0, 1], float64 (projection on the left singular vectors of ``H``, undamped). NORTH-Select keeps the
    candidates that add the most new directions (Maile et al. 2022, §3; docs/methods.md R3); 1 for ``m = 0``."""
    F = F.detach().double()
    norms = F.norm(dim=0).clamp_min(1e-300)
    if H.shape[1] == 0:
        return torch.ones(F.shape[1], dtype=torch.float64)
    U, S, _ = torch.linalg.svd(H.detach().double(), full_matrices=False)
    U = U[:, S > S[0] * 1e-10] if float(S[0]) > 0 else U[:, :0]  # an orthonormal basis of span(H)
    return (F - U @ (U.T @ F)).norm(dim=0) / norms
