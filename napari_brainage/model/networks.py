"""The networks.

* ``SFCNRegressor``: an SFCN-style 3D CNN regressing age (Peng et al. 2021:
  blocks of 3x3x3 conv -> batch norm -> max-pool(2) -> ReLU, then a 1x1x1
  conv, global average pooling, dropout and a linear age head). We regress age
  directly with an L1 loss instead of SFCN's 40-bin soft labels: simpler, and
  as accurate on cohorts this size.
* ``NoiseUNet``: a small 3D U-Net giving, per voxel, a noise level B in
  (0, 1) (U-Noise, Koker et al. 2021; for regression, Bintsi et al. 2021).
  Its U-Net works at half resolution: 8x fewer voxels to convolve. An
  optional full-resolution head (a light 3x3x3 convolution over the upsampled
  features and the scan itself) can sharpen the mask back to 2 mm; in our
  runs it trained 2x slower and localised no better, so it is off by default.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .card import POOLS


class SFCNRegressor(nn.Module):
    """Simple Fully Convolutional Network (Peng et al. 2021), regression head.

    ``pool``: "max" is SFCN's. "avg" is linear, so zero-mean noise and
    interpolation blur move its features less: a max over noisy voxels grows
    with the noise's sd, a mean does not (measured in docs/benchmarks.md,
    "Max- or average-pooling"). The weights of either fit the other.
    """

    def __init__(self, channels: tuple[int, ...] = (8, 16, 32, 64, 64), dropout: float = 0.3, pool: str = "max"):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, not {pool!r}")
        blocks, previous = [], 1
        for width in channels:
            blocks += [nn.Conv3d(previous, width, 3, padding=1, bias=False), nn.BatchNorm3d(width),
                       nn.MaxPool3d(2) if pool == "max" else nn.AvgPool3d(2), nn.ReLU(inplace=True)]
            previous = width
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(
            nn.Conv3d(previous, previous, 1, bias=False), nn.BatchNorm3d(previous), nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(previous, 1)

    @classmethod
    def for_card(cls, card) -> "SFCNRegressor":
        """The predictor a model card describes (its channels and pooling)."""
        return cls(card.predictor_channels, pool=card.predictor_pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, X, Y, Z) normalised scans -> (B,) standardised age."""
        x = self.classifier(self.features(x))
        x = F.adaptive_avg_pool3d(x, 1).flatten(1)
        return self.head(self.dropout(x)).squeeze(1)

    def contributions(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, X, Y, Z) normalised scans -> (B, C * S): each last-layer unit's
        share of the standardised age, ``w_c * phi_cs / S`` for channel c at
        location s of the S locations the head averages over. In eval mode
        ``contributions(x).sum(1) + head.bias == forward(x)``.

        Why: |f(x') - f(x)| can be small while units move a lot in opposite
        directions; ``sum |contribution change|`` bounds it from above and cannot
        be met by cancellation (the noise model's "contributions" target).
        """
        phi = self.classifier(self.features(x)).flatten(2)            # (B, C, S)
        return (phi * self.head.weight.view(1, -1, 1) / phi.shape[2]).flatten(1)


def _double_conv(a: int, b: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(a, b, 3, padding=1, bias=False), nn.InstanceNorm3d(b, affine=True), nn.LeakyReLU(0.1, True),
        nn.Conv3d(b, b, 3, padding=1, bias=False), nn.InstanceNorm3d(b, affine=True), nn.LeakyReLU(0.1, True),
    )


class NoiseUNet(nn.Module):
    """3D U-Net returning a noise mask B in (0, 1), computed at half resolution
    and optionally refined at full resolution."""

    def __init__(self, channels: tuple[int, ...] = (8, 16, 32), full_resolution_head: bool = False):
        super().__init__()
        self.down = nn.ModuleList()
        previous = 1
        for width in channels:
            self.down.append(_double_conv(previous, width))
            previous = width
        self.up = nn.ModuleList()
        for width in reversed(channels[:-1]):
            self.up.append(_double_conv(previous + width, width))
            previous = width
        self.out = nn.Conv3d(previous, 1, 1)
        self.head = None
        if full_resolution_head:
            self.head = nn.Sequential(
                nn.Conv3d(previous + 1, 4, 3, padding=1, bias=False), nn.InstanceNorm3d(4, affine=True),
                nn.LeakyReLU(0.1, True), nn.Conv3d(4, 1, 1),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, X, Y, Z) -> (B, 1, X, Y, Z) mask in (0, 1)."""
        full_size = x.shape[2:]
        h = F.avg_pool3d(x, 2)
        skips = []
        for i, block in enumerate(self.down):
            if i:
                h = F.max_pool3d(h, 2)
            h = block(h)
            skips.append(h)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            h = F.interpolate(h, size=skip.shape[2:], mode="trilinear", align_corners=False)
            h = block(torch.cat([h, skip], dim=1))
        logits = F.interpolate(self.out(h), size=full_size, mode="trilinear", align_corners=False)
        if self.head is not None:
            # A correction on top of the coarse logits: training starts from the half-resolution mask.
            features = F.interpolate(h, size=full_size, mode="trilinear", align_corners=False)
            logits = logits + self.head(torch.cat([features, x], dim=1))
        return torch.sigmoid(logits)


#: The left-right axis of the networks' input (batch, channel, X, Y, Z): X on the LAS MNI grid.
LEFT_RIGHT = 2


def mirror(x: torch.Tensor) -> torch.Tensor:
    """Network input (or output) flipped left-right: the flip the predictor is trained with."""
    return torch.flip(x, dims=[LEFT_RIGHT])
