"""``voxelprompt bench vision``: the geometry distribution and a tiny end-to-end run."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from vpcli.cli import app
from vpcli.vision.bench import ACQUISITIONS, MIN_SPACING_MM, conform_isotropic, sample_scan


def test_sampled_geometries_follow_table_2():
    generator = torch.Generator().manual_seed(0)
    for index in range(40):
        scan = sample_scan(generator, f'img{index}')
        in_plane_range, slice_range = ACQUISITIONS[scan.modality]
        spacing = scan.volume.geometry.spacing.tolist()
        assert min(spacing) >= MIN_SPACING_MM - 1e-6
        assert in_plane_range[0] - 1e-5 <= spacing[0] <= in_plane_range[1] + 1e-5
        if slice_range is None:
            assert spacing[2] == pytest.approx(spacing[0])
        else:
            assert slice_range[0] - 1e-5 <= spacing[2] <= slice_range[1] + 1e-5
        fov = [n * s for n, s in zip(scan.volume.baseshape, spacing)]
        for extent, centre in zip(fov, (155, 190, 165)):
            assert centre - 15 - 3 <= extent <= centre + 15 + 3  # +-15 mm, rounding to voxels
    iso = conform_isotropic(scan)
    assert iso.volume.geometry.spacing.tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)


def test_bench_vision_cli_reports_ratios_as_json():
    result = CliRunner().invoke(app, ['bench', 'vision', '--json', '--device', 'cpu',
                                      '--samples', '1', '--max-scans', '2', '--fov-scale', '0.15'])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index('{'):])
    assert summary['device'] == 'cpu' and summary['samples'] == 1
    assert [row['scans'] for row in summary['rows']] == [1, 2]
    for row in summary['rows']:
        assert row['native']['median_seconds'] > 0 and row['isotropic']['median_seconds'] > 0
        assert row['time_ratio'] == pytest.approx(
            row['isotropic']['median_seconds'] / row['native']['median_seconds'])
        assert row['native']['median_voxels'] > 0


def test_bench_vision_refuses_unknown_config():
    result = CliRunner().invoke(app, ['bench', 'vision', '--config', 'huge', '--device', 'cpu'])
    assert result.exit_code == 2


def test_bench_vision_refuses_a_bad_device_as_a_usage_error():
    result = CliRunner().invoke(app, ['bench', 'vision', '--device', 'tpu'])
    assert result.exit_code == 2 and 'expected auto, cpu, cuda or cuda:N' in result.output
