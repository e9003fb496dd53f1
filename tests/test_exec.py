"""``voxelprompt exec`` end to end: metrics, masks, script.py, bad input, atomic outputs."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jsonschema
import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import GEOMETRIES, make_geometry
from vpcli.cli import app

REPO = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((REPO / 'docs' / 'metrics.schema.json').read_text())

PROGRAM = textwrap.dedent('''\
    # measures labels 1 and 2 of a label map (img1) next to a T1w scan (img0)

    # step 1
    left = select_labels(img1, 1)
    both = select_labels(img1, (1, 2))
    left_ml = volume(left)
    both_ml = volume(both)
    read(left_ml)

    # step 2
    output("label 1 volume", left_ml, "mL")
    output("labels 1+2 volume", both_ml, "mL")
    output("fraction", left_ml / both_ml, "ratio")
    save(left, "label one")
    answer(f"Label 1: {left_ml:.3f} mL of {both_ml:.3f} mL.")
''')

#: metrics fields that legitimately differ between two runs of the same program
VOLATILE = ('command', 'timings')


def _stable(metrics: dict) -> dict:
    stable = {k: v for k, v in metrics.items() if k not in VOLATILE}
    stable['steps'] = [{k: v for k, v in s.items() if k != 'seconds'} for s in metrics['steps']]
    return stable


@pytest.fixture
def dataset(tmp_path) -> dict:
    """A T1w scan and a label map on an oblique, anisotropic LPS grid."""
    geometry = make_geometry(**GEOMETRIES['lps_aniso'])
    affine = geometry.tensor.double().numpy()
    shape = tuple(int(n) for n in geometry.baseshape)
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 4, size=shape).astype(np.int16)
    image = rng.normal(100, 10, size=shape).astype(np.float32)
    folder = tmp_path / 'data'
    folder.mkdir()
    t1w = folder / 'sub-01_ses-01_T1w.nii.gz'
    dseg = folder / 'sub-01_ses-01_dseg.nii.gz'
    nib.save(nib.Nifti1Image(image, affine), t1w)
    nib.save(nib.Nifti1Image(labels, affine), dseg)
    script = tmp_path / 'measure.py'
    script.write_text(PROGRAM)
    return dict(t1w=t1w, dseg=dseg, script=script, labels=labels, affine=affine, tmp=tmp_path)


def _exec(*args) -> 'click.testing.Result':
    return CliRunner().invoke(app, ['exec', *map(str, args)])


def _leftovers(parent: Path, name: str) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(f'.{name}.')]


def test_exec_writes_correct_metrics_masks_and_script(dataset):
    out = dataset['tmp'] / 'out'
    result = _exec(dataset['script'], dataset['t1w'], dataset['dseg'], '-o', out, '--quiet')
    assert result.exit_code == 0, result.output
    voxel_ml = abs(np.linalg.det(dataset['affine'][:3, :3])) / 1000
    left_ml = int((dataset['labels'] == 1).sum()) * voxel_ml
    both_ml = int(np.isin(dataset['labels'], (1, 2)).sum()) * voxel_ml
    assert result.stdout == f'Label 1: {left_ml:.3f} mL of {both_ml:.3f} mL.\n'

    metrics = json.loads((out / 'metrics.json').read_text())
    jsonschema.validate(metrics, SCHEMA, cls=jsonschema.Draft202012Validator)
    values = {o['name']: o for o in metrics['outputs']}
    assert values['label 1 volume']['value'] == pytest.approx(left_ml, rel=1e-9)
    assert values['labels 1+2 volume']['value'] == pytest.approx(both_ml, rel=1e-9)
    assert values['fraction']['value'] == pytest.approx(left_ml / both_ml, rel=1e-9)
    assert values['fraction']['unit'] == 'ratio' and values['fraction']['step'] == 2
    assert values['label 1 volume']['sources'] == [{'name': 'img1',
                                                    'file': 'sub-01_ses-01_dseg.nii.gz'}]
    assert [i['modality'] for i in metrics['inputs']] == ['T1w', 'labelmap']
    assert metrics['inputs'][1]['spacing_mm'] == pytest.approx([0.7, 0.9, 4.0])
    assert metrics['inputs'][1]['orientation'] == 'LPS'
    assert metrics['steps'][0]['feedback'] == [f'{left_ml:.6g} mL']
    assert metrics['seed'] == 0 and metrics['device'] == 'cpu' and metrics['mode'] == 'exec'
    import hashlib
    assert metrics['inputs'][1]['sha256'] == hashlib.sha256(dataset['dseg'].read_bytes()).hexdigest()

    # the saved mask, and the named-but-unsaved one, in the label map's geometry
    files = {v['name']: v for v in metrics['volumes']}
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ['metrics.json', 'script.py', 'label_one.nii.gz', 'labels_1_2.nii.gz', 'qc', 'report.html'])
    assert sorted(p.name for p in (out / 'qc').iterdir()) == ['label_one.png', 'labels_1_2.png']
    assert sorted(v['qc'] for v in metrics['volumes']) == ['qc/label_one.png', 'qc/labels_1_2.png']
    for name, ids in (('label one', (1,)), ('labels 1, 2', (1, 2))):
        image = nib.load(out / files[name]['file'])
        assert image.shape == dataset['labels'].shape
        np.testing.assert_allclose(image.affine, dataset['affine'], atol=1e-4)
        data = np.asanyarray(image.dataobj)
        assert data.dtype == np.uint8
        np.testing.assert_array_equal(data.astype(bool), np.isin(dataset['labels'], ids))
        assert files[name]['voxel_count'] == int(np.isin(dataset['labels'], ids).sum())
        assert files[name]['volume_ml'] == pytest.approx(files[name]['voxel_count'] * voxel_ml)

    # re-running the written script.py gives identical metrics and masks
    again = dataset['tmp'] / 'again'
    result = _exec(out / 'script.py', dataset['t1w'], dataset['dseg'], '-o', again, '--quiet')
    assert result.exit_code == 0, result.output
    rerun = json.loads((again / 'metrics.json').read_text())
    assert _stable(rerun) == _stable(metrics)
    assert (again / 'script.py').read_text() == (out / 'script.py').read_text()
    for entry in metrics['volumes']:
        assert (np.asanyarray(nib.load(again / entry['file']).dataobj)
                == np.asanyarray(nib.load(out / entry['file']).dataobj)).all()


def test_json_stdout_is_only_metrics_and_overwrite(dataset):
    out = dataset['tmp'] / 'out'
    out.mkdir()
    (out / 'old.txt').write_text('old')
    result = _exec(dataset['script'], dataset['t1w'], dataset['dseg'], '-o', out, '--json')
    assert result.exit_code == 3
    assert 'output folder exists and is not empty' in result.stderr
    assert (out / 'old.txt').exists()

    result = _exec(dataset['script'], dataset['t1w'], dataset['dseg'], '-o', out, '--json',
                   '--overwrite')
    assert result.exit_code == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics == json.loads((out / 'metrics.json').read_text())
    assert not (out / 'old.txt').exists()
    assert 'voxelprompt: step 1/2' in result.stderr
    assert _leftovers(out.parent, 'out') == []


def test_refused_and_failing_programs_write_nothing(dataset):
    tmp = dataset['tmp']
    refused = tmp / 'refused.py'
    refused.write_text('# step 1\nx = 1\n# step 2\nimport os\n')
    result = _exec(refused, dataset['dseg'], '-o', tmp / 'out')
    assert result.exit_code == 4
    assert result.stderr.strip() == ('voxelprompt: error: refused.py line 4 (step 2): imports are '
                                     'not allowed [import os]')

    failing = tmp / 'failing.py'
    failing.write_text('# step 1\nm = select_labels(img0, 1)\nsave(m, "m")\n# step 2\n'
                       'x = volume(m) / 0\n')
    result = _exec(failing, dataset['dseg'], '-o', tmp / 'out')
    assert result.exit_code == 5
    assert result.stderr.strip().endswith('failing.py line 5 (step 2): division by zero')
    assert sum(line.startswith('voxelprompt: error:') for line in result.stderr.splitlines()) == 1
    assert not (tmp / 'out').exists() and _leftovers(tmp, 'out') == []


def _write_bad_inputs(folder: Path) -> dict[str, Path]:
    folder.mkdir()
    good = np.ones((4, 5, 6), np.float32)
    bad = {}
    bad['missing'] = folder / 'missing_T1w.nii.gz'
    bad['not_nifti'] = folder / 'notes_T1w.txt'
    bad['not_nifti'].write_text('hello')
    bad['garbage'] = folder / 'garbage_T1w.nii.gz'
    bad['garbage'].write_bytes(gzip.compress(b'this is not a nifti header' * 20))
    whole = folder / 'whole_T1w.nii.gz'
    nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(size=(20, 20, 20)).astype(np.float32),
                             np.eye(4)), whole)
    bad['truncated'] = folder / 'truncated_T1w.nii.gz'
    bad['truncated'].write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    bad['four_d'] = folder / 'fourd_T1w.nii.gz'
    nib.save(nib.Nifti1Image(np.ones((4, 5, 6, 3), np.float32), np.eye(4)), bad['four_d'])
    bad['zero_axis'] = folder / 'zero_T1w.nii'
    nib.save(nib.Nifti1Image(np.ones((4, 0, 6), np.float32), np.eye(4)), bad['zero_axis'])
    nan = good.copy()
    nan[1, 2, 3] = np.nan
    bad['nan'] = folder / 'nan_T1w.nii.gz'
    nib.save(nib.Nifti1Image(nan, np.eye(4)), bad['nan'])
    return bad


@pytest.mark.parametrize('case', ['missing', 'not_nifti', 'garbage', 'truncated', 'four_d',
                                  'zero_axis', 'nan'])
def test_bad_input_is_one_line_naming_the_file(case, dataset):
    bad = _write_bad_inputs(dataset['tmp'] / 'bad')[case]
    out = dataset['tmp'] / 'out'
    result = _exec(dataset['script'], dataset['t1w'], bad, '-o', out)
    assert result.exit_code == 3, (case, result.output)
    lines = result.stderr.strip().splitlines()
    error_lines = [line for line in lines if line.startswith('voxelprompt: error:')]
    assert len(error_lines) == 1 and str(bad) in error_lines[0], result.stderr
    assert result.stdout == ''
    assert not out.exists() and _leftovers(out.parent, 'out') == []


def test_bad_script_file(dataset):
    out = dataset['tmp'] / 'out'
    result = _exec(dataset['tmp'] / 'nope.py', dataset['t1w'], '-o', out)
    assert result.exit_code == 3 and 'nope.py: no such file' in result.stderr
    binary = dataset['tmp'] / 'binary.py'
    binary.write_bytes(b'\xff\xfe\x00 x')
    result = _exec(binary, dataset['t1w'], '-o', out)
    assert result.exit_code == 3 and 'is not UTF-8 text' in result.stderr
    assert not out.exists()


def test_interrupt_while_writing_leaves_nothing(dataset, monkeypatch):
    import vpcli.volumes
    real_save = vpcli.volumes.save_volume
    calls = []

    def save_then_interrupt(volume, path):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_save(volume, path)

    monkeypatch.setattr(vpcli.volumes, 'save_volume', save_then_interrupt)
    out = dataset['tmp'] / 'out'
    result = _exec(dataset['script'], dataset['t1w'], dataset['dseg'], '-o', out)
    assert result.exit_code == 130
    assert 'interrupted' in result.stderr
    assert len(calls) == 2
    assert not out.exists() and _leftovers(out.parent, 'out') == []


@pytest.mark.slow
def test_real_subprocess_run_and_ctrl_c(dataset):
    """A real process: the CLI end to end, then SIGINT in the middle of a slow step."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = dataset['tmp'] / 'out'
    done = subprocess.run([sys.executable, '-m', 'vpcli', 'exec', str(dataset['script']),
                           str(dataset['t1w']), str(dataset['dseg']), '-o', str(out), '--json'],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)['answer'].startswith('Label 1: ')

    # a slow library function registered in the child only: the step is busy when SIGINT lands
    started_flag = dataset['tmp'] / 'started'
    slow_script = dataset['tmp'] / 'slow.py'
    slow_script.write_text('m = select_labels(img1, 1)\nsave(m, "m")\nx = slow_step(60)\n')
    # a shell starts background jobs (`cmd &`, nohup) with SIGINT ignored, and the child
    # would inherit that; Ctrl-C reaches a foreground process with the default handler
    child = textwrap.dedent(f'''
        import signal, sys, time
        from pathlib import Path
        from vpcli.library.registry import agent_function
        signal.signal(signal.SIGINT, signal.default_int_handler)

        @agent_function('morphometry', returns='float, s')
        def slow_step(seconds):
            """Test-only slow call.

            Args:
                seconds: How long, in s.

            Returns:
                The time waited, in s.
            """
            Path({str(started_flag)!r}).touch()
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                time.sleep(0.01)
            return seconds

        from vpcli.cli import main
        sys.argv = ['voxelprompt', 'exec', {str(slow_script)!r}, {str(dataset['t1w'])!r},
                    {str(dataset['dseg'])!r}, '-o', {str(dataset['tmp'] / 'slow_out')!r}]
        main()
    ''')
    process = subprocess.Popen([sys.executable, '-c', child], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not started_flag.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started_flag.exists(), process.communicate()
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert 'interrupted' in stderr and stdout == ''
    assert not (dataset['tmp'] / 'slow_out').exists()
    assert _leftovers(dataset['tmp'], 'slow_out') == []


@pytest.mark.slow
@pytest.mark.parametrize('script', ['tissue_volumes.py', 'brain_tissue_summary.py'])
def test_example_programs_on_bundled_example(script, example_dataset, tmp_path):
    out = tmp_path / 'out'
    result = _exec(REPO / 'recipes' / 'scripts' / script, example_dataset['T1w'],
                   example_dataset['dseg'], '-o', out, '--quiet')
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / 'metrics.json').read_text())
    jsonschema.validate(metrics, SCHEMA, cls=jsonschema.Draft202012Validator)
    labels = np.asanyarray(nib.load(example_dataset['dseg']).dataobj)
    voxel_ml = abs(np.linalg.det(nib.load(example_dataset['dseg']).affine[:3, :3])) / 1000
    values = {o['name']: o['value'] for o in metrics['outputs']}
    if script == 'tissue_volumes.py':
        assert values['grey matter volume'] == pytest.approx((labels == 1).sum() * voxel_ml)
        assert values['white matter volume'] == pytest.approx((labels == 2).sum() * voxel_ml)
        assert result.stdout.startswith('Grey matter ')
    else:
        assert values['brain tissue volume'] == pytest.approx(np.isin(labels, (1, 2)).sum()
                                                              * voxel_ml)
        crop = next(v for v in metrics['volumes'] if v['kind'] == 'image')
        assert crop['geometry_of'] is None and crop['sources'][0]['name'] == 'img0'
        assert result.stdout.startswith('Brain tissue measures ')


