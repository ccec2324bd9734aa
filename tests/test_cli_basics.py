"""The installed entry point answers --help and --version."""

import subprocess
import sys

from scoregen import __version__


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "scoregen", *args], capture_output=True, text=True)


def test_version_and_help():
    out = run_cli("--version")
    assert out.returncode == 0 and __version__ in out.stdout
    out = run_cli("--help")
    assert out.returncode == 0 and "Usage" in out.stdout
