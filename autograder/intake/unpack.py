"""Safe intake of one student submission (a tar archive or a bare notebook).

Everything a student uploads is hostile until proven otherwise, so this module
never extracts an archive: it walks the members itself, reads only the one
notebook it needs through size-capped reads, and writes that single file under
a fixed name inside the work directory. Every problem ends up as a reason in
``Intake.error`` (a zero-score row) or a note in ``Intake.flags``; ``intake``
does not raise for bad input.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import json
import lzma
import os
import posixpath
import re
import stat
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from autograder.intake import student_ids
from autograder.assignment import NOTEBOOK
from autograder.intake.student_ids import STUDENT_ID_RE, SUBMISSION_SUFFIXES  # noqa: F401 (part of this module's interface)

NOTEBOOK_NAME = NOTEBOOK
EXTRACTED_NAME = "submission.ipynb"
# The handout has 31 cells. Cells past this many are dropped at intake, before anything downstream (the code
# extraction, nbgrader's checksums of locked cells) spends time and memory per cell; a class defined in a
# dropped cell is "not defined", so only its part scores 0.
MAX_CELLS = 1000
# Each JSON object or list costs the judge about 70 bytes once parsed: 46 MB of "{}," became 1.1 GB. Counting
# "{" and "[" in the raw bytes (strings included, so an over-count) bounds that before parsing; the handout
# has about 200 (outputs add few: a text output is one list of lines, an image one base64 string).
MAX_JSON_CONTAINERS = 1_000_000

MiB = 2**20
_NOTEBOOK_PREFIX = "assignment2-1"
_ASSIGNMENT_PREFIX = re.compile(r"assignment[0-9]+-[0-9]+")
_CHUNK = 64 * 1024
# Legitimate tar headers (including pax and GNU long-name records) are tiny;
# a larger single read can only come from a header lying about its size.
_MAX_HEADER_READ = MiB
# Tar headers and padding sit on top of the declared member sizes.
_HEADER_SLACK = 4 * MiB
_TAR_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


class IntakeError(Exception):
    """A submission that cannot be graded; ``reason`` goes to the gradebook."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _OverBudget(Exception):
    """The decompressed archive grew past the total-size cap."""


@dataclass
class Intake:
    student_id: str | None
    source: Path
    sha256: str
    notebook: dict | None
    notebook_name: str | None
    flags: list[str] = field(default_factory=list)
    error: str | None = None
    extracted: Path | None = None  # workdir/EXTRACTED_NAME once written


def discover(paths: list[Path]) -> list[Path]:
    """Expand directories one level deep; explicit files are always kept."""
    found: dict[Path, Path] = {}
    for path in map(Path, paths):
        if path.is_dir():
            for child in path.iterdir():
                # Dot files are editor/OS litter such as macOS "._x.tar.gz".
                if (not child.name.startswith(".") and child.is_file()
                        and child.name.lower().endswith(SUBMISSION_SUFFIXES)):
                    found.setdefault(child.resolve(), child)
        else:
            # Kept even when missing or oddly named: it earns an error row.
            found.setdefault(path.resolve(), path)
    return sorted(found.values(), key=str)


def student_id_from_name(path: Path) -> str | None:
    """The row a file belongs to: student_ids.py says which names count."""
    return student_ids.read(Path(path).name)[0]


def _show(name: str, limit: int = 120) -> str:
    """Member names are attacker-chosen: keep them printable and short."""
    clean = "".join(c if c.isprintable() else "?" for c in name)
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


def _mb(nbytes: int) -> str:
    return f"{nbytes / MiB:g} MB" if nbytes >= MiB else f"{nbytes} bytes"


