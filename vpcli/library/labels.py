"""Label maps: measure existing segmentations (a FreeSurfer ``aseg``, a BIDS ``dseg``)."""

from __future__ import annotations

from vpcli.errors import ProgramError
from vpcli.library.masks import require_scan
from vpcli.library.registry import agent_function
from vpcli.volumes import Mask, Scan


@agent_function('labels', returns='mask')
def select_labels(labelmap: Scan, ids) -> Mask:
    """Mask of the voxels of a label map whose value is one of ``ids``.

    Args:
        labelmap: An input label map (integer voxel values, e.g. FreeSurfer aseg).
        ids: One label value or a tuple/list of label values (integers).

    Returns:
        A binary mask on the label map's own grid.
    """
    import torch

    require_scan('select_labels', labelmap, 'labelmap')
    if labelmap.volume.tensor.is_floating_point():
        raise ProgramError(f'select_labels: {labelmap.label} is not a label map (its voxels are '
                           f'not integers)')
    values = [ids] if isinstance(ids, (int, float)) else list(ids)
    if not values or not all(isinstance(v, (int, float)) and float(v).is_integer() for v in values):
        raise ProgramError('select_labels: ids must be integers')
    selected = torch.isin(labelmap.volume.tensor, torch.tensor([int(v) for v in values]))
    names = ', '.join(str(int(v)) for v in values)
    return Mask(labelmap.volume.new(selected, keep_labels=False), labelmap.sources,
                f'labels {names}')
