"""Image synthesis from label maps (SynthSeg-style domain randomisation, App. C.5).

The pipeline, every step on :class:`voxel.Volume` with world geometry:

1. :func:`canvas_labels` - the source label map on an isotropic RAS canvas
   (nearest neighbour); the canvas is finer than most scans so that resampling each
   scan from it gives partial volume.
2. :func:`flip_left_right` - mirror the anatomy about the canvas mid-sagittal plane
   and swap every left label with its right partner.
3. :func:`random_spatial_transform` + :func:`apply_spatial_transform` - a random
   affine (rotation up to 10 deg, scaling 0.93-1.07, shear up to 0.03, translation
   up to 8 mm) and a smooth diffeomorphic deformation (random stationary velocity on
   a 16-40 mm control grid, integrated by scaling and squaring; displacements a few
   mm), applied in one interpolation.
4. :func:`tissue_intensities` + :func:`render_contrast` - per-label Gaussian
   intensities for T1w/T2w/FLAIR/PD/GRE/DWI/ADC/CT: contrast-plausible (tissue means
   in the usual order for the modality, each label jittered) or fully random
   (SynthSeg mode). CT is in HU, ADC in 1e-6 mm^2/s, MR in arbitrary units.
5. :func:`acquire` - resample onto the scan's own geometry with anti-aliasing
   (partial volume, slice thickness), then a smooth multiplicative bias field, a
   random blur, a gamma change and Gaussian noise.

Real template intensities: where a source ships an image (fsaverage ``T1.mgz``), a
T1w scan may use it instead of per-label intensities (see :mod:`vpcli.synth.cases`).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import voxel as vx

    from vpcli.synth.vocabulary import Vocabulary

#: modality -> tissue class -> plausible mean (MR: relative to white matter = 1; ADC in
#: 1e-6 mm^2/s; CT in HU). Orderings follow textbook contrast: T1w WM > GM > CSF,
#: T2w CSF > GM > WM, FLAIR GM > WM > CSF (nulled), PD CSF >= GM > WM, GRE: pallidum
#: dark (iron), DWI (b=1000 trace) CSF dark, ADC CSF bright.
TISSUE_MEANS = {
    'T1w': dict(background=0.05, cerebral_wm=1.0, cortex=0.62, cerebellar_wm=0.95,
                cerebellar_gm=0.62, thalamus=0.85, caudate=0.72, putamen=0.78, pallidum=0.9,
                hippocampus=0.65, amygdala=0.66, accumbens=0.7, ventral_dc=0.88,
                brainstem=0.9, ventricle=0.22, csf=0.25, choroid_plexus=0.5),
    'T2w': dict(background=0.05, cerebral_wm=0.45, cortex=0.72, cerebellar_wm=0.45,
                cerebellar_gm=0.7, thalamus=0.55, caudate=0.68, putamen=0.6, pallidum=0.45,
                hippocampus=0.75, amygdala=0.74, accumbens=0.68, ventral_dc=0.5,
                brainstem=0.5, ventricle=1.6, csf=1.55, choroid_plexus=0.9),
    'FLAIR': dict(background=0.05, cerebral_wm=0.7, cortex=0.95, cerebellar_wm=0.7,
                  cerebellar_gm=0.9, thalamus=0.8, caudate=0.88, putamen=0.82, pallidum=0.72,
                  hippocampus=1.0, amygdala=0.98, accumbens=0.86, ventral_dc=0.75,
                  brainstem=0.75, ventricle=0.15, csf=0.2, choroid_plexus=0.6),
    'PD': dict(background=0.05, cerebral_wm=0.7, cortex=0.9, cerebellar_wm=0.7,
               cerebellar_gm=0.88, thalamus=0.8, caudate=0.87, putamen=0.84, pallidum=0.75,
               hippocampus=0.92, amygdala=0.9, accumbens=0.86, ventral_dc=0.75,
               brainstem=0.74, ventricle=1.0, csf=1.0, choroid_plexus=0.9),
    'GRE': dict(background=0.05, cerebral_wm=0.62, cortex=0.8, cerebellar_wm=0.6,
                cerebellar_gm=0.78, thalamus=0.66, caudate=0.7, putamen=0.6, pallidum=0.38,
                hippocampus=0.82, amygdala=0.8, accumbens=0.7, ventral_dc=0.55,
                brainstem=0.6, ventricle=1.0, csf=1.0, choroid_plexus=0.7),
    'DWI': dict(background=0.05, cerebral_wm=0.8, cortex=0.92, cerebellar_wm=0.8,
                cerebellar_gm=0.9, thalamus=0.85, caudate=0.88, putamen=0.86, pallidum=0.8,
                hippocampus=0.95, amygdala=0.93, accumbens=0.88, ventral_dc=0.82,
                brainstem=0.82, ventricle=0.2, csf=0.22, choroid_plexus=0.5),
    'ADC': dict(background=0.0, cerebral_wm=720.0, cortex=820.0, cerebellar_wm=720.0,
                cerebellar_gm=800.0, thalamus=760.0, caudate=780.0, putamen=760.0,
                pallidum=740.0, hippocampus=900.0, amygdala=880.0, accumbens=780.0,
                ventral_dc=750.0, brainstem=760.0, ventricle=3000.0, csf=2900.0,
                choroid_plexus=1500.0),
    'CT': dict(background=0.0, cerebral_wm=26.0, cortex=38.0, cerebellar_wm=28.0,
               cerebellar_gm=40.0, thalamus=34.0, caudate=36.0, putamen=36.0, pallidum=33.0,
               hippocampus=36.0, amygdala=36.0, accumbens=36.0, ventral_dc=32.0,
               brainstem=30.0, ventricle=8.0, csf=9.0, choroid_plexus=36.0),
}

#: modalities with physical units (no random global scaling, gamma or random contrast)
QUANTITATIVE_MODALITIES = ('ADC', 'CT')


def _rng_torch_seed(rng: np.random.Generator) -> 'torch.Generator':
    import torch
    generator = torch.Generator()
    generator.manual_seed(int(rng.integers(2 ** 62)))
    return generator


def randn(rng: np.random.Generator, shape) -> 'torch.Tensor':
    """Standard normal tensor (float32) drawn reproducibly from a numpy generator."""
    import torch
    return torch.randn(*shape, generator=_rng_torch_seed(rng))


def canvas_labels(labels: 'vx.Volume', spacing_mm: float) -> 'vx.Volume':
    """A label map on an isotropic RAS canvas of ``spacing_mm`` (nearest neighbour)."""
    from vpcli.volumes import voxel_spacing_mm
    ras = labels.reorient('RAS')
    spacing = voxel_spacing_mm(ras.geometry)
    if abs(float(spacing.max()) - spacing_mm) < 1e-3 and abs(float(spacing.min()) - spacing_mm) < 1e-3:
        return ras
    return ras.resample(spacing_mm, mode='nearest')


def flip_left_right(labels: 'vx.Volume', vocabulary: 'Vocabulary',
                    *images: 'vx.Volume') -> tuple['vx.Volume', ...]:
    """Mirror anatomy left-right about the canvas centre and swap left/right labels.

    Args:
        labels: Label map on a RAS canvas (voxel axis 0 runs left to right).
        vocabulary: Provides the left<->right label pairs.
        *images: Images on the same canvas, mirrored too (no label swap).

    Returns:
        The mirrored label map followed by the mirrored images.
    """
    import torch
    if str(labels.geometry.orientation.name) != 'RAS':
        raise ValueError('flip_left_right expects a RAS canvas')
    lookup = torch.arange(max(vocabulary.ids) + 1, dtype=torch.int32)
    for a, b in vocabulary.lr_swap.items():
        lookup[a] = b
    flipped = labels.tensor.flip(1)
    swapped = lookup[flipped.long()]
    return (labels.new(swapped),) + tuple(image.new(image.tensor.flip(1)) for image in images)


def random_spatial_transform(rng: np.random.Generator, canvas: 'vx.AcquisitionGeometry',
                             max_rotation_deg: float = 10.0, max_scaling: float = 0.07,
                             max_shear: float = 0.03, max_translation_mm: float = 8.0,
                             max_displacement_mm: float = 3.0,
                             control_spacing_mm: tuple[float, float] = (16.0, 40.0),
                             ) -> tuple['vx.AffineMatrix', 'vx.VectorField']:
    """A random affine (about the canvas centre) and a smooth random deformation.

    Args:
        rng: Random generator.
        canvas: Geometry the deformation field lives on (scanner RAS mm).
        max_rotation_deg: Rotation about each world axis, uniform in +-this (degrees).
        max_scaling: Scaling per axis uniform in 1 +- this.
        max_shear: Shear factors uniform in +- this.
        max_translation_mm: Translation per axis uniform in +- this (mm).
        max_displacement_mm: Standard deviation of the velocity field is uniform in
            [0, this / 2] mm, so typical displacements are a few mm.
        control_spacing_mm: Range of the control-grid spacing (mm) of the velocity field.

    Returns:
        The world-space affine and a world-space displacement field on ``canvas``.
    """
    import torch
    import voxel as vx

    center = canvas.center.double()
    rotation = torch.tensor(rng.uniform(-max_rotation_deg, max_rotation_deg, 3))
    scale = torch.tensor(1 + rng.uniform(-max_scaling, max_scaling, 3))
    shear = torch.tensor(rng.uniform(-max_shear, max_shear, 3))
    translation = torch.tensor(rng.uniform(-max_translation_mm, max_translation_mm, 3))
    linear = vx.affine.compose_affine(rotation=rotation, scale=scale, shear=shear,
                                      dtype=torch.float64).tensor
    matrix = torch.eye(4, dtype=torch.float64)
    matrix[:3, :3] = linear[:3, :3]
    matrix[:3, 3] = center + translation - linear[:3, :3] @ center
    affine = vx.AffineMatrix(matrix.float())

    spacing = float(rng.uniform(*control_spacing_mm))
    coarse = canvas.resample(spacing)
    sigma = float(rng.uniform(0, max_displacement_mm / 2))
    velocity = vx.VectorField(randn(rng, (3, *coarse.baseshape)) * sigma, coarse, space='world')
    velocity = velocity.smooth(spacing / 2)
    displacement = velocity.exponentiate(4)
    field = vx.VectorField(displacement.resample_like(canvas, mode='linear',
                                                      padding_mode='border'),
                           space='world')
    return affine, field


def apply_spatial_transform(labels: 'vx.Volume', affine: 'vx.AffineMatrix',
                            field: 'vx.VectorField', *images: 'vx.Volume',
                            ) -> tuple['vx.Volume', ...]:
    """Move volumes by an affine then a deformation, each resampled once onto the field's grid.

    The affine only moves each volume's geometry (``Volume.transform``); the
    deformation is turned into one world-space warp that every volume is sampled
    through, so the coordinate grid is built once for all of them.

    Args:
        labels: Label map (nearest-neighbour interpolation).
        affine: World-space affine (moves the anatomy).
        field: World-space displacement field; its grid is the output grid.
        *images: Images on any grid (linear interpolation).

    Returns:
        The moved label map followed by the moved images.
    """
    warp = field.as_warp()
    moved = [warp.map(labels.transform(affine), mode='nearest')]
    moved += [warp.map(image.transform(affine), mode='linear') for image in images]
    return tuple(moved)


def tissue_intensities(rng: np.random.Generator, modality: str, vocabulary: 'Vocabulary',
                       random_contrast: bool = False) -> tuple[dict[int, float],
                                                               dict[int, float]]:
    """Random Gaussian intensity parameters per label for one scan.

    Args:
        rng: Random generator.
        modality: One of :data:`TISSUE_MEANS`.
        vocabulary: Label vocabulary (tissue class per label).
        random_contrast: Draw every label's mean uniformly (SynthSeg mode) instead of
            jittering the modality's plausible tissue means.

    Returns:
        ``(means, stds)``: label id (0 = background) -> mean and standard deviation.
    """
    table = TISSUE_MEANS[modality]
    quantitative = modality in QUANTITATIVE_MODALITIES
    scale = 1.0 if quantitative else float(rng.uniform(100, 1000))
    means, stds = {}, {}
    # a jitter per tissue class, then a smaller one per label, so left/right partners
    # stay close (as in real scans) while no two subjects look the same
    class_jitter = {t: rng.uniform(0.88, 1.12) for t in table}
    for label_id in [0] + vocabulary.ids:
        tissue = 'background' if label_id == 0 else vocabulary.labels[label_id].tissue
        if random_contrast and not quantitative:
            mean = float(rng.uniform(0.05, 1.5)) * scale
        else:
            mean = table[tissue] * class_jitter[tissue] * float(rng.uniform(0.97, 1.03)) * scale
        means[label_id] = mean
        spread = 0.01 if quantitative else 0.02
        stds[label_id] = abs(mean) * float(rng.uniform(spread, 0.06)) + (1.0 if modality == 'CT'
                                                                         else 0.0)
    return means, stds


def render_contrast(rng: np.random.Generator, labels: 'vx.Volume', means: dict[int, float],
                    stds: dict[int, float]) -> 'vx.Volume':
    """Voxel intensities from per-label Gaussians (spatially smooth texture).

    The per-voxel variation is smoothed white noise (sigma 1 mm) rescaled to the
    label's standard deviation, so tissue looks textured rather than salt-and-pepper.
    """
    import torch
    size = max(max(means), int(labels.tensor.max())) + 1
    mean_lookup = torch.zeros(size)
    std_lookup = torch.zeros(size)
    for label_id, value in means.items():
        mean_lookup[label_id] = value
        std_lookup[label_id] = stds[label_id]
    index = labels.tensor.long()
    texture = labels.new(randn(rng, labels.shape), keep_labels=False).smooth(1.0)
    texture = texture.tensor / texture.tensor.std().clamp(min=1e-6)
    image = mean_lookup[index] + std_lookup[index] * texture
    return labels.new(image.float(), keep_labels=False)


def bias_field(rng: np.random.Generator, geometry: 'vx.AcquisitionGeometry',
               strength: float) -> 'vx.Volume':
    """A smooth multiplicative field exp(g) with g smooth noise of std ``strength``."""
    import voxel as vx
    coarse = geometry.resample(float(rng.uniform(30, 60)))
    field = vx.Volume(randn(rng, (1, *coarse.baseshape)) * strength, coarse)
    return field.resample_like(geometry, mode='linear', padding_mode='border').exp()


def _percentile99(tensor: 'torch.Tensor') -> float:
    """99th percentile of a subsample of voxels (fast; used only to scale noise)."""
    return float(np.percentile(tensor.flatten()[::11].numpy(), 99))


def acquire(rng: np.random.Generator, image: 'vx.Volume', geometry: 'vx.AcquisitionGeometry',
            modality: str, *, artefacts: bool = True) -> 'vx.Volume':
    """Resample a canvas image onto a scan geometry and add acquisition artefacts.

    Partial volume: the canvas is anti-alias filtered along every axis the scan is
    coarser on (slice thickness included) before sampling. Artefacts (MR): bias field
    (log-std up to 0.2), blur (sigma up to 0.6 voxel), gamma 0.85-1.18; all modalities:
    Gaussian noise with std 1-4 % of the image's 99th percentile (CT: 2-5 HU).

    Args:
        rng: Random generator.
        image: Canvas image (float).
        geometry: Scan geometry (voxel -> scanner RAS mm).
        modality: Modality name (quantitative modalities get no bias or gamma).
        artefacts: Add bias, blur, gamma and noise.

    Returns:
        The scan image (float32) on ``geometry``; MR and ADC values are >= 0.
    """
    import torch
    scan = image.resample_like(geometry, mode='linear', antialias=0.5)
    if not artefacts:
        return scan
    quantitative = modality in QUANTITATIVE_MODALITIES
    if rng.random() < 0.5:
        scan = scan.smooth(float(rng.uniform(0.1, 0.6)), space='voxel')
    if not quantitative:
        scan = scan * bias_field(rng, geometry, float(rng.uniform(0.0, 0.2)))
        peak = _percentile99(scan.tensor)
        if rng.random() < 0.5 and peak > 0:
            gamma = float(np.exp(rng.uniform(np.log(0.85), np.log(1.18))))
            scan = scan.new(peak * (scan.tensor.clamp(min=0) / peak) ** gamma)
    peak = _percentile99(scan.tensor)
    noise_std = float(rng.uniform(2.0, 5.0)) if modality == 'CT' else \
        peak * float(rng.uniform(0.01, 0.04))
    noisy = scan.tensor + noise_std * randn(rng, scan.shape)
    if modality != 'CT':
        noisy = noisy.clamp(min=0)
    return scan.new(noisy.float())
