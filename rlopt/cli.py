"""Command lines built from config dataclasses with tyro, with argparse's manners for bad input.

``tyro.cli`` reports bad input in a framed, wrapped box; :func:`parse_config` turns it (and a
``ValueError`` from a dataclass's ``__post_init__``) into one :class:`UsageError` line that names
settings by the flags users type. Both command lines, ``rlopt-train`` and ``rlopt-evaluate``, use it.
Importing it imports tyro; ``import rlopt`` does not import it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
import sys
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import tyro

__all__ = ["UsageError", "one_line", "parse_config", "with_flag_names"]

T = TypeVar("T")

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_BOX = "│╭╮╰╯─ "
_PARSING = re.compile(r"^Error parsing (?P<what>[^:]+): ")
#: where tyro's error box stops saying what went wrong
_BOX_TRAILERS = ("Argument helptext:", "For full helptext")


class UsageError(ValueError):
    """A command line that cannot be used; the message is one line."""


def one_line(message: str) -> str:
    """``message`` with every run of whitespace (line breaks included) as one space."""
    return " ".join(message.split())


def _flag_names(cls: type) -> dict[str, str]:
    """Field names with an underscore, and the flags users type for them."""
    return {f.name: "--" + f.name.replace("_", "-") for f in dataclasses.fields(cls) if "_" in f.name}


def with_flag_names(message: str, cls: type) -> str:
    """Messages name settings by field (``train_size``); the command line's user typed ``--train-size``."""
    names = _flag_names(cls)
    if not names:
        return message
    # a field name standing alone (not part of a path or another name)
    pattern = re.compile(r"(?<![\w/\\.-])(" + "|".join(map(re.escape, names)) + r")(?![\w/\\-]|\.\w)")
    return pattern.sub(lambda match: names[match.group(1)], message)


def _condense_tyro_error(text: str) -> str:
    """tyro's boxed error message as one line: the box's body without its title and help trailer."""
    body: list[str] = []
    for raw in _ANSI.sub("", text).splitlines():
        line = raw.strip(_BOX)
        if line.startswith(_BOX_TRAILERS):
            break
        if line:
            body.append(line)
    message = one_line(" ".join(body[1:] or body)) or "invalid arguments (see --help)"
    match = _PARSING.match(message)
    if match:
        # "Error parsing --flag: why" → "--flag: why"; a value a __post_init__ refused ("Error parsing
        # TrainConfig: …", "… dqn: …") is reported by its own message, which names the flag
        what = match.group("what")
        message = (f"{what}: " if what.startswith("-") else "") + message[match.end():]
    return message


@contextlib.contextmanager
def _unwrapped_errors(argv: Sequence[str]) -> Iterator[None]:
    """Let tyro lay out error boxes wide enough that no message wraps (help keeps the terminal's width)."""
    if any(token in ("-h", "--help") for token in argv):
        yield
        return
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100000"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous


def parse_config(cls: type[T], argv: Sequence[str] | None, *, prog: str, description: str,
                 fields_of: type | None = None, **tyro_kwargs: Any) -> Any:
    """``tyro.cli(cls, **tyro_kwargs)`` on ``argv``; raises :class:`UsageError` (one line, settings named
    by their flags, read from ``fields_of``) for bad input. ``--help`` prints the help and raises
    ``SystemExit(0)``. Returns what ``tyro.cli`` returns (an instance of ``cls``, or with
    ``return_unknown_args=True`` the instance and the unknown arguments)."""
    args = list(sys.argv[1:] if argv is None else argv)
    captured = io.StringIO()
    try:
        with _unwrapped_errors(args), contextlib.redirect_stderr(captured):
            parsed = tyro.cli(cls, args=args, prog=prog, description=description, **tyro_kwargs)
    except SystemExit as exc:
        if not exc.code:
            raise
        raise UsageError(with_flag_names(_condense_tyro_error(captured.getvalue()), fields_of or cls)) from None
    except ValueError as exc:  # a check in a __post_init__ that tyro passed on
        raise UsageError(with_flag_names(one_line(str(exc)), fields_of or cls)) from None
    sys.stderr.write(captured.getvalue())  # warnings, if any
    return parsed
