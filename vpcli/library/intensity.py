"""Intensity: statistics of a scan's voxels inside a mask, in the image's own units.

Intensities are the stored voxel values after the file's scaling (``scl_slope`` /
``scl_inter``), e.g. Hounsfield units for CT and arbitrary units for most MRI. Every
statistic is computed in float64 over exactly the voxels whose mask value is true;
the mask must lie on the scan's voxel grid (see ``resample_mask``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vpcli.errors import ProgramError
from vpcli.library.masks import (mask_array, require_mask, require_same_grid, require_scan,
                                 voxel_to_world, within_distance)
from vpcli.library.registry import agent_function
from vpcli.volumes import Mask, Scan

if TYPE_CHECKING:
    import numpy as np

#: :func:`snr`: the head is grown by this margin (mm) before background voxels are taken,
#: so the partial-volume rim and skin do not count as noise
SNR_HEAD_MARGIN_MM = 5.0

#: :func:`snr`: fewest background voxels accepted for a noise estimate
SNR_MIN_BACKGROUND_VOXELS = 100

#: :func:`snr`: number of histogram bins for the Otsu threshold that separates head from air
OTSU_BINS = 256


def scan_array(scan: Scan) -> 'np.ndarray':
    """The scan's voxels as a (W, H, D) float64 numpy array on the CPU."""
    import numpy as np

    return scan.volume.tensor[0].detach().cpu().numpy().astype(np.float64)


def masked_values(function: str, scan: Scan, mask: Mask, what: str | None = None) -> 'np.ndarray':
    """Float64 values of ``scan`` inside ``mask``; checks types, grid and emptiness.

    Raises:
        ProgramError: wrong argument types, or an empty mask.
        BadInputError: the mask is not on the scan's grid.
    """
    require_scan(function, scan)
    require_mask(function, mask)
    require_same_grid(function, scan, mask)
    values = scan_array(scan)[mask_array(mask)]
    if values.size == 0:
        raise ProgramError(f'{function}: {what or mask.label} is empty, so it has no intensity')
    return values


@agent_function('intensity', returns='float, image units')
def mean_intensity(scan: Scan, mask: Mask) -> float:
    """Mean voxel intensity of a scan inside a mask.

    Args:
        scan: The image to measure.
        mask: A non-empty binary mask on the scan's voxel grid.

    Returns:
        The mean, in the image's own units (HU for CT).

    Raises:
        BadInputError: when the mask lies on another grid (use ``resample_mask``).
    """
    return float(masked_values('mean_intensity', scan, mask).mean())


@agent_function('intensity', returns='float, image units')
def median_intensity(scan: Scan, mask: Mask) -> float:
    """Median voxel intensity of a scan inside a mask.

    For an even number of voxels this is the mean of the two middle values.

    Args:
        scan: The image to measure.
        mask: A non-empty binary mask on the scan's voxel grid.

    Returns:
        The median, in the image's own units (HU for CT).

    Raises:
        BadInputError: when the mask lies on another grid (use ``resample_mask``).
    """
    import numpy as np

    return float(np.median(masked_values('median_intensity', scan, mask)))


def otsu_threshold(values: 'np.ndarray', bins: int = OTSU_BINS) -> float:
    """Otsu's threshold: the histogram split that maximises between-class variance.

    Args:
        values: Intensities (any shape).
        bins: Number of histogram bins.

    Returns:
        The threshold, in the units of ``values``.
    """
    import numpy as np

    counts, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    counts = counts.astype(np.float64)
    below = np.cumsum(counts)
    above = below[-1] - below
    sum_below = np.cumsum(counts * centres)
    with np.errstate(divide='ignore', invalid='ignore'):
        mean_below = sum_below / below
        mean_above = (sum_below[-1] - sum_below) / above
        between = below * above * (mean_below - mean_above) ** 2
    between = np.nan_to_num(between[:-1], nan=-1.0)
    # well-separated classes give a plateau of equal scores over the empty bins between
    # them; its middle is the split farthest from both
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))
    return float(edges[int(round((best[0] + best[-1]) / 2)) + 1])


def background_outside_head(scan: Scan) -> 'np.ndarray':
    """Boolean (W, H, D) array of the air around the head, as :func:`snr` defines it."""
    import numpy as np
    import torch
    import voxel as vx

    image = scan_array(scan)
    if float(image.max()) == float(image.min()):
        return np.zeros(image.shape, dtype=bool)
    foreground = image > otsu_threshold(image.ravel())
    volume = scan.volume.new(torch.from_numpy(foreground).unsqueeze(0), keep_labels=False)
    head = vx.morphology.connected_components(volume, connectivity=3, largest=True)
    head = vx.morphology.fill_holes(head, connectivity=1)
    head = (head.tensor[0] != 0).cpu().numpy()
    grown = within_distance(head, voxel_to_world(scan.volume), SNR_HEAD_MARGIN_MM)
    return ~grown


@agent_function('intensity', returns='float, ratio (unitless)')
def snr(scan: Scan, mask: Mask) -> float:
    """Signal-to-noise ratio: mean signal in a mask over the noise of the air around the head.

    Definition (the image's own units cancel):

    1. Head: voxels brighter than the image's Otsu threshold (256-bin histogram of all
       voxels), keeping the largest 26-connected piece and filling enclosed holes.
    2. Background: every voxel farther than 5 mm (world distance) from the head.
    3. SNR = mean intensity inside ``mask`` / standard deviation (population, ddof=0)
       of the background voxels.

    Magnitude MRI noise in air is Rician; no correction for that is applied, so the
    value is comparable between scans of the same kind, not an absolute SNR.

    Args:
        scan: The image (with air around the head in the field of view).
        mask: A non-empty binary mask on the scan's voxel grid (the signal region).

    Returns:
        SNR as a unitless ratio.

    Raises:
        ProgramError: when fewer than 100 background voxels remain (the field of view
            is cropped to the head or the image is skull-stripped) or the background
            has no noise (std 0).
    """
    import numpy as np

    signal = float(masked_values('snr', scan, mask).mean())
    background = background_outside_head(scan) & ~mask_array(mask)
    count = int(background.sum())
    if count < SNR_MIN_BACKGROUND_VOXELS:
        raise ProgramError(f'snr: {scan.label} has only {count} background voxels outside the '
                           f'head (need {SNR_MIN_BACKGROUND_VOXELS}); its field of view leaves no '
                           f'air to measure noise in')
    noise = float(np.std(scan_array(scan)[background]))
    if noise == 0.0:
        raise ProgramError(f'snr: the background of {scan.label} is constant (no noise; '
                           f'skull-stripped or synthetic?), so SNR is undefined')
    return signal / noise