def intake(path: Path, workdir: Path, *, max_member_bytes: int = 50 * MiB,
           max_total_bytes: int = 200 * MiB, max_members: int = 200) -> Intake:
    path = Path(path)
    workdir = Path(workdir)
    sid, note = student_ids.read(path.name)
    result = Intake(student_id=sid, source=path, sha256="", notebook=None,
                    notebook_name=None)
    if note:
        result.flags.append(note)
    try:
        result.sha256 = _hash_regular_file(path)
        lower = path.name.lower()
        if lower.endswith(".ipynb"):
            with open(path, "rb") as fh:
                name, data = path.name, _read_capped(fh, max_member_bytes)
            if data is None:
                raise IntakeError(f"notebook larger than {_mb(max_member_bytes)}")
        elif lower.endswith(_TAR_ARCHIVE_SUFFIXES):
            name, data = _notebook_from_archive(
                path, result.flags, max_member_bytes=max_member_bytes,
                max_total_bytes=max_total_bytes, max_members=max_members)
        else:
            raise IntakeError("not a submission file (expected "
                              + ", ".join(SUBMISSION_SUFFIXES) + ")")
        notebook = _parse_notebook(data, result.flags)
        # A bare notebook is named after the student by design.
        if posixpath.basename(name) != NOTEBOOK_NAME and name != path.name:
            result.flags.append(f"notebook name is not {NOTEBOOK_NAME}: "
                                f"graded {_show(name)}")
        result.extracted = _write_notebook(workdir, data)
        result.notebook, result.notebook_name = notebook, name
    except IntakeError as exc:
        result.error = exc.reason
    except OSError as exc:
        # Our own side (unreadable source, unwritable workdir) rather than
        # the student's bytes, but it still must not abort a whole batch.
        result.error = f"could not read or store the submission: {exc.strerror or exc}"
    except Exception as exc:
        # A parser corner case we did not foresee: one zero row beats a
        # crashed batch, and the type name helps whoever investigates.
        result.error = (f"could not unpack the submission "
                        f"({type(exc).__name__}: {_show(str(exc), 80)})")
    if result.error:
        result.notebook = result.notebook_name = result.extracted = None
    return result


def _hash_regular_file(path: Path) -> str:
    if not path.exists():
        raise IntakeError("file not found")
    # A FIFO or device would block or never end when hashed.
    if not stat.S_ISREG(path.stat().st_mode):
        raise IntakeError("not a regular file")
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(MiB), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_capped(stream, cap: int) -> bytes | None:
    """Read at most cap bytes; None if the stream holds more than that."""
    parts, total = [], 0
    while True:
        chunk = stream.read(min(_CHUNK, cap + 1 - total))
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        total += len(chunk)
        if total > cap:
            return None


def _write_notebook(workdir: Path, data: bytes) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    target = workdir / EXTRACTED_NAME
    # The work directory may be reused as a sandbox scratch dir, where a
    # previous run could have planted a symlink under our fixed name.
    if target.is_symlink() or target.exists():
        target.unlink()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return target


def _parse_notebook(data: bytes, flags: list[str]) -> dict:
    """Structural checks only: nbformat.validate would be stricter than
    grading needs, and importing nbformat costs seconds (its jsonschema
    format checkers build a grammar at import time)."""
    if data.count(b"{") + data.count(b"[") > MAX_JSON_CONTAINERS:
        raise IntakeError(f"notebook has more than {MAX_JSON_CONTAINERS:,} JSON objects and lists; not read")
    try:
        nb = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise IntakeError(f"notebook is not valid JSON ({_show(str(exc), 80)})") from None
    if not isinstance(nb, dict):
        raise IntakeError("notebook is not a JSON object")
    version = nb.get("nbformat")
    if version != 4 or isinstance(version, bool):
        shown = "missing" if version is None else _show(repr(version), 20)
        raise IntakeError(f"notebook format is {shown}, need nbformat 4")
    cells = nb.get("cells")
    if not isinstance(cells, list):
        raise IntakeError("notebook has no list of cells")
    if not cells:
        raise IntakeError("notebook has no cells")
    if len(cells) > MAX_CELLS:
        flags.append(f"notebook has {len(cells):,} cells, more than the {MAX_CELLS:,} read; "
                     f"cells from cell {MAX_CELLS} on were not read")
        del cells[MAX_CELLS:]
    for number, cell in enumerate(cells, 1):
        if not _cell_is_usable(cell):
            raise IntakeError(f"notebook cell {number} is malformed")
    odd = sorted({c["cell_type"] for c in cells} - {"code", "markdown", "raw"})
    if odd:
        flags.append("notebook has cells of unknown type (ignored): "
                     + ", ".join(_show(t, 30) for t in odd))
    return nb


def _cell_is_usable(cell) -> bool:
    if not isinstance(cell, dict) or not isinstance(cell.get("cell_type"), str):
        return False
    source = cell.get("source", "")
    return isinstance(source, str) or (
        isinstance(source, list) and all(isinstance(line, str) for line in source))


