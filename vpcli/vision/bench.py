"""Native resolution vs 1 mm isotropic: the paper's efficiency experiment (v2 §4.2, App. C.4).

Each sample draws 1 to ``max_scans`` scans from the clinical geometry distribution of
Table 2 (field of view 155 x 190 x 165 mm ± 15 mm; acquisition type, in-plane spacing
and slice separation uniform in the table's ranges, spacings clamped to >= 0.8 mm),
fills them with Gaussian noise, and runs the same network (encoder + one generator
pass, no gradients) on them twice: at native resolution, and after conforming every
scan to 1 mm isotropic. Inference time and peak memory (RSS on CPU, allocated memory
on CUDA) are measured around the network only; preprocessing is done beforehand.
"""

from __future__ import annotations

import ctypes
import dataclasses
import math
import statistics
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from vpcli.vision.model import VisionNetwork
    from vpcli.volumes import Scan

#: App. C.4, Table 2: acquisition -> (in-plane spacing range mm, slice separation range mm,
#: or None for isotropic acquisitions)
ACQUISITIONS = {
    'T1w (isotropic)': ((0.8, 1.2), None),
    'T2w': ((0.8, 1.0), (3.0, 5.0)),
    'FLAIR': ((0.8, 1.0), (3.0, 5.0)),
    'DWI': ((1.5, 2.5), (2.0, 3.5)),
    'GRE': ((0.8, 1.2), (4.0, 6.0)),
    'perfusion': ((1.5, 2.5), (4.0, 6.0)),
    'SWI': ((0.8, 1.0), (1.5, 3.0)),
    'CT (isotropic)': ((0.8, 1.0), None),
    'CT (thick slice)': ((0.8, 1.0), (3.0, 6.0)),
}

#: field of view (mm, x y z) around which scan extents are drawn, and the maximum deviation
FIELD_OF_VIEW_MM = (155.0, 190.0, 165.0)
FIELD_OF_VIEW_DEVIATION_MM = 15.0
#: smallest voxel spacing drawn (mm)
MIN_SPACING_MM = 0.8


@dataclasses.dataclass(frozen=True)
class BenchSettings:
    """What ``voxelprompt bench vision`` runs.

    Attributes:
        device: Torch device name (``cpu``, ``cuda``, ``cuda:1``).
        samples: Samples per number of scans.
        max_scans: Scans per sample run from 1 to this.
        config: Named vision config (``small`` or ``paper``).
        seed: Seed of the geometry and noise draws.
        fov_scale: Multiplies the field of view (1 = the paper's; smaller for smoke runs).
    """
    device: str = 'cpu'
    samples: int = 2
    max_scans: int = 5
    config: str = 'small'
    seed: int = 0
    fov_scale: float = 1.0


def sample_scan(generator: 'torch.Generator', name: str, fov_scale: float = 1.0) -> 'Scan':
    """One Gaussian-noise scan with a geometry drawn from Table 2 (axial slices, RAS)."""
    import torch
    import voxel as vx

    from vpcli.volumes import Scan

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=generator))

    kinds = list(ACQUISITIONS)
    kind = kinds[int(torch.randint(len(kinds), (), generator=generator))]
    in_plane_range, slice_range = ACQUISITIONS[kind]
    in_plane = max(MIN_SPACING_MM, uniform(*in_plane_range))
    separation = in_plane if slice_range is None else max(MIN_SPACING_MM, uniform(*slice_range))
    spacing = (in_plane, in_plane, separation)
    fov = [fov_scale * uniform(f - FIELD_OF_VIEW_DEVIATION_MM, f + FIELD_OF_VIEW_DEVIATION_MM)
           for f in FIELD_OF_VIEW_MM]
    shape = [max(1, round(f / s)) for f, s in zip(fov, spacing)]
    matrix = torch.eye(4)
    matrix[:3, :3] = torch.diag(torch.tensor(spacing))
    matrix[:3, 3] = -(torch.tensor(shape, dtype=torch.float32) - 1) / 2 * torch.tensor(spacing)
    geometry = vx.AcquisitionGeometry(shape, matrix)
    noise = torch.randn((1, *shape), generator=generator)
    return Scan(volume=vx.Volume(noise, geometry), name=name, modality=kind)


def conform_isotropic(scan: 'Scan', spacing_mm: float = 1.0) -> 'Scan':
    """The scan resampled (trilinear) to ``spacing_mm`` isotropic over the same extent."""
    return dataclasses.replace(scan, volume=scan.volume.resample(spacing_mm))


class PeakMemory:
    """Peak memory of a block: allocated bytes on CUDA, resident set size (RSS) on CPU.

    On CPU the kernel's high-water mark (``VmHWM``) is reset through
    ``/proc/self/clear_refs`` before the block, and freed heap is returned to the
    system first (``malloc_trim``), so the peak minus the RSS before the block is what
    the block itself needed.
    """

    def __init__(self, device: 'torch.device') -> None:
        self.device = device
        self.peak_bytes = 0
        self._libc = None
        if device.type == 'cpu':
            try:
                self._libc = ctypes.CDLL('libc.so.6')
            except OSError:  # pragma: no cover - non-glibc systems
                self._libc = None

    @staticmethod
    def _status_kib(field: str) -> int:
        with open('/proc/self/status') as status:
            for line in status:
                if line.startswith(field + ':'):
                    return int(line.split()[1])
        raise RuntimeError(f'/proc/self/status has no {field}')  # pragma: no cover

    def __enter__(self) -> 'PeakMemory':
        import torch
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._before = torch.cuda.memory_allocated(self.device)
        else:
            if self._libc is not None:
                self._libc.malloc_trim(0)
            with open('/proc/self/clear_refs', 'w') as clear:
                clear.write('5')  # resets the peak RSS to the current RSS
            self._before = self._status_kib('VmRSS') * 1024
        return self

    def __exit__(self, *exc) -> None:
        import torch
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._before
        else:
            self.peak_bytes = self._status_kib('VmHWM') * 1024 - self._before


