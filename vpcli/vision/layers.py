"""Building blocks of the native-resolution vision network.

Every stream (one per input scan) is a ``(C, X, Y, Z)`` feature tensor with its own
:class:`voxel.AcquisitionGeometry` (voxel -> scanner RAS mm). Convolutions run on each
stream's own grid; only the cross-stream attention meets on a shared grid.
"""

from __future__ import annotations

import math

import torch
import voxel as vx
from torch import nn
from torch.nn import functional as F


# voxel's own (QR) spacing here, not vpcli.volumes.voxel_spacing_mm: must agree with voxel's pool()
def is_anisotropic(geometry: vx.AcquisitionGeometry, threshold: float) -> bool:
    """True when slice spacing exceeds ``threshold`` times the in-plane spacing."""
    return float(geometry.spacing_ratio) > threshold


class NativeConv(nn.Module):
    """A 3x3x3 convolution that becomes 3x3x1 on thick-slice grids (paper v1 App. A.1).

    On a grid whose slice/in-plane spacing ratio exceeds the threshold, only the central
    slice of the kernel along the slice axis is used, so information is not smeared
    across slices that are far apart; the weights are shared with the 3D case.
    """

    def __init__(self, in_channels: int, out_channels: int, anisotropy_threshold: float) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, 3, padding=1)
        self.anisotropy_threshold = anisotropy_threshold

    def forward(self, features: torch.Tensor, geometry: vx.AcquisitionGeometry) -> torch.Tensor:
        """Convolve one stream ``(C, X, Y, Z)`` on its own grid."""
        weight, padding = self.conv.weight, [1, 1, 1]
        if is_anisotropic(geometry, self.anisotropy_threshold):
            axis = int(geometry.slice_direction)
            weight = weight.narrow(2 + axis, 1, 1)
            padding[axis] = 0
        return F.conv3d(features.unsqueeze(0), weight, self.conv.bias, padding=tuple(padding))[0]


def pooling_factors(coarse: vx.AcquisitionGeometry,
                    fine: vx.AcquisitionGeometry) -> tuple[int, ...] | None:
    """Per-axis factors when ``coarse`` is exactly ``fine`` pooled (as ``voxel`` pools), else None."""
    ratio = (coarse.spacing / fine.spacing.to(coarse.device)).cpu()
    factors = ratio.round()
    if not torch.allclose(ratio, factors, atol=1e-4, rtol=0) or bool((factors < 1).any()):
        return None
    factors = tuple(int(f) for f in factors)
    shape = tuple(math.ceil(int(n) / f) for n, f in zip(fine.baseshape, factors))
    if shape != tuple(int(n) for n in coarse.baseshape):
        return None
    expected = fine.shift([0.5 * (f - 1) for f in factors], space='voxel').scale(factors, space='voxel')
    if not torch.allclose(expected.tensor.float(), coarse.tensor.float().to(expected.device),
                          atol=1e-4, rtol=0):
        return None
    return factors


def upsample(features: torch.Tensor, coarse: vx.AcquisitionGeometry,
             fine: vx.AcquisitionGeometry) -> torch.Tensor:
    """Trilinear upsampling of ``(C, X, Y, Z)`` features from ``coarse`` onto ``fine``.

    Values beyond the coarse grid's outer voxel centres are clamped (``border``). When
    ``coarse`` is ``fine`` pooled, ``torch.nn.functional.interpolate`` gives the same
    result as ``voxel``'s resampling without building a coordinate grid.
    """
    factors = pooling_factors(coarse, fine)
    if factors is None:
        return vx.Volume(features, coarse).resample_like(fine, mode='linear',
                                                         padding_mode='border').tensor
    upsampled = F.interpolate(features.unsqueeze(0), scale_factor=[float(f) for f in factors],
                              mode='trilinear', align_corners=False,
                              recompute_scale_factor=False)[0]
    x, y, z = (int(n) for n in fine.baseshape)
    return upsampled[:, :x, :y, :z]


