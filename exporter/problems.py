"""The lines a user reads when a file cannot be used: `<file>: <key>: <problem>; fix: <fix>`.

One line per problem, naming the file, the key and what to do, and never a traceback nor the
value of a secret. The exporter's config (exporter/config.py) and the web config
(exporter/webconfig.py) write them alike through this module; each keeps its own wording.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import Any

import yaml

from exporter import files, yamlsafe

# The fix for a value YAML read as a number, a boolean or a list where text was meant.
STRING_FIX = "give a string (quote it if YAML reads it as something else)"


class ProblemsError(Exception):
    """A file the exporter cannot use; `problems` holds one user-facing line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def in_file(name: str, lines: Iterable[str]) -> list[str]:
    """`lines` (each `<key>: <problem>; fix: <fix>`) prefixed with the file they are about."""
    return [f"{name}: {line}" for line in lines]


def unknown_key(where: str, leaf: str, known: Sequence[str] | None) -> str:
    """A key the schema does not have, with the closest known one (or all of them) as a hint."""
    hint = ""
    if known is not None:
        close = difflib.get_close_matches(leaf, list(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(known)})"
    return f"{where}: unknown key{hint}; fix: remove it or correct it"


def value_at(raw: Any, loc: tuple[Any, ...], default: Any = None) -> Any:
    """The value a validation error's location points at in the parsed YAML, or `default`."""
    node = raw
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return default
    return node


def flag_file_problem(problem: files.FileProblem, flag: str) -> str:
    """One line for a YAML file named by a command-line flag (--config.file, --web.config.file)."""
    name = problem.path
    if problem.kind == "type":
        return f"{name}: {problem.reason}; fix: pass {flag} the path of a regular YAML file"
    if problem.kind == "size":
        return (
            f"{name}: {problem.reason}; fix: a config is a few KiB, check that {flag} names "
            "the right file"
        )
    if problem.kind == "encoding":
        return f"{name}: cannot read the file (it is not UTF-8 text); fix: save it as UTF-8"
    return (
        f"{name}: cannot read the file ({problem.reason}); fix: make it readable by the "
        "exporter's user"
    )


def yaml_problem(exc: yaml.YAMLError) -> str:
    """Where and why YAML failed, as one line with a fix."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    if isinstance(exc, yamlsafe.YAMLLimitError):
        return f"{where}{exc.problem}; fix: {exc.fix}"
    problem = getattr(exc, "problem", None) or "invalid YAML"
    return f"{where}invalid YAML ({problem}); fix: check indentation and quoting there"


def os_reason(exc: BaseException) -> str:
    """An OS error as the user reads it: "No such file or directory" rather than a class name."""
    return getattr(exc, "strerror", None) or type(exc).__name__


def shown_key(key: str) -> str:
    """A key as an error line shows it: a YAML key (`? ...`) may be any length and hold
    terminal escapes, and the line goes to a terminal and, on reload, to the log."""
    if not key.isprintable():
        key = key.encode("unicode_escape").decode("ascii")
    return key if len(key) <= 64 else f"{key[:60]}..."
