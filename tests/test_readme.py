"""Every example of the README and of the docs pages (``docs/**/*.md``) runs or is checked.

- A ```` ```python ```` block is executed as written, in a temporary directory, with the training budgets cut by
  :data:`REPLACEMENTS`; an identical block on several pages runs once.
- A ```` ```bash ```` / ```` ```console ```` / ```` ```sh ```` block is run with bash in the repository root, the
  test's Python environment first on ``PATH`` (so such a block must write nothing there: a config printout, a
  ``--help``).
- A block preceded by the line ``<!-- long-running -->`` is not run: a Python block is compiled; in a shell block
  every ``rims-rl-train`` / ``rims-rl-eval`` command line is checked as the CLI checks it before Hydra starts
  (:func:`rims_rl.experiments.config.check_command_line`: config groups, keys, values, sweeps), every ``rims-rl-report``
  line is parsed by the report's own argument parser, and every ``python <script>.py --option`` names a script of
  the repository whose source defines that option; other commands (``pip``, ``python3 -m venv``, ``pytest``) are
  left to the CI run of the set-up commands.

Placeholders in commands (``<lstm|rim>``, ``<s>``, ``<m>``) take their first alternative, or :data:`PLACEHOLDERS`.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").rglob("*.md") if "_build" not in p.parts)]
LONG_RUNNING = "<!-- long-running -->"
#: Training budgets in Python examples, cut to one short rollout (SB3 finishes the rollout it started) of 2 envs,
#: and evaluations to 2 episodes.
REPLACEMENTS = {
    "300_000": "256",
    "n_envs=16": "n_envs=2",
    "n_eval_episodes=20": "n_eval_episodes=2",
    "progress_bar=True": "progress_bar=False",
}
#: Placeholders in command examples that are not of the ``<a|b>`` form.
PLACEHOLDERS = {"<s>": "0", "<m>": "lstm", "<F>": "1000"}
SHELL = ("bash", "console", "sh", "shell")


class Block(NamedTuple):
    """A fenced code block of a Markdown document."""

    path: Path
    line: int
    lang: str
    code: str
    long_running: bool

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """:return: the fenced ``python`` and shell blocks of ``path`` (nested fences of MyST directives ignored)"""
    found: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        match = re.fullmatch(r"(`{3,})(\S*)\s*", lines[index])
        if not match:
            index += 1
            continue
        fence, lang = match.groups()
        end = next(j for j in range(index + 1, len(lines)) if lines[j].strip() == fence)
        previous = next((lines[j] for j in range(index - 1, -1, -1) if lines[j].strip()), "")
        if lang == "python" or lang in SHELL:
            code = "\n".join(lines[index + 1 : end]) + "\n"
            found.append(Block(path, index + 1, lang, code, previous.strip() == LONG_RUNNING))
        index = end + 1
    return found


BLOCKS = [block for path in DOCUMENTS for block in blocks(path)]


def unique(selected: list[Block]) -> list[Block]:
    """:return: the blocks with distinct code, the first occurrence of each"""
    seen: dict[str, Block] = {}
    for block in selected:
        seen.setdefault(block.code, block)
    return list(seen.values())


PYTHON_RUN = unique([b for b in BLOCKS if b.lang == "python" and not b.long_running])
PYTHON_LONG = [b for b in BLOCKS if b.lang == "python" and b.long_running]
SHELL_RUN = unique([b for b in BLOCKS if b.lang in SHELL and not b.long_running])
SHELL_LONG = [b for b in BLOCKS if b.lang in SHELL and b.long_running]


def test_the_readme_and_the_docs_have_examples() -> None:
    readme = [b for b in BLOCKS if b.path.name == "README.md"]
    assert sum(b.lang == "python" for b in readme) >= 2 and len(PYTHON_RUN) >= 10 and len(SHELL_LONG) >= 10


def test_the_readme_starts_with_the_two_set_up_commands() -> None:
    """The README's first two commands are the set-up commands, and the second is exactly what CI runs."""
    first, second = [b.code.strip() for b in BLOCKS if b.path.name == "README.md"][:2]
    assert first.startswith("python3 -m venv .venv && .venv/bin/pip install -c constraints.txt -e . && ")
    assert second in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("block", PYTHON_RUN, ids=[b.where for b in PYTHON_RUN])
