"""The shell commands in README.md and docs/*.md: each one parses, the short ones run as written.

Commands are the lines of fenced code blocks (and inline code spans) that start with
``scoregen``, ``python -m``, ``python docs/recipes/…`` or ``torchrun … -m scoregen``. Each is

* parsed: run with ``--help`` appended (click refuses an unknown option even then), and every
  ``--option`` it names must appear in that help; a synopsis with placeholders
  (``FILE|builtin:NAME``, ``[--steps N]``) is checked the same way on its command prefix;
* run as written, in a temporary folder, block by block in page order, when it is quick
  (not a training run, an experiment, a recipe at full size, …: see ``SLOW``) and its input
  files exist there (a command repeated on several pages runs once). The slow test runs the
  slow ones too (``python -m pytest -m slow``).

A failure names the page and line, the command and the reason (exit status, last lines of
its output). Everything runs in this process (no interpreter start per command).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import runpy
import shlex
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGS = ("bash", "sh", "shell", "console", "")
PROGRAM = re.compile(r"^(scoregen(\s|$)|python -m \w|python docs/recipes/|torchrun\s)")
# Not run by these tests: installing, and the test suite itself.
NEVER_RUN = re.compile(r"^(pip |python -m pytest\b)")
# Runs that take more than a few seconds: training, experiments, recipes at full size.
SLOW = re.compile(
    r"^(scoregen train\b|scoregen experiment (?!--list)|python -m experiments\.|"
    r"python docs/recipes/|torchrun\b)|--full\b"
)
# Options whose value the command writes (the rest of the path-like arguments are inputs).
OUTPUT_OPTIONS = ("--out", "--plot", "--save", "--metrics", "--checkpoint")
FILE_LIKE = re.compile(r"(/|\.(safetensors|png|jpe?g|npy|npz|pt|csv|txt|json|gif))$")


@dataclass
class Command:
    page: str
    line: int
    text: str
    fenced: bool

    def where(self) -> str:
        return f"{self.page}:{self.line}: {self.text}"


def extract_commands() -> list[list[Command]]:
    """The commands of every fenced block (one list per block, in order), then one list of
    the inline ones."""
    blocks, inline = [], []
    for page in PAGES:
        text = page.read_text()
        name = str(page.relative_to(ROOT))
        fenced_spans = []
        for match in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
            fenced_spans.append(match.span())
            if match.group(1) not in SHELL_LANGS:
                continue
            first_line = text.count("\n", 0, match.start(2)) + 1
            joined = match.group(2).replace("\\\n", " ")
            block = []
            for offset, raw in enumerate(joined.splitlines()):
                for part in split_line(raw):
                    block.append(Command(name, first_line + offset, part, True))
            if block:
                blocks.append(block)
        for match in re.finditer(r"`([^`\n]+)`", text):
            if any(start <= match.start() < end for start, end in fenced_spans):
                continue
            for part in split_line(match.group(1)):
                inline.append(Command(name, text.count("\n", 0, match.start()) + 1, part, False))
    return [*blocks, inline]


def split_line(raw: str) -> list[str]:
    """The program invocations of one shell line: comment stripped, split at && and ;."""
    line = raw.strip().removeprefix("$ ")
    line = re.sub(r"\s+#\s.*$", "", line)
    parts = [p.strip() for p in re.split(r"&&|;", line)]
    # "scoregen sample: error: ..." is output, not a command; "torchrun" alone is a name
    return [
        p
        for p in parts
        if PROGRAM.match(p)
        and not re.match(r"^scoregen [\w-]+:", p)
        and not (p.startswith("torchrun") and " -m " not in p)
    ]


def is_placeholder(word: str) -> bool:
    """``FILE|builtin:NAME``, ``[--steps``, ``N]``, ``IMAGE...``, ``experiments.NAME``."""
    if word.startswith("[") or "|" in word or "..." in word or "…" in word:
        return True
    if word.endswith("]") and "=" not in word:
        return True
    return any(re.fullmatch(r"[A-Z][A-Z_]*", part) for part in re.split(r"[/.:=]", word))


def is_synopsis(words: list[str]) -> bool:
    return any(is_placeholder(word) for word in words[1:])


def program_words(words: list[str]) -> list[str]:
    """``torchrun ... -m scoregen train ...`` -> ``scoregen train ...``."""
    if words[0] == "torchrun":
        index = words.index("-m")
        return words[index + 1 :]
    return words


def invoke(words: list[str], cwd: Path) -> tuple[int, str]:
    """Run ``scoregen ...``, ``python -m MODULE ...`` or ``python FILE ...`` in this process;
    its exit status and everything it printed."""
    out = io.StringIO()
    argv_before, cwd_before = sys.argv[:], os.getcwd()
    code = 0
    try:
        os.chdir(cwd)
        with (
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(out),
            warnings.catch_warnings(),
        ):
            # runpy warns that an experiments module was imported before (by another test)
            warnings.simplefilter("ignore", RuntimeWarning)
            if words[0] == "scoregen":
                from scoregen.cli import main

                main(words[1:])
            elif words[:2] == ["python", "-m"]:
                sys.argv = [words[2], *words[3:]]
                runpy.run_module(words[2], run_name="__main__", alter_sys=True)
            elif words[0] == "python":
                path = ROOT / words[1]
                sys.argv = [str(path), *words[2:]]
                runpy.run_path(str(path), run_name="__main__")
            else:
                raise ValueError(f"cannot run {words[0]!r}")
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        if not isinstance(stop.code, int | None):
            out.write(str(stop.code))
    except Exception as err:  # a traceback is a failure of the command, reported below
        code = 1
        out.write(f"{type(err).__name__}: {err}")
    finally:
        sys.argv = argv_before
        os.chdir(cwd_before)
    return code, out.getvalue()


def tail(text: str, n: int = 6) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-n:])


def check_parses(command: Command, tmp_path: Path) -> str | None:
    """None, or why the command does not parse."""
    words = program_words(shlex.split(command.text))
    if is_synopsis(words):
        # the command path (no options, no placeholders), then the options it names
        prefix = []
        for word in words:
            if word.startswith("-") or is_placeholder(word):
                break
            prefix.append(word)
        if len(prefix) < {"scoregen": 1, "python": 3 if words[1] == "-m" else 2}[words[0]]:
            return None  # a placeholder in the program's name (python -m experiments.NAME)
        words_for_help = prefix
    else:
        words_for_help = words
    code, output = invoke([*words_for_help, "--help"], tmp_path)
    if code != 0:
        return f"`{' '.join(words_for_help)} --help` exited {code}: {tail(output)}"
    unknown = [
        option
        for word in words
        for option in [word.split("=")[0].strip("[]")]
        if option.startswith("--") and option not in output
    ]
    if unknown:
        return f"options {unknown} are not in `{' '.join(words_for_help)} --help`"
    return None


def missing_inputs(words: list[str], cwd: Path) -> list[str]:
    """Path-like arguments that are not outputs and do not exist in ``cwd``."""
    missing = []
    for previous, word in zip(words[:-1], words[1:]):
        if previous in OUTPUT_OPTIONS or word.startswith("-") or word.startswith("builtin:"):
            continue
        if FILE_LIKE.search(word) and not (cwd / word).exists() and not (ROOT / word).exists():
            missing.append(word)
    return missing


def run_blocks(tmp_path: Path, include_slow: bool) -> tuple[list[str], list[str], list[str]]:
    """Parse every command and run the runnable ones; (failures, what was only parsed, what
    ran and how long it took)."""
    failures, parsed_only, ran = [], [], []
    seen_runs = set()
    for index, block in enumerate(extract_commands()):
        cwd = tmp_path / f"block{index}"
        cwd.mkdir()
        for command in block:
            if NEVER_RUN.match(command.text):
                continue
            why = check_parses(command, cwd)
            if why:
                failures.append(f"{command.where()}\n    does not parse: {why}")
                continue
            words = program_words(shlex.split(command.text))
            if not command.fenced or is_synopsis(words):
                continue
            if SLOW.search(command.text) and not include_slow:
                parsed_only.append(f"{command.where()} (slow)")
                continue
            missing = missing_inputs(words, cwd)
            if missing:
                parsed_only.append(f"{command.where()} (needs {missing})")
                continue
            if command.text in seen_runs:  # the same command on another page: run once
                continue
            seen_runs.add(command.text)
            start = time.perf_counter()
            code, output = invoke(words, cwd)
            ran.append(f"{command.where()} ({time.perf_counter() - start:.1f} s)")
            if code != 0:
                failures.append(f"{command.where()}\n    exited {code}: {tail(output)}")
    return failures, parsed_only, ran


def test_the_pages_have_commands_to_check():
    commands = [c for block in extract_commands() for c in block]
    assert sum(c.fenced for c in commands) >= 10 and sum(not c.fenced for c in commands) >= 10
    texts = {c.text for c in commands}
    assert "scoregen experiment --list" in texts


def test_synopsis_and_output_lines_are_told_apart():
    assert split_line("scoregen sample: error: --steps: must be >= 1, got 0") == []
    assert split_line("pip install -e . && scoregen info x.safetensors  # what it holds") == [
        "scoregen info x.safetensors"
    ]
    assert is_synopsis(shlex.split("scoregen sample --ckpt FILE|builtin:NAME [--steps N]"))
    assert is_synopsis(shlex.split("scoregen denoise --sigma S IMAGE... --out DIR"))
    assert not is_synopsis(shlex.split("scoregen sample --ckpt builtin:ncsn2d --steps 3000"))
    assert not is_synopsis(shlex.split("scoregen train --model-config channels=[16,32]"))
    assert missing_inputs(shlex.split("scoregen info toy.safetensors --plot a.png"), ROOT) == [
        "toy.safetensors"
    ]


def test_every_command_in_the_docs_parses_and_the_quick_ones_run(tmp_path):
    failures, _, _ = run_blocks(tmp_path, include_slow=False)
    assert not failures, "commands in the docs that fail:\n" + "\n".join(failures)


@pytest.mark.slow
def test_every_command_in_the_docs_runs_as_written(tmp_path):
    failures, _, _ = run_blocks(tmp_path, include_slow=True)
    assert not failures, "commands in the docs that fail:\n" + "\n".join(failures)
