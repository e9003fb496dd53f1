"""Intensity refinement: the dense network's labels at the scan's own resolution.

The CPU network works on a 2 mm grid, so on a 1 mm scan its label probabilities are
trilinear blends across every boundary: a sulcus one or two voxels wide cannot show, and
the grey/white edge is wherever the blend crosses one half. The scan itself shows those
edges. Refinement treats the network's anatomical softmax, resampled to the scan's grid,
as a spatial prior and combines it with an intensity model fitted to the scan itself, as
atlas-based segmentation does (Ashburner & Friston's unified segmentation; FreeSurfer's
SAMSEG, Puonti et al. 2016), with the network in the atlas's place:

- every label *l* gets one Gaussian of the normalised intensity, N(μ_l, σ_l), fitted by
  expectation-maximisation on this scan (weights: the current posterior), so the model
  follows the scan's contrast, whatever it is (T1, T2, FLAIR, CT);
- the posterior at a voxel is ``prior_l · N(I; μ_l, σ_l)``, normalised over the labels;
- with ``edge`` (the ``edge_refinement`` config key) the background competes too, where
  the prior leaves it between ``BRAIN_FLOOR`` and ``1 - BRAIN_FLOOR`` (the band the 2 mm
  prior blurs the brain's outer edge over): it gets a mixture of ``BACKGROUND_COMPONENTS``
  Gaussians (CSF, dura, skull, fat, the zeros of a stripped scan) fitted over that band,
  so the brain ends where the scan shows it ending, as SAMSEG's background class does.
  Without it the labels share the mass the network gives to non-background and the edge
  never moves;
- where labels do not differ in intensity (thalamus and white matter on CT) the Gaussians
  overlap, the likelihood ratio is near one and the prior decides.

Only the ``TOP_LABELS`` most probable labels of each voxel's prior are kept (the rest hold
a negligible share there), which keeps the cost near one pass over the prior. A voxel
whose prior background exceeds ``1 - BRAIN_FLOOR`` keeps no labels.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
import voxel as vx

#: labels kept per voxel (by prior probability)
TOP_LABELS = 4
#: voxels whose prior non-background share is below this keep no labels
BRAIN_FLOOR = 1e-3
#: expectation-maximisation rounds of the intensity model
ITERATIONS = 3
#: smallest standard deviation of a label's intensity (normalised units, [0, 1])
MIN_SD = 0.02
#: a label with less prior mass than this many voxels takes the pooled intensity model
MIN_VOXELS = 20.0
#: fine-grid voxels per slab while resampling the prior (bounds the memory of the pass)
SLAB_VOXELS = 1 << 19
#: Gaussians of the background's intensity model along the brain's edge (``edge``)
BACKGROUND_COMPONENTS = 2
#: at most this many band voxels set the background model's starting means (quantiles)
QUANTILE_SAMPLE = 1 << 20


@dataclasses.dataclass(eq=False)
class RefinedLabels:
    """A stream's anatomical posterior on its output grid, compactly.

    Attributes:
        background: ``(X, Y, Z)`` background probability (the network's, resampled).
        labels: ``(K, X, Y, Z)`` anatomical channel of each kept label (0: none).
        probabilities: ``(K, X, Y, Z)`` their posterior probabilities; they sum to
            ``1 - background`` where a voxel keeps labels.
        means: ``(channels,)`` fitted intensity mean per anatomical channel.
        sds: ``(channels,)`` fitted intensity standard deviation per channel.
    """
    background: torch.Tensor
    labels: torch.Tensor
    probabilities: torch.Tensor
    means: torch.Tensor
    sds: torch.Tensor

    def total(self, channels: Sequence[int]) -> torch.Tensor:
        """``(1, X, Y, Z)`` probability that a voxel belongs to any of ``channels``."""
        member = torch.zeros(int(self.means.numel()), dtype=torch.bool,
                             device=self.labels.device)
        member[list(channels)] = True
        member[0] = False
        chosen = member[self.labels.long()]
        return (self.probabilities * chosen).sum(0, keepdim=True)


class _Interpolator:
    """Trilinear interpolation of the working-grid prior at output voxels, label by label.

    Each cell of the working grid (the cube between eight neighbouring voxel centres)
    keeps the ``TOP_LABELS`` labels with the most probability summed over its corners; an
    output voxel interpolates only its cell's labels. Any affine mapping between the grids
    works (sheared ones too); beyond the working grid the edge values hold.
    """

    def __init__(self, prior: torch.Tensor, working: 'vx.AcquisitionGeometry',
                 output: 'vx.AcquisitionGeometry', keep: int) -> None:
        import torch.nn.functional as F
        pad = [0 if n > 1 else 1 for n in reversed(prior.shape[1:]) for _ in (0, 1)]
        pad = [p if i % 2 else 0 for i, p in enumerate(pad)]  # pad size-1 axes at their end
        if any(pad):
            prior = F.pad(prior[None], pad, mode='replicate')[0]
        self.prior = prior.reshape(prior.shape[0], -1)
        self.sizes = torch.tensor(prior.shape[1:], device=prior.device)
        # each cell's labels summed over its 8 corners (avg_pool3d's sum, one axis at a time:
        # a third of its time on CPU for a 107-channel prior)
        cells = prior[1:, 1:] + prior[1:, :-1]
        cells = cells[:, :, 1:] + cells[:, :, :-1]
        cells = cells[:, :, :, 1:] + cells[:, :, :, :-1]
        self.cell_sizes = torch.tensor(cells.shape[1:], device=prior.device)
        self.candidates = (cells.reshape(cells.shape[0], -1).topk(keep, dim=0).indices + 1)
        mapping = torch.linalg.inv(working.tensor.double().cpu()) @ output.tensor.double().cpu()
        self.mapping = mapping[:3].to(prior.device)
        self.output_shape = tuple(int(n) for n in output.baseshape)

    def _corners(self, voxels: torch.Tensor):
        """Flat working-grid indices of the 8 corners ``(8, n)``, their weights ``(8, n)``
        and the flat cell index ``(n,)`` of output voxels with flat indices ``voxels``."""
        y_z = self.output_shape[1] * self.output_shape[2]
        ijk = torch.stack([voxels // y_z, (voxels // self.output_shape[2]) % self.output_shape[1],
                           voxels % self.output_shape[2]]).double()
        source = self.mapping[:, :3] @ ijk + self.mapping[:, 3:]
        limit = (self.sizes - 1).double()[:, None]
        source = torch.minimum(source.clamp_min(0), limit)
        base = torch.minimum(source.floor(), (self.sizes - 2).double()[:, None]).long()
        fraction = (source - base).float()
        cell = (base[0] * self.cell_sizes[1] + base[1]) * self.cell_sizes[2] + base[2]
        corners, weights = [], []
        for dx in (0, 1):
            for dy in (0, 1):
                for dz in (0, 1):
                    corners.append(((base[0] + dx) * self.sizes[1] + base[1] + dy) * self.sizes[2]
                                   + base[2] + dz)
                    weight = fraction[0] if dx else 1 - fraction[0]
                    weight = weight * (fraction[1] if dy else 1 - fraction[1])
                    weights.append(weight * (fraction[2] if dz else 1 - fraction[2]))
        return torch.stack(corners), torch.stack(weights), cell

    def at(self, voxels: torch.Tensor, below: float | None = None):
        """The prior at output voxels (flat indices ``voxels``): the background ``(n,)``
        and, where it is below ``below`` (None: nowhere), the positions of those voxels in
        ``voxels`` with their cells' candidate labels ``(K, m)`` and prior ``(K, m)``."""
        corners, weights, cell = self._corners(voxels)
        background = (self.prior[0][corners] * weights).sum(0)
        if below is None:
            return background, None, None, None
        kept = (background < below).nonzero().flatten()
        corners, weights = corners[:, kept], weights[:, kept]
        labels = self.candidates[:, cell[kept]]
        values = sum(self.prior[labels, corners[c][None]] * weights[c][None]
                     for c in range(corners.shape[0]))
        return background, kept, labels, values


def refine_labels(prior: torch.Tensor, working: 'vx.AcquisitionGeometry',
                  image: torch.Tensor, output: 'vx.AcquisitionGeometry',
                  iterations: int = ITERATIONS,
                  fixed: torch.Tensor | None = None, edge: bool = False) -> RefinedLabels:
    """Refine a stream's anatomical softmax with its own intensities.

    Args:
        prior: ``(channels, x, y, z)`` anatomical softmax (background first) on the
            working grid.
        working: Its geometry (voxel -> scanner RAS mm).
        image: ``(1, X, Y, Z)`` or ``(X, Y, Z)`` normalised intensities on the output grid.
        output: The output grid (the scan's own resolution, RAS order, head crop).
        iterations: Expectation-maximisation rounds.
        fixed: ``(channels,)`` booleans: labels that keep their prior probability (the
            others share the rest by prior and intensity); None: none.
        edge: Let the background compete along the brain's edge (its own intensity
            mixture, fitted over the band where the prior leaves it uncertain); False: the
            background keeps its prior everywhere.

    Returns:
        The posterior, :class:`RefinedLabels`.
    """
    channels = int(prior.shape[0])
    shape = tuple(int(n) for n in output.baseshape)
    image = image.reshape(shape).float()
    keep = min(TOP_LABELS, channels - 1)
    interpolator = _Interpolator(prior.float(), working, output, keep)
    total = shape[0] * shape[1] * shape[2]
    background = torch.empty(total, dtype=torch.float32, device=prior.device)
    labels = torch.zeros((keep, total), dtype=torch.int16, device=prior.device)
    values = torch.zeros((keep, total), dtype=torch.float32, device=prior.device)
    for start in range(0, total, SLAB_VOXELS):
        voxels = torch.arange(start, min(total, start + SLAB_VOXELS), device=prior.device)
        background[voxels], kept, chosen, prior_values = interpolator.at(
            voxels, below=1.0 - BRAIN_FLOOR)
        inside = voxels[kept]
        labels[:, inside] = chosen.to(torch.int16)
        values[:, inside] = prior_values.clamp_min(0)
    background = background.clamp(0, 1).reshape(shape)
    labels = labels.reshape(keep, *shape)
    values = values.reshape(keep, *shape)

    brain = (1.0 - background) > BRAIN_FLOOR
    prior_background = background[brain]                   # (N,)
    channel = labels[:, brain].long()                      # (K, N)
    weight = values[:, brain]
    weight = weight / weight.sum(0, keepdim=True).clamp_min(1e-12)
    intensity = image[brain]
    # rows: the background, then the K kept labels; their prior sums to one per voxel
    joint = torch.cat([prior_background[None], (1.0 - prior_background)[None] * weight])
    log_prior = joint.clamp_min(1e-12).log()
    band = prior_background > BRAIN_FLOOR                  # where the edge may move
    band_intensity = intensity[band]
    competes = edge and float(band.sum()) >= MIN_VOXELS
    held = torch.zeros_like(joint, dtype=torch.bool)
    held[0] = ~band if competes else True
    if fixed is not None:
        held[1:] = fixed.to(prior.device)[channel]
    free_share = 1.0 - (joint * held).sum(0, keepdim=True)
    background_model = _BackgroundModel(band_intensity) if competes else None
    posterior = joint
    for _ in range(max(1, iterations)):
        means, sds = _label_model(posterior[1:], channel, intensity, channels)
        log_likelihood = torch.empty_like(joint)
        log_likelihood[1:] = -0.5 * ((intensity[None] - means[channel]) / sds[channel]) ** 2 \
            - sds[channel].log()
        log_likelihood[0] = 0.0
        if background_model is not None:
            background_model.fit(band_intensity, posterior[0, band])
            log_likelihood[0, band] = background_model.log_likelihood(band_intensity)
        free = torch.softmax((log_prior + log_likelihood).masked_fill(held, -torch.inf), 0)
        posterior = torch.where(held, joint, free.nan_to_num(0.0) * free_share)
    background[brain] = posterior[0]
    refined = torch.zeros_like(values)
    refined[:, brain] = posterior[1:]
    labels[:, ~brain] = 0
    return RefinedLabels(background=background, labels=labels, probabilities=refined,
                         means=means, sds=sds)


def _label_model(posterior: torch.Tensor, channel: torch.Tensor, intensity: torch.Tensor,
                 channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One Gaussian of intensity per channel, weighted by the labels' posterior ``(K, N)``:
    ``(means, sds)``; a channel with under ``MIN_VOXELS`` of mass takes the pooled model."""
    device = posterior.device
    w = posterior.flatten()
    flat = channel.flatten()
    seen = intensity.repeat(channel.shape[0])
    mass = torch.zeros(channels, device=device).index_add_(0, flat, w)
    first = torch.zeros(channels, device=device).index_add_(0, flat, w * seen)
    second = torch.zeros(channels, device=device).index_add_(0, flat, w * seen * seen)
    total = mass[1:].sum().clamp_min(1e-12)
    pooled_mean = first[1:].sum() / total
    pooled_sd = (second[1:].sum() / total - pooled_mean ** 2).clamp_min(MIN_SD ** 2).sqrt()
    means = torch.where(mass >= MIN_VOXELS, first / mass.clamp_min(1e-12), pooled_mean)
    variance = second / mass.clamp_min(1e-12) - means ** 2
    sds = torch.where(mass >= MIN_VOXELS, variance.clamp_min(MIN_SD ** 2).sqrt(), pooled_sd)
    return means, sds


class _BackgroundModel:
    """The background's intensity along the brain's edge: a mixture of
    ``BACKGROUND_COMPONENTS`` Gaussians (what lies outside a brain is many tissues, or the
    zeros of a stripped scan), refitted by one EM step per refinement round, weighted by
    the background's posterior. Starting means: evenly spaced quantiles of the band."""

    def __init__(self, band: torch.Tensor) -> None:
        stride = max(1, band.numel() // QUANTILE_SAMPLE)
        levels = (torch.arange(BACKGROUND_COMPONENTS, device=band.device) + 0.5) \
            / BACKGROUND_COMPONENTS
        self.means = torch.quantile(band[::stride], levels)
        self.sds = torch.full_like(self.means, 0.1)
        self.weights = torch.full_like(self.means, 1.0 / BACKGROUND_COMPONENTS)

    def _components(self, intensity: torch.Tensor) -> torch.Tensor:
        return self.weights.log()[:, None] - self.sds.log()[:, None] \
            - 0.5 * ((intensity[None] - self.means[:, None]) / self.sds[:, None]) ** 2

    def fit(self, intensity: torch.Tensor, weight: torch.Tensor) -> None:
        responsibility = torch.softmax(self._components(intensity), 0) * weight[None]
        mass = responsibility.sum(1)
        if float(mass.sum()) < MIN_VOXELS:
            return
        mass = mass.clamp_min(1e-9)
        self.means = (responsibility * intensity[None]).sum(1) / mass
        variance = (responsibility * (intensity[None] - self.means[:, None]) ** 2).sum(1) / mass
        self.sds = variance.clamp_min(MIN_SD ** 2).sqrt()
        self.weights = (mass / mass.sum()).clamp_min(1e-6)

    def log_likelihood(self, intensity: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(self._components(intensity), 0)
