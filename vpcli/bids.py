"""BIDS Apps batch mode: walk a BIDS dataset, run one job per participant (and session),
write a BIDS derivatives dataset, and gather every subject's metrics into one TSV.

Layout written under ``OUT``::

    dataset_description.json           DatasetType: derivative, GeneratedBy: voxelprompt
    .bidsignore                        lists the non-BIDS files below
    voxelprompt_status.tsv             one row per job: ok / failed (reason) / skipped
    sub-01/[ses-01/]anat/sub-01[_ses-01]_desc-<Target>_mask.nii.gz (+ .json with Sources)
    sub-01/[ses-01/]anat/sub-01[_ses-01]_desc-<Name>_<suffix>.nii.gz (edited images)
    sub-01/[ses-01/]voxelprompt/metrics.json, script.py
    sub-01/figures/*.png, sub-01.html  QC pictures and page
    group/metrics.tsv                  (``group`` level) one row per subject/session/metric

The dataset is read with pybids (``BIDSLayout``) rather than hand-rolled globbing. Status
records are one small JSON file per job (``.voxelprompt/status/``) so that array jobs
running at once never write the same file; the status TSV is rebuilt from them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

from vpcli import __version__
from vpcli.errors import BadInputError, VoxelPromptError
from vpcli.volumes import write_text_atomic

STATUS_TSV = 'voxelprompt_status.tsv'
STATUS_DIR = Path('.voxelprompt') / 'status'
GROUP_TSV = Path('group') / 'metrics.tsv'
GROUP_QC_TSV = Path('group') / 'qc_flagged.tsv'
BIDSIGNORE = '\n'.join(['*/voxelprompt/', '*/figures/', 'sub-*.html', 'voxelprompt_status.tsv',
                        'group/', '.voxelprompt/']) + '\n'


@dataclasses.dataclass(frozen=True)
class BidsJob:
    """One unit of batch work: a participant, and a session unless sessions run together.

    Attributes:
        subject: Participant label without ``sub-``.
        session: Session label without ``ses-``; None when the job spans all sessions
            (longitudinal recipes) or the dataset has no sessions.
        inputs: Scan files in the order the program sees them (``img0``, ``img1``, ...).
        missing: Requested suffixes with no file for this job.
    """
    subject: str
    session: str | None
    inputs: tuple[Path, ...]
    missing: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """``sub-01`` or ``sub-01_ses-02``: the BIDS prefix of this job's files."""
        return f'sub-{self.subject}' + (f'_ses-{self.session}' if self.session else '')

    def folder(self, root: Path) -> Path:
        """The job's folder inside a (raw or derivatives) BIDS tree."""
        path = root / f'sub-{self.subject}'
        return path / f'ses-{self.session}' if self.session else path


@dataclasses.dataclass
class JobStatus:
    """Outcome of one job, one row of the status TSV."""
    participant_id: str
    session_id: str
    status: str            # ok | failed | skipped
    reason: str = ''
    seconds: float = 0.0
    finished: str = ''

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


def strip_prefix(label: str, prefix: str) -> str:
    """``sub-01`` or ``01`` -> ``01``."""
    return label[len(prefix) + 1:] if label.startswith(prefix + '-') else label


def bids_label(text: str) -> str:
    """A BIDS label (letters and digits only) from free text: ``left hippocampus`` ->
    ``leftHippocampus``."""
    words = re.findall(r'[A-Za-z0-9]+', text)
    if not words:
        return 'mask'
    return words[0].lower() + ''.join(w[:1].upper() + w[1:].lower() for w in words[1:])


