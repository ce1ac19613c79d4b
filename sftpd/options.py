"""Options of every sftpd subcommand: each a flag plus its SFTPD_* variable, read one way.

A flag on the command line wins over its variable, the variable over the built-in default.
A variable set to the empty string counts as unset, except for a list, where it is the empty
list. A value that cannot be read, from either place, is bad usage: the command exits with
EXIT_USAGE (2) and the message names where the value came from
(`argument --port: SFTPD_PORT='x': not a whole number`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final, NoReturn

from district_contract.commands import EXIT_CODES_HELP, env_var, separated
from district_contract.layout import DATABASE_URL_ENV

TRUE_WORDS: Final = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS: Final = frozenset({"0", "false", "no", "off"})


class UsageError(Exception):
    """Bad options or environment: nothing was attempted, the command exits EXIT_USAGE."""


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose errors raise UsageError, so the command can still report them
    in its result before exiting (argparse itself would exit at once)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def prepare(parser: argparse.ArgumentParser) -> Options:
    """Options for one subcommand's parser; its --help ends with the exit codes."""
    parser.epilog = EXIT_CODES_HELP
    return Options(parser)


def boolean(text: str) -> bool:
    """1/true/yes/on or 0/false/no/off (any case); anything else is refused."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError("expected one of 1/true/yes/on or 0/false/no/off")


def whole_number(minimum: int | None = None) -> Callable[[str], int]:
    def read(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError("not a whole number") from None
        if minimum is not None and value < minimum:
            raise ValueError(f"must be at least {minimum}, not {value}")
        return value

    return read


def decimal_number(minimum: float | None = None) -> Callable[[str], float]:
    def read(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise ValueError("not a number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("not a finite number")
        if minimum is not None and value < minimum:
            raise ValueError(f"must be at least {minimum:g}, not {value:g}")
        return value

    return read


class _FromEnvironment(str):
    """An option's value as its variable gave it: a str (so argparse converts it like a flag's
    value, and only when the flag is absent) that knows its variable for error messages."""

    variable: str

    def __new__(cls, value: str, variable: str) -> _FromEnvironment:
        text = super().__new__(cls, value)
        text.variable = variable
        return text


def _reader(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def read(text: str) -> Any:
        try:
            return convert(text)
        except (ValueError, argparse.ArgumentTypeError) as exc:
            where = (f"{text.variable}={str(text)!r}" if isinstance(text, _FromEnvironment)
                     else repr(text))
            raise argparse.ArgumentTypeError(f"{where}: {exc}") from None

    read.__name__ = getattr(convert, "__name__", "value")
    return read


class _Switch(argparse.Action):
    """--name sets True, --no-name sets False (to override a variable that says true)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, not (option_string or "").startswith("--no-"))


class _Items(argparse.Action):
    """A list option: each use adds its items (comma- or space-separated); the first use
    replaces the default or the variable's list instead of adding to it."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        current = getattr(namespace, self.dest, None)
        items = [] if current is None or current is self.default else list(current)
        items.extend(separated(str(values)))
        setattr(namespace, self.dest, items)


class Options:
    """Adds one subcommand's options; each reads its default from its variable."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser

    @staticmethod
    def _raw(names: Iterable[str]) -> _FromEnvironment | None:
        for variable in names:
            value = os.environ.get(variable)
            if value:
                return _FromEnvironment(value, variable)
        return None

    def _add(self, name: str, help_text: str, convert: Callable[[str], Any], default: Any,
             *, required: bool = False, env: str | None = None, metavar: str | None = None,
             deprecated: Sequence[str] = ()) -> None:
        variable = env or env_var(name)
        from_env = self._raw([variable, *(env_var(old) for old in deprecated)])
        value: Any = default if from_env is None else from_env
        where = f"env {variable}"
        if not required and default is not None:
            where += f"; default {default}"
        elif required:
            where += "; required"
        reader = _reader(convert)
        dest = name.replace("-", "_")
        self.parser.add_argument(f"--{name}", dest=dest, type=reader, default=value,
                                 required=required and value is None, metavar=metavar,
                                 help=f"{help_text} ({where})")
        for old in deprecated:  # accepted, not advertised
            self.parser.add_argument(f"--{old}", dest=dest, type=reader,
                                     default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    def text(self, name: str, help_text: str, default: str | None = None, *,
             required: bool = False, choices: Sequence[str] | None = None,
             env: str | None = None, metavar: str | None = None) -> None:
        def read(text: str) -> str:
            if choices is not None and text not in choices:
                raise ValueError(f"choose one of {', '.join(choices)}")
            return str(text)

        self._add(name, help_text, read, default, required=required, env=env,
                  metavar=metavar)

    def database_url(self) -> None:
        """--database-url, read from libpq's own DATABASE_URL: every job that has a database."""
        self.text("database-url", "libpq URL of the district's database", required=True,
                  env=DATABASE_URL_ENV, metavar="URL")

    def path(self, name: str, help_text: str, default: str | None = None, *,
             required: bool = False) -> None:
        self._add(name, help_text, Path, default, required=required, metavar="PATH")

    def number(self, name: str, help_text: str, default: float | None = None, *,
               kind: type[int] | type[float] = int, minimum: float | None = None,
               required: bool = False, deprecated: Sequence[str] = (),
               metavar: str | None = "N") -> None:
        convert = (whole_number(None if minimum is None else int(minimum)) if kind is int
                   else decimal_number(minimum))
        self._add(name, help_text, convert, None if default is None else str(default),
                  required=required, metavar=metavar, deprecated=deprecated)

    def custom(self, name: str, help_text: str, convert: Callable[[str], Any],
               default: str | None = None, *, required: bool = False,
               metavar: str | None = None) -> None:
        self._add(name, help_text, convert, default, required=required, metavar=metavar)

    def switch(self, name: str, help_text: str) -> None:
        variable = env_var(name)
        from_env = self._raw([variable])
        value: Any = False if from_env is None else from_env
        self.parser.add_argument(f"--{name}", f"--no-{name}", dest=name.replace("-", "_"),
                                 action=_Switch, type=_reader(boolean), default=value,
                                 help=f"{help_text} (env {variable}: 1/true/yes/on or "
                                      "0/false/no/off; default off)")

    def items(self, name: str, help_text: str, default: Sequence[str] = (), *,
              metavar: str | None = None) -> None:
        variable = env_var(name)
        # Set but empty is an empty list here (`processing.formats: []` processes nothing).
        from_env = os.environ.get(variable)
        value = list(default) if from_env is None else separated(from_env)
        shown = f"; default {','.join(default)}" if default else ""
        self.parser.add_argument(f"--{name}", dest=name.replace("-", "_"), action=_Items,
                                 default=value, metavar=metavar,
                                 help=f"{help_text}; comma-separated or repeated "
                                      f"(env {variable}{shown})")


def report_usage(command: str, message: str) -> None:
    """The one way a command says it was used wrongly: one line on stderr."""
    prog = f"sftpd {command}" if command else "sftpd"
    sys.stderr.write(f"{prog}: error: {message}\n")
    sys.stderr.flush()
