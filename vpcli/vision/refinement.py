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
- the posterior at a voxel is ``prior_l · N(I; μ_l, σ_l)``, normalised over the labels,
  and shares the mass the network gives to non-background, so the background (the brain's
  outer edge) never moves: refinement redraws edges between labels only;
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
                  fixed: torch.Tensor | None = None) -> RefinedLabels:
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
    share = (1.0 - background)[brain]                      # (N,)
    channel = labels[:, brain].long()                      # (K, N)
    weight = values[:, brain]
    weight = weight / weight.sum(0, keepdim=True).clamp_min(1e-12)
    log_prior = weight.clamp_min(1e-12).log()
    intensity = image[brain]
    posterior = weight
    held = None if fixed is None else fixed.to(prior.device)[channel]   # (K, N)
    free_share = 1.0 if held is None else 1.0 - (weight * held).sum(0, keepdim=True)
    means = torch.zeros(channels, device=prior.device)
    sds = torch.ones(channels, device=prior.device)
    for _ in range(max(1, iterations)):
        w = (posterior * share).flatten()
        flat = channel.flatten()
        seen = intensity.repeat(channel.shape[0])
        mass = torch.zeros(channels, device=prior.device).index_add_(0, flat, w)
        first = torch.zeros(channels, device=prior.device).index_add_(0, flat, w * seen)
        second = torch.zeros(channels, device=prior.device).index_add_(0, flat, w * seen * seen)
        total = mass[1:].sum().clamp_min(1e-12)
        pooled_mean = first[1:].sum() / total
        pooled_sd = (second[1:].sum() / total - pooled_mean ** 2).clamp_min(MIN_SD ** 2).sqrt()
        means = torch.where(mass >= MIN_VOXELS, first / mass.clamp_min(1e-12), pooled_mean)
        variance = second / mass.clamp_min(1e-12) - means ** 2
        sds = torch.where(mass >= MIN_VOXELS, variance.clamp_min(MIN_SD ** 2).sqrt(), pooled_sd)
        log_likelihood = -0.5 * ((intensity[None] - means[channel]) / sds[channel]) ** 2 \
            - sds[channel].log()
        if held is None:
            posterior = torch.softmax(log_prior + log_likelihood, dim=0)
        else:
            free = torch.softmax((log_prior + log_likelihood).masked_fill(held, -torch.inf), 0)
            posterior = torch.where(held, weight, free.nan_to_num(0.0) * free_share)
    refined = torch.zeros_like(values)
    refined[:, brain] = posterior * share
    labels[:, ~brain] = 0
    return RefinedLabels(background=background, labels=labels, probabilities=refined,
                         means=means, sds=sds)