def plan_jobs(bids_dir: Path, *, suffixes: Sequence[str],
              participant_labels: Sequence[str] = (), session_labels: Sequence[str] = (),
              longitudinal: bool = False) -> list[BidsJob]:
    """The jobs of a batch run, sorted by participant and session.

    Args:
        bids_dir: Root of a BIDS dataset.
        suffixes: Scan suffixes to feed, in order (e.g. ``("T1w", "FLAIR")``). Within one
            job, files are ordered by session, then by this order, then by name.
        participant_labels: Participants to include (with or without ``sub-``); all if empty.
        session_labels: Sessions to include (with or without ``ses-``); all if empty.
        longitudinal: One job per participant spanning all its sessions (True), or one job
            per participant and session (False).
    """
    if not (bids_dir / 'dataset_description.json').is_file():
        raise BadInputError(f'{bids_dir}: not a BIDS dataset (no dataset_description.json)')
    from bids import BIDSLayout

    try:
        layout = BIDSLayout(str(bids_dir), validate=False, derivatives=False)
    except Exception as error:  # noqa: BLE001 - pybids raises many types for a bad dataset
        raise BadInputError(f'{bids_dir}: cannot be read as a BIDS dataset ({error})') from None

    wanted_subjects = [strip_prefix(p, 'sub') for p in participant_labels]
    subjects = sorted(layout.get_subjects())
    unknown = [s for s in wanted_subjects if s not in subjects]
    if unknown:
        raise BadInputError(f'{bids_dir}: no participant {", ".join("sub-" + s for s in unknown)}')
    subjects = [s for s in subjects if not wanted_subjects or s in wanted_subjects]
    wanted_sessions = [strip_prefix(s, 'ses') for s in session_labels]
    order = {suffix: i for i, suffix in enumerate(suffixes)}

    jobs = []
    for subject in subjects:
        files = layout.get(subject=subject, suffix=list(suffixes), datatype='anat',
                           extension=['.nii.gz', '.nii', '.mgz'], return_type='object')
        by_session: dict[str | None, list] = {}
        for item in files:
            session = item.entities.get('session')
            if wanted_sessions and session not in wanted_sessions:
                continue
            by_session.setdefault(session, []).append(item)
        groups = ({None: [f for s in sorted(by_session, key=str) for f in by_session[s]]}
                  if longitudinal else dict(sorted(by_session.items(), key=lambda kv: str(kv[0]))))
        if not groups:
            groups = {None: []}
        for session, items in groups.items():
            items = sorted(items, key=lambda f: (str(f.entities.get('session')),
                                                 order[f.entities['suffix']], f.filename))
            found = {f.entities['suffix'] for f in items}
            jobs.append(BidsJob(subject=subject, session=session,
                                inputs=tuple(Path(f.path) for f in items),
                                missing=tuple(s for s in suffixes if s not in found)))
    return jobs


def parse_shard(shard: str | None, environ: dict | None = None) -> tuple[int, int]:
    """``I/N`` (0-based I) from ``--shard`` or from a SLURM job array; ``(0, 1)`` = all.

    SLURM: ``SLURM_ARRAY_TASK_ID`` minus ``SLURM_ARRAY_TASK_MIN`` (default 0) over
    ``SLURM_ARRAY_TASK_COUNT``.
    """
    environ = os.environ if environ is None else environ
    if shard is None and 'SLURM_ARRAY_TASK_ID' in environ and 'SLURM_ARRAY_TASK_COUNT' in environ:
        index = int(environ['SLURM_ARRAY_TASK_ID']) - int(environ.get('SLURM_ARRAY_TASK_MIN', 0))
        shard = f'{index}/{environ["SLURM_ARRAY_TASK_COUNT"]}'
    if shard is None:
        return 0, 1
    match = re.fullmatch(r'\s*(\d+)\s*/\s*(\d+)\s*', shard)
    if not match or not 0 <= int(match.group(1)) < int(match.group(2)):
        raise BadInputError(f'--shard {shard!r}: expected I/N with 0 <= I < N')
    return int(match.group(1)), int(match.group(2))


def select_shard(jobs: Sequence[BidsJob], index: int, count: int) -> list[BidsJob]:
    """The jobs of shard ``index`` of ``count``: participants are dealt round-robin in
    sorted order, so all of a participant's sessions land in the same shard."""
    subjects = sorted({job.subject for job in jobs})
    mine = {s for i, s in enumerate(subjects) if i % count == index}
    return [job for job in jobs if job.subject in mine]