class _CappedStream:
    """Forward-only view of a decompressed stream with a hard byte budget.

    tarfile reads pax/long-name headers in one read of their declared size
    and skips members by seeking; routing both through here bounds memory and
    decompression work no matter what the headers claim.
    """

    def __init__(self, inner, budget: int):
        self._inner = inner
        self._budget = budget
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size > _MAX_HEADER_READ:
            raise IntakeError("archive has a header that claims an absurd size")
        if self._pos + size > self._budget:
            raise _OverBudget
        parts, want = [], size
        while want:
            chunk = self._inner.read(want)
            if not chunk:
                break
            parts.append(chunk)
            want -= len(chunk)
        data = b"".join(parts)
        self._pos += len(data)
        return data

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        target = {0: offset, 1: self._pos + offset}.get(whence)
        if target is None or target < self._pos:
            raise OSError("backward seek in a streamed archive")
        if target > self._budget:
            raise _OverBudget
        while self._pos < target:
            chunk = self._inner.read(min(_CHUNK, target - self._pos))
            if not chunk:
                break
            self._pos += len(chunk)
        return self._pos


_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz",
          b"PK\x03\x04": "zip", b"PK\x05\x06": "zip"}


def _sniff(head: bytes) -> str:
    return next((kind for magic, kind in _MAGIC.items() if head.startswith(magic)), "plain")


@contextlib.contextmanager
def _open_tar(path: Path, budget: int):
    """Yield (TarFile, compression); every pass streams front to back."""
    with open(path, "rb") as raw:
        kind = _sniff(raw.read(8))
        raw.seek(0)
        if kind == "zip":
            raise IntakeError("not a tar archive (it is a zip file)")
        openers = {"gzip": gzip.GzipFile, "bzip2": bz2.BZ2File, "xz": lzma.LZMAFile}
        inner = openers[kind](fileobj=raw) if kind in openers else raw
        with contextlib.closing(inner):
            # The TarFile constructor already reads the first header, so
            # errors surface here as well as while iterating.
            yield tarfile.TarFile(fileobj=_CappedStream(inner, budget), mode="r"), kind


def _damage_reason(exc: BaseException, kind: str, seen_members: int) -> str:
    text = _show(str(exc), 100)
    if isinstance(exc, EOFError) or "unexpected end" in text:
        return f"archive is truncated ({text})"
    if isinstance(exc, (zlib.error, gzip.BadGzipFile)) or text.startswith("zlib error"):
        return f"corrupt gzip data ({text})"
    if isinstance(exc, (lzma.LZMAError, OSError)) and kind in ("bzip2", "xz"):
        return f"corrupt {kind} data ({text})"
    if seen_members == 0:
        if text == "empty file":
            return "archive is empty"
        return "not a tar archive" + (f" ({kind}-compressed data, but no tar inside)"
                                      if kind != "plain" else "")
    return f"archive is damaged ({text})"


_READ_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError,
                ValueError)


@dataclass
class _Member:
    index: int
    name: str
    size: int
    mtime: float


def _notebook_from_archive(path: Path, flags: list[str], *, max_member_bytes: int,
                           max_total_bytes: int, max_members: int) -> tuple[str, bytes]:
    budget = max_total_bytes + _HEADER_SLACK
    candidates, listing, refused, trouble = _scan(path, budget, flags, max_members)
    if not candidates:
        if refused:
            raise IntakeError(refused[0])
        if trouble:
            raise IntakeError(trouble)
        shown = ", ".join(_show(n, 60) for n in listing[:8]) or "nothing"
        if len(listing) > 8:
            shown += f", and {len(listing) - 8} more"
        raise IntakeError(f"no Assignment2-1 notebook in the archive (found: {shown})")
    ranked = sorted(candidates, key=_rank)
    chosen = ranked[0]
    # The course folder also holds the other parts' notebooks (Assignment2-2_ViT.ipynb), which
    # CollectSubmission.sh packs on purpose: they are no rival for this one.
    rivals = [m for m in ranked[1:] if not _other_assignment(m)]
    if rivals:
        others = ", ".join(_show(m.name, 60) for m in rivals[:3])
        more = f" and {len(rivals) - 3} more" if len(rivals) > 3 else ""
        flags.append(f"several candidate notebooks: picked {_show(chosen.name)} "
                     f"(others: {others}{more})")
    if chosen.size > max_member_bytes:
        raise IntakeError(f"member {_show(chosen.name)} larger than {_mb(max_member_bytes)}")
    data = _read_member(path, budget, chosen, max_member_bytes)
    if trouble:
        flags.append(f"{trouble}; graded the notebook read before that point")
    return chosen.name, data


