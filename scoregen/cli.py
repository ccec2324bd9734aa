"""The ``scoregen`` command: a thin layer over the library (parse, check, call, print)."""

from __future__ import annotations

import click

from scoregen import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="scoregen")
def cli() -> None:
    """Score-based generative sampling: denoisers, Tweedie scores, Langevin samplers."""


def main() -> None:
    cli(prog_name="scoregen")
