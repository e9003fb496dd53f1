"""Characterization: grounded descriptions of a lesion (location, signal, enhancement, diffusion).

Every class comes from a number the program can also report, so an answer such as
"hyperintense" is backed by the ratio it was read from: ``signal_ratio`` gives the
number, ``signal_class`` turns it into a word with the thresholds below.

The thresholds live in :data:`THRESHOLDS` and nowhere else. They are a contract: the
synthetic-lesion generator (``vpcli/synth``) must make lesions whose ratios, measured
with these very functions, clear them (e.g. a "hyperintense" lesion with
``signal_ratio > THRESHOLDS.hyperintense_above`` by a margin), so that the target
programs and the training labels agree.
"""

from __future__ import annotations

import dataclasses

from vpcli.errors import ProgramError
from vpcli.library.intensity import masked_values
from vpcli.library.masks import (mask_array, require_mask, require_number, require_same_grid,
                                 require_scan, shell)
from vpcli.library.registry import agent_function
from vpcli.volumes import Mask, Scan


@dataclasses.dataclass(frozen=True)
class CharacterizationThresholds:
    """Cut-offs that turn measured ratios into words (unitless intensity ratios).

    Attributes:
        hyperintense_above: ``signal_class``: ratio > this is "hyperintense".
        hypointense_below: ``signal_class``: ratio < this is "hypointense" (about
            1 / 1.15, so the isointense band is symmetric on a log scale).
        enhancing_above: ``enhancement_class``: post/pre signal-ratio quotient > this
            is "enhancing".
        restricted_dwi_above: ``diffusion_class``: the DWI signal ratio must be above
            this (and the ADC ratio below ``restricted_adc_below``) for "restricted
            diffusion".
        restricted_adc_below: ``diffusion_class``: the ADC signal ratio must be below
            this (and the DWI ratio above ``restricted_dwi_above``) for "restricted
            diffusion".
        surrounding_margin_mm: Default thickness (mm) of the surrounding-tissue shell
            that ``signal_ratio`` and ``enhancement_ratio`` compare against.
    """
    hyperintense_above: float = 1.15
    hypointense_below: float = 0.87
    enhancing_above: float = 1.2
    restricted_dwi_above: float = 1.15
    restricted_adc_below: float = 0.87
    surrounding_margin_mm: float = 5.0


#: the one place the characterization thresholds are defined (see the module docstring)
THRESHOLDS = CharacterizationThresholds()


@agent_function('characterization', returns='float, fraction 0..1')
def overlap_fraction(mask: Mask, region: Mask) -> float:
    """Fraction of a mask's volume that lies inside a region.

    Args:
        mask: A non-empty binary mask (e.g. a lesion).
        region: A binary mask on the same grid (e.g. a lobe or vascular territory).

    Returns:
        |mask and region| / |mask|, from 0 (outside) to 1 (entirely inside).

    Raises:
        BadInputError: when the masks lie on different grids (use ``resample_mask``).
    """
    require_mask('overlap_fraction', mask)
    require_mask('overlap_fraction', region, 'region')
    require_same_grid('overlap_fraction', mask, region)
    inside = mask_array(mask)
    total = int(inside.sum())
    if total == 0:
        raise ProgramError(f'overlap_fraction: {mask.label} is empty')
    return int((inside & mask_array(region)).sum()) / total


#: what ``location`` answers when the mask touches none of the regions
OUTSIDE_ALL_REGIONS = 'none of the given regions'


@agent_function('characterization', returns='str, region description')
def location(mask: Mask, *regions: Mask) -> str:
    """The region that holds the largest part of a mask, by name.

    Each region's ``overlap_fraction`` with the mask is computed; the description of
    the region with the largest fraction is returned (the first one given on a tie).
    Report the fractions too, so the answer shows the numbers behind it.

    Args:
        mask: A non-empty binary mask (e.g. a lesion).
        *regions: One or more candidate region masks on the same grid (e.g. lobes);
            each is named by its description (e.g. "left frontal lobe").

    Returns:
        The winning region's description, or "none of the given regions" when the
        mask overlaps none of them.
    """
    if not regions:
        raise ProgramError('location: give at least one region mask after the mask')
    best, best_fraction = OUTSIDE_ALL_REGIONS, 0.0
    for region in regions:
        fraction = overlap_fraction(mask, region)
        if fraction > best_fraction:
            best, best_fraction = region.description, fraction
    return best


def _margin(function: str, margin_mm) -> float:
    value = require_number(function, margin_mm, 'margin_mm')
    if value <= 0:
        raise ProgramError(f'{function}: margin_mm must be positive, got {value:g}')
    return value


