"""Run a program over loaded scans and write the run's outputs.

A run is: input scans (``img0``, ``img1``, ...), a program run step by step in the
sandbox, and an output folder holding ``metrics.json``, one NIfTI per saved volume and
per mask the program made, and ``script.py`` (the program that ran, re-executable with
``voxelprompt exec``). The folder is written atomically: everything is built in a hidden
staging folder next to it and renamed into place at the end, so after a failure or
Ctrl-C nothing is at the output path (``docs/outputs.md``).

Used by ``voxelprompt exec`` (a program from a file) and, step by step, by the agent
(``voxelprompt run`` / ``bids``): both go through :class:`ProgramRun`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import re
import shlex
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from vpcli import __version__
from vpcli.errors import BadInputError
from vpcli.library.context import RunContext, SavedVolume
from vpcli.quality import assess, asymmetry_warnings
from vpcli.sandbox import (Sandbox, Step, StepRecord, format_program, normalize_code,
                            split_program, validate_program)
from vpcli.volumes import Mask, Scan, SourceRef, current_umask, json_ready

#: version of the ``metrics.json`` layout (docs/outputs.md, docs/metrics.schema.json)
SCHEMA_VERSION = '1.3'
TOOL_NAME = 'voxelprompt'
METRICS_FILE = 'metrics.json'
SCRIPT_FILE = 'script.py'
REPORT_FILE = 'report.html'
QC_FOLDER = 'qc'
#: most bytes read from a program file
MAX_SCRIPT_BYTES = 8_000_000


@dataclasses.dataclass
class RunSettings:
    """How a run is set up and how it is recorded in ``metrics.json``.

    Attributes:
        step_timeout_s: Wall-clock limit per program step, in s (None: no limit).
        seed: Seed for Python, NumPy and torch random generators (None: not seeded).
        device: Torch device the run computes on (``cpu``, ``cuda:0``).
        command_line: The command as typed, for provenance.
        mode: ``exec`` (program from a file) or ``run`` (program written by the agent).
        prompt: The prompt, for agent runs.
        weights_file: Model weights used, if any.
        weights_sha256: Their checksum.
    """
    step_timeout_s: float | None = 600.0
    seed: int | None = 0
    device: str = 'cpu'
    command_line: Sequence[str] = ()
    mode: str = 'exec'
    prompt: str | None = None
    weights_file: str | None = None
    weights_sha256: str | None = None


def _no_log(message: str) -> None:
    pass


def seed_everything(seed: int | None) -> None:
    """Seed Python's, NumPy's and torch's random generators (no-op for None)."""
    if seed is None:
        return
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


# -----------------------------------------------------------------------------
# output folder
# -----------------------------------------------------------------------------

def check_output_dir(output_dir: os.PathLike | str, overwrite: bool) -> Path:
    """Fail early when the output folder cannot be written.

    Raises:
        BadInputError: it is a file, or a non-empty folder and ``overwrite`` is off.
    """
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise BadInputError(f'{path}: output path exists and is not a folder')
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise BadInputError(f'{path}: output folder exists and is not empty (use --overwrite to '
                            f'replace it)')
    return path


def move_into_place(staging: Path, target: Path) -> None:
    """Rename a finished folder onto ``target``; an existing ``target`` is moved aside
    first and removed only once the new one is in place (same file system)."""
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f'.{target.name}.old-', dir=target.parent))
        os.replace(target, old / 'previous')
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)


