"""Build what students download: a folder and a zip of it, holding only the handout and what it needs.

    python tools/build_student_bundle.py [--out DIR]     (or: make student-bundle)

The repository itself must not be published: source/ holds the solutions and autograder/ the hidden checks.
The bundle takes files from an explicit list, never a whole tree, so nothing new in the repository reaches
students by accident. It refuses to build when the handout is not nbgrader's release notebook byte for byte
(run `make release` first), as the release is what the locked-cell checksums are taken from.
"""
import argparse
import shutil
import stat
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSIGNMENT = "Assignment2-1"
NOTEBOOK = "Assignment2-1_Transformer_from_scratch.ipynb"
# bundle path -> repository path
FILES = {
    NOTEBOOK: NOTEBOOK,
    "CollectSubmission.sh": "CollectSubmission.sh",
    "README.md": "docs/student_README.md",
    "imgs/Attention.png": "imgs/Attention.png",
    "imgs/Model_small.png": "imgs/Model_small.png",
}
EXECUTABLE = {"CollectSubmission.sh"}
# Zip entries get a fixed date, so the same files always give the same zip.
ZIP_DATE = (2020, 1, 1, 0, 0, 0)


def check_handout():
    release = REPO / "release" / ASSIGNMENT / NOTEBOOK
    if (REPO / NOTEBOOK).read_bytes() != release.read_bytes():
        sys.exit(f"{NOTEBOOK} differs from {release.relative_to(REPO)}: run `make release` first")


def build(out):
    """Write out/<ASSIGNMENT>/ and out/<ASSIGNMENT>.zip; return the two paths."""
    check_handout()
    folder, archive = out / ASSIGNMENT, out / f"{ASSIGNMENT}.zip"
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(folder, ignore_errors=True)
    archive.unlink(missing_ok=True)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, source in sorted(FILES.items()):
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REPO / source, target)
            mode = 0o755 if name in EXECUTABLE else 0o644
            target.chmod(mode)
            entry = zipfile.ZipInfo(f"{ASSIGNMENT}/{name}", date_time=ZIP_DATE)
            entry.external_attr = (stat.S_IFREG | mode) << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            bundle.writestr(entry, target.read_bytes())
    return folder, archive


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="output folder (default: dist/)")
    folder, archive = build(parser.parse_args(argv).out)
    print(f"Student bundle: {folder}/ and {archive}. Publish these, never the repository.")


if __name__ == "__main__":
    main()
