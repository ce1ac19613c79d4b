"""The private asyncssh methods and attributes sftpd patches, checked before the server starts.

batching.py, quickack.py, signatures.py and limits.py replace or read a few asyncssh internals
per connection. asyncssh may move them in any release; an unchecked patch would then fail on
every login, or quietly do nothing. So each module lists what it relies on, and the server
refuses to start, naming what is missing, on an asyncssh where any of it is not where it was
(pyproject.toml pins the range the patches were tested with).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from dataclasses import dataclass

import asyncssh


@dataclass(frozen=True)
class Internal:
    """One asyncssh internal a patch relies on: a method with these parameter names, or (with
    parameters None) an instance attribute an __init__ of the class or its bases sets."""

    owner: type
    name: str
    parameters: tuple[str, ...] | None
    used_by: str

    def problem(self) -> str | None:
        where = f"{self.owner.__module__}.{self.owner.__qualname__}.{self.name}"
        if self.parameters is None:
            inits = [getattr(vars(cls).get("__init__"), "__code__", None)
                     for cls in self.owner.__mro__]
            if not any(code is not None and self.name in code.co_names for code in inits):
                return f"{where} is no longer set by __init__ ({self.used_by})"
            return None
        method = getattr(self.owner, self.name, None)
        if not callable(method):
            return f"{where} is gone ({self.used_by})"
        try:
            found = tuple(inspect.signature(method).parameters)
        except (TypeError, ValueError):
            return f"{where} has no readable signature ({self.used_by})"
        if found != self.parameters:
            return (f"{where} takes ({', '.join(found)}), not ({', '.join(self.parameters)}) "
                    f"({self.used_by})")
        return None


def require(internals: Iterable[Internal]) -> None:
    """Raise RuntimeError naming every internal that is not as the patches expect."""
    problems = [p for p in (i.problem() for i in internals) if p is not None]
    if problems:
        raise RuntimeError(
            f"asyncssh {asyncssh.__version__} is not the version sftpd's patches were made for "
            f"(see the asyncssh range in pyproject.toml): " + "; ".join(problems))
