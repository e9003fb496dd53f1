"""Comparison functions: signs, percentages, tuples, and dates."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import torch
import voxel as vx

from vpcli.errors import BadInputError, ProgramError
from vpcli.library.comparison import asymmetry, days_between, difference, percent_change, ratio
from vpcli.volumes import Scan, SourceRef, infer_metadata


def dated_scan(name: str, file: str, date: dt.date | None) -> Scan:
    return Scan(volume=vx.Volume(torch.zeros(1, 2, 2, 2)), name=name, path=Path(file), date=date,
                sources=(SourceRef(name, file),))


def test_difference_is_second_minus_first():
    assert difference(2.5, 4.0) == 1.5
    assert difference(4.0, 2.5) == -1.5
    assert difference((1.0, 2.0, 3.0), (2.0, 2.0, 1.0)) == (1.0, 0.0, -2.0)


def test_percent_change():
    assert percent_change(2.0, 3.0) == 50.0
    assert percent_change(4.0, 3.0) == -25.0
    assert percent_change((10.0, 20.0), (11.0, 10.0)) == pytest.approx((10.0, -50.0))
    with pytest.raises(ProgramError, match='before is 0'):
        percent_change(0, 1.0)


def test_asymmetry_index():
    assert asymmetry(11.0, 9.0) == pytest.approx(20.0)   # 100 * 2 / 10
    assert asymmetry(9.0, 11.0) == pytest.approx(-20.0)
    assert asymmetry(5.0, 5.0) == 0.0
    assert asymmetry(1.0, 0.0) == 200.0
    with pytest.raises(ProgramError, match='left \\+ right is 0'):
        asymmetry(0.0, 0.0)


def test_ratio():
    assert ratio(3.0, 4.0) == 0.75
    assert ratio((2.0, 9.0), (4.0, 3.0)) == (0.5, 3.0)
    with pytest.raises(ProgramError, match='b is 0'):
        ratio(1.0, 0)


def test_arguments_must_be_numbers_or_matching_tuples():
    with pytest.raises(ProgramError, match='difference: a must be a finite number'):
        difference('big', 1.0)
    with pytest.raises(ProgramError, match='both be numbers or both be tuples'):
        difference((1.0, 2.0), 1.0)
    with pytest.raises(ProgramError, match='has 2 values but b has 3'):
        ratio((1.0, 2.0), (1.0, 2.0, 3.0))
    with pytest.raises(ProgramError, match='finite number'):
        ratio(True, 2.0)
    with pytest.raises(ProgramError, match='finite number'):
        percent_change(float('nan'), 2.0)


def test_days_between_uses_scan_dates(tmp_path):
    first = dated_scan('img0', 'sub-01_ses-01_FLAIR.nii.gz', dt.date(2020, 12, 30))
    second = dated_scan('img1', 'sub-01_ses-02_FLAIR.nii.gz', dt.date(2021, 3, 1))
    assert days_between(first, second) == 61
    assert days_between(second, first) == -61
    assert days_between(first, first) == 0
    # dates as the loader infers them (sidecar wins over a date-like session)
    meta = infer_metadata(tmp_path / 'sub-01_ses-20210304_T1w.nii.gz',
                          {'AcquisitionDate': '2021-03-05'})
    third = dated_scan('img2', 'sub-01_ses-20210304_T1w.nii.gz', meta['date'])
    assert days_between(second, third) == 4


def test_days_between_with_an_unknown_date_names_the_file():
    known = dated_scan('img0', 'sub-01_ses-01_FLAIR.nii.gz', dt.date(2020, 1, 1))
    unknown = dated_scan('img1', 'sub-01_ses-02_FLAIR.nii.gz', None)
    with pytest.raises(BadInputError) as caught:
        days_between(known, unknown)
    message = str(caught.value)
    assert 'img1 (sub-01_ses-02_FLAIR.nii.gz)' in message and 'AcquisitionDate' in message
    assert '\n' not in message
    with pytest.raises(ProgramError, match='scan_a must be a scan'):
        days_between(3, known)


def test_find_scan_returns_the_one_scan_of_a_modality_in_a_session():
    import dataclasses

    from vpcli.library.comparison import find_scan
    from vpcli.library.context import RunContext

    def scan(name, modality, session, date):
        return dataclasses.replace(dated_scan(name, f'{name}.nii.gz', date), modality=modality,
                                   session=session)
    # listed out of time order: sessions count from the oldest
    scans = [scan('img0', 'FLAIR', '02', dt.date(2021, 1, 1)), scan('img1', 'T1w', '02', dt.date(2021, 1, 1)),
             scan('img2', 'FLAIR', '01', dt.date(2020, 1, 1)), scan('img3', 'T1w', '01', dt.date(2020, 1, 1))]
    context = RunContext(scans=scans)
    assert find_scan(context, 'FLAIR').name == 'img2'
    assert find_scan(context, 'flair', 1).name == 'img0'
    assert find_scan(context, 'T1w', 1).name == 'img1'
    with pytest.raises(ProgramError, match=r'no PD scan\(s\) in session 0 \(img2 \(FLAIR\), img3 \(T1w\)\)'):
        find_scan(context, 'PD')
    with pytest.raises(ProgramError, match='session 2 does not exist; the scans form 2 session'):
        find_scan(context, 'FLAIR', 2)
    with pytest.raises(ProgramError, match='session must be a whole number'):
        find_scan(context, 'FLAIR', True)
    with pytest.raises(ProgramError, match='modality must be a text'):
        find_scan(context, 3)
    twice = RunContext(scans=[scan('img0', 'T1w', '01', None), scan('img1', 'T1w', '01', None)])
    with pytest.raises(ProgramError, match=r'2 T1w scan\(s\) in session 0'):
        find_scan(twice, 'T1w')


def test_find_scan_tells_a_t1w_before_contrast_from_the_one_after():
    import dataclasses

    from vpcli.library.comparison import find_scan
    from vpcli.library.context import RunContext

    def scan(name, contrast, session='01'):
        return dataclasses.replace(dated_scan(name, f'{name}.nii.gz', None), modality='T1w',
                                   session=session, contrast=contrast)
    # a tumour study's session (BIDS ``ce-`` entity on the second): the names the scan lines give
    pair = RunContext(scans=[scan('img0', False), scan('img1', True)])
    assert [line.split(',')[0] for line in (s.describe() for s in pair.scans)] == \
        ['img0: T1w', 'img1: T1w post-contrast']
    assert find_scan(pair, 'T1w').name == 'img0'
    assert find_scan(pair, 'T1w post-contrast').name == 'img1'
    assert find_scan(pair, ' t1w  POST-CONTRAST ').name == 'img1'
    # a session whose only T1w is after contrast still answers to "T1w"
    alone = RunContext(scans=[scan('img0', True)])
    assert find_scan(alone, 'T1w').name == 'img0'
    with pytest.raises(ProgramError, match=r'no T1w post-contrast scan\(s\) in session 0 '
                                           r'\(img0 \(T1w\)\)'):
        find_scan(RunContext(scans=[scan('img0', False)]), 'T1w post-contrast')
    both_after = RunContext(scans=[scan('img0', True), scan('img1', True)])
    with pytest.raises(ProgramError, match=r'2 T1w scan\(s\) in session 0 \(img0 \(T1w post-contrast\), '
                                           r'img1 \(T1w post-contrast\)\)'):
        find_scan(both_after, 'T1w')
