"""Hostile and broken submissions must become clear error rows or flags."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
import zlib
from pathlib import Path

import pytest

from autograder.intake.unpack import (EXTRACTED_NAME, NOTEBOOK_NAME, STUDENT_ID_RE, Intake,
                               discover, intake, student_id_from_name)

SID = "2023-18676"


def notebook_bytes(marker: str = "hello", **overrides) -> bytes:
    nb = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [{"cell_type": "code", "id": "c1", "metadata": {},
                   "execution_count": None, "outputs": [],
                   "source": [f"print('{marker}')"]}],
    }
    nb.update(overrides)
    return json.dumps(nb).encode()


def add_file(tar: tarfile.TarFile, name: str, data: bytes, mtime: float = 1_700_000_000):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = mtime
    tar.addfile(info, io.BytesIO(data))


def make_tar(path: Path, members: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data in members.items():
            add_file(tar, name, data)
    return path


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def graded(result: Intake, marker: str = "hello") -> bool:
    return (result.error is None and result.notebook is not None
            and marker in result.notebook["cells"][0]["source"][0]
            and result.extracted == result.extracted.parent / EXTRACTED_NAME
            and json.loads(result.extracted.read_bytes()) == result.notebook)


@pytest.fixture
def work(tmp_path):
    return tmp_path / "work"


# -- good submissions -------------------------------------------------------

def test_good_tar_gz(tmp_path, work):
    src = make_tar(tmp_path / f"{SID}.tar.gz", {NOTEBOOK_NAME: notebook_bytes()})
    result = intake(src, work)
    assert graded(result)
    assert result.student_id == SID
    assert result.notebook_name == NOTEBOOK_NAME
    assert result.flags == []
    assert len(result.sha256) == 64
    assert sorted(os.listdir(work)) == [EXTRACTED_NAME]


@pytest.mark.parametrize("name", [f"[{SID}].tar.gz", f" [ {SID} ] .tar.gz"])
def test_bracketed_id(tmp_path, work, name):
    src = make_tar(tmp_path / name, {NOTEBOOK_NAME: notebook_bytes()})
    result = intake(src, work)
    assert graded(result) and result.student_id == SID and result.flags == []


def test_tgz_and_plain_tar_and_subfolder(tmp_path, work):
    tgz = make_tar(tmp_path / f"{SID}.tgz", {"hw/" + NOTEBOOK_NAME: notebook_bytes()})
    tar = make_tar(tmp_path / f"{SID}.tar", {NOTEBOOK_NAME: notebook_bytes()}, mode="w")
    for src in (tgz, tar):
        result = intake(src, work)
        assert graded(result) and result.flags == [], result


def test_bare_notebook(tmp_path, work):
    src = tmp_path / f"{SID}.ipynb"
    src.write_bytes(notebook_bytes())
    result = intake(src, work)
    assert graded(result) and result.student_id == SID
    assert result.notebook_name == src.name and result.flags == []


def test_id_from_an_lms_name_and_no_id(tmp_path, work):
    wrapped = make_tar(tmp_path / f"smithjohn_1234_5678_{SID}-1.tar.gz", {NOTEBOOK_NAME: notebook_bytes()})
    result = intake(wrapped, work)
    assert graded(result) and result.student_id == SID
    assert any("read from an LMS download's file name" in f for f in result.flags)

    # A student's own longer name only mentions the ID (tests/test_student_ids.py has the whole rule).
    longer = make_tar(tmp_path / f"{SID}_hw2 (1).tar.gz", {NOTEBOOK_NAME: notebook_bytes()})
    result = intake(longer, work)
    assert graded(result) and result.student_id is None
    assert any(f"mentions {SID} but is not a submission name" in f for f in result.flags)

    nameless = make_tar(tmp_path / "my_homework.tar.gz", {NOTEBOOK_NAME: notebook_bytes()})
    result = intake(nameless, work)
    assert graded(result) and result.student_id is None
    assert "file name holds no valid student ID (YYYY-NNNNN)" in result.flags


def test_student_id_parsing():
    assert student_id_from_name(Path(f"[{SID}].tar.gz")) == SID
    assert student_id_from_name(Path(f"{SID}.ipynb")) == SID
    assert student_id_from_name(Path("2023-186761.tar.gz")) is None
    assert student_id_from_name(Path("23-18676.tar.gz")) is None
    assert STUDENT_ID_RE.match(SID) and not STUDENT_ID_RE.match(SID + "0")


# -- broken archives --------------------------------------------------------

def test_random_bytes_named_tar_gz(tmp_path, work):
    src = tmp_path / f"{SID}.tar.gz"
    src.write_bytes(os.urandom(4096).replace(b"\x1f\x8b", b"xx"))
    result = intake(src, work)
    assert result.error and "not a tar archive" in result.error
    assert result.notebook is None and not work.exists()


def test_zip_named_tar_gz(tmp_path, work):
    src = tmp_path / f"{SID}.tar.gz"
    src.write_bytes(b"PK\x03\x04" + os.urandom(100))
    assert "zip" in intake(src, work).error


def test_empty_tar_and_empty_file(tmp_path, work):
    empty_tar = make_tar(tmp_path / f"{SID}.tar", {}, mode="w")
    assert intake(empty_tar, work).error == "archive is empty"
    empty_file = tmp_path / f"{SID}.tgz"
    empty_file.write_bytes(b"")
    assert intake(empty_file, work).error == "archive is empty"


def test_truncated_gzip(tmp_path, work):
    full = make_tar(tmp_path / "full.tar.gz", {NOTEBOOK_NAME: os.urandom(200_000)})
    src = tmp_path / f"{SID}.tar.gz"
    src.write_bytes(full.read_bytes()[:50_000])
    result = intake(src, work)
    assert result.error and "truncated" in result.error


def test_truncated_after_notebook_still_graded(tmp_path, work):
    full = make_tar(tmp_path / "full.tar.gz",
                    {NOTEBOOK_NAME: notebook_bytes(), "model.pth": os.urandom(300_000)})
    src = tmp_path / f"{SID}.tar.gz"
    src.write_bytes(full.read_bytes()[:150_000])
    result = intake(src, work)
    assert graded(result)
    assert any("truncated" in f for f in result.flags)


def test_corrupt_gzip(tmp_path, work):
    src = tmp_path / f"{SID}.tar.gz"
    raw = bytearray(make_tar(tmp_path / "ok.tar.gz", {NOTEBOOK_NAME: notebook_bytes() * 50})
                    .read_bytes())
    raw[30:60] = b"\xff" * 30
    src.write_bytes(bytes(raw))
    result = intake(src, work)
    assert result.error and ("corrupt gzip" in result.error or "not a tar" in result.error)


# -- bad notebooks ----------------------------------------------------------

@pytest.mark.parametrize("payload, reason", [
    (b"{ this is not json", "not valid JSON"),
    (notebook_bytes(nbformat=3), "need nbformat 4"),
    (json.dumps({"nbformat": 4, "metadata": {}}).encode(), "no list of cells"),
    (notebook_bytes(cells=[]), "no cells"),
    (b"[1, 2, 3]", "not a JSON object"),
])
def test_bad_notebooks(tmp_path, work, payload, reason):
    src = make_tar(tmp_path / f"{SID}.tar.gz", {NOTEBOOK_NAME: payload})
    result = intake(src, work)
    assert result.error and reason in result.error
    assert result.notebook is None and not (work / EXTRACTED_NAME).exists()


def test_odd_but_gradable_notebook_is_only_flagged(tmp_path, work):
    nb = json.loads(notebook_bytes())
    del nb["cells"][0]["metadata"]
    nb["cells"].append({"cell_type": "widget", "source": "", "metadata": {}})
    src = tmp_path / f"{SID}.ipynb"
    src.write_text(json.dumps(nb))
    result = intake(src, work)
    assert result.error is None and result.notebook == nb
    assert any("unknown type (ignored): widget" in f for f in result.flags)


def test_malformed_cell(tmp_path, work):
    src = make_tar(tmp_path / f"{SID}.tar.gz",
                   {NOTEBOOK_NAME: notebook_bytes(cells=[{"cell_type": "code", "source": 42}])})
    assert intake(src, work).error == "notebook cell 1 is malformed"


# -- notebook choice --------------------------------------------------------

def test_wrong_notebook_name_is_flagged(tmp_path, work):
    src = make_tar(tmp_path / f"{SID}.tar.gz", {"transformer.ipynb": notebook_bytes()})
    result = intake(src, work)
    assert graded(result) and result.notebook_name == "transformer.ipynb"
    assert any("notebook name is not" in f for f in result.flags)


def test_several_candidates_best_chosen(tmp_path, work):
    src = make_tar(tmp_path / f"{SID}.tar.gz", {
        "other.ipynb": notebook_bytes("other"),
        ".ipynb_checkpoints/" + NOTEBOOK_NAME: notebook_bytes("checkpoint"),
        "Assignment2-1_copy.ipynb": notebook_bytes("copy"),
        "._" + NOTEBOOK_NAME: b"\x00\x05\x16\x07 mac resource fork",
        "sub/" + NOTEBOOK_NAME: notebook_bytes("the real one"),
        "model.pth": b"weights",
    })
    result = intake(src, work)
    assert graded(result, "the real one")
    assert result.notebook_name == "sub/" + NOTEBOOK_NAME
    assert any(f.startswith("several candidate notebooks: picked sub/") for f in result.flags)


def test_other_parts_notebooks_and_weights_are_no_rival(tmp_path, work):
    """The course folder as CollectSubmission.sh packs it: this part, the ViT part, weight files."""
    src = make_tar(tmp_path / f"{SID}.tar.gz", {
        "Assignment2-2_ViT.ipynb": notebook_bytes("vit"),
        NOTEBOOK_NAME: notebook_bytes("the real one"),
        ".ipynb_checkpoints/Assignment2-2_ViT-checkpoint.ipynb": notebook_bytes("vit checkpoint"),
        "vit_best.pth": b"weights",
        "transformer.pth": b"weights",
    })
    result = intake(src, work)
    assert graded(result, "the real one")
    assert result.flags == []


def test_a_real_rival_is_flagged_and_other_parts_are_not_listed(tmp_path, work):
    src = make_tar(tmp_path / f"{SID}.tar.gz", {
        "Assignment2-2_ViT.ipynb": notebook_bytes("vit"),
        "Assignment2-1_old.ipynb": notebook_bytes("old"),
        NOTEBOOK_NAME: notebook_bytes("the real one"),
    })
    result = intake(src, work)
    assert graded(result, "the real one")
    assert result.flags == [f"several candidate notebooks: picked {NOTEBOOK_NAME} (others: Assignment2-1_old.ipynb)"]


def test_another_parts_notebook_alone_is_graded_last_with_the_name_flag(tmp_path, work):
    src = make_tar(tmp_path / f"{SID}.tar.gz", {"Assignment2-2_ViT.ipynb": notebook_bytes("vit"),
                                               "notes.ipynb": notebook_bytes("notes")})
    result = intake(src, work)
    assert graded(result, "notes")
    assert result.flags == [f"notebook name is not {NOTEBOOK_NAME}: graded notes.ipynb"]


def test_prefix_match_beats_generic(tmp_path, work):
    src = make_tar(tmp_path / f"{SID}.tar.gz", {
        "notes.ipynb": notebook_bytes("notes"),
        "Assignment2-1_Transformer_from_scratch (1).ipynb": notebook_bytes("prefixed"),
    })
    assert graded(intake(src, work), "prefixed")


def test_no_notebook(tmp_path, work):
    src = make_tar(tmp_path / f"{SID}.tar.gz", {"readme.txt": b"hi", "model.pth": b"w"})
    result = intake(src, work)
    assert result.error.startswith("no Assignment2-1 notebook in the archive (found: ")
    assert "readme.txt" in result.error


# -- escapes and links ------------------------------------------------------

def test_path_traversal_members(tmp_path):
    box = tmp_path / "box"
    work = box / "work"
    box.mkdir()
    src = make_tar(box / f"{SID}.tar.gz", {"../evil.ipynb": notebook_bytes("evil"),
                                           "/abs/evil.ipynb": notebook_bytes("evil")})
    before = snapshot(tmp_path)
    result = intake(src, work)
    assert result.error and "escapes the work directory" in result.error
    assert snapshot(tmp_path) - before <= {"box/work"}
    assert not Path("/abs/evil.ipynb").exists()

    # With a legitimate notebook beside them the escapes are only flagged.
    src2 = make_tar(box / f"{SID}.tgz", {"../evil.ipynb": notebook_bytes("evil"),
                                         NOTEBOOK_NAME: notebook_bytes()})
    result = intake(src2, work)
    assert graded(result)
    assert any("escapes the work directory: ../evil.ipynb" in f for f in result.flags)
    assert snapshot(tmp_path) - before <= {"box/work", f"box/work/{EXTRACTED_NAME}",
                                           f"box/{SID}.tgz"}


def test_symlink_and_hardlink_members(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    work = tmp_path / "work"
    src = tmp_path / f"{SID}.tar.gz"
    with tarfile.open(src, "w:gz") as tar:
        for kind, target in ((tarfile.SYMTYPE, str(secret)), (tarfile.LNKTYPE, str(secret))):
            info = tarfile.TarInfo(NOTEBOOK_NAME if kind == tarfile.SYMTYPE else "hard.ipynb")
            info.type, info.linkname = kind, target
            tar.addfile(info)
    before = snapshot(tmp_path)
    result = intake(src, work)
    assert result.error and "symlink" in result.error
    assert any("skipped hardlink member: hard.ipynb" in f for f in result.flags)
    assert snapshot(tmp_path) - before <= {"work"}
    assert secret.read_text() == "top secret"


# -- size caps --------------------------------------------------------------

def gzip_of_zeros_tar(path: Path, name: str, size: int) -> Path:
    """A tar.gz whose single member inflates to `size` zero bytes, streamed
    so that building it never holds the payload in memory."""
    info = tarfile.TarInfo(name)
    info.size = size
    with gzip.open(path, "wb", compresslevel=1) as gz:
        gz.write(info.tobuf(format=tarfile.GNU_FORMAT))
        block = bytes(4 * 2**20)
        for start in range(0, size, len(block)):
            gz.write(block[: min(len(block), size - start)])
    return path


def test_tar_bomb_member_over_cap(tmp_path, work):
    src = gzip_of_zeros_tar(tmp_path / f"{SID}.tar.gz", NOTEBOOK_NAME, 12 * 2**20)
    result = intake(src, work, max_member_bytes=2**20)
    assert result.error == f"member {NOTEBOOK_NAME} larger than 1 MB"


def test_gzip_that_inflates_past_total_cap(tmp_path, work):
    src = gzip_of_zeros_tar(tmp_path / f"{SID}.tar.gz", "zeros.bin", 12 * 2**20)
    result = intake(src, work, max_total_bytes=2**20)
    assert result.error and "larger than 1 MB uncompressed" in result.error


def test_lying_header_is_not_trusted(tmp_path, work):
    """A member header declaring 8 GB over a tiny compressed body: the size
    alone must decide, without trying to inflate or allocate anything."""
    info = tarfile.TarInfo(NOTEBOOK_NAME)
    info.size = 8 * 2**30
    src = tmp_path / f"{SID}.tar.gz"
    src.write_bytes(gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT) + bytes(1024)))
    result = intake(src, work)
    assert result.error == f"member {NOTEBOOK_NAME} larger than 50 MB"


def test_pax_header_bomb(tmp_path, work):
    # A pax record's length field is read in one go by tarfile; a 1 GB claim
    # must be refused before any allocation.
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = 2**30
    src = tmp_path / f"{SID}.tar"
    src.write_bytes(header.tobuf(format=tarfile.USTAR_FORMAT) + bytes(4096))
    result = intake(src, work)
    assert result.error and result.notebook is None


def test_too_many_members(tmp_path, work):
    src = make_tar(tmp_path / f"{SID}.tar.gz",
                   {f"f{i}.txt": b"x" for i in range(30)} | {NOTEBOOK_NAME: notebook_bytes()})
    result = intake(src, work, max_members=10)
    assert result.error == "archive has more than 10 members"


def test_oversized_bare_notebook(tmp_path, work):
    src = tmp_path / f"{SID}.ipynb"
    src.write_bytes(notebook_bytes("x" * 4096))
    assert "larger than" in intake(src, work, max_member_bytes=1024).error


# -- odd inputs -------------------------------------------------------------

def test_missing_and_wrong_kind_files(tmp_path, work):
    assert intake(tmp_path / f"{SID}.tar.gz", work).error == "file not found"
    other = tmp_path / f"{SID}.zip"
    other.write_bytes(b"PK")
    assert "not a submission file" in intake(other, work).error
    fifo = tmp_path / f"{SID}.ipynb"
    os.mkfifo(fifo)
    assert intake(fifo, work).error == "not a regular file"


def test_planted_symlink_in_workdir_is_replaced(tmp_path, work):
    work.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (work / EXTRACTED_NAME).symlink_to(victim)
    src = make_tar(tmp_path / f"{SID}.tar.gz", {NOTEBOOK_NAME: notebook_bytes()})
    assert graded(intake(src, work))
    assert victim.read_text() == "keep" and not (work / EXTRACTED_NAME).is_symlink()


def test_discover(tmp_path):
    subs = tmp_path / "subs"
    subs.mkdir()
    for name in (f"{SID}.tar.gz", "2023-00001.tgz", "2023-00002.tar", "2023-00003.ipynb",
                 "notes.txt", "._2023-00004.tar.gz", "b.TAR.GZ"):
        (subs / name).write_bytes(b"x")
    (subs / "nested").mkdir()
    (subs / "nested" / "2023-00005.tar.gz").write_bytes(b"x")
    explicit = tmp_path / "odd.zip"
    explicit.write_bytes(b"x")
    found = discover([subs, explicit, subs / f"{SID}.tar.gz", subs])
    assert [p.name for p in found] == [
        "odd.zip", "2023-00001.tgz", "2023-00002.tar", "2023-00003.ipynb", f"{SID}.tar.gz",
        "b.TAR.GZ"]
    assert found == sorted(found, key=str)


def test_crc_damage_is_an_error_not_a_crash(tmp_path, work):
    body = zlib.compress(b"garbage")
    src = tmp_path / f"{SID}.tar.gz"
    src.write_bytes(b"\x1f\x8b\x08\x00" + bytes(6) + body)
    result = intake(src, work)
    assert result.error and result.notebook is None