def test_exec_prints_the_measured_values_when_there_is_no_answer(tmp_path):
    """exec and run share one result printer: without answer(), each output() value is a
    'name: value unit' line on stdout (exec used to print nothing)."""
    from typer.testing import CliRunner

    from conftest import cube_scan
    from vpcli.cli import app
    scan = cube_scan(tmp_path / 'scan.nii.gz', 10, 2, 6)
    script = tmp_path / 'script.py'
    script.write_text('# step 1\nroi = threshold(img0, 0.5)\n# step 2\n'
                      'output("cube volume", volume(roi), "mL")\n')
    result = CliRunner().invoke(app, ['exec', str(script), str(scan), '-o', str(tmp_path / 'out'),
                                      '--no-qc', '--quiet'])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == 'cube volume: 0.512 mL'


def test_invoked_command_line_is_what_was_typed_else_rebuilt(monkeypatch):
    """One definition of the recorded command line (run, exec, bids, eval): the typed argv when
    the process was started as ``voxelprompt COMMAND ...``, else the line rebuilt from the
    options (in-process calls: tests, python -c)."""
    from vpcli.cli._setup import invoked_command_line
    rebuilt = ['voxelprompt', 'exec', 'script.py', 'scan.nii.gz', '-o', 'out']
    monkeypatch.setattr(sys, 'argv', ['/usr/bin/voxelprompt', 'exec', 'script.py', 'scan.nii.gz',
                                      '-q', '-o', 'out'])
    assert invoked_command_line('exec', rebuilt) == ['voxelprompt', 'exec', 'script.py',
                                                     'scan.nii.gz', '-q', '-o', 'out']
    assert invoked_command_line('run', ['voxelprompt', 'run']) == ['voxelprompt', 'run']
    for argv in (['pytest', '-q', 'tests/test_exec.py'], ['-c'], []):
        monkeypatch.setattr(sys, 'argv', argv)
        assert invoked_command_line('exec', rebuilt) == rebuilt


