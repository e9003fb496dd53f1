"""`voxelprompt bids` end to end on a BIDS dataset built by the tests (program mode)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from bidsdata import CORRUPT, MISSING, SESSIONS, SUBJECTS, build_bids

PROGRAM = '''# step 1
head = largest_component(threshold(img0, 200))
output("head volume", volume(head), "mL")
output("flair head signal", mean_intensity(img1, resample_mask(head, img1)), "a.u.")
save(head, "head")
answer(f"head {volume(head):.1f} mL")
'''


def voxelprompt(*args, env=None):
    return subprocess.run([sys.executable, '-m', 'vpcli', *map(str, args)], capture_output=True,
                          text=True, env=env)


@pytest.fixture(scope='module')
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp('study')
    raw = build_bids(root / 'raw')
    program = root / 'head.py'
    program.write_text(PROGRAM)
    return raw, program


@pytest.mark.slow
def test_participant_group_skip_and_validation(study, tmp_path):
    raw, program = study
    out = tmp_path / 'derivatives'
    run = voxelprompt('bids', raw, out, 'participant', '--program', program, '--suffix', 'T1w',
                      '--suffix', 'FLAIR', '--quiet')
    assert run.returncode == 6, run.stderr           # some jobs failed
    assert run.stdout == ''
    rows = [line.split('\t') for line in (out / 'voxelprompt_status.tsv').read_text().splitlines()]
    header, rows = rows[0], rows[1:]
    status = {(r[0], r[1]): (r[2], r[3]) for r in rows}
    assert len(rows) == len(SUBJECTS) * len(SESSIONS)
    corrupt_key = (f'sub-{CORRUPT[0]}', f'ses-{CORRUPT[1]}')
    assert status[corrupt_key][0] == 'failed'
    assert f'sub-{CORRUPT[0]}_ses-{CORRUPT[1]}_{CORRUPT[2]}.nii.gz' in status[corrupt_key][1]
    for session in SESSIONS:
        assert status[(f'sub-{MISSING[0]}', f'ses-{session}')] == ('failed', 'missing FLAIR')
    ok = [key for key, (state, _) in status.items() if state == 'ok']
    assert len(ok) == len(rows) - 1 - len(SESSIONS)

    # derivatives: dataset description, BIDS-valid names (official schema), sidecars
    description = json.loads((out / 'dataset_description.json').read_text())
    assert description['DatasetType'] == 'derivative'
    assert description['GeneratedBy'][0]['Name'] == 'voxelprompt'
    from bidsschematools import rules, schema
    bids_schema = schema.load_schema()
    patterns = [re.compile(entry['regex']) for group in (bids_schema.rules.files.deriv,
                                                         bids_schema.rules.files.common)
                for entry in rules.regexify_filename_rules(group, bids_schema, level=2)]
    ignored = [line.rstrip('/') for line in (out / '.bidsignore').read_text().split()]
    checked = 0
    for path in out.rglob('*'):
        relative = path.relative_to(out).as_posix()
        if path.is_dir() or any(part in relative for part in ('voxelprompt/', 'figures/', '.voxelprompt')) \
                or relative in ('voxelprompt_status.tsv', '.bidsignore', 'dataset_description.json'):
            continue
        assert any(p.match(relative) for p in patterns), relative
        checked += 1
    assert checked == 2 * len(ok)  # a mask and its sidecar per ok job
    mask = out / 'sub-01' / f'ses-{SESSIONS[0]}' / 'anat' / f'sub-01_ses-{SESSIONS[0]}_desc-head_mask.json'
    sidecar = json.loads(mask.read_text())
    assert sidecar['Sources'] == [f'bids:raw:sub-01/ses-{SESSIONS[0]}/anat/'
                                  f'sub-01_ses-{SESSIONS[0]}_T1w.nii.gz']
    assert (mask.parent.parent / 'figures' / mask.name.replace('.json', '.png')).is_file()
    assert (mask.parent.parent / 'voxelprompt' / 'report.html').is_file()
    assert {'*/figures', '*/voxelprompt', '.voxelprompt'} <= set(ignored)

    # rerun with --skip-existing: ok jobs are skipped (no work), failed ones retried
    before = {p: p.stat().st_mtime_ns for p in out.rglob('metrics.json')}
    rerun = voxelprompt('bids', raw, out, 'participant', '--program', program, '--suffix', 'T1w',
                        '--suffix', 'FLAIR', '--skip-existing', '--quiet')
    assert rerun.returncode == 6
    assert {p: p.stat().st_mtime_ns for p in out.rglob('metrics.json')} == before
    states = [line.split('\t')[2] for line in
              (out / 'voxelprompt_status.tsv').read_text().splitlines()[1:]]
    assert states.count('skipped') == len(ok)

    # group level: one row per participant/session/metric, with units
    group = voxelprompt('bids', raw, out, 'group')
    assert group.returncode == 0, group.stderr
    lines = (out / 'group' / 'metrics.tsv').read_text().splitlines()
    assert lines[0] == 'participant_id\tsession_id\tmetric\tvalue\tunit\tsources\tqc'
    assert len(lines) == 1 + 2 * len(ok)
    assert all(line.split('\t')[4] in ('mL', 'a.u.') for line in lines[1:])


@pytest.mark.slow
def test_shards_from_slurm_partition_participants(study, tmp_path):
    raw, program = study
    out = tmp_path / 'sharded'
    import os
    for task in range(2):
        env = {**os.environ, 'SLURM_ARRAY_TASK_ID': str(task), 'SLURM_ARRAY_TASK_COUNT': '2'}
        result = voxelprompt('bids', raw, out, 'participant', '--program', program,
                             '--participant-label', 'sub-01 02 sub-03', '--suffix', 'T1w',
                             '--suffix', 'FLAIR', '-q', env=env)
        assert result.returncode == 0, result.stderr
        done = sorted({line.split('\t')[0] for line in
                       (out / 'voxelprompt_status.tsv').read_text().splitlines()[1:]})
        assert done == (['sub-01', 'sub-03'] if task == 0 else ['sub-01', 'sub-02', 'sub-03'])


def test_bad_usage_is_one_line(study, tmp_path):
    raw, program = study
    result = voxelprompt('bids', raw, tmp_path / 'o', 'participant')
    assert result.returncode == 3
    assert result.stderr.strip().count('\n') == 0 and 'exactly one of' in result.stderr
    result = voxelprompt('bids', tmp_path, tmp_path / 'o', 'participant', '--program', program)
    assert result.returncode == 3 and 'not a BIDS dataset' in result.stderr
