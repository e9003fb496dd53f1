"""Planning a BIDS batch: job selection, sharding, status records, group gathering."""

from __future__ import annotations

import json

import pytest

from bidsdata import MISSING, SESSIONS, SUBJECTS, build_bids
from vpcli.bids import (bids_label, gather_group, parse_shard, plan_jobs, run_participants,
                        select_shard)
from vpcli.errors import BadInputError


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    return build_bids(tmp_path_factory.mktemp('bids') / 'raw')


def test_plan_per_session(dataset):
    jobs = plan_jobs(dataset, suffixes=('T1w', 'FLAIR'))
    assert [(j.subject, j.session) for j in jobs] == [(s, t) for s in SUBJECTS for t in SESSIONS]
    first = jobs[0]
    assert [p.name for p in first.inputs] == ['sub-01_ses-20200101_T1w.nii.gz',
                                              'sub-01_ses-20200101_FLAIR.nii.gz']
    missing = [j for j in jobs if j.missing]
    assert {(j.subject, j.missing) for j in missing} == {(MISSING[0], ('FLAIR',))}


def test_plan_longitudinal_and_labels(dataset):
    jobs = plan_jobs(dataset, suffixes=('FLAIR',), longitudinal=True,
                     participant_labels=['sub-02', '03'])
    assert [(j.subject, j.session) for j in jobs] == [('02', None), ('03', None)]
    assert [p.name.split('_')[1] for p in jobs[0].inputs] == [f'ses-{s}' for s in SESSIONS]
    one_session = plan_jobs(dataset, suffixes=('T1w',), session_labels=['ses-20210601'])
    assert {j.session for j in one_session} == {'20210601'}
    with pytest.raises(BadInputError, match='sub-99'):
        plan_jobs(dataset, suffixes=('T1w',), participant_labels=['99'])


def test_shards_partition_subjects_exactly(dataset):
    jobs = plan_jobs(dataset, suffixes=('T1w',))
    for count in (1, 2, 3, 7):
        shards = [select_shard(jobs, i, count) for i in range(count)]
        flat = [job for shard in shards for job in shard]
        assert sorted(flat, key=lambda j: j.key) == sorted(jobs, key=lambda j: j.key)
        assert len(flat) == len(set(flat))
        for shard in shards:  # a participant's sessions stay together
            subjects = {j.subject for j in shard}
            assert all(len([j for j in jobs if j.subject == s]) ==
                       len([j for j in shard if j.subject == s]) for s in subjects)


def test_parse_shard_reads_slurm():
    assert parse_shard(None, {}) == (0, 1)
    assert parse_shard('1/4', {}) == (1, 4)
    env = {'SLURM_ARRAY_TASK_ID': '3', 'SLURM_ARRAY_TASK_COUNT': '4', 'SLURM_ARRAY_TASK_MIN': '1'}
    assert parse_shard(None, env) == (2, 4)
    for bad in ('4/4', 'x', '1/0'):
        with pytest.raises(BadInputError):
            parse_shard(bad, {})


def test_bids_label():
    assert bids_label('left hippocampus') == 'leftHippocampus'
    assert bids_label('Lateral-ventricle (L)') == 'lateralVentricleL'
    assert bids_label('***') == 'mask'


