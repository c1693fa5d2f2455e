"""Smoke test for tools/draw_figures.py: both handout PNGs render and are non-trivial."""
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "draw_figures.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAMES = ("Model_small.png", "Attention.png")


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    # One subprocess for all checks: exercises the real CLI and keeps the test fast.
    out = tmp_path_factory.mktemp("figs")
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for name in NAMES:
        assert name in proc.stdout  # the script reports what it wrote
    return out


@pytest.mark.parametrize("name", NAMES)
def test_png_is_valid_and_not_blank(out_dir, name):
    path = out_dir / name
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    img = mpimg.imread(path)
    height, width = img.shape[:2]
    assert width >= 800 and height >= 600
    # A blank (all-white) canvas has std 0; real drawings are well above this.
    assert img[..., :3].std() > 0.05
