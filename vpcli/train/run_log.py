"""A joint run's log: the entry summarising a window of steps, its log line, and the
progress bar on a terminal."""

from __future__ import annotations

import sys

import numpy as np


def summarise(window: list[dict], step: int, seconds: float) -> dict:
    """The log entry of a window of steps ending at ``step`` (``seconds`` long): mean loss,
    cross-entropy and, where the steps logged them, hard Dice, φ drift and hard share."""
    entry = {'step': step, 'seconds': round(seconds, 2), 'steps': len(window),
             'loss': float(np.mean([w['loss'] for w in window])),
             'ce': float(np.mean([w['ce'] for w in window]))}
    dice = [w['dice'] for w in window if 'dice' in w]
    if dice:
        entry['dice'] = float(np.mean(dice))
        entry['segments'] = int(sum(w.get('segments', 0) for w in window))
    drift = [w['phi_drift'] for w in window if 'phi_drift' in w]
    if drift:
        entry['phi_drift'] = float(np.mean(drift))
    hard = [w['hard_share'] for w in window if 'hard_share' in w]
    if hard:
        entry['hard_share'] = float(np.mean(hard))
    entry['stage'] = window[-1]['stage']
    return entry


def log_line(entry: dict, until: int) -> str:
    """The log line of an entry of :func:`summarise` (training to step ``until``)."""
    line = (f'step {entry["step"]}/{until} [{entry["stage"]}]  loss {entry["loss"]:.4f}  '
            f'ce {entry["ce"]:.4f}')
    if 'dice' in entry:
        line += f'  dice {entry["dice"]:.3f}'
    if 'phi_drift' in entry:
        line += f'  φ drift {entry["phi_drift"]:.2e}'
    if 'hard_share' in entry:
        line += f'  hard {entry["hard_share"]:.1%}'
    rate = entry['steps'] / entry['seconds'] if entry['seconds'] else 0.0
    return line + f'  {rate:.2f} steps/s'


class ProgressBar:
    """A rich progress bar on stderr (only when stderr is a terminal)."""

    def __init__(self, total: int, completed: int):
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
        self.progress = Progress(TextColumn('training'), BarColumn(), TextColumn('{task.completed}/{task.total}'),
                                 TextColumn('{task.fields[info]}'), TimeRemainingColumn(),
                                 console=Console(file=sys.stderr))
        self.task = self.progress.add_task('train', total=total, completed=completed, info='')
        self.progress.start()

    def advance(self, numbers: dict) -> None:
        info = f'loss {numbers["loss"]:.3f}' + (f' dice {numbers["dice"]:.2f}' if 'dice' in numbers else '')
        self.progress.update(self.task, advance=1, info=info)

    def stop(self) -> None:
        self.progress.stop()
