"""Small dense-vision fixtures shared by the dense tests: a tiny config over a few real
vocabulary labels, and logits and cases made up to score the dense loss."""

from __future__ import annotations

import dataclasses

import torch

from vpcli.vision.config import VisionConfig, named_config

#: a few real vocabulary labels (FreeSurfer ids and colour-table names)
LABELS = ((2, 'Left-Cerebral-White-Matter'), (41, 'Right-Cerebral-White-Matter'),
          (17, 'Left-Hippocampus'), (53, 'Right-Hippocampus'), (1028, 'ctx-lh-superiorfrontal'),
          (2028, 'ctx-rh-superiorfrontal'))
LESIONS = ('glioma', 'infarct')


def tiny_config(**changes) -> VisionConfig:
    names = tuple(name for _, name in LABELS)
    config = dataclasses.replace(named_config('dense-tiny'), label_ids=tuple(i for i, _ in LABELS),
                                 label_names=names, lesion_classes=LESIONS, seed=5)
    return dataclasses.replace(config, **changes)


def one_hot_logits(labels: torch.Tensor, classes: int, lesions: torch.Tensor) -> torch.Tensor:
    anatomy = torch.nn.functional.one_hot(labels, classes).permute(0, 4, 1, 2, 3).float() * 40 - 20
    return torch.cat([anatomy, lesions * 40 - 20], dim=1)


def random_case(seed: int):
    """``(classes, labels, logits, lesions)``: random labels and logits on a 5^3 grid, no lesion."""
    classes = 1 + len(LABELS)
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(classes, (1, 5, 5, 5), generator=generator)
    logits = torch.randn(1, classes + len(LESIONS), 5, 5, 5, generator=generator)
    return classes, labels, logits, torch.zeros(1, len(LESIONS), 5, 5, 5)
