"""``voxelprompt info``: versions, device, weights and capabilities."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from vpcli.cli._app import app
from vpcli.cli._common import reports_errors


def collect_info(weights: Optional[Path]) -> dict:
    """Everything `info` reports, as a JSON-ready dict."""
    import platform
    from importlib import metadata

    import torch

    from vpcli import __version__
    from vpcli.errors import VoxelPromptError
    from vpcli.library.registry import CATEGORIES, registry
    from vpcli.recipes import all_recipes
    from vpcli.tasks.templates import CATEGORIES as TASK_CATEGORIES
    from vpcli.weights import read_manifest, resolve_weights_dir, verify_manifest

    versions = {'voxelprompt': __version__, 'python': platform.python_version()}
    for package in ('torch', 'voxel', 'nibabel', 'numpy', 'scipy', 'transformers',
                    'sentencepiece', 'pybids', 'nilearn'):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    cuda = torch.cuda.is_available()
    device = {'default': 'cuda' if cuda else 'cpu', 'cuda_available': cuda,
              'cuda_devices': [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
              if cuda else [], 'cpu_threads': torch.get_num_threads()}
    folder = resolve_weights_dir(weights)
    weights_info = {'folder': str(folder), 'present': False}
    if read_manifest(folder) if folder.is_dir() else None:
        try:
            manifest = verify_manifest(folder)
            weights_info.update(present=True, sha256=manifest['weights_sha256'],
                                steps=manifest.get('steps'), recipe=manifest.get('recipe'),
                                files=[f['file'] for f in manifest['files']],
                                evaluation=manifest.get('evaluation') or {})
        except VoxelPromptError as error:
            weights_info.update(error=str(error))
    from vpcli.tasks.ontology import load_ontology
    ontology = load_ontology()
    functions = registry()
    return {'versions': versions, 'device': device, 'weights': weights_info,
            'capabilities': {
                'functions': {c: sorted(n for n, f in functions.items() if f.category == c)
                              for c in CATEGORIES},
                'recipes': sorted(all_recipes()),
                'task_categories': list(TASK_CATEGORIES),
                # what `segment` can be asked for by name (programs given to `exec`)
                'targets': {'anatomy': list(ontology.targets),
                            'lesion_classes': [c.name for c in ontology.lesion_classes.values()]},
                'training_recipes': sorted(p.stem for p in
                                           (Path(__file__).resolve().parents[2] / 'recipes' / 'train').glob('*.toml')),
                'formats': ['.nii', '.nii.gz', '.mgz', '.mgh']}}


@app.command('info')
@reports_errors
def info(
    weights: Annotated[Optional[Path], typer.Option(help='Weights folder (default: $VOXELPROMPT_WEIGHTS, then the shipped weights/).')] = None,
    as_json: Annotated[bool, typer.Option('--json', help='Print JSON on stdout.')] = False,
) -> None:
    """Show versions, the compute device, the weights in use and what can be asked."""
    report = collect_info(weights)
    if as_json:
        print(json.dumps(report, indent=2))
        return
    from rich.console import Console
    console = Console()
    console.print('[bold]versions[/bold]  ' + '  '.join(f'{k} {v}' for k, v in report['versions'].items()))
    device = report['device']
    console.print(f"[bold]device[/bold]    {device['default']}"
                  + (f" ({', '.join(device['cuda_devices'])})" if device['cuda_devices'] else '')
                  + f", {device['cpu_threads']} CPU threads")
    w = report['weights']
    state = (f"sha256 {w['sha256'][:16]}…, {w.get('steps')} steps" if w['present']
             else w.get('error', 'none installed'))
    console.print(f"[bold]weights[/bold]   {w['folder']}: {state}")
    for category, names in report['capabilities']['functions'].items():
        if names:
            console.print(f"[bold]{category:<17}[/bold] {', '.join(names)}")
    console.print(f"[bold]recipes[/bold]   {', '.join(report['capabilities']['recipes'])}")
    console.print(f"[bold]tasks[/bold]     {', '.join(report['capabilities']['task_categories'])}")
    targets = report['capabilities']['targets']
    console.print(f"[bold]targets[/bold]   {len(targets['anatomy'])} anatomical targets and "
                  f"{len(targets['lesion_classes'])} lesion classes `segment` can name "
                  f"(`voxelprompt info --json` lists them)")
