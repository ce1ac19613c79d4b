"""Prior-system archives: SameGoal's bulk PDF layout `<district domain>/students/<student id>/
*.pdf`, uploaded as one zip or one directory in an epoch; every member checked before anything is
imported into documents.documents, then the archive is published read-only under downloads/.

The import and the publication are one step for the district but two for the processor: the
documents commit with the epoch's ledger row, and `publish` runs after the commit (and again on
a rerun after a crash, from the same epoch), building `downloads/.incomplete-<name>` and renaming
it into place; it is idempotent, so a crash anywhere between the commit and the move never loses
or doubles the publication.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psycopg
from district_contract import commands

from sftpd import tree
from sftpd.downloads import publish
from sftpd.downloads.contract import CONTRACT_LOCK_KEY, DOCUMENTS, STUDENTS, contract_sql
from sftpd.epochs.checkpoints import checkpoint
from sftpd.epochs.fsops import rename_noreplace
from sftpd.epochs.names import is_reserved
from sftpd.formats import (
    FileCount,
    ImportOutcome,
    Problem,
    Published,
    Recognition,
    Validation,
)
from sftpd.formats import archive as zips

# The form every imported document gets: what the prior system called it is not in the layout.
FORM = "Prior System"
STUDENTS_DIR = "students"
# SameGoal's other variant, matched by text extraction: not supported here.
UNMATCHED_DIR = "students-nonstudentid"
# At most this many PDFs per archive (as for any zip: archive.MAX_MEMBERS).
MAX_PDFS = zips.MAX_MEMBERS
# One PDF is read whole (to check it, and into its bytea): bounded well below bytea's 1 GB.
MAX_PDF_BYTES = 100 << 20
MAX_TOTAL_BYTES = zips.MAX_TOTAL_BYTES
MAX_NAME_BYTES = 255  # one path component, as on every Linux file system
# The published name: the uploaded zip's, or the epoch's for a directory (plus .zip).
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
# What macOS and Windows add to a folder they zip: ignored, with a warning.
CLUTTER = frozenset({"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"})
PDF_HEADER = b"%PDF-"
PDF_TRAILER = b"%%EOF"
TAIL_WINDOW = 1024  # readers accept the header and %%EOF within a kilobyte of the ends
_STARTXREF = re.compile(rb"startxref\s+(\d{1,12})\s+%%EOF")
SHA256_SUFFIX = ".sha256"
READ_ONLY = 0o444
# The time every member of a zip built from a directory carries, so that the same directory
# always makes the same bytes (a rerun after a crash compares them with what it published).
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Pdf:
    """One PDF of the archive: whose it is, its name, and where it is in the upload."""

    student_id: str
    file_name: str
    member: str  # its path inside the archive (the directory form: relative to the epoch)
    size: int


@dataclass
class Plan:
    """The archive's PDFs in file order."""

    pdfs: list[Pdf] = field(default_factory=list)


def pdf_problem(data: bytes) -> str | None:
    """Why these bytes are not a PDF, checked cheaply (header, trailer, and where the trailer's
    startxref points), or None."""
    if PDF_HEADER not in data[:TAIL_WINDOW]:
        return "not a PDF (no %PDF- header)"
    tail = data[-TAIL_WINDOW:]
    if PDF_TRAILER not in tail:
        return "not a whole PDF (no %%EOF at the end: cut short?)"
    found = list(_STARTXREF.finditer(tail))
    if not found:
        return "not a whole PDF (no startxref before the final %%EOF)"
    offset = int(found[-1].group(1))
    # From the file's start, or (as readers also accept) from a header after a few junk bytes.
    starts = {0, data.find(PDF_HEADER)}
    if not offset or not any(_is_cross_reference(data[s + offset: s + offset + 64])
                             for s in starts):
        return (f"not a whole PDF (startxref {offset} points at no cross-reference table or "
                "stream)")
    return None


def _is_cross_reference(at: bytes) -> bool:
    """A cross-reference table (`xref`) or a cross-reference stream's object (`12 0 obj`)."""
    return at.startswith(b"xref") or re.match(rb"\d+\s+\d+\s+obj", at) is not None


