"""Quality-control pictures and pages.

For every mask a run writes, a PNG with three orthogonal slices (sagittal, coronal,
axial) through the mask's centre, its outline drawn over the scan it belongs to; and
one HTML page per run (or per subject in batch mode) that shows the answer, the
metrics and the pictures. Slices are taken after reorienting to RAS (a permutation and
flips of the voxel axes, no resampling), and drawn with each voxel's physical aspect so
anisotropic scans look right.
"""

from __future__ import annotations

import html
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import voxel as vx


def _ras_arrays(image: 'vx.Volume', mask: 'vx.Volume'):
    """Image and mask as numpy arrays in RAS voxel order, plus voxel spacing (mm)."""
    import numpy as np

    from vpcli.volumes import voxel_spacing_mm
    image_ras = image.reorient('RAS')
    mask_ras = mask.reorient('RAS')
    spacing = voxel_spacing_mm(image_ras.geometry)
    return (image_ras.tensor[0].detach().float().cpu().numpy(),
            mask_ras.tensor[0].detach().cpu().numpy().astype(bool), spacing, np)


def mask_picture(image: 'vx.Volume', mask: 'vx.Volume', path: os.PathLike | str,
                 title: str = '') -> Path:
    """Write a PNG of three orthogonal slices through the mask's centre, outline on scan.

    Args:
        image: The scan the mask belongs to.
        mask: Binary mask on the same grid as ``image``.
        path: PNG file to write (atomically).
        title: Caption drawn above the slices.

    Returns:
        The path written.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    if image.tensor.is_floating_point() is False:
        image = image.float()
    data, inside, spacing, np = _ras_arrays(image, mask.new(mask.tensor.bool()))
    if inside.any():
        centre = [int(round(float(c))) for c in np.argwhere(inside).mean(axis=0)]
    else:
        centre = [n // 2 for n in data.shape]
    low, high = np.percentile(data, [0.5, 99.5]) if data.size else (0.0, 1.0)
    high = high if high > low else low + 1

    # (axis sliced, title, the two in-plane axes shown as (x, y))
    views = ((0, 'sagittal', (1, 2)), (1, 'coronal', (0, 2)), (2, 'axial', (0, 1)))
    figure, axes = plt.subplots(1, 3, figsize=(11, 4), facecolor='black')
    for axis, (sliced, name, (x_axis, y_axis)) in zip(axes, views):
        index = [slice(None)] * 3
        index[sliced] = centre[sliced]
        plane = data[tuple(index)].T           # rows = y axis, columns = x axis
        plane_mask = inside[tuple(index)].T
        extent = (0, plane.shape[1] * spacing[x_axis], 0, plane.shape[0] * spacing[y_axis])
        axis.imshow(plane, cmap='gray', vmin=low, vmax=high, origin='lower', extent=extent,
                    interpolation='nearest')
        if plane_mask.any():
            ys = (np.arange(plane.shape[0]) + 0.5) * spacing[y_axis]
            xs = (np.arange(plane.shape[1]) + 0.5) * spacing[x_axis]
            axis.contour(xs, ys, plane_mask.astype(float), levels=[0.5], colors='#ff3b30',
                         linewidths=1.2)
        axis.set_title(name, color='white', fontsize=10)
        axis.set_axis_off()
        # neurological display (left of the subject on the left); say so on the picture
        low_side, high_side = ('L', 'R') if x_axis == 0 else ('P', 'A')
        axis.text(0.02, 0.5, low_side, color='yellow', fontsize=9, transform=axis.transAxes)
        axis.text(0.95, 0.5, high_side, color='yellow', fontsize=9, transform=axis.transAxes)
    if title:
        figure.suptitle(title, color='white', fontsize=11)
    figure.tight_layout()

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.png', dir=path.parent)
    os.close(handle)
    try:
        figure.savefig(temporary, dpi=80, facecolor='black')
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    finally:
        plt.close(figure)
        Path(temporary).unlink(missing_ok=True)
    return path


def _value_text(value) -> str:
    if isinstance(value, float):
        return f'{value:.4g}'
    if isinstance(value, (list, tuple)):
        return '(' + ', '.join(_value_text(v) for v in value) + ')'
    return html.escape(str(value))


def _source_name(source) -> str:
    """``img0`` from a metrics source entry (``{"name", "file"}``) or a plain string."""
    return source.get('name', '') if isinstance(source, dict) else str(source)


def report_page(metrics: dict, pictures: Sequence[tuple[str, str]], title: str) -> str:
    """The HTML QC page of one run: answer, measured values, program, pictures.

    Args:
        metrics: The run's ``metrics.json`` content.
        pictures: (relative PNG path, caption) pairs.
        title: Page title (e.g. the subject/session).
    """
    rows = ''.join(
        f'<tr><td>{html.escape(o["name"])}</td><td>{_value_text(o["value"])}</td>'
        f'<td>{html.escape(str(o.get("unit", "")))}</td>'
        f'<td>{html.escape(", ".join(_source_name(s) for s in o.get("sources", [])))}</td></tr>'
        for o in metrics.get('outputs', []))
    flags_of = {v.get('qc'): (v.get('quality') or {}).get('flags', [])
                for v in metrics.get('volumes', [])}

    def flag_list(flags) -> str:
        return ('<ul class="flags">' + ''.join(f'<li>{html.escape(f)}</li>' for f in flags)
                + '</ul>') if flags else ''
    figures = ''.join(
        f'<figure><img src="{html.escape(src)}" alt="{html.escape(caption)}">'
        f'<figcaption>{html.escape(caption)}{flag_list(flags_of.get(src, []))}</figcaption>'
        f'</figure>' for src, caption in pictures)
    warnings = metrics.get('warnings', [])
    warning_block = (f'<h2 class="flags">Quality control: {len(warnings)} warning(s)</h2>'
                     f'{flag_list(warnings)}') if warnings else \
        '<p><b>Quality control:</b> nothing flagged.</p>'
    answer = metrics.get('answer')
    prompt = metrics.get('prompt')
    program = '\n\n'.join(step.get('code', '') for step in metrics.get('steps', []))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 1100px; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 4px 8px; }}
figure {{ margin: 1em 0; }} img {{ max-width: 100%; }} pre {{ background: #f4f4f4; padding: 1em; }}
.flags {{ color: #b00020; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
{f'<p><b>Prompt:</b> {html.escape(prompt)}</p>' if prompt else ''}
<p><b>Answer:</b> {html.escape(answer) if answer else '<i>none</i>'}</p>
{warning_block}
<h2>Measurements</h2>
<table><tr><th>name</th><th>value</th><th>unit</th><th>from</th></tr>{rows}</table>
<h2>Masks</h2>{figures or '<p><i>no masks</i></p>'}
<h2>Program</h2><pre>{html.escape(program)}</pre>
<details><summary>metrics.json</summary><pre>{html.escape(json.dumps(metrics, indent=2))}</pre></details>
</body></html>
"""
