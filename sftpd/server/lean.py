"""What `sftpd serve` leaves unloaded: asyncssh's optional X.509 support, which it never uses."""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

# asyncssh tries its X.509 certificate support "if available" (asyncssh/crypto/__init__.py
# catches the ImportError): asyncssh/crypto/x509.py imports cryptography.x509 and then
# pyOpenSSL, which the image does not have, so the support is never available, yet
# cryptography.x509 stays loaded: 1.2 MiB of RSS in every District's server (bench/
# sftpd_memory.py) for nothing. Host and client keys are plain OpenSSH keys.
UNUSED = ("cryptography.x509",)


class _LeaveOut(importlib.abc.MetaPathFinder):
    """Refuses the modules of UNUSED (and their submodules) as if they were not installed."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if any(fullname == name or fullname.startswith(name + ".") for name in UNUSED):
            raise ModuleNotFoundError(f"{fullname} is left out of `sftpd serve`",
                                      name=fullname)
        return None


def leave_out_unused() -> None:
    """Install the refusal; call before asyncssh is imported, in the serving process only (the
    jobs and tests share a process with code that may need X.509)."""
    if not any(isinstance(finder, _LeaveOut) for finder in sys.meta_path):
        sys.meta_path.insert(0, _LeaveOut())