@agent_function('characterization', returns='float, ratio (unitless)')
def signal_ratio(scan: Scan, mask: Mask, margin_mm: float = THRESHOLDS.surrounding_margin_mm
                 ) -> float:
    """Signal of a region relative to the tissue around it.

    Computed as the mean intensity inside ``mask`` divided by the mean intensity in
    ``shell(mask, margin_mm)``: the voxels whose centres lie within ``margin_mm`` (world
    distance) of the mask but outside it. Above 1 the region is brighter than its
    surroundings. Meaningful for images with positive intensities (MRI); on CT, compare
    ``mean_intensity`` values in HU with ``difference`` instead.

    Args:
        scan: The image.
        mask: A non-empty binary mask on the scan's voxel grid.
        margin_mm: Thickness of the surrounding shell in mm (> 0).

    Returns:
        mean(inside) / mean(surrounding shell), unitless.

    Raises:
        ProgramError: when the shell is empty or its mean is not positive.
    """
    require_scan('signal_ratio', scan)
    require_mask('signal_ratio', mask)
    require_same_grid('signal_ratio', scan, mask)
    margin = _margin('signal_ratio', margin_mm)
    inside = float(masked_values('signal_ratio', scan, mask).mean())
    surrounding_mask = shell(mask, margin)
    surrounding = float(masked_values('signal_ratio', scan, surrounding_mask,
                                      what=f'the {margin:g} mm shell around {mask.label}').mean())
    if surrounding <= 0:
        raise ProgramError(f'signal_ratio: mean intensity around {mask.label} in {scan.label} is '
                           f'{surrounding:g} (not positive), so a ratio is meaningless')
    return inside / surrounding


@agent_function('characterization', returns='str, "hyperintense" | "hypointense" | "isointense"')
def signal_class(ratio: float) -> str:
    """Name a signal ratio: hyperintense, hypointense or isointense.

    Thresholds (``THRESHOLDS`` in ``vpcli/library/characterization.py``): ratio > 1.15
    is "hyperintense", ratio < 0.87 is "hypointense", anything between is "isointense".

    Args:
        ratio: A ``signal_ratio`` value (unitless).

    Returns:
        "hyperintense", "hypointense" or "isointense".
    """
    value = require_number('signal_class', ratio, 'ratio')
    if value > THRESHOLDS.hyperintense_above:
        return 'hyperintense'
    if value < THRESHOLDS.hypointense_below:
        return 'hypointense'
    return 'isointense'


@agent_function('characterization', returns='float, ratio (unitless)')
def enhancement_ratio(post: Scan, pre: Scan, mask: Mask,
                      margin_mm: float = THRESHOLDS.surrounding_margin_mm) -> float:
    """How much a region brightens after contrast, relative to its surroundings.

    Computed as ``signal_ratio(post, mask, margin_mm) / signal_ratio(pre, mask,
    margin_mm)``: comparing each scan with its own surrounding tissue cancels global
    intensity differences between the two acquisitions. Above 1 the region gained
    signal relative to its surroundings.

    Args:
        post: The post-contrast image.
        pre: The pre-contrast image, on the same voxel grid as ``post``.
        mask: A non-empty binary mask on that grid.
        margin_mm: Thickness of the surrounding shell in mm (> 0).

    Returns:
        Post/pre quotient of the signal ratios, unitless.

    Raises:
        BadInputError: when the mask is not on both scans' grid (use ``resample_mask``).
    """
    require_scan('enhancement_ratio', post, 'post')
    require_scan('enhancement_ratio', pre, 'pre')
    post_ratio = signal_ratio(post, mask, margin_mm)
    pre_ratio = signal_ratio(pre, mask, margin_mm)
    if pre_ratio <= 0:
        raise ProgramError(f'enhancement_ratio: pre-contrast signal ratio in {pre.label} is '
                           f'{pre_ratio:g} (not positive)')
    return post_ratio / pre_ratio


@agent_function('characterization', returns='str, "enhancing" | "non-enhancing"')
def enhancement_class(ratio: float) -> str:
    """Name an enhancement ratio: enhancing or non-enhancing.

    Threshold (``THRESHOLDS``): ratio > 1.2 is "enhancing", otherwise "non-enhancing".

    Args:
        ratio: An ``enhancement_ratio`` value (unitless).

    Returns:
        "enhancing" or "non-enhancing".
    """
    value = require_number('enhancement_class', ratio, 'ratio')
    return 'enhancing' if value > THRESHOLDS.enhancing_above else 'non-enhancing'


@agent_function('characterization',
                returns='str, "restricted diffusion" | "no restricted diffusion"')
def diffusion_class(dwi_ratio: float, adc_ratio: float) -> str:
    """Name the diffusion behaviour of a region from its DWI and ADC signal ratios.

    Restricted diffusion shows as high DWI signal together with low ADC (a bright
    DWI region with normal or high ADC is "T2 shine-through", not restriction).
    Thresholds (``THRESHOLDS``): "restricted diffusion" when dwi_ratio > 1.15 and
    adc_ratio < 0.87, otherwise "no restricted diffusion".

    Args:
        dwi_ratio: ``signal_ratio`` of the region on the DWI (high b-value) image.
        adc_ratio: ``signal_ratio`` of the region on the ADC map.

    Returns:
        "restricted diffusion" or "no restricted diffusion".
    """
    dwi = require_number('diffusion_class', dwi_ratio, 'dwi_ratio')
    adc = require_number('diffusion_class', adc_ratio, 'adc_ratio')
    restricted = dwi > THRESHOLDS.restricted_dwi_above and adc < THRESHOLDS.restricted_adc_below
    return 'restricted diffusion' if restricted else 'no restricted diffusion'
