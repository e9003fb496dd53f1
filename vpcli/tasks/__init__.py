"""The task world: ontology, prompt templates, target programs, and the oracle vision.

Where a prompt comes from: :mod:`~vpcli.tasks.ontology` (what can be asked about),
:mod:`~vpcli.tasks.templates` + :mod:`~vpcli.tasks.slot_expansion` (how it is phrased),
:mod:`~vpcli.tasks.roi` (ROI descriptions), :mod:`~vpcli.tasks.categories` (the 17 task
categories: prompt, target program k*, expected results), :mod:`~vpcli.tasks.sampler`
(plan -> case -> task), :mod:`~vpcli.tasks.oracle` (ground truth in place of the vision
network). This package imports no torch at import time.
"""

from vpcli.tasks.templates import CATEGORIES

__all__ = ['CATEGORIES']