def test_python_example_runs(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.chdir(tmp_path)  # examples may save files
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tests share the machine's cores (pytest-xdist)
    code = block.code
    for old, new in REPLACEMENTS.items():
        code = code.replace(old, new)
    try:
        exec(compile(code, block.where, "exec"), {"__name__": "__example__"})
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("block", PYTHON_LONG, ids=[b.where for b in PYTHON_LONG])
def test_long_running_python_example_compiles(block: Block) -> None:
    compile(block.code, block.where, "exec")


def command_lines(code: str) -> list[list[str]]:
    """:return: the commands of a shell block as argument lists: continuation lines joined, ``$`` prompts and
    comments dropped, ``&&`` chains split, leading ``VAR=value`` assignments and ``taskset -c N`` removed,
    placeholders filled"""
    commands: list[list[str]] = []
    for line in code.replace("\\\n", " ").splitlines():
        line = line.removeprefix("$ ")  # a console prompt
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
                words = words[1:]
            if words[:1] == ["taskset"]:
                words = words[3:]
            words = [fill(word) for word in words]
            if words:
                commands.append(words)
    return commands


def fill(word: str) -> str:
    """:return: ``word`` with ``<a|b>`` replaced by ``a`` and the :data:`PLACEHOLDERS` filled in"""
    word = re.sub(r"<([^<>|]+)\|[^<>]*>", r"\1", word)
    for placeholder, value in PLACEHOLDERS.items():
        word = word.replace(placeholder, value)
    return word


def check_command(words: list[str], where: str) -> str:
    """Check one command of a long-running block without running it.

    :return: the kind of command checked (``train``, ``eval``, ``report``, ``script``) or ``other``
    :raises AssertionError: naming the block when the command would fail its checks
    """
    from rims_rl.experiments.config import ConfigError, check_command_line
    from rims_rl.experiments.report.cli import parse_args
    from rims_rl.experiments.schema import EvalSchema, TrainSchema

    program, args = Path(words[0]).name, words[1:]
    if words[:3] in (["python", "-m", "rims_rl.experiments.train"], ["python3", "-m", "rims_rl.experiments.train"]):
        program, args = "rims-rl-train", words[3:]
    try:
        if program == "rims-rl-train":
            check_command_line(args, "train", TrainSchema)
            return "train"
        if program == "rims-rl-eval":
            check_command_line(args, "eval", EvalSchema, groups=("env",))
            return "eval"
        if program == "rims-rl-report":
            parse_args(synopsis(args))
            return "report"
    except ConfigError as err:
        raise AssertionError(f"{where}: {' '.join(words)}: {err}") from None
    except SystemExit:
        raise AssertionError(f"{where}: {' '.join(words)}: rims-rl-report rejects its arguments") from None
    if program in ("python", "python3") and args and args[0].endswith(".py"):
        script = ROOT / args[0]
        assert script.is_file(), f"{where}: no script {args[0]}"
        source = script.read_text(encoding="utf-8")
        for option in (a.split("=")[0] for a in args[1:] if a.startswith("--")):
            assert f'"{option}"' in source, f"{where}: {args[0]} defines no option {option}"
        return "script"
    return "other"


def synopsis(args: list[str]) -> list[str]:
    """:return: the arguments of a command, a usage synopsis's brackets (``DIR [more dirs] [--out DIR]``) dropped,
    so that every optional part is parsed too"""
    metavars = {"N": "1"}  # the synopsis's number metavars (--final-evals N) as numbers
    return [metavars.get(a.strip("[]"), a.strip("[]")) for a in args if a.strip("[]")]


@pytest.mark.parametrize("block", SHELL_LONG, ids=[b.where for b in SHELL_LONG])
def test_long_running_command_is_valid(block: Block) -> None:
    kinds = [check_command(words, block.where) for words in command_lines(block.code)]
    assert kinds, f"{block.where}: no command"


@pytest.mark.parametrize("block", SHELL_RUN, ids=[b.where for b in SHELL_RUN])
def test_shell_example_runs(block: Block, tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{block.where}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
