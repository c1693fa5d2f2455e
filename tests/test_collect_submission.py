"""Behaviour of CollectSubmission.sh, exercised with real bash and real tar."""
import hashlib
import re
import subprocess
import tarfile
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

SCRIPT = Path(__file__).resolve().parents[1] / "CollectSubmission.sh"
PART1 = "Assignment2-1_Transformer_from_scratch.ipynb"
SID = "2023-18676"


def make_notebook(path, *, outputs=True, stub=False):
    source = 'raise NotImplementedError("Implement attention")' if stub else "x = 1 + 1\nprint(x)"
    cell = new_code_cell(source, execution_count=1 if outputs else None)
    if outputs:
        cell.outputs = [new_output("stream", name="stdout", text="2\n")]
    nb = new_notebook(cells=[new_markdown_cell("# Part"), cell])
    nbformat.write(nb, str(path))
    return path


def run(cwd, *args):
    return subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=30
    )


def members(path):
    with tarfile.open(path, "r:gz") as tar:
        return sorted(tar.getnames())


@pytest.fixture
def workdir(tmp_path):
    make_notebook(tmp_path / PART1)
    return tmp_path


def test_good_id_creates_archive_with_part1_notebook(workdir):
    result = run(workdir, SID)
    assert result.returncode == 0, result.stderr
    assert members(workdir / f"{SID}.tar.gz") == [PART1]


@pytest.mark.parametrize("raw", ["[2023-18676]", "  [2023-18676]  ", " 2023-18676\t"])
def test_bracketed_or_padded_id_is_accepted(workdir, raw):
    result = run(workdir, raw)
    assert result.returncode == 0, result.stderr
    assert (workdir / f"{SID}.tar.gz").is_file()


@pytest.mark.parametrize("args", [["2023-1867"], ["abc"], [""], [], ["2023-18676", "extra"]])
def test_bad_id_exits_2_with_usage_and_no_archive(workdir, args):
    result = run(workdir, *args)
    assert result.returncode == 2
    assert "Usage" in result.stderr
    assert not list(workdir.glob("*.tar.gz"))


def test_missing_required_notebook_fails_without_archive(tmp_path):
    make_notebook(tmp_path / "Assignment2-2_ViT.ipynb")
    result = run(tmp_path, SID)
    assert result.returncode != 0
    assert PART1 in result.stderr
    assert not list(tmp_path.glob("*.tar.gz"))


def test_notebook_without_outputs_warns_but_is_packed(tmp_path):
    make_notebook(tmp_path / PART1, outputs=False)
    result = run(tmp_path, SID)
    assert result.returncode == 0, result.stderr
    assert "WARNING" in result.stderr and "NO cell outputs" in result.stderr
    assert members(tmp_path / f"{SID}.tar.gz") == [PART1]


def test_remaining_todo_stub_warns_but_succeeds(tmp_path):
    make_notebook(tmp_path / PART1, stub=True)
    result = run(tmp_path, SID)
    assert result.returncode == 0, result.stderr
    assert "WARNING" in result.stderr and "NotImplementedError" in result.stderr
    assert members(tmp_path / f"{SID}.tar.gz") == [PART1]


def test_complete_notebook_gives_no_warning(workdir):
    result = run(workdir, SID)
    assert "WARNING" not in result.stderr
    assert "All checks passed" in result.stdout


@pytest.mark.parametrize(
    "content", ['{"cells": [', '{"nbformat": 3, "cells": []}', '{"nbformat": 4, "cells": {}}']
)
def test_invalid_notebook_fails_without_archive(tmp_path, content):
    (tmp_path / PART1).write_text(content)
    result = run(tmp_path, SID)
    assert result.returncode != 0
    assert PART1 in result.stderr
    assert not list(tmp_path.glob("*.tar.gz"))


@pytest.mark.parametrize("found", [f"Copy of {PART1}", PART1.replace(".ipynb", " (1).ipynb")])
def test_renamed_notebook_is_named_with_the_command_that_fixes_it(tmp_path, found):
    make_notebook(tmp_path / found)
    make_notebook(tmp_path / "Assignment2-2_ViT.ipynb")
    result = run(tmp_path, SID)
    assert result.returncode == 1
    assert f"'{PART1}' was not found in {tmp_path}, but this folder has:\n         {found}\n" in result.stderr
    assert f'Colab:  !mv "{found}" "{PART1}"' in result.stderr
    assert f'Local:  mv "{found}" "{PART1}"' in result.stderr
    assert not list(tmp_path.glob("*.tar.gz"))
    # The command it prints works.
    subprocess.run(["mv", found, PART1], cwd=tmp_path, check=True)
    assert run(tmp_path, SID).returncode == 0


def test_several_renamed_copies_are_all_listed(tmp_path):
    copies = [f"Copy of {PART1}", PART1.replace(".ipynb", " (1).ipynb")]
    for name in copies:
        make_notebook(tmp_path / name)
    result = run(tmp_path, SID)
    assert result.returncode == 1
    assert "".join(f"         {name}\n" for name in sorted(copies)) in result.stderr
    assert f'mv "<the notebook you worked in>" "{PART1}"' in result.stderr