def _scan(path: Path, budget: int, flags: list[str], max_members: int):
    """First pass: list members without reading any contents.

    Returns the notebook candidates, all usable member names, reasons for
    refused notebook-like members, and what stopped the scan early (if any).
    """
    candidates: list[_Member] = []
    listing: list[str] = []
    refused: list[str] = []
    trouble, seen, kind = None, 0, "plain"
    try:
        with _open_tar(path, budget) as (tar, kind):
            if kind == "plain" and path.name.lower().endswith((".tar.gz", ".tgz")):
                flags.append("archive is not gzip-compressed despite its name")
            while (member := tar.next()) is not None:
                seen += 1
                if seen > max_members:
                    raise IntakeError(f"archive has more than {max_members} members")
                _classify(member, seen - 1, candidates, listing, refused, flags)
    except _OverBudget:
        trouble = f"archive larger than {_mb(budget - _HEADER_SLACK)} uncompressed"
    except _READ_ERRORS as exc:
        trouble = _damage_reason(exc, kind, seen)
    if seen == 0:
        raise IntakeError(trouble or "archive is empty")
    return candidates, listing, refused, trouble


def _unsafe_name(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return (name.startswith(("/", "\\")) or ".." in parts
            or re.match(r"[A-Za-z]:", name) is not None)


def _classify(member: tarfile.TarInfo, index: int, candidates, listing, refused,
              flags) -> None:
    name = member.name
    while name.startswith("./"):
        name = name[2:]
    if not name or name == ".":
        return
    is_notebook = name.lower().endswith(".ipynb")
    base = posixpath.basename(name.rstrip("/"))
    if _unsafe_name(name):
        reason = f"archive member escapes the work directory: {_show(name)}"
        flags.append(reason + " (skipped)")
        if is_notebook:
            refused.append(reason)
        return
    if member.isdir():
        return
    if not member.isreg():
        kind = ("symlink" if member.issym() else "hardlink" if member.islnk()
                else "device" if member.isdev() else "special")
        target = f" -> {_show(member.linkname, 60)}" if member.linkname else ""
        flags.append(f"skipped {kind} member: {_show(name)}{target}")
        if is_notebook:
            refused.append(f"the notebook {_show(name)} is a {kind}, not a regular file")
        return
    # macOS resource forks look like notebooks by name but are binary junk.
    if base.startswith("._") or "__MACOSX" in name.split("/"):
        return
    listing.append(name)
    if is_notebook:
        candidates.append(_Member(index, name, member.size, member.mtime))


def _other_assignment(member: _Member) -> bool:
    """A notebook of another part of the course, by its name (Assignment2-2_ViT.ipynb)."""
    match = _ASSIGNMENT_PREFIX.match(posixpath.basename(member.name).lower())
    return match is not None and match.group(0) != _NOTEBOOK_PREFIX


def _rank(member: _Member):
    parts = member.name.split("/")
    base = parts[-1]
    in_checkpoints = ".ipynb_checkpoints" in parts[:-1]
    if _other_assignment(member):
        tier = 4  # graded only when nothing else is there, and then the name flag says so
    elif in_checkpoints:
        tier = 3
    elif base == NOTEBOOK_NAME:
        tier = 0
    elif base.lower().startswith(_NOTEBOOK_PREFIX):
        tier = 1
    else:
        tier = 2
    # Then shallowest, then most recently modified, then name for stability.
    return (tier, len(parts), -member.mtime, member.name, -member.index)


def _read_member(path: Path, budget: int, chosen: _Member, cap: int) -> bytes:
    """Second pass: stream up to the chosen member and read it capped."""
    kind = "plain"
    try:
        with _open_tar(path, budget) as (tar, kind):
            for _ in range(chosen.index + 1):
                member = tar.next()
                if member is None:
                    raise IntakeError("archive changed while it was being read")
            data = _read_capped(tar.extractfile(member), cap)
    except _OverBudget:
        raise IntakeError(f"archive larger than {_mb(budget - _HEADER_SLACK)} "
                          "uncompressed") from None
    except _READ_ERRORS as exc:
        reason = _damage_reason(exc, kind, 1)
        raise IntakeError(f"{reason} inside {_show(chosen.name)}") from None
    if data is None:
        raise IntakeError(f"member {_show(chosen.name)} larger than {_mb(cap)}")
    return data
