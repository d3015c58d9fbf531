"""A convolutional network that adds conv layers and channels while training (torch only).

Architecture of SECNN (Appolinary et al., "Self Expanding Convolutional Neural Networks",
arXiv:2401.05686, §3) with exactly function-preserving edits instead of the published code's
(docs/design.md, "More models and policies"):

    x (B, C, H, W)
      block 0:  [conv3x3 → BN → LeakyReLU]  (+ residual layers, see below)
      2x2 max pool, block 1, 2x2 max pool, ..., block n-1                    → z (B, C_last, h, w)
      skip: block 0's output, adaptive-average-pooled to (h, w)               → s (B, C_0, h, w)
      head: 1x1 conv over cat([z, s]) → BN → LeakyReLU → global average pool → Linear → logits (B, n_classes)

The first layer of a block maps the block input to the block width; every further layer of a
block is a zero-initialised residual layer ``y = x + BN(LeakyReLU(conv3x3(x)))`` (the order
conv → LeakyReLU → BN puts BN last, so with ``γ = β = 0`` the branch is exactly 0 in train *and*
eval mode whatever the batch or running statistics, while ``∂ℓ/∂γ = Σ ∂ℓ/∂y · x̂`` is non-zero at
once). The branch conv weights receive gradient as soon as γ moves, as in zero-γ residual
initialisation (Goyal et al. 2017).

The head's 1x1 conv over the concatenation ``[z, s]`` is one convolution whose weight is stored
in two parameters (columns for ``z`` and for ``s``, :class:`ConcatConv1x1`), so that widening the
last block or the first block appends zero input columns to one parameter and Adam moments move
with a single slice.

Every edit returns :class:`~senn_automl.models.mlp.ParamChange` records for
:func:`senn_automl.training.surgery.update_optimizer`.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from senn_automl.models.mlp import ParamChange, grow_parameter
from senn_automl.models.registry import register_model
from senn_automl.validation import is_whole

__all__ = ["GrowingCNN", "ConvLayer", "ConcatConv1x1", "kaiming_normal"]


def kaiming_normal(shape: Sequence[int], negative_slope: float, generator: torch.Generator | None, scale: float = 1.0) -> torch.Tensor:
    """He-normal weights ``N(0, scale² · 2 / ((1 + a²) · fan_in))`` for a conv of ``shape`` (C_out, C_in, kh, kw)."""
    fan_in = math.prod(shape[1:])
    std = scale * math.sqrt(2.0 / ((1 + negative_slope**2) * fan_in))
    device = generator.device if generator is not None else None
    return torch.randn(*shape, generator=generator, device=device) * std


class ConvLayer(nn.Module):
    """One 3x3 conv layer of a block; input (B, C_in, H, W) → output (B, C_out, H, W).

    ``residual=False`` (first layer of a block): ``y = LeakyReLU(BN(conv(x)))``.
    ``residual=True`` (C_in = C_out): ``y = x + BN(LeakyReLU(conv(x)))``; with BN ``γ = β = 0`` the
    layer is the identity. Convs have no bias (BN supplies the shift).
    """

    def __init__(self, c_in: int, c_out: int, *, residual: bool, negative_slope: float = 0.01):
        super().__init__()
        if residual and c_in != c_out:
            raise ValueError(f"a residual layer keeps its width; got c_in={c_in}, c_out={c_out}")
        self.residual = bool(residual)
        self.negative_slope = float(negative_slope)
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        if self.residual:
            nn.init.zeros_(self.bn.weight)

    @property
    def width(self) -> int:
        return self.conv.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.residual:
            return x + self.bn(F.leaky_relu(self.conv(x), self.negative_slope))
        return F.leaky_relu(self.bn(self.conv(x)), self.negative_slope)


class ConcatConv1x1(nn.Module):
    """A bias-free 1x1 convolution over ``cat([z, s], dim=1)`` whose weight is kept in two parts.

    ``weight_z`` (C_out, C_z, 1, 1) and ``weight_s`` (C_out, C_s, 1, 1); ``weight`` is their
    concatenation (C_out, C_z + C_s, 1, 1). Input (B, C_z + C_s, H, W) → (B, C_out, H, W). Behaves
    like an ``nn.Conv2d`` for K-FAC code (``weight``, ``kernel_size``, ``padding``, ``stride``,
    ``dilation``, ``bias``).
    """

    kernel_size = (1, 1)
    padding = (0, 0)
    stride = (1, 1)
    dilation = (1, 1)
    bias = None

    def __init__(self, c_z: int, c_s: int, c_out: int):
        super().__init__()
        w = nn.Conv2d(c_z + c_s, c_out, 1, bias=False).weight.detach()
        self.weight_z = nn.Parameter(w[:, :c_z].clone())
        self.weight_s = nn.Parameter(w[:, c_z:].clone())

    @property
    def weight(self) -> torch.Tensor:
        return torch.cat([self.weight_z, self.weight_s], dim=1)

    @property
    def in_channels(self) -> int:
        return self.weight_z.shape[1] + self.weight_s.shape[1]

    @property
    def out_channels(self) -> int:
        return self.weight_z.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight)


def _grow_bn(bn: nn.BatchNorm2d, k: int, gamma: float) -> list[ParamChange]:
    """Append ``k`` channels to ``bn``: γ = ``gamma``, β = 0, running mean 0, running var 1; old entries kept."""
    changes = []
    for name, value in (("weight", gamma), ("bias", 0.0)):
        new, change = grow_parameter(getattr(bn, name), 0, torch.full((k,), value))
        setattr(bn, name, new)
        changes.append(change)
    for name, value in (("running_mean", 0.0), ("running_var", 1.0)):
        old = getattr(bn, name)
        setattr(bn, name, torch.cat([old, torch.full((k,), value, dtype=old.dtype, device=old.device)]))
    bn.num_features += k
    return changes


def _grow_conv(conv: nn.Conv2d, k_out: int, k_in: int, generator, negative_slope: float, noise: float) -> ParamChange:
    """Append ``k_out`` filters (He-normal · ``noise``, reading all inputs) and ``k_in`` zero input
    columns (for the old filters) to ``conv``'s weight in one replacement."""
    w = conv.weight
    c_out, c_in, kh, kw = w.shape
    rows = kaiming_normal((k_out, c_in + k_in, kh, kw), negative_slope, generator, noise).to(w)
    zero_cols = torch.zeros(c_out, k_in, kh, kw, dtype=w.dtype, device=w.device)
    grown, first = grow_parameter(w, 1, zero_cols)
    new, _ = grow_parameter(grown, 0, rows)
    conv.weight = new
    conv.in_channels += k_in
    conv.out_channels += k_out
    return ParamChange(w, new, first.index)


