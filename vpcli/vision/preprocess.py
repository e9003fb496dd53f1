"""Input normalisation of the vision network (paper App. B.2) and its exact inverse.

Each scan is conformed to RAS voxel order, cropped to the head with a margin and its
intensities mapped robustly to [0, 1]. Reorienting is a permutation/flip of voxel axes
and cropping is integer slicing, so nothing is interpolated on the way in, and the way
out (:meth:`PreparedScan.restore`) pads and un-permutes exactly: outputs land on the
input grid with the input's own shape and geometry object (header preserved).
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

from vpcli.vision.config import VisionConfig

if TYPE_CHECKING:
    import torch
    import voxel as vx

    from vpcli.volumes import Scan

#: at most this many voxels are used to estimate intensity percentiles (torch.quantile
#: refuses inputs over 2^24 elements, and a strided subsample is plenty for a percentile)
_PERCENTILE_SAMPLE = 1 << 20


@dataclasses.dataclass(frozen=True, eq=False)
class PreparedScan:
    """A scan as the network sees it, plus what is needed to map outputs back.

    Attributes:
        scan: The input scan.
        volume: Float32 single-channel volume in [0, 1], RAS voxel order, cropped to
            the head; its geometry maps voxels to the scan's scanner RAS mm.
        ras_geometry: Geometry of the whole scan after RAS reordering (before cropping).
        crop_start: First kept voxel index along each RAS-ordered axis.
        intensity_range: Input intensities (the image's own units) mapped to 0 and 1.
        fine_volume: The normalised intensities on the grid intensity refinement works on:
            the cropped grid before coarsening to the config's ``min_spacing_mm``, or, with
            ``refined_upsampled``, that grid interpolated finer; None when the scan was
            neither coarsened nor upsampled.
        refined_upsampled: ``fine_volume`` is a finer grid than the scan's own, made for
            refinement only (a scan no finer than the working grid, the config's
            ``refinement_spacing_mm``); the scan's own grid is then :attr:`volume`'s.
        refinable: Intensity refinement applies on :attr:`fine_volume` (the scan has an
            axis finer than the working grid, or ``refined_upsampled``); False for a scan
            resampled onto the working grid only to match training
            (``isotropic_working_grid``, a thick-slice axis), whose masks are the working
            grid's probabilities resampled onto its own grid.
    """
    scan: 'Scan'
    volume: 'vx.Volume'
    ras_geometry: 'vx.AcquisitionGeometry'
    crop_start: tuple[int, int, int]
    intensity_range: tuple[float, float]
    fine_volume: 'vx.Volume | None' = None
    refined_upsampled: bool = False
    refinable: bool = False

    @property
    def fine_geometry(self) -> 'vx.AcquisitionGeometry | None':
        """The grid of :attr:`fine_volume` (None without one)."""
        return None if self.fine_volume is None else self.fine_volume.geometry

    def upsample(self, tensor: 'torch.Tensor', mode: str = 'linear',
                 antialias: bool = False) -> 'torch.Tensor':
        """A ``(C, X, Y, Z)`` tensor on the working grid, resampled to :attr:`fine_volume`'s
        grid (unchanged without one; ``antialias``: smoothed first along axes where that
        grid is coarser, ``isotropic_working_grid``). Differentiable."""
        import voxel as vx
        if self.fine_volume is None:
            return tensor
        return vx.Volume(tensor, self.volume.geometry.to(tensor.device)).resample_like(
            self.fine_volume.geometry.to(tensor.device), mode=mode, antialias=antialias).tensor

    def restore(self, tensor: 'torch.Tensor', fill: float = 0.0,
                fine: bool = False) -> 'vx.Volume':
        """Map features on the prepared grid back onto the input scan's grid.

        Differentiable (trilinear resampling from a coarsened working grid, padding,
        axis permutation).

        Args:
            tensor: ``(C, X, Y, Z)`` tensor on the grid of :attr:`volume` (with ``fine``:
                on the grid of :attr:`fine_volume`).
            fill: Value outside the head crop.
            fine: The tensor is on :attr:`fine_volume`'s grid (the scan's own resolution,
                or, with :attr:`refined_upsampled`, finer: then it is averaged back onto
                the scan's grid, antialiased, and is no longer differentiable-exact).

        Returns:
            A volume with the input's exact shape and geometry (voxel -> scanner RAS mm).
        """
        import torch
        import voxel as vx

        if fine and self.refined_upsampled:  # from the refinement grid down to the scan's
            tensor = vx.Volume(tensor, self.fine_volume.geometry.to(tensor.device)).resample_like(
                self.volume.geometry.to(tensor.device), mode='linear', antialias=True).tensor
        elif not fine and not self.refined_upsampled:  # back from the working grid
            tensor = self.upsample(tensor, antialias=not self.refinable)
        full = tuple(int(n) for n in self.ras_geometry.baseshape)
        padding = []
        for start, size, total in reversed(list(zip(self.crop_start, tensor.shape[1:], full))):
            padding += [start, total - start - int(size)]
        if any(padding):
            tensor = torch.nn.functional.pad(tensor, padding, value=fill)
        original = self.scan.volume.geometry
        ras = vx.Volume(tensor, self.ras_geometry.to(tensor.device))
        restored = ras.reorient(original.orientation)
        if tuple(restored.baseshape) != tuple(original.baseshape):  # pragma: no cover - invariant
            raise RuntimeError(f'{self.scan.label}: restored grid {tuple(restored.baseshape)} '
                               f'differs from the input grid {tuple(original.baseshape)}')
        if original.device != tensor.device:
            original = original.to(tensor.device)
        return vx.Volume(restored.tensor, original)


def robust_range(tensor: 'torch.Tensor', percentiles: tuple[float, float]) -> tuple[float, float]:
    """Low and high intensity percentiles of a tensor (a strided subsample for big ones)."""
    import torch

    flat = tensor.reshape(-1).float()
    if flat.numel() > _PERCENTILE_SAMPLE:
        flat = flat[::math.ceil(flat.numel() / _PERCENTILE_SAMPLE)]
    quantiles = torch.tensor([p / 100 for p in percentiles], device=flat.device)
    low, high = torch.quantile(flat, quantiles).tolist()
    return float(low), float(high)


def prepare_scan(scan: 'Scan', config: VisionConfig, device: 'torch.device | str' = 'cpu',
                 refinement: bool = False, isotropic: bool = False) -> PreparedScan:
    """Normalise one scan for the network: RAS voxel order, head crop, intensities to [0, 1].

    Args:
        scan: An input scan (any voxel order, any spacing; integer or float voxels).
        config: Supplies the percentiles, head threshold and head margin (mm).
        device: Where the prepared volume lives.
        refinement: The scan's labels will be refined (:meth:`VoxelNet.refines`): a scan
            no finer than the working grid gets its refinement grid (the config's
            ``refinement_spacing_mm``).
        isotropic: Resample onto a working grid of ``min_spacing_mm`` on every axis (the
            config's ``isotropic_working_grid`` at run time), not only coarsen the axes
            finer than it.

    Returns:
        The prepared scan; :meth:`PreparedScan.restore` undoes the geometry changes.
    """
    import torch

    from vpcli.volumes import voxel_spacing_mm
    volume = scan.volume.to(device)
    volume = volume.new(volume.tensor[:1].float())  # scans are single-channel (load_volume)
    ras = volume.reorient('RAS')
    ras_geometry = ras.geometry
    tensor = ras.tensor
    low, high = robust_range(tensor, config.intensity_percentiles)
    if high <= low:  # (nearly) constant image: fall back to the full range
        low, high = float(tensor.min()), float(tensor.max())

    # head bounding box: voxels clearly above the background level, plus a margin in mm
    shape = tuple(int(n) for n in ras.baseshape)
    start, stop = [0, 0, 0], list(shape)
    if high > low:
        head = tensor[0] > low + config.head_threshold * (high - low)
        if bool(head.any()):
            spacing_mm = voxel_spacing_mm(ras.geometry).tolist()
            for axis in range(3):
                others = tuple(a for a in range(3) if a != axis)
                present = head.any(dim=others).nonzero().flatten()
                margin = math.ceil(config.head_margin_mm / spacing_mm[axis] - 1e-6)
                start[axis] = max(0, int(present[0]) - margin)
                stop[axis] = min(shape[axis], int(present[-1]) + 1 + margin)
    if start != [0, 0, 0] or stop != list(shape):
        ras = ras.crop((slice(None), *(slice(a, b) for a, b in zip(start, stop))))

    scale = high - low if high > low else 1.0
    normalised = ras.new(((ras.tensor - low) / scale).clamp(0, 1))
    fine_volume = None
    refinable = False
    floor = float(getattr(config, 'min_spacing_mm', 0.0) or 0.0)
    if floor > 0:
        spacing = torch.from_numpy(voxel_spacing_mm(normalised.geometry))
        refinable = bool((spacing < floor - 1e-6).any())
        if refinable or (isotropic and bool(((spacing - floor).abs() > 1e-6).any())):
            fine_volume = normalised
            wanted = torch.full_like(spacing, floor) if isotropic else \
                torch.clamp(spacing, min=floor)
            normalised = _resampled(normalised, spacing, wanted, antialias=True)
    upsampled = False
    finest = float(getattr(config, 'refinement_spacing_mm', 0.0) or 0.0)
    if refinement and fine_volume is None and finest > 0:
        spacing = torch.from_numpy(voxel_spacing_mm(normalised.geometry))
        if bool((spacing > finest + 1e-6).any()):
            fine_volume = _resampled(normalised, spacing, torch.clamp(spacing, max=finest),
                                     mode='linear')
            upsampled = True
    return PreparedScan(scan=scan, volume=normalised, ras_geometry=ras_geometry,
                        crop_start=tuple(start), intensity_range=(low, high),
                        fine_volume=fine_volume, refined_upsampled=upsampled,
                        refinable=refinable or upsampled)


def _resampled(volume: 'vx.Volume', spacing: 'torch.Tensor', wanted: 'torch.Tensor',
               **options) -> 'vx.Volume':
    """``volume`` resampled so that its voxel spacing (``spacing``, mm per axis, as
    :func:`vpcli.volumes.voxel_spacing_mm` measures it) becomes ``wanted``. voxel's resample
    reads a target in its own (QR) spacing, so that is scaled by how much each axis must
    change; on grids without shear this is exactly ``wanted``."""
    own = volume.geometry.spacing
    target = own.double().cpu() * (wanted / spacing)
    return volume.resample(target.to(own), **options)