def test_no_similar_notebook_says_where_colab_puts_copies(tmp_path):
    make_notebook(tmp_path / "Assignment2-2_ViT.ipynb")
    result = run(tmp_path, SID)
    assert result.returncode == 1
    assert "but this folder has" not in result.stderr
    assert "'Colab Notebooks' as 'Copy of ...'" in result.stderr


def test_the_course_folder_packs_into_an_archive_the_grader_takes_without_flags(workdir, tmp_path_factory):
    """The seed's layout: this part, the ViT part and weight files, packed together on purpose."""
    from autograder.intake.unpack import intake
    make_notebook(workdir / "Assignment2-2_ViT.ipynb")
    (workdir / "vit_best.pth").write_bytes(b"\x00weights")
    assert run(workdir, SID).returncode == 0
    result = intake(workdir / f"{SID}.tar.gz", tmp_path_factory.mktemp("intake"))
    assert result.error is None and result.notebook_name == PART1
    assert result.flags == []


def test_invalid_optional_notebook_also_fails(workdir):
    (workdir / "Assignment2-2_ViT.ipynb").write_text("not json")
    result = run(workdir, SID)
    assert result.returncode != 0
    assert not list(workdir.glob("*.tar.gz"))


def test_optional_files_are_packed_and_unrelated_files_are_not(workdir):
    make_notebook(workdir / "Assignment2-2_ViT.ipynb")
    (workdir / "vit.pth").write_bytes(b"\x00weights")
    (workdir / "notes.txt").write_text("scratch")
    (workdir / "data").mkdir()
    (workdir / "data" / "other.pth").write_bytes(b"nested")
    result = run(workdir, SID)
    assert result.returncode == 0, result.stderr
    assert members(workdir / f"{SID}.tar.gz") == sorted(
        [PART1, "Assignment2-2_ViT.ipynb", "vit.pth"]
    )


def test_archive_members_sit_at_root_as_regular_files(workdir):
    (workdir / "vit_amp.pth").write_bytes(b"w")
    run(workdir, SID)
    with tarfile.open(workdir / f"{SID}.tar.gz", "r:gz") as tar:
        infos = tar.getmembers()
    assert infos and all("/" not in m.name and m.isfile() for m in infos)


def test_packed_contents_match_the_originals(workdir):
    (workdir / "vit.pth").write_bytes(bytes(range(256)))
    run(workdir, SID)
    with tarfile.open(workdir / f"{SID}.tar.gz", "r:gz") as tar:
        for name in (PART1, "vit.pth"):
            assert tar.extractfile(name).read() == (workdir / name).read_bytes()


def test_printed_sha256_matches_archive_and_files_are_listed(workdir):
    (workdir / "vit.pth").write_bytes(b"w")
    result = run(workdir, SID)
    digest = hashlib.sha256((workdir / f"{SID}.tar.gz").read_bytes()).hexdigest()
    match = re.search(r"SHA-256:\s*([0-9a-f]{64})", result.stdout)
    assert match and match.group(1) == digest
    assert PART1 in result.stdout and "vit.pth" in result.stdout


def test_rerun_replaces_archive_says_so_and_never_packs_itself(workdir):
    archive = workdir / f"{SID}.tar.gz"
    assert run(workdir, SID).returncode == 0
    first = archive.read_bytes()
    make_notebook(workdir / "Assignment2-2_ViT.ipynb")
    second = run(workdir, SID)
    assert second.returncode == 0, second.stderr
    assert "replacing" in second.stdout.lower()
    assert archive.read_bytes() != first
    assert members(archive) == sorted([PART1, "Assignment2-2_ViT.ipynb"])


def test_failed_run_keeps_previous_archive(workdir):
    archive = workdir / f"{SID}.tar.gz"
    run(workdir, SID)
    before = archive.read_bytes()
    (workdir / PART1).write_text("{broken")
    assert run(workdir, SID).returncode != 0
    assert archive.read_bytes() == before


def test_staging_directory_is_cleaned_up(workdir, tmp_path_factory):
    scratch = tmp_path_factory.mktemp("tmpdir")
    result = subprocess.run(
        ["bash", str(SCRIPT), SID], cwd=workdir, capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "TMPDIR": str(scratch)}, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert not list(scratch.iterdir())


def test_stub_seen_only_in_stale_output_still_warns(tmp_path):
    cell = new_code_cell("attention = compute()", execution_count=1)
    cell.outputs = [new_output(
        "error", ename="NotImplementedError", evalue="Implement attention",
        traceback=['\x1b[0;31m----> 2\x1b[0m \x1b[38;5;28;01mraise\x1b[39;00m NotImplementedError("x")'],
    )]
    nbformat.write(new_notebook(cells=[cell]), str(tmp_path / PART1))
    result = run(tmp_path, SID)
    assert result.returncode == 0, result.stderr
    assert "NotImplementedError" in result.stderr


def test_warnings_are_summarised_after_the_file_list(tmp_path):
    make_notebook(tmp_path / PART1, outputs=False, stub=True)
    result = run(tmp_path, SID)
    assert result.returncode == 0
    assert "2 WARNING(s)" in result.stderr.splitlines()[-2]