def world_aligned_shared_grid(geometries: list[vx.AcquisitionGeometry]) -> vx.AcquisitionGeometry:
    """The grid on which streams meet: covers every stream, finest spacing per world axis.

    Axis-aligned with scanner RAS; along each world axis the spacing is the minimum over
    streams of the spacing of the voxel axis closest to that world axis. Built from
    minima and maxima only, so it does not depend on the order of the streams.
    """
    from vpcli.volumes import voxel_spacing_mm
    lows, highs, spacings = [], [], []
    for geometry in geometries:
        matrix = geometry.tensor.double().cpu()
        linear = matrix[:3, :3]
        column_mm = torch.from_numpy(voxel_spacing_mm(matrix.numpy()))  # per voxel axis
        closest_axis = (linear.abs() / column_mm).argmax(dim=1)  # per world axis
        spacings.append(column_mm[closest_axis])
        shape = torch.tensor(list(geometry.baseshape), dtype=torch.float64)
        corners = torch.cartesian_prod(*[torch.tensor([-0.5, float(n) - 0.5], dtype=torch.float64)
                                         for n in shape])
        world = corners @ linear.T + matrix[:3, 3]
        lows.append(world.min(0).values)
        highs.append(world.max(0).values)
    spacing = torch.stack(spacings).min(0).values
    low = torch.stack(lows).min(0).values
    high = torch.stack(highs).max(0).values
    shape = torch.ceil((high - low) / spacing - 1e-6).clamp(min=1).long()
    matrix = torch.eye(4, dtype=torch.float64)
    matrix[:3, :3] = torch.diag(spacing)
    matrix[:3, 3] = low + spacing / 2
    device = geometries[0].device
    return vx.AcquisitionGeometry(torch.Size(shape.tolist()), matrix.float().to(device))


def same_geometry(a: vx.AcquisitionGeometry, b: vx.AcquisitionGeometry) -> bool:
    """Same grid shape and voxel-to-world matrix (within 1e-4 mm)."""
    return tuple(a.baseshape) == tuple(b.baseshape) and torch.allclose(
        a.tensor.float(), b.tensor.float().to(a.tensor.device), atol=1e-4, rtol=0)


class Pointwise(nn.Module):
    """A fully connected layer applied at every voxel (a 1x1x1 convolution).

    Written as a matrix product over the flattened voxels, which on CPU is several
    times faster than ``conv3d`` with a 1x1x1 kernel.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__()
        layer = nn.Linear(in_channels, out_channels, bias=bias)  # its default initialisation
        self.weight = layer.weight
        self.bias = layer.bias

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(..., C_in, X, Y, Z)`` -> ``(..., C_out, X, Y, Z)``."""
        spatial = features.shape[-3:]
        flat = features.flatten(-3)
        out = torch.matmul(self.weight, flat)
        if self.bias is not None:
            out = out + self.bias.unsqueeze(-1)
        return out.unflatten(-1, spatial)

    def rows(self, features: torch.Tensor, start: int, stop: int | None = None) -> torch.Tensor:
        """Output channels ``start:stop`` of :meth:`forward` on a batch ``(B, C_in, X, Y,
        Z)``, computed alone (no full output to slice: its backward would fill and copy
        every channel), with the bias added inside the matrix product."""
        spatial = features.shape[-3:]
        flat = features.flatten(-3)
        weight = self.weight[start:stop]
        if self.bias is None:
            out = torch.matmul(weight, flat)
        else:
            out = torch.baddbmm(self.bias[start:stop, None].unsqueeze(0),
                                weight.unsqueeze(0).expand(flat.shape[0], -1, -1), flat)
        return out.unflatten(-1, spatial)


class StreamInteraction(nn.Module):
    """Attention across streams at each voxel of a shared grid (paper v1 Eq. 1).

    ``B = f(softmax(Q K^T / sqrt(b)) V) + A``: streams are resampled (trilinear, through
    ``voxel``) to :func:`world_aligned_shared_grid`, attend to each other voxel by voxel
    (keys outside a stream's field of view are masked by its resampled coverage), and
    the update ``f(...)`` is resampled back and added to each stream on its own grid,
    so the residual path never passes through interpolation.
    """

    def __init__(self, channels: int, attention_size: int) -> None:
        super().__init__()
        self.query = Pointwise(channels, attention_size)
        self.key = Pointwise(channels, attention_size)
        self.value = Pointwise(channels, attention_size)
        self.project = Pointwise(attention_size, channels)
        self.scale = 1 / math.sqrt(attention_size)

    def forward(self, streams: list[torch.Tensor],
                geometries: list[vx.AcquisitionGeometry]) -> list[torch.Tensor]:
        """Interact ``n`` streams ``(C, X_i, Y_i, Z_i)``; returns them updated, same grids."""
        if len(streams) == 1:
            # softmax over a single key is 1: the update is f(V(A)), no query or key needed
            return [streams[0] + self.project(self.value(streams[0]))]
        shared_is_native = all(same_geometry(geometries[0], g) for g in geometries[1:])
        if shared_is_native:
            shared = geometries[0]
            stacked = torch.stack(streams)
            log_coverage = None
        else:
            shared = world_aligned_shared_grid(geometries)
            resampled, coverage = [], []
            for features, geometry in zip(streams, geometries):
                ones = features.new_ones((1, *features.shape[1:]))
                moved = vx.Volume(torch.cat([features, ones]), geometry).resample_like(shared).tensor
                resampled.append(moved[:-1])
                coverage.append(moved[-1])
            stacked = torch.stack(resampled)
            log_coverage = torch.stack(coverage).clamp(min=1e-6).log()

        query, key, value = self.query(stacked), self.key(stacked), self.value(stacked)
        logits = torch.einsum('sbxyz,tbxyz->stxyz', query, key) * self.scale
        if log_coverage is not None:
            logits = logits + log_coverage.unsqueeze(0)
        weights = logits.softmax(dim=1)
        attended = torch.einsum('stxyz,tbxyz->sbxyz', weights, value)
        updates = self.project(attended)

        outputs = []
        for index, (features, geometry) in enumerate(zip(streams, geometries)):
            update = updates[index]
            if not shared_is_native:
                update = vx.Volume(update, shared).resample_like(geometry).tensor
            outputs.append(features + update)
        return outputs