@register_model
class GrowingCNN(nn.Module):
    """SECNN-style CNN that can add residual conv layers to a block and widen a block.

    See the module docstring for the architecture. Input ``(B, C, H, W)`` float (or flat
    ``(B, C·H·W)``, reshaped to ``in_shape``) → logits ``(B, n_classes)``.

    Parameters
    ----------
    in_shape : (C, H, W)
        Input image shape, e.g. (1, 8, 8), (1, 28, 28), (3, 32, 32).
    n_classes : int
        Number of outputs.
    channels : sequence
        Start width of each block, ``(16, 16, 16)`` by default (SECNN). An entry may also be a
        list of equal widths, one per conv layer of the block (``[16, 16]`` is a block of a first
        layer and one identity-initialised residual layer); this is how :meth:`from_spec` rebuilds
        a grown model. At least 2 blocks (the skip joins the first and the last).
    max_layers : int
        Block capacity N: the most conv layers per block (SECNN: 10).
    max_channels : int
        The most channels per block.
    head_channels : int
        Output channels of the head's 1x1 conv.
    negative_slope : float
        LeakyReLU slope.

    Raises
    ------
    ValueError
        For a malformed ``in_shape`` or ``channels``, an image too small for ``n_blocks - 1``
        2x2 poolings, or a start size above ``max_layers`` / ``max_channels``.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        n_classes: int,
        channels: Sequence[int | Sequence[int]] = (16, 16, 16),
        *,
        max_layers: int = 10,
        max_channels: int = 128,
        head_channels: int = 32,
        negative_slope: float = 0.01,
    ):
        super().__init__()
        shape = tuple(int(s) for s in in_shape) if isinstance(in_shape, (tuple, list)) else ()
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"in_shape={in_shape!r} must be (channels, height, width) of positive ints, e.g. (1, 28, 28)")
        if int(n_classes) < 1:
            raise ValueError(f"n_classes={n_classes} must be >= 1")
        blocks = [[int(w) for w in c] if isinstance(c, (list, tuple)) else [int(c)] for c in channels]
        if len(blocks) < 2:
            raise ValueError(f"channels={list(channels)!r} must name at least 2 blocks (the skip joins the first and last block)")
        for b, widths in enumerate(blocks):
            if not widths or min(widths) < 1 or len(set(widths)) != 1:
                raise ValueError(f"block {b} of channels={list(channels)!r}: give one positive width, or a list of equal widths")
        side = min(shape[1:])
        if side < 2 ** (len(blocks) - 1):
            raise ValueError(
                f"in_shape={shape}: a {side}-pixel side is too small for {len(blocks) - 1} 2x2 poolings between "
                f"{len(blocks)} blocks; use at most {int(math.log2(side)) + 1} blocks"
            )
        if max_layers < max(len(w) for w in blocks):
            raise ValueError(f"max_layers={max_layers} is below the deepest block ({max(len(w) for w in blocks)} conv layers); raise max_layers")
        if max_channels < max(w[0] for w in blocks):
            raise ValueError(f"max_channels={max_channels} is below the widest block ({max(w[0] for w in blocks)} channels); raise max_channels")
        if head_channels < 1:
            raise ValueError(f"head_channels={head_channels} must be >= 1")
        if not (math.isfinite(negative_slope) and negative_slope >= 0):
            raise ValueError(f"negative_slope={negative_slope} must be a finite number >= 0, e.g. 0.01")
        self.in_shape = shape
        self.n_classes = int(n_classes)
        self.max_layers = int(max_layers)
        self.max_channels = int(max_channels)
        self.head_channels = int(head_channels)
        self.negative_slope = float(negative_slope)
        self.blocks = nn.ModuleList()
        c_in = shape[0]
        for widths in blocks:
            layers = [ConvLayer(c_in, widths[0], residual=False, negative_slope=self.negative_slope)]
            layers += [ConvLayer(w, w, residual=True, negative_slope=self.negative_slope) for w in widths[1:]]
            self.blocks.append(nn.ModuleList(layers))
            c_in = widths[0]
        self.head_conv = ConcatConv1x1(blocks[-1][0], blocks[0][0], self.head_channels)
        self.head_bn = nn.BatchNorm2d(self.head_channels)
        self.fc = nn.Linear(self.head_channels, self.n_classes)

    # ------------------------------------------------------------------ structure
    @property
    def hidden(self) -> list[list[int]]:
        """Output channels of every conv layer, per block (input side first), e.g. ``[[16], [16, 16], [20]]``."""
        return [[layer.width for layer in block] for block in self.blocks]

    @property
    def widths(self) -> list[int]:
        """Channels of each block."""
        return [block[0].width for block in self.blocks]

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _block_maps(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        """Each block's output feature maps (B, C_b, H_b, W_b) on ``x``, block 0 first, one at a time.
        ``x`` is (B, C, H, W) or flat (B, C·H·W); raises ``ValueError`` for another shape."""
        if x.dim() == 2 and x.shape[1] == math.prod(self.in_shape):
            x = x.reshape(-1, *self.in_shape)
        if tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(f"input of shape {tuple(x.shape)} does not match (B, *in_shape) = (B, {', '.join(map(str, self.in_shape))})")
        for b, block in enumerate(self.blocks):
            if b > 0:
                x = F.max_pool2d(x, 2)
            for layer in block:
                x = layer(x)
            yield x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = last = None
        for z in self._block_maps(x):  # the head reads the last block and, through the skip, the first
            first = z if first is None else first
            last = z
        skip = F.adaptive_avg_pool2d(first, last.shape[-2:])
        h = F.leaky_relu(self.head_bn(self.head_conv(torch.cat([last, skip], dim=1))), self.negative_slope)
        return self.fc(h.mean(dim=(2, 3)))

    @torch.no_grad()
    def block_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every block's output feature maps on ``x``: a list of (B, C_b, H_b, W_b) tensors, block 0
        first, computed in the module's current mode (in train mode BatchNorm uses, and updates,
        the batch statistics: call it in eval mode, or on a copy, to measure without side effects).
        Raises ``ValueError`` for an input that does not match ``in_shape``."""
        return list(self._block_maps(x))

    # ------------------------------------------------------------------ spec
    def spec(self) -> dict[str, Any]:
        """JSON-able architecture spec; :meth:`from_spec` rebuilds an identically shaped model."""
        return {
            "type": "GrowingCNN",
            "in_shape": list(self.in_shape),
            "n_classes": self.n_classes,
            "channels": self.hidden,
            "max_layers": self.max_layers,
            "max_channels": self.max_channels,
            "head_channels": self.head_channels,
            "negative_slope": self.negative_slope,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "GrowingCNN":
        """Build a model of the architecture in ``spec`` (weights freshly initialised; load a state_dict next).

        Raises ``ValueError`` if ``spec`` is not a GrowingCNN spec.
        """
        if spec.get("type") != "GrowingCNN":
            raise ValueError(f"spec type {spec.get('type')!r} is not 'GrowingCNN'")
        with torch.random.fork_rng(devices=[]):  # weights are overwritten next; leave the global RNG alone
            return cls(
                tuple(spec["in_shape"]),
                spec["n_classes"],
                spec["channels"],
                max_layers=spec["max_layers"],
                max_channels=spec["max_channels"],
                head_channels=spec["head_channels"],
                negative_slope=spec["negative_slope"],
            )

    # ------------------------------------------------------------------ growth edits
    def can_add_layer(self, block: int) -> bool:
        """Whether block ``block`` has room for one more conv layer (``max_layers``)."""
        return 0 <= block < self.n_blocks and len(self.blocks[block]) < self.max_layers

    def can_widen(self, block: int, k: int) -> bool:
        """Whether block ``block`` can take ``k >= 1`` more channels (``max_channels``)."""
        return 0 <= block < self.n_blocks and k >= 1 and self.widths[block] + k <= self.max_channels

    def readers(self, block: int) -> list[tuple[nn.Module, int]]:
        """Conv layers that read block ``block``'s output channels, with their offset in the layer's input.

        The residual convs of the block itself (offset 0), then the next block's first conv
        (offset 0) or, for the last block, the head's 1x1 conv (offset 0), and for block 0 also the
        head's 1x1 conv via the skip (offset = channels of the last block: the head reads
        ``cat([last block, skip])``). Returns ``[(module, offset), ...]``; ``module`` is an
        ``nn.Conv2d`` or :class:`ConcatConv1x1`.
        """
        out = [(layer.conv, 0) for layer in self.blocks[block][1:]]
        if block + 1 < self.n_blocks:
            out.append((self.blocks[block + 1][0].conv, 0))
        else:
            out.append((self.head_conv, 0))
        if block == 0:
            out.append((self.head_conv, self.widths[-1]))
        return out

    def _check_block(self, block: int) -> None:
        if not (is_whole(block) and 0 <= block < self.n_blocks):
            raise ValueError(f"block={block!r} is not a block index in [0, {self.n_blocks - 1}]")

    @torch.no_grad()
    def add_conv_layer(self, block: int, weight: torch.Tensor | None = None, generator: torch.Generator | None = None) -> list[ParamChange]:
        """Append an identity-initialised residual conv layer to ``block``; function-preserving.

        The layer computes ``y = x + BN(LeakyReLU(conv3x3(x)))`` with BN ``γ = 0, β = 0`` and
        running statistics 0 / 1, so ``y = x`` exactly in train and eval mode (the reference's
        replacement for SECNN's box-filter "identity", which is not one). Its conv
        weight (C, C, 3, 3) is ``weight`` (a scored candidate) or He-normal from ``generator``.

        Returns ``ParamChange(None, p)`` for the new parameters.

        Raises
        ------
        ValueError
            If ``block`` is not a block index, the block is at ``max_layers``, or ``weight`` has the wrong shape.
        """
        self._check_block(block)
        if not self.can_add_layer(block):
            raise ValueError(f"block {block} already has max_layers={self.max_layers} conv layers; raise max_layers to deepen it")
        c = self.widths[block]
        if weight is None:
            weight = kaiming_normal((c, c, 3, 3), self.negative_slope, generator)
        if tuple(weight.shape) != (c, c, 3, 3):
            raise ValueError(f"weight of shape {tuple(weight.shape)} does not fit block {block}: expected ({c}, {c}, 3, 3)")
        ref = self.blocks[block][0].conv.weight
        with torch.random.fork_rng(devices=[]):  # default init is overwritten; leave the global RNG alone
            layer = ConvLayer(c, c, residual=True, negative_slope=self.negative_slope).to(device=ref.device, dtype=ref.dtype)
        layer.conv.weight.copy_(weight.to(ref))
        layer.train(self.training)
        self.blocks[block].append(layer)
        return [ParamChange(None, p) for p in layer.parameters()]

    @torch.no_grad()
    def widen_block(self, block: int, k: int, generator: torch.Generator | None = None, *, noise: float = 0.1) -> list[ParamChange]:
        """Add ``k`` channels to every conv layer of ``block``; function-preserving in train and eval mode.

        - First conv: ``k`` new filters, He-normal scaled by ``noise``; its BN gets new entries
          γ = 1, β = 0, running mean 0, running var 1 (old entries untouched).
        - Residual layers: ``k`` new filters (same noise) and zero input columns for the old filters;
          the branch BN gets new entries γ = 0, β = 0, so the new channels pass through the skip.
        - Every reader of the block's output (:meth:`readers`: the next block's first conv, or the
          head's 1x1 conv at the last block's position, and the head via the skip for block 0) gets
          ``k`` zero input columns at the block's position.

        Returns the :class:`ParamChange` list (old Adam moments sit in the leading slices).

        Raises
        ------
        ValueError
            If ``block`` is not a block index, ``k < 1``, or the width would exceed ``max_channels``.
        """
        self._check_block(block)
        if not (is_whole(k) and k >= 1):
            raise ValueError(f"k={k!r} must be a whole number of channels >= 1")
        if not self.can_widen(block, k):
            raise ValueError(
                f"widening block {block} from {self.widths[block]} by {k} channels exceeds max_channels={self.max_channels}"
            )
        changes = []
        for i, layer in enumerate(self.blocks[block]):
            k_in = k if layer.residual else 0
            changes.append(_grow_conv(layer.conv, k, k_in, generator, self.negative_slope, noise))
            changes += _grow_bn(layer.bn, k, gamma=0.0 if layer.residual else 1.0)
        if block + 1 < self.n_blocks:
            nxt = self.blocks[block + 1][0].conv
            changes.append(_grow_conv(nxt, 0, k, generator, self.negative_slope, noise))
        for name, grows in (("weight_z", block == self.n_blocks - 1), ("weight_s", block == 0)):
            if grows:
                old = getattr(self.head_conv, name)
                new, change = grow_parameter(old, 1, torch.zeros(old.shape[0], k, 1, 1))
                setattr(self.head_conv, name, new)
                changes.append(change)
        return changes
