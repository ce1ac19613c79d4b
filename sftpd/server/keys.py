"""The district's authorized keys, re-read whenever the (Secret-volume) file changes."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from sftpd.server.audit import AuditLog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _FileIdentity:
    """What changes when Kubernetes swaps the `..data` link or someone edits the file."""

    real_path: str
    inode: int
    mtime_ns: int
    size: int


class AuthorizedKeys:
    """Holds the parsed keys of one authorized_keys file and reloads it when it changes.

    The check is a realpath + stat on each authentication attempt: cheap, and exact for the
    atomic `..data` symlink swap a Secret volume does, where the file the name resolves to
    changes while the name itself stays put.
    """

    def __init__(self, path: Path, audit: AuditLog) -> None:
        self._path = path
        self._audit = audit
        self._identity: _FileIdentity | None = None
        self._keys: asyncssh.SSHAuthorizedKeys | None = None
        self.count = 0
        self.refresh()

    def _current_identity(self) -> _FileIdentity | None:
        try:
            real = os.path.realpath(self._path)
            st = Path(real).stat()
        except OSError:
            return None
        return _FileIdentity(real, st.st_ino, st.st_mtime_ns, st.st_size)

    def refresh(self) -> None:
        """Reload the file if it changed since the last load; keep the old keys if unreadable."""
        identity = self._current_identity()
        if identity is not None and identity == self._identity:
            return
        if identity is None:
            if self._identity is not None or self._keys is None:
                self._audit.event("authorized_keys.missing", path=str(self._path))
            self._identity, self._keys, self.count = None, None, 0
            return
        try:
            text = Path(identity.real_path).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            self._audit.event("authorized_keys.unreadable", path=str(self._path), error=str(exc))
            return
        good: list[str] = []
        for number, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            try:
                asyncssh.import_authorized_keys(stripped)
            except (ValueError, asyncssh.KeyImportError) as exc:
                # One bad line must not lock the district out: skip it and say which one.
                self._audit.event("authorized_keys.line_skipped", path=str(self._path),
                                  line=number, error=str(exc))
                continue
            good.append(stripped)
        self._keys = asyncssh.import_authorized_keys("\n".join(good)) if good else None
        self._identity = identity
        self.count = len(good)
        self._audit.event("authorized_keys.loaded", path=str(self._path), keys=len(good))

    def allows(self, key: asyncssh.SSHKey, client_host: str, client_addr: str) -> bool:
        """True when the key is listed (and its options, such as from=, accept this client)."""
        if self._keys is None:
            return False
        return self._keys.validate(key, client_host, client_addr) is not None
