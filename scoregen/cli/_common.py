"""What every ``scoregen`` command shares: one-line errors, option types, loading a model,
outputs that are removed again when a later step fails. Imports no torch (``--help`` and
usage errors answer at once)."""

from __future__ import annotations

import difflib
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True, "max_content_width": 100}
THREADS_HELP = "torch CPU threads (toy-sized models run fastest on one)."
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit seed
MAX_THREADS = 1024


# ---------------------------------------------------------------------- errors: one line
def _hint(error: click.ClickException) -> str | None:
    """The option or argument an error is about, as the user typed it (``--steps``)."""
    hint = getattr(error, "param_hint", None)
    if isinstance(hint, (list, tuple)):
        hint = hint[0] if hint else None
    if hint:
        return str(hint).strip("'\"")
    param = getattr(error, "param", None)
    if param is None:
        return None
    if isinstance(param, click.Option):
        return max(param.opts, key=len)
    return param.human_readable_name


def error_line(error: click.ClickException) -> str:
    """``scoregen CMD: error: [--option: ]message`` on one line."""
    ctx = getattr(error, "ctx", None) or getattr(error, "command_ctx", None)
    where = ctx.command_path if ctx is not None else "scoregen"
    if isinstance(error, click.MissingParameter):
        message = f"{_hint(error)}: required, not given"
    elif isinstance(error, click.BadParameter) and _hint(error):
        message = f"{_hint(error)}: {error.message}"
    else:
        message = error.format_message()
    return f"{where}: error: {' '.join(str(message).split())}"