@contextlib.contextmanager
def staged_output(output_dir: os.PathLike | str, overwrite: bool = False) -> Iterator[Path]:
    """Build an output folder in a hidden staging folder, then move it into place.

    The staging folder sits next to ``output_dir`` (same file system, so the final
    rename is atomic). When the block raises (an error, Ctrl-C), the staging folder is
    removed and ``output_dir`` is left as it was. With ``overwrite``, an existing folder
    is replaced only after the new one is complete.

    Yields:
        The staging folder to write into.
    """
    target = Path(output_dir).absolute()
    check_output_dir(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f'.{target.name}.partial-', dir=target.parent))
    try:
        yield staging
        check_output_dir(target, overwrite)  # it may have appeared while we worked
        os.chmod(staging, 0o777 & ~current_umask())
        move_into_place(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def file_name_for(name: str, taken: set[str], ending: str = '.nii.gz') -> str:
    """A safe, unique file name from a volume's name (``"left hippocampus"`` -> ...).

    Letters, digits, ``-`` and ``.`` are kept; anything else becomes ``_``. Repeats get
    ``_2``, ``_3``, ... Reserved run files (metrics, script) are never produced.
    """
    stem = re.sub(r'[^A-Za-z0-9.-]+', '_', name).strip('._-')[:80] or 'volume'
    stem = re.sub(r'\.+', '.', stem)
    candidate, number = stem + ending, 2
    while candidate.lower() in taken or candidate in (METRICS_FILE, SCRIPT_FILE):
        candidate, number = f'{stem}_{number}{ending}', number + 1
    taken.add(candidate.lower())
    return candidate


# -----------------------------------------------------------------------------
# describing inputs and values
# -----------------------------------------------------------------------------

def _sources_json(sources: Sequence[SourceRef]) -> list[dict]:
    return [{'name': s.name, 'file': s.file} for s in sources]


def spacing_mm(volume) -> list[float]:
    """Voxel size along each voxel axis, in mm (:func:`vpcli.volumes.voxel_spacing_mm`)."""
    from vpcli.volumes import voxel_spacing_mm
    return [round(float(v), 6) for v in voxel_spacing_mm(volume.geometry)]


def describe_input(scan: Scan) -> dict:
    """The ``inputs`` entry of one scan."""
    return {
        'name': scan.name,
        'file': str(scan.path) if scan.path else None,
        'sha256': scan.sha256,
        'modality': scan.modality,
        'contrast': scan.contrast,
        'date': scan.date.isoformat() if scan.date else None,
        'session': scan.session,
        'shape': [int(n) for n in scan.volume.baseshape],
        'spacing_mm': spacing_mm(scan.volume),
        'orientation': scan.volume.geometry.orientation.name,
    }


def software_versions() -> dict:
    """Versions of Python and the libraries that compute results."""
    from importlib import metadata

    versions = {'python': platform.python_version(), 'voxelprompt': __version__}
    for package in ('torch', 'voxel', 'nibabel', 'numpy'):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def quality_warnings(volumes: Sequence[dict]) -> list[str]:
    """``metrics.json`` ``warnings``: each written mask's QC flags, then left/right pairs that
    differ too much (:mod:`vpcli.quality`)."""
    lines = [f'{v["name"]}: {flag}' for v in volumes
             for flag in (v.get('quality') or {}).get('flags', [])]
    return lines + asymmetry_warnings(volumes)


def _mask_volume_ml(mask: Mask) -> float:
    from vpcli.library.morphometry import volume
    return volume(mask)


# -----------------------------------------------------------------------------
# a run
# -----------------------------------------------------------------------------

class ProgramRun:
    """One run: scans, a sandbox, the steps that ran, and writing the outputs.

    Args:
        scans: Input scans, in order (``img0``, ``img1``, ...).
        settings: Run settings (time limit, seed, provenance).
        functions: Callable library functions (default: the whole registry).
        vision: The loaded vision network, for programs that segment.

    Example (the agent loop)::

        run = ProgramRun(scans, settings, vision=network)
        record = run.run_step(code)        # per generated step; read feedback from record
        run.write(output_dir)
    """

    def __init__(self, scans: Sequence[Scan], settings: RunSettings | None = None, *,
                 functions: Mapping[str, Any] | None = None, vision: Any = None) -> None:
        self.settings = settings or RunSettings()
        self.scans = list(scans)
        self.context = RunContext(scans=self.scans, device=self.settings.device, vision=vision)
        self.sandbox = Sandbox(self.context, functions=functions,
                               step_timeout_s=self.settings.step_timeout_s)
        self.timings: dict[str, float] = {}
        #: steps written before the ones that ran in ``script.py`` (the agent's ``PHI`` constant)
        self.preamble: list[str] = []
        #: extra top-level entries of ``metrics.json`` (the agent's record)
        self.extra_metrics: dict[str, Any] = {}
        self._started = time.monotonic()

    @property
    def records(self) -> list[StepRecord]:
        """The steps that ran, in order."""
        return self.sandbox.records

    def run_step(self, step: Step | str) -> StepRecord:
        """Validate and run one step (see :meth:`Sandbox.run_step`)."""
        started = time.monotonic()
        try:
            return self.sandbox.run_step(step)
        finally:
            self.timings['program_s'] = self.timings.get('program_s', 0.0) + \
                time.monotonic() - started

    def run_program(self, steps: Sequence[Step], log: Callable[[str], None] = _no_log) -> None:
        """Validate every step, then run them in order, logging each."""
        validate_program(steps, [s.name for s in self.scans], self.sandbox.functions,
                         self.sandbox.limits)
        for step in steps:
            record = self.run_step(step)
            log(f'step {step.index}/{len(steps)} done in {record.seconds:.2f} s')

    def volumes_to_write(self) -> list[SavedVolume]:
        """Saved volumes, then masks the program named but did not save (each once)."""
        written: list[SavedVolume] = []
        for entry in self.context.saved:
            # segment() records its mask; a later save(mask, same name) must not write it twice
            if not any(e.volume is entry.volume and e.name == entry.name for e in written):
                written.append(entry)
        for mask, step_index in self.sandbox.named_masks:
            if not any(entry.volume is mask for entry in written):
                written.append(SavedVolume(name=mask.description, volume=mask,
                                           sources=tuple(mask.sources), step=step_index - 1,
                                           kind='mask'))
        return written

    def script_text(self) -> str:
        """``script.py``: the steps that ran, with a header naming the inputs."""
        header = [f'{TOOL_NAME} {__version__} program. Re-run with: voxelprompt exec script.py '
                  + ' '.join(f'IMG{i}' for i in range(len(self.scans))) + ' -o OUT']
        if self.settings.prompt:
            header.append(f'prompt: {self.settings.prompt}')
        for scan in self.scans:
            header.append(f'{scan.describe()} ({scan.path.name if scan.path else "derived"})')
        return format_program([*self.preamble, *(record.step for record in self.records)], header)

    def _volume_in_own_geometry(self, entry: SavedVolume):
        """The voxels to write: masks on the grid of the input scan they belong to."""
        from vpcli.volumes import same_grid

        volume = entry.volume.volume
        by_name = {scan.name: scan for scan in self.scans}
        owner = next((by_name[s.name] for s in entry.volume.sources if s.name in by_name), None)
        if owner is None:
            return volume, None
        if entry.kind != 'mask':  # images (crops) keep their own grid
            return volume, owner.name if same_grid(volume, owner.volume) else None
        if not same_grid(volume, owner.volume):
            volume = volume.new(volume.tensor.float()).resample_like(owner.volume, mode='nearest')
            volume = volume.new(volume.tensor > 0.5)
        return volume, owner.name

    def write(self, output_dir: os.PathLike | str, overwrite: bool = False,
              log: Callable[[str], None] = _no_log, qc: bool = False) -> dict:
        """Write every output atomically; return the metrics written.

        With ``qc``, also a PNG per mask (``qc/NAME.png``: three orthogonal slices through
        the mask's centre, outline over its scan) and ``report.html`` linking them with the
        answer, measured values and program.

        Raises:
            BadInputError: the output folder exists and is not empty (without overwrite).
        """
        import torch

        from vpcli.volumes import save_volume, write_text_atomic

        started = time.monotonic()
        with staged_output(output_dir, overwrite) as staging:
            taken: set[str] = set()
            volumes = []
            for entry in self.volumes_to_write():
                file_name = file_name_for(entry.name, taken)
                data, owner = self._volume_in_own_geometry(entry)
                if entry.kind == 'mask':
                    data = data.new(data.tensor.bool().to(torch.uint8))
                save_volume(data, staging / file_name)
                description = entry.volume.description if isinstance(entry.volume, Mask) \
                    else entry.volume.name
                record = {'file': file_name, 'name': entry.name, 'kind': entry.kind,
                          'description': description, 'sources': _sources_json(entry.sources),
                          'step': entry.step + 1 + len(self.preamble),
                          'shape': [int(n) for n in data.baseshape],
                          'geometry_of': owner,
                          'voxel_count': None, 'volume_ml': None}
                record['quality'] = None
                if entry.kind == 'mask':
                    record['voxel_count'] = int(data.tensor.bool().sum())
                    record['volume_ml'] = json_ready(
                        _mask_volume_ml(Mask(data, entry.volume.sources)))
                    record['quality'] = assess(description, record['volume_ml'],
                                               getattr(entry.volume, 'quality', None), entry.name)
                volumes.append(record)
                log(f'wrote {file_name}')
            write_text_atomic(staging / SCRIPT_FILE, self.script_text())
            pictures = self._qc_pictures(staging, volumes) if qc else []
            self.timings['write_s'] = time.monotonic() - started
            metrics = self.metrics(volumes)
            write_text_atomic(staging / METRICS_FILE,
                              json.dumps(metrics, indent=2, allow_nan=False) + '\n')
            if qc:
                from vpcli.qc import report_page
                write_text_atomic(staging / REPORT_FILE,
                                  report_page(metrics, pictures, f'{TOOL_NAME}: {Path(output_dir).name}'))
        log(f'outputs in {output_dir}')
        return metrics

    def _qc_pictures(self, staging: Path, volumes: list[dict]) -> list[tuple[str, str]]:
        """A QC picture per written mask over the scan whose grid it is on."""
        from vpcli.qc import mask_picture
        from vpcli.volumes import load_volume

        by_name = {scan.name: scan for scan in self.scans}
        pictures = []
        for record in volumes:
            scan = by_name.get(record.get('geometry_of') or '')
            if record['kind'] != 'mask' or scan is None:
                continue
            picture = Path(QC_FOLDER) / (record['file'].split('.nii')[0] + '.png')
            mask = load_volume(staging / record['file'], label_map=True)
            mask_picture(scan.volume, mask, staging / picture,
                         title=f'{record["description"]} on {scan.name}')
            record['qc'] = str(picture)
            pictures.append((str(picture), record['description']))
        return pictures

    def metrics(self, volumes: list[dict]) -> dict:
        """The ``metrics.json`` document (layout: docs/outputs.md)."""
        import torch

        settings = self.settings
        timings = {key: round(value, 4) for key, value in self.timings.items()}
        timings['total_s'] = round(time.monotonic() - self._started
                                   + self.timings.get('load_s', 0.0)
                                   + self.timings.get('weights_s', 0.0), 4)
        argv = [str(a) for a in settings.command_line]
        # step numbers are those of script.py, whose preamble steps (the agent's PHI) come first
        offset = len(self.preamble)
        steps = [{'index': index, 'code': normalize_code(code), 'seconds': 0.0, 'feedback': []}
                 for index, code in enumerate(self.preamble, 1)]
        steps += [{'index': r.step.index + offset, 'code': r.step.code,
                   'seconds': round(r.seconds, 4),
                   'feedback': [item.text for item in r.feedback]} for r in self.records]
        return {
            'schema_version': SCHEMA_VERSION,
            'tool': {'name': TOOL_NAME, 'version': __version__},
            'mode': settings.mode,
            'command': {'argv': argv, 'text': shlex.join(argv)},
            'prompt': settings.prompt,
            'inputs': [describe_input(scan) for scan in self.scans],
            'outputs': [{'name': o.name, 'value': json_ready(o.value), 'unit': o.unit,
                         'sources': _sources_json(o.sources), 'masks': list(o.masks),
                         'step': o.step + 1 + offset}
                        for o in self.context.outputs],
            'answer': '\n'.join(self.context.answers) if self.context.answers else None,
            'answers': list(self.context.answers),
            'warnings': quality_warnings(volumes),
            'volumes': volumes,
            'steps': steps,
            'timings': timings,
            'versions': software_versions(),
            'device': settings.device,
            'threads': torch.get_num_threads(),
            'seed': settings.seed,
            'weights': {'file': settings.weights_file, 'sha256': settings.weights_sha256},
            **self.extra_metrics,
        }


# -----------------------------------------------------------------------------
# voxelprompt exec
# -----------------------------------------------------------------------------

def read_program(path: os.PathLike | str) -> list[Step]:
    """Read and split a program file into steps.

    Raises:
        BadInputError: missing, not a file, too large, not UTF-8 text, or bad step markers.
    """
    path = Path(path)
    if not path.exists():
        raise BadInputError(f'{path}: no such file')
    if not path.is_file():
        raise BadInputError(f'{path}: is not a file')
    if path.stat().st_size > MAX_SCRIPT_BYTES:
        raise BadInputError(f'{path}: program file is larger than {MAX_SCRIPT_BYTES} bytes')
    try:
        text = path.read_text(encoding='utf-8')
    except UnicodeDecodeError:
        raise BadInputError(f'{path}: is not UTF-8 text (a program file is expected)') from None
    return split_program(text, origin=path.name)


def program_uses_vision(path: os.PathLike | str) -> bool:
    """Whether a program file calls the vision network (``encode``/``segment``), so the
    weights must be loaded to run it. Comments and texts do not count; an unreadable or
    invalid file is reported when it is run, not here."""
    import ast

    from vpcli.errors import VoxelPromptError
    try:
        steps = read_program(path)
    except VoxelPromptError:
        return False
    for step in steps:
        try:
            tree = ast.parse(step.code)
        except SyntaxError:
            return False
        if any(isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
               and node.func.id in ('encode', 'segment') for node in ast.walk(tree)):
            return True
    return False


def execute_script(script: os.PathLike | str, scan_paths: Sequence[os.PathLike | str],
                   output_dir: os.PathLike | str, settings: RunSettings | None = None, *,
                   overwrite: bool = False, log: Callable[[str], None] = _no_log,
                   functions: Mapping[str, Any] | None = None, vision: Any = None,
                   qc: bool = False) -> dict:
    """``voxelprompt exec``: run a program file over scans and write the outputs.

    The output folder is checked first, the whole program is validated against the
    sandbox rules before any scan is loaded, and nothing is written unless every step
    succeeds.

    Args:
        script: The program file (``# step N`` markers optional).
        scan_paths: Input scans, bound to ``img0``, ``img1``, ... in this order.
        output_dir: Folder to create.
        settings: Time limit, seed and provenance.
        overwrite: Replace an existing non-empty output folder.
        log: Where progress lines go (stderr in the CLI).
        functions: Callable library functions (default: the registry).
        vision: The vision network, for programs that call ``encode``/``segment``.
        qc: Also write QC pictures and ``report.html``.

    Returns:
        The metrics written to ``metrics.json``.

    Raises:
        BadInputError: unusable input file or output folder (exit code 3).
        RefusedError: the program breaks a sandbox rule (exit code 4).
        ProgramError: a step failed or ran over its time limit (exit code 5).
    """
    from vpcli.library.registry import registry
    from vpcli.volumes import load_scans

    settings = settings or RunSettings()
    check_output_dir(output_dir, overwrite)
    steps = read_program(script)
    functions = registry() if functions is None else functions
    validate_program(steps, [f'img{i}' for i in range(len(scan_paths))], functions)

    started = time.monotonic()
    scans = load_scans(scan_paths)
    for scan in scans:
        log(f'{scan.describe()} <- {scan.path}')
    seed_everything(settings.seed)
    run = ProgramRun(scans, settings, functions=functions, vision=vision)
    run.timings['load_s'] = time.monotonic() - started
    run.run_program(steps, log)
    return run.write(output_dir, overwrite, log, qc=qc)
