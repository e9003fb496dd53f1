"""`voxelprompt functions`: table, --json (stdout only JSON) and --markdown."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from vpcli.cli import app
from vpcli.docsgen import render_markdown
from vpcli.library.registry import registry

runner = CliRunner()


def test_table_lists_every_function():
    result = runner.invoke(app, ['functions'], env={'COLUMNS': '160'})
    assert result.exit_code == 0, result.output
    for name, entry in registry().items():
        assert entry.usage() in result.output, name
    assert 'characterization' in result.output and 'mL' in result.output


def test_json_is_the_registry_and_nothing_else():
    # a real process, so that anything printed to stdout by imports would be caught
    completed = subprocess.run([sys.executable, '-m', 'vpcli', 'functions', '--json'],
                               capture_output=True, text=True, check=True)
    data = json.loads(completed.stdout)
    by_name = {item['name']: item for item in data['functions']}
    assert set(by_name) == set(registry())
    volume = by_name['volume']
    assert volume['returns'] == 'float, mL' and volume['category'] == 'morphometry'
    assert volume['usage'] == 'volume(mask)' and volume['parameters'] == [
        {'name': 'mask', 'variadic': False}]
    assert by_name['crop']['parameters'][2] == {'name': 'margin_mm', 'variadic': False,
                                                'default': 0.0}
    assert by_name['union']['parameters'][2]['variadic'] is True
    assert 'Returns:' in by_name['extent']['doc']


def test_markdown_prints_the_docs_page():
    result = runner.invoke(app, ['functions', '--markdown'])
    assert result.exit_code == 0
    assert result.stdout == render_markdown()


def test_json_and_markdown_together_is_a_usage_error():
    result = runner.invoke(app, ['functions', '--json', '--markdown'])
    assert result.exit_code == 2
