"""Loading, metadata and atomic saving of scans."""

from __future__ import annotations

import datetime as dt
import gzip
import json

import numpy as np
import nibabel as nib
import pytest
import torch

from conftest import GEOMETRIES, make_geometry, sphere_phantom
from vpcli.errors import BadInputError
from vpcli.volumes import bids_entities, infer_metadata, load_scans, load_volume, save_volume


def _write_nifti(path, array, affine=None):
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), path)
    return path


@pytest.mark.parametrize('name', sorted(GEOMETRIES))
@pytest.mark.parametrize('ending', ['.nii.gz', '.nii', '.mgz'])
def test_save_load_round_trip_keeps_geometry(tmp_path, name, ending):
    geometry = make_geometry(**GEOMETRIES[name])
    mask = sphere_phantom(geometry, (0, 0, 0), 10.0)
    path = save_volume(mask.new(mask.tensor.to(torch.int32)), tmp_path / f'mask{ending}')
    loaded = load_volume(path)
    assert tuple(loaded.baseshape) == tuple(mask.baseshape)
    assert torch.allclose(loaded.geometry.tensor.double(), geometry.tensor.double(), atol=1e-4)
    assert torch.equal(loaded.tensor.bool(), mask.tensor)
    assert loaded.geometry.orientation.name == geometry.orientation.name


def test_bids_entities_and_metadata(tmp_path):
    path = tmp_path / 'sub-01_ses-20210304_ce-gad_T1w.nii.gz'
    entities, suffix = bids_entities(path)
    assert entities == {'sub': '01', 'ses': '20210304', 'ce': 'gad'} and suffix == 'T1w'
    meta = infer_metadata(path, {})
    assert meta == dict(modality='T1w', date=dt.date(2021, 3, 4), session='20210304', contrast=True)
    # the sidecar date wins over the session label
    meta = infer_metadata(tmp_path / 'sub-01_ses-01_FLAIR.nii.gz',
                          {'AcquisitionDateTime': '2020-02-03T10:00:00'})
    assert meta['modality'] == 'FLAIR' and meta['date'] == dt.date(2020, 2, 3)
    assert meta['session'] == '01'
    assert infer_metadata(tmp_path / 'scan.nii.gz', {'Modality': 'CT'})['modality'] == 'CT'
    assert infer_metadata(tmp_path / 'scan.nii.gz', {})['date'] is None


def test_load_scans_names_and_describes(tmp_path):
    anat = tmp_path / 'sub-01' / 'ses-01' / 'anat'
    anat.mkdir(parents=True)
    t1 = _write_nifti(anat / 'sub-01_ses-01_T1w.nii.gz', np.ones((4, 5, 6), np.int16))
    seg = _write_nifti(anat / 'sub-01_ses-01_dseg.nii.gz', np.ones((4, 5, 6), np.uint8))
    (anat / 'sub-01_ses-01_T1w.json').write_text(json.dumps({'AcquisitionDate': '2019-12-31'}))
    scans = load_scans([t1, seg])
    assert [s.name for s in scans] == ['img0', 'img1']
    assert scans[0].volume.tensor.dtype == torch.float32
    assert scans[1].modality == 'labelmap' and not scans[1].volume.tensor.is_floating_point()
    assert scans[0].describe() == 'img0: T1w, date 2019-12-31, session 01'
    assert scans[0].describe(date=False) == 'img0: T1w, date unknown, session 01'
    assert scans[0].describe(session=False) == 'img0: T1w, date 2019-12-31, session unknown'
    from vpcli.tasks.world import ScanInfo
    info = ScanInfo('img1', 'T1w', 0, '2019-12-31', contrast=True)
    assert info.describe() == 'img1: T1w post-contrast, date 2019-12-31, session 01'
    assert info.describe(date=False, session=False) == \
        'img1: T1w post-contrast, date unknown, session unknown'
    assert len(scans[0].sha256) == 64


def test_bad_inputs_are_one_line_errors_naming_the_file(tmp_path):
    cases = {}
    cases['missing'] = tmp_path / 'missing.nii.gz'
    (tmp_path / 'notes.txt').write_text('hello')
    cases['not a volume format'] = tmp_path / 'notes.txt'
    good = _write_nifti(tmp_path / 'good.nii.gz', np.ones((20, 20, 20), np.float32))
    truncated = tmp_path / 'truncated.nii.gz'
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    cases['truncated'] = truncated
    garbage = tmp_path / 'garbage.nii.gz'
    garbage.write_bytes(gzip.compress(b'not a nifti header at all' * 20))
    cases['garbage'] = garbage
    cases['4D'] = _write_nifti(tmp_path / 'fmri.nii.gz', np.ones((4, 4, 4, 3), np.float32))
    cases['zero axis'] = _write_nifti(tmp_path / 'empty.nii.gz', np.ones((4, 0, 4), np.float32))
    nan = np.ones((4, 4, 4), np.float32)
    nan[1, 2, 3] = np.nan
    cases['NaN'] = _write_nifti(tmp_path / 'nan.nii.gz', nan)
    (tmp_path / 'empty.nii').write_bytes(b'')
    cases['empty'] = tmp_path / 'empty.nii'
    for what, path in cases.items():
        with pytest.raises(BadInputError) as error:
            load_volume(path)
        message = str(error.value)
        assert str(path) in message, what
        assert '\n' not in message, what


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    import voxel as vx
    geometry = make_geometry(**GEOMETRIES['ras_iso_1mm'])
    mask = sphere_phantom(geometry, (0, 0, 0), 5.0)

    def explode(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(vx, 'save_volume', explode)
    with pytest.raises(KeyboardInterrupt):
        save_volume(mask, tmp_path / 'out.nii.gz')
    assert list(tmp_path.iterdir()) == []


def test_one_grid_comparison_and_one_voxel_size():
    """Grids are equal within 1e-3 mm everywhere (voxel's geometries_equal), and voxel size
    is the column norms of the matrix, also on a sheared grid."""
    import voxel as vx

    from vpcli.volumes import GRID_TOLERANCE_MM, same_geometry, voxel_spacing_mm
    matrix = torch.tensor([[1.0, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]])
    a = vx.AcquisitionGeometry(torch.Size((4, 4, 4)), matrix)
    nearly = matrix.clone()
    nearly[0, 3] += GRID_TOLERANCE_MM / 2
    apart = matrix.clone()
    apart[0, 3] += GRID_TOLERANCE_MM * 2
    assert same_geometry(a, vx.AcquisitionGeometry(torch.Size((4, 4, 4)), nearly))
    assert not same_geometry(a, vx.AcquisitionGeometry(torch.Size((4, 4, 4)), apart))
    assert not same_geometry(a, vx.AcquisitionGeometry(torch.Size((4, 4, 5)), matrix))
    assert voxel_spacing_mm(a).tolist() == pytest.approx([1.0, 5 ** 0.5 / 2, 2.0])
