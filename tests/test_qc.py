"""QC pictures and the QC page."""

from __future__ import annotations

import matplotlib.image

from conftest import GEOMETRIES, make_geometry, sphere_phantom
from vpcli.qc import mask_picture, report_page


def test_mask_picture_on_oblique_anisotropic_scan(tmp_path):
    import torch
    geometry = make_geometry(**GEOMETRIES['ras_oblique'])
    mask = sphere_phantom(geometry, (1.0, 2.0, -3.0), 9.0)
    image = mask.new(mask.tensor.float() * 100 + torch.rand(mask.shape) * 10)
    path = mask_picture(image, mask, tmp_path / 'qc' / 'sphere.png', title='sphere')
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 300
    # the outline colour (red) is drawn somewhere
    red = (pixels[..., 0] > 0.8) & (pixels[..., 1] < 0.4) & (pixels[..., 2] < 0.4)
    assert red.sum() > 20
    assert [p.name for p in path.parent.iterdir()] == ['sphere.png']


def test_report_page_escapes_and_lists_everything():
    metrics = {'prompt': 'segment the <left> hippocampus', 'answer': 'volume is 3.1 mL',
               'outputs': [{'name': 'volume', 'value': 3.14159, 'unit': 'mL', 'sources': ['img0']}],
               'steps': [{'code': 'm = segment(enc, "left hippocampus")'}]}
    page = report_page(metrics, [('figures/a.png', 'left hippocampus')], 'sub-01')
    assert '&lt;left&gt;' in page and '<left>' not in page
    assert '3.142' in page and 'figures/a.png' in page and 'volume is 3.1 mL' in page
