"""Random image augmentation on torch tensors (no torchvision needed).

:func:`augment_flip_crop` is the standard CIFAR recipe: a random horizontal
flip and a random crop of the zero-padded image, drawn per sample from a
``torch.Generator`` so that runs are reproducible.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["augment_flip_crop"]


def augment_flip_crop(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    pad: int = 4,
    *,
    flip_p: float = 0.5,
) -> torch.Tensor:
    """Randomly flip images left-right and crop them back to size after zero padding.

    Each sample is independently shifted by a random offset in
    ``-pad .. pad`` pixels along height and width (pixels shifted in from
    outside the image are 0), then mirrored along its width with probability
    ``flip_p``. With ``pad=0`` only the flip is applied.

    Parameters
    ----------
    x : torch.Tensor
        Images, shape ``(B, C, H, W)``, any floating or integer dtype, any
        device. Not modified.
    generator : torch.Generator, optional
        Source of the random flips and offsets (on the CPU or on ``x``'s
        device). The same generator state gives the same output. None uses
        torch's global generator.
    pad : int, default 4
        Maximum shift in pixels (zero padding on each side), >= 0.
    flip_p : float, default 0.5
        Probability of a horizontal flip per sample, in [0, 1].

    Returns
    -------
    torch.Tensor
        New tensor with the shape, dtype and device of ``x``.

    Raises
    ------
    ValueError
        If ``x`` is not 4-D, ``pad`` is not an int >= 0, or ``flip_p`` is
        outside [0, 1].
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise ValueError(
            f"x must be a 4-D tensor (B, C, H, W), got {shape}; reshape flat rows first, "
            "e.g. with senn_automl.data.as_images"
        )
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise ValueError(f"pad={pad!r} must be an int >= 0 (pixels of zero padding on each side)")
    if not 0.0 <= float(flip_p) <= 1.0:
        raise ValueError(f"flip_p={flip_p!r} must be a probability in [0, 1]")
    B, C, H, W = x.shape
    if B == 0:
        return x.clone()
    gen_device = generator.device if generator is not None else torch.device("cpu")
    flip = torch.rand(B, generator=generator, device=gen_device) < float(flip_p)
    oy = torch.randint(0, 2 * pad + 1, (B,), generator=generator, device=gen_device)
    ox = torch.randint(0, 2 * pad + 1, (B,), generator=generator, device=gen_device)
    flip, oy, ox = flip.to(x.device), oy.to(x.device), ox.to(x.device)

    padded = F.pad(x, (pad, pad, pad, pad)) if pad else x
    ar_h = torch.arange(H, device=x.device)
    ar_w = torch.arange(W, device=x.device)
    rows = oy[:, None] + ar_h  # (B, H) rows of the padded image
    cols_src = torch.where(flip[:, None], W - 1 - ar_w, ar_w)  # (B, W) flipped source columns
    cols = ox[:, None] + cols_src
    b = torch.arange(B, device=x.device)[:, None, None, None]
    c = torch.arange(C, device=x.device)[None, :, None, None]
    return padded[b, c, rows[:, None, :, None], cols[:, None, None, :]]