def test_run_participants_records_every_job_and_goes_on(dataset, tmp_path):
    out = tmp_path / 'derivatives'
    jobs = plan_jobs(dataset, suffixes=('T1w', 'FLAIR'))

    def process(job, out_dir):
        if job.subject == '02':
            raise RuntimeError('boom')
        folder = job.folder(out_dir) / 'voxelprompt'
        folder.mkdir(parents=True)
        (folder / 'metrics.json').write_text(json.dumps(
            {'outputs': [{'name': 'n_inputs', 'value': len(job.inputs), 'unit': 'count',
                          'sources': ['img0']},
                         {'name': 'com', 'value': [1.0, 2.0, 3.0], 'unit': 'mm',
                          'sources': ['img0']}]}))

    records = run_participants(dataset, out, jobs, process)
    by_key = {(r.participant_id, r.session_id): r for r in records}
    assert by_key[('sub-02', 'ses-20200101')].status == 'failed'
    assert 'boom' in by_key[('sub-02', 'ses-20200101')].reason
    assert by_key[('sub-05', 'ses-20200101')].reason == 'missing FLAIR'
    assert by_key[('sub-01', 'ses-20200101')].status == 'ok'
    tsv = (out / 'voxelprompt_status.tsv').read_text().splitlines()
    assert tsv[0].split('\t')[:3] == ['participant_id', 'session_id', 'status']
    assert len(tsv) == 1 + len(jobs)
    description = json.loads((out / 'dataset_description.json').read_text())
    assert description['DatasetType'] == 'derivative' and description['GeneratedBy']

    # rerun with skip-existing: ok jobs are not processed again
    calls = []
    rerun = run_participants(dataset, out, jobs, lambda job, o: calls.append(job.key),
                             skip_existing=True)
    assert {r.status for r in rerun if r.participant_id == 'sub-01'} == {'skipped'}
    assert all(not key.startswith('sub-01') for key in calls)

    path, flagged = gather_group(out)
    group = path.read_text().splitlines()
    assert group[0] == 'participant_id\tsession_id\tmetric\tvalue\tunit\tsources\tqc'
    assert 'sub-01\tses-20200101\tn_inputs\t2\tcount\timg0\tok' in group
    assert 'sub-01\tses-20200101\tcom[2]\t3.0\tmm\timg0\tok' in group
    assert not any(line.startswith('sub-02') for line in group[1:]) and flagged == []

    # a job whose run QC flagged: its rows say so, and qc_flagged.tsv lists the warning
    metrics_path = next(out.glob('sub-01/ses-20200101/voxelprompt/metrics.json'))
    metrics = json.loads(metrics_path.read_text())
    metrics['warnings'] = ['left hippocampus: empty mask']
    metrics_path.write_text(json.dumps(metrics))
    path, flagged = gather_group(out)
    assert 'sub-01\tses-20200101\tn_inputs\t2\tcount\timg0\tflagged' in path.read_text()
    assert flagged == [('sub-01', 'ses-20200101', 'left hippocampus: empty mask')]
    assert (out / 'group' / 'qc_flagged.tsv').read_text().splitlines()[1] == \
        'sub-01\tses-20200101\tleft hippocampus: empty mask'

    # schema 1.2: each measurement carries the masks it was computed from, and only the
    # measurements of a flagged mask are flagged
    metrics['outputs'] = [
        {'name': 'hippocampus', 'value': 0.0, 'unit': 'mL', 'sources': [], 'step': 3,
         'masks': ['left hippocampus']},
        {'name': 'thalamus', 'value': 7.5, 'unit': 'mL', 'sources': [], 'step': 3,
         'masks': ['left thalamus']},
        {'name': 'count', 'value': 2, 'unit': 'count', 'sources': [], 'step': 3, 'masks': []}]
    metrics['volumes'] = [
        {'description': 'left hippocampus', 'quality': {'flags': ['empty mask']}},
        {'description': 'left thalamus', 'quality': {'flags': []}}]
    metrics_path.write_text(json.dumps(metrics))
    rows = gather_group(out)[0].read_text()
    assert 'sub-01\tses-20200101\thippocampus\t0.0\tmL\t\tflagged' in rows
    assert 'sub-01\tses-20200101\tthalamus\t7.5\tmL\t\tok' in rows
    assert 'sub-01\tses-20200101\tcount\t2\tcount\t\tok' in rows
    assert '\teTIV\t' not in rows  # no head size estimate in these masks

    # schema 1.3: masks carry the head's eTIV; the group table gets one eTIV row per scan set
    for volume in metrics['volumes']:
        volume['quality']['etiv_ml'] = 1512.5
        volume['sources'] = [{'name': 'img0', 'file': 'sub-01_T1w.nii.gz'}]
    metrics_path.write_text(json.dumps(metrics))
    rows = gather_group(out)[0].read_text().splitlines()
    assert [row for row in rows if '\teTIV\t' in row] == \
        ['sub-01\tses-20200101\teTIV\t1512.5\tmL\timg0\tok']