def write_dataset_description(out_dir: Path, bids_dir: Path) -> None:
    """Write the derivatives ``dataset_description.json`` and ``.bidsignore`` (idempotent)."""
    description = {
        'Name': 'voxelprompt derivatives',
        'BIDSVersion': '1.9.0',
        'DatasetType': 'derivative',
        'GeneratedBy': [{'Name': 'voxelprompt', 'Version': __version__,
                         'Description': 'language-prompted brain image analysis'}],
        'SourceDatasets': [{'URL': f'file://{bids_dir.resolve()}'}],
    }
    path = out_dir / 'dataset_description.json'
    if not path.is_file():
        write_text_atomic(path, json.dumps(description, indent=2) + '\n')
    if not (out_dir / '.bidsignore').is_file():
        write_text_atomic(out_dir / '.bidsignore', BIDSIGNORE)


def _status_path(out_dir: Path, job: BidsJob) -> Path:
    return out_dir / STATUS_DIR / f'{job.key}.json'


def read_status(out_dir: Path) -> list[JobStatus]:
    """Every job status recorded under ``out_dir``, sorted by participant and session."""
    folder = out_dir / STATUS_DIR
    records = []
    for path in sorted(folder.glob('*.json')) if folder.is_dir() else []:
        try:
            records.append(JobStatus(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue  # a record being replaced right now; the next rebuild sees it
    return sorted(records, key=lambda r: (r.participant_id, r.session_id))


def write_status_tsv(out_dir: Path) -> Path:
    """Rebuild ``voxelprompt_status.tsv`` from the per-job records (atomic)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter='\t', lineterminator='\n')
    writer.writerow(JobStatus.columns())
    for record in read_status(out_dir):
        row = dataclasses.asdict(record)
        row['reason'] = ' '.join(str(row['reason']).split())  # one line per job
        writer.writerow([row[c] for c in JobStatus.columns()])
    return write_text_atomic(out_dir / STATUS_TSV, buffer.getvalue())


def _record(out_dir: Path, job: BidsJob, status: str, reason: str, seconds: float) -> JobStatus:
    record = JobStatus(participant_id=f'sub-{job.subject}',
                       session_id=f'ses-{job.session}' if job.session else 'n/a',
                       status=status, reason=reason, seconds=round(seconds, 3),
                       finished=time.strftime('%Y-%m-%dT%H:%M:%S'))
    write_text_atomic(_status_path(out_dir, job), json.dumps(dataclasses.asdict(record)) + '\n')
    return record


def job_done(out_dir: Path, job: BidsJob) -> bool:
    """True when a job finished ``ok`` before and its metrics are still there."""
    path = _status_path(out_dir, job)
    if not path.is_file():
        return False
    try:
        status = json.loads(path.read_text()).get('status')
    except (OSError, ValueError):
        return False
    return status == 'ok' and (job.folder(out_dir) / 'voxelprompt' / 'metrics.json').is_file()


def run_participants(bids_dir: Path, out_dir: Path, jobs: Iterable[BidsJob],
                     process: Callable[[BidsJob, Path], None], *, skip_existing: bool = False,
                     on_status: Callable[[JobStatus], None] | None = None) -> list[JobStatus]:
    """Run ``process`` for every job, going on past failures; record each job's status.

    Args:
        bids_dir: The raw dataset.
        out_dir: The derivatives dataset (created if needed).
        jobs: Jobs to run (already filtered and sharded).
        process: Writes one job's derivatives under ``out_dir`` (atomically) or raises.
        skip_existing: Skip jobs that finished ``ok`` before (no work is redone).
        on_status: Called with each job's status as it finishes (for progress display).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    write_dataset_description(out_dir, bids_dir)
    records = []
    for job in jobs:
        started = time.perf_counter()
        if skip_existing and job_done(out_dir, job):
            record = _record(out_dir, job, 'skipped', 'finished ok in an earlier run', 0.0)
        elif job.missing or not job.inputs:
            what = ', '.join(job.missing) or 'any requested scan'
            record = _record(out_dir, job, 'failed', f'missing {what}', 0.0)
        else:
            try:
                process(job, out_dir)
            except VoxelPromptError as error:
                record = _record(out_dir, job, 'failed', str(error),
                                 time.perf_counter() - started)
            except Exception as error:  # noqa: BLE001 - one subject must not stop a batch
                record = _record(out_dir, job, 'failed', f'{type(error).__name__}: {error}',
                                 time.perf_counter() - started)
            else:
                record = _record(out_dir, job, 'ok', '', time.perf_counter() - started)
        records.append(record)
        if on_status:
            on_status(record)
        write_status_tsv(out_dir)
    write_status_tsv(out_dir)
    return records


def _flatten(name: str, value) -> list[tuple[str, object]]:
    """Tuples become one row per component: ``center_of_mass[0]``, ..."""
    if isinstance(value, (list, tuple)):
        rows = []
        for index, item in enumerate(value):
            rows.extend(_flatten(f'{name}[{index}]', item))
        return rows
    return [(name, value)]


def _source_names(entry: dict) -> str:
    """The comma-joined input names of a metrics.json output or volume entry."""
    return ','.join(s.get('name', '') if isinstance(s, dict) else str(s)
                    for s in entry.get('sources', []))


def gather_group(out_dir: Path) -> tuple[Path, list[tuple[str, str, str]]]:
    """Write ``group/metrics.tsv`` (one row per participant, session and metric, with units
    and the job's QC state) and ``group/qc_flagged.tsv`` (one row per QC warning).

    Columns of metrics.tsv: participant_id, session_id, metric, value, unit, sources, qc
    (``ok``, or ``flagged`` when quality control flagged a mask the measurement was computed
    from; for a metrics.json older than schema 1.2, when it flagged anything in the job's
    run: docs/qc.md). A job whose masks carry a head size estimate also gets an ``eTIV``
    row (mL) per set of scans they were segmented in, for normalising volumes. Returns the
    metrics.tsv path and the ``(participant, session, warning)`` rows of the flagged jobs.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter='\t', lineterminator='\n')
    writer.writerow(['participant_id', 'session_id', 'metric', 'value', 'unit', 'sources', 'qc'])
    flagged: list[tuple[str, str, str]] = []
    count = 0
    for metrics_path in sorted(out_dir.glob('sub-*/voxelprompt/metrics.json')) + \
            sorted(out_dir.glob('sub-*/ses-*/voxelprompt/metrics.json')):
        relative = metrics_path.relative_to(out_dir).parts
        participant = relative[0]
        session = relative[1] if relative[1].startswith('ses-') else 'n/a'
        try:
            metrics = json.loads(metrics_path.read_text())
        except (OSError, ValueError) as error:
            raise BadInputError(f'{metrics_path}: cannot be read ({error})') from None
        warnings = metrics.get('warnings', [])
        flagged.extend((participant, session, warning) for warning in warnings)
        job_state = 'flagged' if warnings else 'ok'
        flagged_masks = {v.get('description') for v in metrics.get('volumes', [])
                         if (v.get('quality') or {}).get('flags')}
        for output in metrics.get('outputs', []):
            # a measurement is flagged when a mask it was computed from is (schema 1.2); an
            # older metrics.json, without outputs[].masks, gives the job's state
            state = job_state if 'masks' not in output else \
                'flagged' if flagged_masks & set(output['masks']) else 'ok'
            for name, value in _flatten(output['name'], output['value']):
                writer.writerow([participant, session, name, value, output.get('unit', ''),
                                 _source_names(output), state])
                count += 1
        heads = {}  # the head size of each scan set that a mask was segmented in
        for volume in metrics.get('volumes', []):
            etiv = (volume.get('quality') or {}).get('etiv_ml')
            sources = _source_names(volume)
            if etiv and sources not in heads:
                heads[sources] = etiv
        for sources, etiv in heads.items():
            writer.writerow([participant, session, 'eTIV', etiv, 'mL', sources, 'ok'])
    if count == 0 and not list(out_dir.glob('sub-*')):
        raise BadInputError(f'{out_dir}: no participant results to gather (run the '
                            f'participant level first)')
    qc_buffer = io.StringIO()
    qc_writer = csv.writer(qc_buffer, delimiter='\t', lineterminator='\n')
    qc_writer.writerow(['participant_id', 'session_id', 'warning'])
    qc_writer.writerows(flagged)
    write_text_atomic(out_dir / GROUP_QC_TSV, qc_buffer.getvalue())
    return write_text_atomic(out_dir / GROUP_TSV, buffer.getvalue()), flagged