class LevelBlock(nn.Module):
    """One level: native conv -> SiLU -> GroupNorm -> φ mixing -> stream interaction."""

    def __init__(self, in_channels: int, channels: int, phi_size: int, group_size: int,
                 attention_size: int, interact: bool, anisotropy_threshold: float,
                 phi_mixing: bool = True) -> None:
        super().__init__()
        self.conv = NativeConv(in_channels, channels, anisotropy_threshold)
        self.norm = nn.GroupNorm(channels // group_size, channels)
        # fc on [features, φ] == conv1x1 on features + a per-stream bias from φ; the
        # split form never materialises φ broadcast over every voxel
        self.mix_features = Pointwise(channels, channels)
        self.mix_phi = nn.Linear(phi_size, channels, bias=False) if phi_mixing else None
        self.interaction = StreamInteraction(channels, attention_size) if interact else None

    def forward(self, streams: list[torch.Tensor], geometries: list[vx.AcquisitionGeometry],
                phi: torch.Tensor) -> list[torch.Tensor]:
        """Run the level on every stream; ``phi`` is ``(n, phi_size)``."""
        phi_bias = self.mix_phi(phi) if self.mix_phi is not None else None
        mixed = []
        for index, (features, geometry) in enumerate(zip(streams, geometries)):
            features = F.silu(self.conv(features, geometry))
            features = self.norm(features.unsqueeze(0))[0]
            features = self.mix_features(features)
            if phi_bias is not None:
                features = features + phi_bias[index].view(-1, 1, 1, 1)
            mixed.append(F.silu(features))
        if self.interaction is not None:
            mixed = self.interaction(mixed, geometries)
        return mixed

    def forward_batch(self, features: torch.Tensor) -> torch.Tensor:
        """The level on a batch of single-scan samples ``(B, C, X, Y, Z)`` on one isotropic
        grid, with no φ (dense training): the same result as :meth:`forward` on each
        sample alone (a lone stream's attention is its value projection, added)."""
        if self.mix_phi is not None:
            raise ValueError('forward_batch is for networks without φ mixing')
        features = self.norm(F.silu(self.conv.conv(features)))
        features = F.silu(self.mix_features(features))
        if self.interaction is not None:
            features = features + self.interaction.project(self.interaction.value(features))
        return features


class LesionHead(nn.Module):
    """The lesion channels of a dense network from a head of their own: three 3x3x3
    convolutions (dilation 1, 2, 4: about 30 voxels of context) over the top-level
    generator features and the normalised image, then a pointwise layer to one logit per
    lesion class. Trained with the trunk frozen (``train = "lesion_head"`` recipes), so
    the anatomical channels stay exactly those of the trunk (docs/vision.md)."""

    def __init__(self, in_channels: int, width: int, out_channels: int, group_size: int) -> None:
        super().__init__()
        layers = []
        channels = in_channels
        for dilation in (1, 2, 4):
            layers += [nn.Conv3d(channels, width, 3, padding=dilation, dilation=dilation),
                       nn.GroupNorm(max(1, width // group_size), width), nn.SiLU()]
            channels = width
        self.body = nn.Sequential(*layers)
        self.out = Pointwise(width, out_channels)
        with torch.no_grad():  # start near a lesion prior of about 2 %, not 50 % everywhere
            self.out.bias.fill_(-4.0)

    def forward(self, features: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """``(B, C, X, Y, Z)`` features and ``(B, 1, X, Y, Z)`` image (or both unbatched)
        -> lesion logits ``(B, L, X, Y, Z)`` (or ``(L, X, Y, Z)``)."""
        unbatched = features.dim() == 4
        if unbatched:
            features, image = features.unsqueeze(0), image.unsqueeze(0)
        out = self.out(self.body(torch.cat([features, image.to(features.dtype)], dim=1)))
        return out[0] if unbatched else out
