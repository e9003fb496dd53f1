"""One BIDS job's derivatives: run a program (or the agent) on a job's scans and write
its outputs, BIDS-named, into the derivatives dataset, atomically per job.

A job folder (``sub-01/ses-01/``, or ``sub-01/`` when the job has no session) holds::

    anat/sub-01_ses-01_desc-<Target>_mask.nii.gz   + .json sidecar with Sources (BIDS URIs)
    anat/sub-01_ses-01_desc-<Name>_<suffix>.nii.gz + .json   (edited images: crops, removals)
    figures/sub-01_ses-01_desc-<Target>_mask.png  QC picture per mask
    voxelprompt/metrics.json, script.py, report.html

Everything is built in a hidden staging folder next to the job folder and renamed into
place at the end, so a failing or interrupted job leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from vpcli.bids import BidsJob, bids_label
from vpcli.program_run import move_into_place
from vpcli.volumes import Scan, bids_entities, write_text_atomic


def _bids_uri(path: Path, bids_dir: Path) -> str:
    return f'bids:raw:{path.resolve().relative_to(bids_dir.resolve()).as_posix()}'


def _scan_for(volume_record: dict, scans: Sequence[Scan]) -> Scan | None:
    """The input scan a written volume belongs to (its ``geometry_of``, else first source)."""
    by_name = {scan.name: scan for scan in scans}
    if volume_record.get('geometry_of') in by_name:
        return by_name[volume_record['geometry_of']]
    for source in volume_record.get('sources', []):
        if source['name'] in by_name:
            return by_name[source['name']]
    return None


def write_job(job: BidsJob, out_dir: Path, bids_dir: Path, run, *,
              qc: bool = True) -> dict:
    """Write one finished run as the job's derivatives (atomically); return its metrics.

    Args:
        job: The job (participant, session, inputs).
        out_dir: Root of the derivatives dataset.
        bids_dir: Root of the raw dataset (for ``Sources`` URIs).
        run: A finished :class:`vpcli.program_run.ProgramRun` over ``job.inputs``.
        qc: Write QC pictures and the HTML page.
    """
    from vpcli.qc import mask_picture, report_page
    from vpcli.volumes import load_volume

    target = job.folder(out_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f'.{target.name}.partial-', dir=target.parent))
    try:
        run_folder = staging / 'voxelprompt'
        metrics = run.write(run_folder)
        anat, figures = staging / 'anat', staging / 'figures'
        anat.mkdir()
        pictures = []
        used: set[str] = set()
        for record in metrics['volumes']:
            scan = _scan_for(record, run.scans)
            label = bids_label(record['name'])
            while label in used:
                label += 'X'
            used.add(label)
            if record['kind'] == 'mask':
                suffix = 'mask'
            else:
                suffix = (bids_entities(scan.path)[1] if scan and scan.path else None) or 'image'
            stem = f'{job.key}_desc-{label}_{suffix}'
            bids_name = f'{stem}.nii.gz'
            os.replace(run_folder / record['file'], anat / bids_name)
            sources = [_bids_uri(p, bids_dir) for p in job.inputs
                       if any(s.get('file') == p.name for s in record.get('sources', []))]
            write_text_atomic(anat / f'{stem}.json', json.dumps({
                'Description': record['description'],
                'Sources': sources,
                'Type': 'Brain' if record['kind'] == 'mask' else None,
                'RawSources': sources,
                'voxelprompt': {'name': record['name'], 'step': record['step'],
                                'volume_ml': record.get('volume_ml')},
            }, indent=2) + '\n')
            record['file'] = f'../anat/{bids_name}'
            if qc and record['kind'] == 'mask' and scan is not None:
                picture = figures / f'{stem}.png'
                mask_volume = load_volume(anat / bids_name, label_map=True)
                mask_picture(scan.volume, mask_volume, picture,
                             title=f'{job.key}: {record["description"]}')
                pictures.append((f'../figures/{picture.name}', record['description']))
        write_text_atomic(run_folder / 'metrics.json',
                          json.dumps(metrics, indent=2, allow_nan=False) + '\n')
        if qc:
            write_text_atomic(run_folder / 'report.html',
                              report_page(metrics, pictures, f'voxelprompt: {job.key}'))
        os.chmod(staging, 0o755)
        move_into_place(staging, target)
        return metrics
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def program_job_runner(program_path: Path, settings_for: Callable[[BidsJob], object],
                       vision=None):
    """A job runner that executes a fixed program file on each job's scans (with the
    vision network, loaded once, for programs that call ``encode``/``segment``).

    Returns:
        ``run(job) -> ProgramRun`` (finished, not yet written).
    """
    from vpcli.program_run import ProgramRun, read_program, seed_everything
    from vpcli.sandbox import validate_program

    steps = read_program(program_path)

    def run(job: BidsJob):
        from vpcli.volumes import load_scans

        validate_program(steps, [f'img{i}' for i in range(len(job.inputs))])
        scans = load_scans(job.inputs)
        settings = settings_for(job)
        seed_everything(settings.seed)
        program_run = ProgramRun(scans, settings, vision=vision)
        program_run.run_program(steps)
        return program_run
    return run
