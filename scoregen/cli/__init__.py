"""The ``scoregen`` command: a thin layer over the library, one module per command (parse,
check, call the library, print).

Every error ends as one line on stderr, ``scoregen CMD: error: WHAT``, with exit status 2
for a usage error (a bad option value, a missing or unreadable input, an unusable
combination) and 1 for a failure while running (a diverging sampler, a write that failed).
Outputs are written only once everything they depend on has been computed, each atomically;
when a later write fails, the files this run already wrote are removed. Importing this
package does not import torch: ``--help``, ``--version`` and usage errors answer at once.
"""

from __future__ import annotations

import click

from scoregen import __version__
from scoregen.cli._common import CONTEXT, Group
from scoregen.cli.builtins import builtins_command
from scoregen.cli.denoise import denoise
from scoregen.cli.experiment import experiment
from scoregen.cli.info import info
from scoregen.cli.sample import sample
from scoregen.cli.train import train

__all__ = ["cli", "main"]


@click.group(name="scoregen", cls=Group, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="scoregen")
def cli() -> None:
    """Score-based generative sampling: denoisers, Tweedie scores, Langevin samplers.

    \b
    Start with an exact mixture or a small trained denoiser shipped with the package:
      scoregen sample --ckpt builtin:ncsn2d-dae --steps 5000 --plot samples.png
      scoregen info builtin:digits-dae
    Run `scoregen COMMAND --help` for the options of a command.
    """


for command in (sample, train, denoise, info, experiment, builtins_command):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``scoregen`` script and ``python -m scoregen``."""
    cli.main(args=argv, prog_name="scoregen")
