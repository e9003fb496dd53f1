"""One ``voxelprompt bids --prompt`` process over N subjects vs N ``voxelprompt run`` processes.

Usage: python benchmarks/bench_bids_vs_run.py [--subjects N] [--weights DIR] [--threads T]
                                              [--prompt TEXT] [--scan FILE] [--device D]

Every subject is a copy of one scan (default: the bundled example T1w, MNI152 at 1 mm), as
``sub-XX/ses-01/anat/sub-XX_ses-01_T1w.nii.gz`` with a sidecar date 2020-01-01 (the tiny
test agent only writes its programs for that scan line). Both ways run as real
subprocesses with the same prompt, weights, device and threads, one after the other.
Weights default to the repository's ``weights/`` when it holds a manifest, else a tiny
weights folder is trained for the benchmark (tests/tiny_weights.py, about 20 s).

Prints the wall-clock seconds per subject for each way, the saving of the single process
(one interpreter start, one import of torch and the libraries, one model load), and how the
saving splits: model loading as measured inside each ``run`` (``timings.weights_s``) and
the rest (process start and imports: a run's wall time minus its in-process
``timings.total_s``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout

DEFAULT_PROMPT = 'what is the volume of the left hippocampus?'


def _weights(explicit: str | None, work: Path) -> Path:
    if explicit:
        return Path(explicit)
    shipped = REPO / 'weights'
    if (shipped / 'manifest.json').is_file():
        return shipped
    sys.path.insert(0, str(REPO / 'tests'))
    from tiny_weights import make_tiny_weights
    print('no weights/ in the repository: training tiny weights (tests/tiny_weights.py)',
          file=sys.stderr, flush=True)
    return make_tiny_weights(work / 'tiny-weights')


def _study(scan: Path, root: Path, count: int) -> list[Path]:
    root.mkdir(parents=True)
    (root / 'dataset_description.json').write_text(json.dumps(
        {'Name': 'voxelprompt benchmark', 'BIDSVersion': '1.9.0', 'DatasetType': 'raw'}))
    subjects = [f'{i:02d}' for i in range(1, count + 1)]
    (root / 'participants.tsv').write_text(
        'participant_id\n' + ''.join(f'sub-{s}\n' for s in subjects))
    scans = []
    for subject in subjects:
        anat = root / f'sub-{subject}' / 'ses-01' / 'anat'
        anat.mkdir(parents=True)
        target = anat / f'sub-{subject}_ses-01_T1w.nii.gz'
        shutil.copyfile(scan, target)
        (anat / f'sub-{subject}_ses-01_T1w.json').write_text(
            json.dumps({'AcquisitionDateTime': '2020-01-01T09:00:00'}))
        scans.append(target)
    return scans


def _voxelprompt(*args) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, '-m', 'vpcli', *map(str, args)], cwd=REPO,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f'voxelprompt {" ".join(map(str, args[:1]))} failed ({done.returncode}):\n'
                 f'{done.stderr}')
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--subjects', '-n', type=int, default=4, help='subjects (default 4)')
    parser.add_argument('--weights', help='weights folder (default: weights/, else tiny ones)')
    parser.add_argument('--threads', type=int, default=1, help='torch threads (default 1)')
    parser.add_argument('--device', default='cpu', help='torch device (default cpu)')
    parser.add_argument('--prompt', default=DEFAULT_PROMPT, help='the prompt of every job')
    parser.add_argument('--scan', help='the scan every subject gets (default: the example T1w)')
    parser.add_argument('--keep', help='write everything under this folder and keep it')
    args = parser.parse_args()
    if args.subjects < 1:
        parser.error('--subjects must be at least 1')

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix='vp-bench-'))
    work.mkdir(parents=True, exist_ok=True)
    try:
        weights = _weights(args.weights, work)
        if args.scan:
            scan = Path(args.scan)
        else:
            from vpcli.examples import write_example
            scan = write_example(work / 'example')['T1w']
        scans = _study(scan, work / 'raw', args.subjects)
        common = ['--prompt', args.prompt, '--weights', weights, '--threads', str(args.threads),
                  '--device', args.device, '--quiet']

        # one process for every subject
        bids_out = work / 'bids-derivatives'
        bids_seconds = _voxelprompt('bids', work / 'raw', bids_out, 'participant', *common)
        rows = [line.split('\t') for line in
                (bids_out / 'voxelprompt_status.tsv').read_text().splitlines()]
        header, rows = rows[0], rows[1:]
        states = [row[header.index('status')] for row in rows]
        if states != ['ok'] * args.subjects:
            sys.exit(f'bids jobs did not all finish ok: {states}')
        job_seconds = [float(row[header.index('seconds')]) for row in rows]

        # one process per subject
        run_seconds, inside, loading = [], [], []
        for index, path in enumerate(scans):
            out = work / 'runs' / f'sub-{index + 1:02d}'
            run_seconds.append(_voxelprompt('run', path, '-o', out, *common))
            timings = json.loads((out / 'metrics.json').read_text())['timings']
            inside.append(timings['total_s'])
            loading.append(timings.get('weights_s', 0.0))

        n = args.subjects
        runs_total = sum(run_seconds)
        saving = runs_total - bids_seconds
        startup = statistics.mean(w - t for w, t in zip(run_seconds, inside))
        from vpcli.weights import verify_manifest
        sha = verify_manifest(weights)['weights_sha256'][:12]
        print(f'subjects: {n} (each {scan.name}); weights {weights} ({sha}); '
              f'device {args.device}, {args.threads} thread(s); prompt: {args.prompt!r}')
        print(f'one bids process:   {bids_seconds:7.2f} s total, {bids_seconds / n:6.2f} s per '
              f'subject (jobs alone: mean {statistics.mean(job_seconds):.2f} s)')
        print(f'{n} run processes:    {runs_total:7.2f} s total, {runs_total / n:6.2f} s per '
              f'subject (min {min(run_seconds):.2f}, max {max(run_seconds):.2f})')
        print(f'saving of one process: {saving:.2f} s total, {saving / n:.2f} s per subject '
              f'({100 * saving / runs_total:.0f}% of the separate runs)')
        print(f'per run process: model loading {statistics.mean(loading):.3f} s (timings.weights_s), '
              f'process start and imports {startup:.2f} s (wall minus timings.total_s)')
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
