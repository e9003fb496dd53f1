"""The 17 task categories: what each needs, its prompt, its target program, its expected results.

Every category has a planner and a writer. The planner draws the category's variant and
parameters and says what case it needs (:class:`~vpcli.tasks.world.CaseRequest`). The
writer, given the synthesised case's :class:`~vpcli.tasks.world.CaseInfo`, picks the ROIs,
fills a template, writes the target program k* step by step, and returns a function that
computes the expected outputs and answer from the case's ground truth with the library's
own functions (so the oracle check compares k* run in the sandbox against the intended
computation on ground-truth masks).

This module is the one place the categories are looked up (:data:`TASKS`) and the names
below are imported from; the code lives in:

- :mod:`vpcli.tasks.drafts`: :class:`TaskPlan`, :class:`TaskDraft`, :class:`Expected`,
  :class:`Unwritable`;
- :mod:`vpcli.tasks.writer`: the :class:`Writer` and what the categories share
  (planning draws, ground-truth library access :data:`LIB`, program-writing helpers);
- :mod:`vpcli.tasks.measurement_tasks`: segmentation, volume, center of mass, extent,
  intensity (one session);
- :mod:`vpcli.tasks.comparison_tasks`: intensity/volume comparison, relative volume, and
  the longitudinal volume, extent and intensity change;
- :mod:`vpcli.tasks.characterization_tasks`: lesion location, enhancement, diffusion,
  signal intensity;
- :mod:`vpcli.tasks.edit_tasks`: cropping, tissue removal.
"""

from __future__ import annotations

from typing import Callable

from vpcli.library.lesion_choice import LOCATION_REGIONS, REGION_LOBE, TERRITORY_REGIONS
from vpcli.tasks.characterization_tasks import (plan_diffusion, plan_enhancement, plan_location,
                                                plan_signal_intensity, write_diffusion,
                                                write_enhancement, write_location,
                                                write_signal_intensity)
from vpcli.tasks.comparison_tasks import (ATROPHY_KINDS, ENLARGEMENT_KINDS, INTENSITY_REFERENCES,
                                          RELATIVE_REFERENCES, plan_extent_change,
                                          plan_intensity_change, plan_intensity_comparison,
                                          plan_relative_volume, plan_volume_change,
                                          plan_volume_comparison, write_extent_change,
                                          write_intensity_change, write_intensity_comparison,
                                          write_relative_volume, write_volume_change,
                                          write_volume_comparison)
from vpcli.tasks.drafts import Expected, TaskDraft, TaskPlan, Unwritable
from vpcli.tasks.edit_tasks import (CROP_MARGINS_MM, plan_cropping, plan_tissue_removal,
                                    write_cropping, write_tissue_removal)
from vpcli.tasks.measurement_tasks import (plan_center_of_mass, plan_extent, plan_intensity,
                                           plan_segmentation, plan_volume, write_center_of_mass,
                                           write_extent, write_intensity, write_segmentation,
                                           write_volume)
from vpcli.tasks.templates import CATEGORIES
from vpcli.tasks.writer import KIND_WEIGHTS, LIB, MRI_MODALITIES, PHRASINGS, Writer

__all__ = [
    'TASKS', 'TaskPlan', 'TaskDraft', 'Expected', 'Unwritable', 'Writer', 'LIB',
    'MRI_MODALITIES', 'KIND_WEIGHTS', 'PHRASINGS', 'LOCATION_REGIONS', 'REGION_LOBE',
    'TERRITORY_REGIONS', 'RELATIVE_REFERENCES', 'INTENSITY_REFERENCES', 'ATROPHY_KINDS',
    'ENLARGEMENT_KINDS', 'CROP_MARGINS_MM',
    'plan_segmentation', 'write_segmentation', 'plan_volume', 'write_volume',
    'plan_center_of_mass', 'write_center_of_mass', 'plan_extent', 'write_extent', 'plan_intensity',
    'write_intensity', 'plan_intensity_comparison', 'write_intensity_comparison',
    'plan_volume_comparison', 'write_volume_comparison', 'plan_relative_volume',
    'write_relative_volume', 'plan_volume_change', 'write_volume_change', 'plan_extent_change',
    'write_extent_change', 'plan_intensity_change', 'write_intensity_change', 'plan_location',
    'write_location', 'plan_enhancement', 'write_enhancement', 'plan_diffusion', 'write_diffusion',
    'plan_signal_intensity', 'write_signal_intensity', 'plan_cropping', 'write_cropping',
    'plan_tissue_removal', 'write_tissue_removal',
]

#: category -> (planner, writer)
TASKS: dict[str, tuple[Callable, Callable]] = {
    category: (globals()[f'plan_{category}'], globals()[f'write_{category}'])
    for category in CATEGORIES
}
