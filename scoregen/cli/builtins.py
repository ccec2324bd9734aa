"""``scoregen builtins``: the ``builtin:NAME`` models."""

from __future__ import annotations

import click

from scoregen.cli._common import CONTEXT


@click.command(name="builtins", context_settings=CONTEXT, epilog="\b\nExample:\n  scoregen builtins")
def builtins_command() -> None:
    """List the builtin:NAME checkpoints."""
    from scoregen.builtins import PREFIX, list_builtins

    for name, description in list_builtins().items():
        click.echo(f"{PREFIX + name:22s} {description}")