def test_exec_records_the_command_line_as_typed(tmp_path, monkeypatch):
    """A shell's ``voxelprompt exec ...`` is recorded as typed (as ``run`` does), not rebuilt
    from the options; an in-process call records the rebuilt line."""
    from conftest import cube_scan
    scan = cube_scan(tmp_path / 'scan.nii.gz', 10, 2, 6)
    script = tmp_path / 'script.py'
    script.write_text('# step 1\nroi = threshold(img0, 0.5)\n# step 2\n'
                      'output("cube volume", volume(roi), "mL")\n')
    typed = ['exec', str(script), str(scan), '-q', '--no-qc', '-o', str(tmp_path / 'typed')]
    monkeypatch.setattr(sys, 'argv', ['/usr/local/bin/voxelprompt', *typed])
    assert _exec(*typed[1:]).exit_code == 0
    metrics = json.loads((tmp_path / 'typed' / 'metrics.json').read_text())
    assert metrics['command']['argv'] == ['voxelprompt', *typed]

    monkeypatch.setattr(sys, 'argv', ['pytest'])
    assert _exec(*typed[1:-1], str(tmp_path / 'rebuilt')).exit_code == 0
    metrics = json.loads((tmp_path / 'rebuilt' / 'metrics.json').read_text())
    assert metrics['command']['argv'] == ['voxelprompt', 'exec', str(script), str(scan), '-o',
                                          str(tmp_path / 'rebuilt'), '--quiet', '--step-timeout',
                                          '600', '--seed', '0', '--no-qc']