def _decoded(name: str) -> bool:
    """True when name is text: no undecodable bytes (surrogate escapes), no control chars."""
    return not any(ord(ch) < 0x20 or ord(ch) == 0x7F or 0xDC80 <= ord(ch) <= 0xDCFF
                   for ch in name)


def _component_problem(name: str, what: str) -> str | None:
    if not _decoded(name):
        return f"its {what} {name!r} holds control characters or bytes that are not UTF-8"
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        return f"its {what} is longer than {MAX_NAME_BYTES} bytes"
    if name != name.strip():
        return f"its {what} {name!r} starts or ends with a space"
    return None


class _Source:
    """The upload's PDFs, zipped or in a directory: listed, checked and read one way."""

    label: str

    def problem(self, member: str, why: str) -> Problem:
        """A problem with one member ("" for the archive as a whole), for the logs."""
        raise NotImplementedError

    def entries(self) -> Iterator[tuple[str, int, str | None]]:
        """(path in the layout, size, why the entry itself is refused or None) per file."""
        raise NotImplementedError

    @contextmanager
    def reading(self) -> Iterator[None]:
        yield

    def read(self, member: str) -> bytes:
        raise NotImplementedError

    def write_zip(self, out: IO[bytes]) -> None:
        raise NotImplementedError


class _ZipSource(_Source):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.label = path.name
        self._archive: zipfile.ZipFile | None = None
        self._infos: dict[str, zipfile.ZipInfo] = {}

    def problem(self, member: str, why: str) -> Problem:
        return Problem(f"{member}: {why}" if member else why, self.label)

    def entries(self) -> Iterator[tuple[str, int, str | None]]:
        with zips.open_listing(self.path) as archive:
            infos = archive.infolist()
        seen: set[str] = set()
        for info in infos:
            # (member_problem's reasons start with the member's name)
            problem = zips.member_problem(info)
            name = info.filename
            if problem is None and name in seen:
                problem = f"{name} appears more than once in the archive"
            seen.add(name)
            if problem is not None:
                yield "", info.file_size, problem
            elif not info.is_dir():
                yield name, info.file_size, None

    @contextmanager
    def reading(self) -> Iterator[None]:
        with zips.open_listing(self.path) as archive:
            self._archive = archive
            self._infos = {i.filename: i for i in archive.infolist()}
            try:
                yield
            finally:
                self._archive, self._infos = None, {}

    def read(self, member: str) -> bytes:
        assert self._archive is not None, "read() only inside reading()"
        info = self._infos[member]
        with zips.member_stream(self._archive, info, f"{self.label}: {member}") as stream:
            return stream.read(MAX_PDF_BYTES + 1)

    def write_zip(self, out: IO[bytes]) -> None:
        """The uploaded zip, byte for byte (never through a link)."""
        fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with open(fd, "rb") as source:
            while chunk := source.read(_CHUNK):
                out.write(chunk)