def measure(network: 'VisionNetwork', scans: list['Scan'], device: 'torch.device') \
        -> tuple[float, int, int]:
    """Inference seconds, peak bytes and input voxels of one encode + segment pass."""
    import torch

    from vpcli.vision.preprocess import prepare_scan

    prepared = [prepare_scan(scan, network.config, device) for scan in scans]
    voxels = sum(math.prod(p.volume.baseshape) for p in prepared)
    with torch.inference_mode():
        with PeakMemory(device) as memory:
            start = time.perf_counter()
            encoding = network.encode_prepared(prepared)
            probabilities = network.generate(encoding)
            if device.type == 'cuda':
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
            del encoding, probabilities
    return seconds, memory.peak_bytes, voxels


def run_benchmark(settings: BenchSettings, progress=None) -> dict:
    """Run the experiment and return its summary (see ``voxelprompt bench vision --json``).

    Args:
        settings: Device, sample count, scans per sample, config, seed.
        progress: Optional callable receiving one line of text per measurement.
    """
    import torch

    from vpcli.vision.config import named_config
    from vpcli.vision.model import VisionNetwork

    device = torch.device(settings.device)
    network = VisionNetwork(named_config(settings.config)).to(device).eval()
    generator = torch.Generator().manual_seed(settings.seed)

    # warm-up (first-call allocations, kernel selection) is not measured
    measure(network, [sample_scan(torch.Generator().manual_seed(-1 % 2**31), 'warmup',
                                  settings.fov_scale * 0.5)], device)

    rows = []
    for count in range(1, settings.max_scans + 1):
        results = {'native': [], 'isotropic': []}
        for sample in range(settings.samples):
            scans = [sample_scan(generator, f'img{i}', settings.fov_scale) for i in range(count)]
            for mode in ('native', 'isotropic'):
                inputs = scans if mode == 'native' else [conform_isotropic(s) for s in scans]
                seconds, peak, voxels = measure(network, inputs, device)
                results[mode].append((seconds, peak, voxels))
                if progress is not None:
                    progress(f'{count} scan(s), sample {sample + 1}/{settings.samples}, {mode}: '
                             f'{seconds:.2f} s, {peak / 2**20:.0f} MiB, {voxels} voxels')
        row = {'scans': count}
        for mode, values in results.items():
            row[mode] = {'median_seconds': statistics.median(v[0] for v in values),
                         'median_peak_mib': statistics.median(v[1] for v in values) / 2**20,
                         'median_voxels': statistics.median(v[2] for v in values)}
        row['time_ratio'] = row['isotropic']['median_seconds'] / row['native']['median_seconds']
        native_memory = row['native']['median_peak_mib']
        row['memory_ratio'] = (row['isotropic']['median_peak_mib'] / native_memory
                               if native_memory > 0 else float('nan'))
        rows.append(row)

    return {
        'device': str(device) if device.type != 'cuda' else
        f'{device} ({torch.cuda.get_device_name(device)})',
        'threads': torch.get_num_threads(),
        'config': settings.config,
        'samples': settings.samples,
        'max_scans': settings.max_scans,
        'seed': settings.seed,
        'fov_scale': settings.fov_scale,
        'memory': 'peak allocated (CUDA)' if device.type == 'cuda' else 'peak RSS increase (CPU)',
        'rows': rows,
        'mean_time_ratio': statistics.fmean(r['time_ratio'] for r in rows),
        'mean_memory_ratio': statistics.fmean(r['memory_ratio'] for r in rows),
    }


def format_summary(summary: dict) -> str:
    """The summary as a plain-text table."""
    lines = [f"vision benchmark: native resolution vs 1 mm isotropic "
             f"(config {summary['config']}, device {summary['device']}, "
             f"{summary['threads']} threads, {summary['samples']} samples per row, "
             f"memory = {summary['memory']})",
             f"{'scans':>5}  {'native s':>9}  {'iso s':>9}  {'time x':>6}  "
             f"{'native MiB':>10}  {'iso MiB':>9}  {'mem x':>6}"]
    for row in summary['rows']:
        native, iso = row['native'], row['isotropic']
        lines.append(f"{row['scans']:>5}  {native['median_seconds']:>9.3f}  "
                     f"{iso['median_seconds']:>9.3f}  {row['time_ratio']:>6.2f}  "
                     f"{native['median_peak_mib']:>10.1f}  {iso['median_peak_mib']:>9.1f}  "
                     f"{row['memory_ratio']:>6.2f}")
    lines.append(f"mean iso/native ratio: time {summary['mean_time_ratio']:.2f}x, "
                 f"memory {summary['mean_memory_ratio']:.2f}x "
                 f"(paper, GPU: 2x time, 2.4x memory)")
    return '\n'.join(lines)