class Failure(click.ClickException):
    """Something went wrong while running (exit status 1), as opposed to a usage error."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.command_ctx = click.get_current_context(silent=True)


def _is_runtime_failure(error: BaseException) -> bool:
    """Errors of a run (exit 1, one line): a diverging sampler, I/O, a NaN loss, memory."""
    if isinstance(error, (OSError, FloatingPointError, MemoryError)):
        return True
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    samplers = sys.modules.get("scoregen.samplers._common")
    return samplers is not None and isinstance(error, samplers.SamplerDivergence)


_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class Group(click.Group):
    """A click group whose errors are one line on stderr (no usage block, no traceback)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NO_ARGS_IS_HELP as e:  # bare `scoregen`: the help, as click < 8.2 showed it
            click.echo(e.format_message())
            sys.exit(0)
        except click.ClickException as e:
            click.echo(error_line(e), err=True)
            sys.exit(e.exit_code)
        except (click.Abort, KeyboardInterrupt):
            click.echo("scoregen: interrupted", err=True)
            sys.exit(1)
        except Exception as e:
            if not _is_runtime_failure(e):
                raise
            argv = sys.argv[1:] if args is None else list(args)
            command = next((a for a in argv if a in self.commands), None)
            where = " ".join(filter(None, [prog_name or self.name, command]))
            click.echo(f"{where}: error: {' '.join(str(e).split())}", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def note(message: str) -> None:
    """A remark for the user on stderr, prefixed with the command (``scoregen sample: note:``)."""
    ctx = click.get_current_context(silent=True)
    where = ctx.command_path if ctx is not None else "scoregen"
    click.echo(f"{where}: note: {' '.join(message.split())}", err=True)


# ---------------------------------------------------------------------- parameter types
class Count(click.ParamType):
    """An integer in ``[minimum, maximum]``; the message says the range."""

    name = "integer"

    def __init__(self, minimum: int = 1, maximum: int | None = None):
        self.minimum, self.maximum = minimum, maximum

    def convert(self, value, param, ctx):
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = int(str(value).strip().replace("_", ""))
            except (TypeError, ValueError):
                allowed = f">= {self.minimum}" if self.maximum is None else f"in [{self.minimum}, {self.maximum}]"  # fmt: skip
                self.fail(f"must be an integer {allowed}, got {value!r}", param, ctx)
        if number < self.minimum:
            self.fail(f"must be >= {self.minimum}, got {number}", param, ctx)
        if self.maximum is not None and number > self.maximum:
            self.fail(f"must be <= {self.maximum}, got {number}", param, ctx)
        return number


class Level(click.ParamType):
    """A finite float > 0 (or >= 0 with ``allow_zero``)."""

    name = "float"

    def __init__(self, allow_zero: bool = False):
        self.allow_zero = allow_zero

    def convert(self, value, param, ctx):
        allowed = ">= 0" if self.allow_zero else "> 0"
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            self.fail(f"must be a number {allowed}, got {value!r}", param, ctx)
        if not math.isfinite(number) or number < 0 or (number == 0 and not self.allow_zero):
            self.fail(f"must be finite and {allowed}, got {value}", param, ctx)
        return number


class OutputFile(click.ParamType):
    """A file to write: its folder must exist and its suffix be one of ``suffixes``."""

    name = "file"

    def __init__(self, suffixes: tuple[str, ...]):
        self.suffixes = suffixes

    def convert(self, value, param, ctx):
        path = Path(value)
        if path.suffix.lower() not in self.suffixes:
            self.fail(f"must end in {' or '.join(self.suffixes)}, got {str(path)!r}", param, ctx)
        if path.is_dir():
            self.fail(f"{str(path)!r} is a folder, not a file", param, ctx)
        folder = path.parent
        if not folder.is_dir():
            self.fail(f"the folder {str(folder)!r} does not exist", param, ctx)
        return path


def seed_option(help_text: str = "Random seed.", default: int = 0):
    return click.option("--seed", type=Count(0, MAX_SEED), default=default, help=help_text)


def threads_option():
    return click.option("--threads", type=Count(1, MAX_THREADS), default=1, help=THREADS_HELP)


def device_option(help_text: str = "Where to run."):
    return click.option(
        "--device", type=click.Choice(("auto", "cpu", "cuda")), default="auto", help=help_text
    )


def output_dir(value: str | None, option: str) -> Path | None:
    """An output folder: created if missing, but its parent must exist."""
    if value is None:
        return None
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise click.BadParameter(f"{str(path)!r} exists and is not a folder", param_hint=option)
    if not path.exists() and not path.resolve().parent.is_dir():
        raise click.BadParameter(
            f"the folder {str(path.resolve().parent)!r} does not exist", param_hint=option
        )
    return path


def set_up_torch(device: str, threads: int) -> str:
    """Import torch, set its CPU threads and resolve ``--device`` (usage error for cuda
    without CUDA); returns the device name."""
    import torch

    torch.set_num_threads(threads)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise click.BadParameter(
            "cuda, but CUDA is not available here (torch sees no GPU); use cpu or auto",
            param_hint="--device",
        )
    return device


def key_values(values: tuple[str, ...], option: str) -> dict[str, Any]:
    """``key=value`` pairs (values read as JSON when they parse, else strings) or JSON objects."""
    out: dict[str, Any] = {}
    for text in values:
        if text.lstrip().startswith("{"):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError as e:
                raise click.BadParameter(
                    f"not valid JSON ({e}): {text!r}", param_hint=option
                ) from None
            if not isinstance(parsed, dict):
                raise click.BadParameter(f"must be a JSON object, got {text!r}", param_hint=option)
            out.update(parsed)
            continue
        key, sep, raw = text.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(
                f"expected key=value or a JSON object, got {text!r}", param_hint=option
            )
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def did_you_mean(word: str, choices) -> str:
    """`` (did you mean X?)`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def load(spec: str, device: str, option: str = "--ckpt"):
    """The :class:`scoregen.ScoreModel` behind ``--ckpt``; a usage error if unusable."""
    from scoregen.builtins import PREFIX, UnknownBuiltinError, list_builtins, load_model
    from scoregen.checkpoint import CheckpointError

    if not spec.startswith(PREFIX):
        path = Path(spec)
        if not path.exists():
            names = [PREFIX + name for name in list_builtins()]
            hint = f" (did you mean {PREFIX + spec}?)" if spec in list_builtins() else ""
            hint = hint or did_you_mean(spec, names)
            raise click.BadParameter(f"file {spec!r} does not exist{hint}", param_hint=option)
        if path.is_dir():
            raise click.BadParameter(f"{spec!r} is a folder, not a file", param_hint=option)
    try:
        return load_model(spec, device)
    except UnknownBuiltinError as e:
        names = [PREFIX + name for name in list_builtins()]
        raise click.BadParameter(f"{e}{did_you_mean(spec, names)}", param_hint=option) from None
    except CheckpointError as e:
        raise click.BadParameter(str(e), param_hint=option) from None
    except PermissionError as e:
        raise click.BadParameter(f"cannot read {spec!r}: {e.strerror}", param_hint=option) from None


class Outputs:
    """Files written by one command; :meth:`rollback` removes them when a later step fails."""

    def __init__(self):
        self.written: list[Path] = []

    def write(self, path: Path, write: Callable[[Path], Any]) -> None:
        write(path)
        self.written.append(path)

    def rollback(self) -> None:
        for path in self.written:
            path.unlink(missing_ok=True)
        self.written.clear()


def fmt(value: float) -> str:
    return f"{value:.4g}"