class _DirectorySource(_Source):
    def __init__(self, epoch: Path, top: str) -> None:
        self.epoch = epoch
        self.label = f"{top}/"
        self.top = top

    def problem(self, member: str, why: str) -> Problem:
        return Problem(why, member or self.label)

    def entries(self) -> Iterator[tuple[str, int, str | None]]:
        """Every entry below the top directory, links and special files refused by name (the
        epoch's own walk already bounded the tree's depth and size)."""
        pending = [self.top]
        while pending:
            folder = pending.pop()
            with os.scandir(self.epoch / folder) as listing:
                found = sorted(listing, key=lambda e: e.name)
            for entry in found:
                rel = f"{folder}/{entry.name}"
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    yield rel + "/", 0, None
                    pending.append(rel)
                elif stat.S_ISLNK(st.st_mode):
                    yield rel, 0, "is a symbolic link"
                elif not stat.S_ISREG(st.st_mode):
                    yield rel, 0, "is not a regular file"
                else:
                    yield rel, st.st_size, None

    def read(self, member: str) -> bytes:
        fd = os.open(self.epoch / member, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with open(fd, "rb") as source:
            return source.read(MAX_PDF_BYTES + 1)

    def write_zip(self, out: IO[bytes]) -> None:
        """A zip of the directory, the same bytes for the same files: members sorted, fixed
        times and modes, no directory entries."""
        members = sorted(path for path, _, problem in self.entries()
                         if problem is None and not path.endswith("/")
                         and not _is_clutter(path))
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED,
                             compresslevel=6) as built:
            for member in members:
                info = zipfile.ZipInfo(member, date_time=_FIXED_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = (stat.S_IFREG | 0o644) << 16
                info.create_system = 3  # Unix, so the mode above is read as one
                fd = os.open(self.epoch / member, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                with open(fd, "rb") as source, built.open(info, "w", force_zip64=True) as dst:
                    while chunk := source.read(_CHUNK):
                        dst.write(chunk)


def _parts(path: str) -> list[str]:
    """A member's path components; a backslash separates them too (Windows PowerShell's
    Compress-Archive writes them so)."""
    return path.replace("\\", "/").rstrip("/").split("/")


def _is_clutter(path: str) -> bool:
    parts = _parts(path)
    return parts[-1] in CLUTTER or parts[0] in CLUTTER


def _top_entries(epoch: Path) -> list[Path]:
    """The epoch's own entries: not the processor's, not an operating system's clutter."""
    return sorted(p for p in epoch.iterdir()
                  if not is_reserved(p.name) and p.name not in CLUTTER)


def _is_plain(path: Path, kind: int) -> bool:
    try:
        return stat.S_IFMT(path.lstat().st_mode) == kind
    except OSError:
        return False


def _locate(epoch: Path) -> _Source | None:
    """The epoch's one zip or one directory, or None when it holds anything else."""
    entries = _top_entries(epoch)
    if len(entries) != 1:
        return None
    only = entries[0]
    if only.name.lower().endswith(".zip") and _is_plain(only, stat.S_IFREG):
        return _ZipSource(only)
    if _is_plain(only, stat.S_IFDIR):
        return _DirectorySource(epoch, only.name)
    return None


def _looks_like_layout(source: _Source, epoch: Path) -> bool:
    """Cheap: the zip names `<top>/students/...` somewhere, or the directory holds students/."""
    if isinstance(source, _DirectorySource):
        return any(_is_plain(epoch / source.top / sub, stat.S_IFDIR)
                   for sub in (STUDENTS_DIR, UNMATCHED_DIR))
    assert isinstance(source, _ZipSource)
    try:
        names, _ = zips.inspect(source.path)
    except zips.ArchiveError:  # too crowded or no zip: waits for staff like any unknown upload
        return False
    for name in names:
        parts = name.replace("\\", "/").split("/")
        if len(parts) >= 3 and parts[0] and parts[1] in (STUDENTS_DIR, UNMATCHED_DIR):
            return True
    return False


def downloads_of(epoch: Path) -> Path:
    """downloads/ of the tree an epoch (upload/<epoch>) belongs to."""
    return epoch.parent.parent / tree.DOWNLOADS


def published_name(epoch: Path, source: _Source) -> str | None:
    """`<zip name>.zip`, or `<epoch name>.zip` for a directory; None when not a safe name."""
    stem = (source.path.name[:-4] if isinstance(source, _ZipSource) else epoch.name)
    return f"{stem}.zip" if SAFE_NAME.fullmatch(stem) else None


class PriorSystemPdfsFormat:
    """SameGoal's bulk PDF import layout, as a zip or a directory."""

    name = commands.FORMAT_PRIOR_SYSTEM_PDFS

    def __init__(self, district_domain: str = "") -> None:
        self.district_domain = district_domain.lower()

    def recognize(self, epoch: Path) -> Recognition | None:
        """Claimed when the epoch holds only one zip naming `<top>/students/...` members, or
        only one directory with a students/ folder."""
        source = _locate(epoch)
        if source is None or not _looks_like_layout(source, epoch):
            return None
        return Recognition(self.name, f"prior-system PDFs in {source.label}")

    def validate(self, epoch: Path) -> Validation:
        source = _locate(epoch)
        if source is None:
            return Validation("prior-system PDFs", errors=[Problem(
                "a prior-system archive is one zip file or one directory "
                "(<district domain>/students/<student id>/*.pdf) alone in the epoch")])
        result = Validation(f"prior-system PDFs in {source.label}")
        plan = Plan()
        result.plan = plan
        if not self.district_domain:
            result.errors.append(Problem(
                "the district's domain is not configured (--district-domain, "
                f"{commands.env_var(commands.DISTRICT_DOMAIN)}): a prior-system archive "
                "cannot be checked against it"))
        published = published_name(epoch, source)
        if published is None:
            result.errors.append(Problem(
                "the name cannot be published under downloads/: use letters, digits, '.', "
                "'-' and '_' (at most 200, a letter or digit first)", source.label))
        elif os.path.lexists(downloads_of(epoch) / published):
            result.errors.append(Problem(
                f"downloads/{published} is already published: an archive is imported once; "
                "upload a new one under another name", source.label))
        try:
            self._check_entries(source, result, plan)
        except zips.ArchiveError as exc:
            result.errors.append(Problem(f"{exc}"))  # (it names the zip)
            return result
        if not plan.pdfs and not result.errors:
            result.errors.append(Problem("no PDF in the archive", source.label))
        try:
            # Even beside other errors: every member named is one that passed its own checks,
            # so reading it is bounded, and the district learns of every problem at once.
            with source.reading():
                for pdf in plan.pdfs:
                    problem = pdf_problem(source.read(pdf.member))
                    if problem is not None:
                        result.errors.append(source.problem(pdf.member, problem))
        except zips.ArchiveError as exc:
            result.errors.append(Problem(f"{exc}"))  # (it names the zip)
        result.description = (f"prior-system PDFs in {source.label}: {len(plan.pdfs)} PDFs for "
                              f"{len({p.student_id for p in plan.pdfs})} students")
        return result

    def _check_entries(self, source: _Source, result: Validation, plan: Plan) -> None:
        """Every entry's path and size against the layout; errors name each one (a wrong top
        directory once)."""
        total = 0
        wrong_tops: set[str] = set()
        for path, size, refused in source.entries():
            if refused is not None:
                result.errors.append(source.problem(path, refused))
                continue
            parts = _parts(path)
            directory = path.endswith(("/", "\\"))
            if _is_clutter(path):
                if not directory:
                    result.warnings.append(source.problem(
                        path, "left out (clutter an operating system adds to folders)"))
                continue
            if self.district_domain and parts[0].lower() != self.district_domain:
                if parts[0] not in wrong_tops:
                    wrong_tops.add(parts[0])
                    result.errors.append(source.problem(
                        parts[0] + "/", "the top directory must be the district's domain "
                        f"{self.district_domain!r}, not {parts[0]!r}"))
                continue
            problem = self._path_problem(parts, directory)
            if problem is not None:
                result.errors.append(source.problem(path, problem))
                continue
            if directory:
                continue
            if size > MAX_PDF_BYTES:
                result.errors.append(source.problem(
                    path, f"is {size:,} bytes (a PDF may be at most {MAX_PDF_BYTES:,})"))
                continue
            total += size
            if len(plan.pdfs) == MAX_PDFS:
                result.errors.append(source.problem(
                    "", f"more than {MAX_PDFS:,} PDFs in one archive"))
                break
            plan.pdfs.append(Pdf(parts[2], parts[3], path, size))
        if total > MAX_TOTAL_BYTES:
            result.errors.append(source.problem(
                "", f"the PDFs hold {total:,} bytes in all (limit {MAX_TOTAL_BYTES:,})"))

    def _path_problem(self, parts: list[str], directory: bool) -> str | None:
        """Why a path does not fit `<domain>/students/<student id>/<name>.pdf`, or None."""
        for depth, part in enumerate(parts):
            what = ("top directory", "folder", "student id", "file name")[min(depth, 3)]
            problem = _component_problem(part, what)
            if problem is not None:
                return problem
        if len(parts) == 1:
            return None if directory else "a file beside the domain's folder"
        if parts[1] == UNMATCHED_DIR:
            return (f"{UNMATCHED_DIR}/ (matching PDFs to students by their text) is not "
                    f"supported: put each student's PDFs in {STUDENTS_DIR}/<student id>/")
        if parts[1] != STUDENTS_DIR:
            return f"only {STUDENTS_DIR}/ is imported from the domain's folder"
        if len(parts) == 2:
            return None if directory else f"a file where {STUDENTS_DIR}/ belongs"
        if len(parts) == 3:
            return (None if directory else
                    f"a file directly in {STUDENTS_DIR}/ (PDFs go in "
                    f"{STUDENTS_DIR}/<student id>/)")
        if len(parts) > 4 or directory:
            return "a folder inside a student's folder (PDFs go directly in it)"
        if not parts[3].lower().endswith(".pdf") or len(parts[3]) == 4:
            return "not a PDF file name (*.pdf)"
        return None

    def import_(self, conn: psycopg.Connection[Any], epoch: Path,
                validation: Validation) -> ImportOutcome:
        plan = validation.plan
        source = _locate(epoch)
        if not isinstance(plan, Plan) or source is None:
            raise TypeError("import_ needs the Validation that validate() returned")
        _ensure_contract(conn)
        outcome = ImportOutcome()
        wanted = sorted({p.student_id for p in plan.pdfs})
        known = dict(conn.execute(
            f"SELECT student_id, deleted FROM {STUDENTS} "  # noqa: S608 (a constant name)
            "WHERE student_id = ANY(%s)",
            (wanted,)).fetchall())
        folders = {p.student_id: "/".join(_parts(p.member)[:3]) + "/" for p in plan.pdfs}
        for student in wanted:
            if student not in known:
                outcome.errors.append(source.problem(
                    folders[student], f"student {student!r} does not exist (PDFs are matched "
                    "to existing students; none is created)"))
            elif known[student]:
                outcome.errors.append(source.problem(folders[student],
                                                     f"student {student!r} is deleted"))
        outcome.error_count = len(outcome.errors)
        if outcome.errors:
            return outcome
        if _is_table(conn, DOCUMENTS):
            _copy_pdfs(conn, source, plan, outcome)
        else:
            _insert_pdfs(conn, source, plan, outcome)
        outcome.error_count = len(outcome.errors)
        outcome.files.append(FileCount(source.label, "add", rows=len(plan.pdfs),
                                       added=len(plan.pdfs)))
        return outcome

    def publish(self, epoch: Path) -> Published:
        """Put the epoch's archive into downloads/ as `<name>.zip` with `<name>.zip.sha256`,
        read-only; a rerun finding it already there (the same bytes) only completes it."""
        source = _locate(epoch)
        name = None if source is None else published_name(epoch, source)
        if source is None or name is None:
            # (an OSError, so the run stops and the epoch waits for the next one, as for a
            # full disk: its import committed, only the publication is missing)
            raise FileNotFoundError(f"{epoch.name} holds no archive that can be published")
        return publish_archive(downloads_of(epoch), name, source.write_zip)


# The import's day, in UTC, the same for every row of one import (its transaction's).
_IMPORT_DAY = "(transaction_timestamp() AT TIME ZONE 'UTC')::date"


def _is_table(conn: psycopg.Connection[Any], relation: str) -> bool:
    """A plain or partitioned table (COPY works), not a view a database put in its place."""
    row = conn.execute("SELECT relkind IN ('r', 'p') FROM pg_class WHERE oid = to_regclass(%s)",
                       (relation,)).fetchone()
    return bool(row and row[0])


def _checked_pdfs(source: _Source, plan: Plan,
                  outcome: ImportOutcome) -> Iterator[tuple[Pdf, bytes]]:
    """Each PDF of the plan with its bytes, checked again (a local change since validation is
    an error, never imported)."""
    with source.reading():
        for pdf in plan.pdfs:
            data = source.read(pdf.member)
            problem = pdf_problem(data)
            if problem is not None:
                outcome.errors.append(source.problem(pdf.member, problem))
                continue
            yield pdf, data


def _copy_pdfs(conn: psycopg.Connection[Any], source: _Source, plan: Plan,
               outcome: ImportOutcome) -> None:
    """Binary COPY into the table: the PDFs stream to the server one after the other."""
    day = conn.execute(f"SELECT {_IMPORT_DAY}").fetchone()
    assert day is not None
    with conn.cursor() as cur, cur.copy(
            f"COPY {DOCUMENTS} (student_id, form, start_date, end_date, complete, "
            "file_name, pdf) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["text", "text", "date", "date", "bool", "text", "bytea"])
        for pdf, data in _checked_pdfs(source, plan, outcome):
            copy.write_row((pdf.student_id, FORM, day[0], day[0], True, pdf.file_name, data))


def _insert_pdfs(conn: psycopg.Connection[Any], source: _Source, plan: Plan,
                 outcome: ImportOutcome) -> None:
    """One INSERT per PDF (documents.documents is a view here), pipelined: each goes out
    without waiting for the one before's answer."""
    with conn.pipeline():
        for pdf, data in _checked_pdfs(source, plan, outcome):
            conn.execute(
                f"INSERT INTO {DOCUMENTS} (student_id, form, start_date, end_date, "  # noqa: S608
                f"complete, file_name, pdf) VALUES (%s, %s, {_IMPORT_DAY}, {_IMPORT_DAY}, "
                "true, %s, %s)", (pdf.student_id, FORM, pdf.file_name, data))


def _ensure_contract(conn: psycopg.Connection[Any]) -> None:
    """The documents contract, created inside the caller's transaction when it is missing."""
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL",
                       (DOCUMENTS, STUDENTS)).fetchone()
    if row is None or not row[0]:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (CONTRACT_LOCK_KEY,))
        conn.execute(contract_sql().encode())


class _Hashing(io.RawIOBase):
    """A write-only file that hashes what passes through it (not seekable, so a zip written
    through it is the same bytes whatever the target)."""

    def __init__(self, target: IO[bytes]) -> None:
        self.target = target
        self.digest = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.digest.update(view)
        self.target.write(view)
        return len(view)


def _sha256_of(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with open(fd, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def _remove_leftovers(downloads: Path) -> None:
    """Hidden files of a publication a killed run left in downloads/ (whatever epoch it was
    for: only the processor writes there, one run at a time under its lock)."""
    for entry in downloads.iterdir():
        if entry.name.startswith(publish.BUILDING_PREFIX) and _is_plain(entry, stat.S_IFREG):
            entry.unlink()


def _write_hidden(downloads: Path, name: str,
                  fill: Callable[[IO[bytes]], object]) -> tuple[Path, str]:
    """Write downloads/.incomplete-<name> through fill, fsync it, make it read-only."""
    hidden = downloads / (publish.BUILDING_PREFIX + name)
    fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644)
    with open(fd, "wb") as out:
        hashing = _Hashing(out)
        fill(hashing)  # type: ignore[arg-type]  # (a RawIOBase is a binary file)
        out.flush()
        os.fchmod(out.fileno(), READ_ONLY)
        os.fsync(out.fileno())
    return hidden, hashing.digest.hexdigest()


def publish_archive(downloads: Path, name: str, fill: Callable[[IO[bytes]], object]
                    ) -> Published:
    """Publish downloads/<name> (written by fill into a hidden file first) and its .sha256.

    The `.sha256` goes in first and the zip last, so a zip under its final name always has its
    checksum beside it; both are fsynced before their rename and the directory after. A zip
    already there with the same bytes (a rerun after a crash) is kept; one with other bytes is
    never overwritten (FileExistsError).
    """
    downloads.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(downloads)
    hidden, digest = _write_hidden(downloads, name, fill)
    final = downloads / name
    already = os.path.lexists(final)
    if already and (not _is_plain(final, stat.S_IFREG) or _sha256_of(final) != digest):
        hidden.unlink()
        raise FileExistsError(f"{tree.DOWNLOADS}/{name} already holds another archive; "
                              "the epoch's archive was not published")
    line = f"{digest}  {name}\n".encode()
    checksum = downloads / (name + SHA256_SUFFIX)
    if not (_is_plain(checksum, stat.S_IFREG) and checksum.read_bytes() == line):
        sha_hidden, _ = _write_hidden(downloads, name + SHA256_SUFFIX,
                                      lambda out: out.write(line))
        sha_hidden.replace(checksum)
        publish.fsync_path(downloads, directory=True)
    checkpoint("prior-system archive: checksum published, archive not renamed yet")
    if already:
        hidden.unlink()
    else:
        rename_noreplace(hidden, final)
        publish.fsync_path(downloads, directory=True)
    return Published(f"{tree.DOWNLOADS}/{name}", digest)
