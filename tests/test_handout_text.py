"""The handout's text agrees with its own code: what students read is what the cells do."""
import ast
import json
import re

import pytest

from corpus import RELEASE


@pytest.fixture(scope="module")
def cells():
    return [(cell["cell_type"], "".join(cell["source"])) for cell in json.loads(RELEASE.read_text())["cells"]]


def _code_with(cells, needle):
    return next(i for i, (kind, text) in enumerate(cells) if kind == "code" and needle in text)


def _markdown_before(cells, index):
    return _flat(next(text for kind, text in reversed(cells[:index]) if kind == "markdown"))


def _flat(text):
    """Markdown with its line breaks and runs of spaces made single spaces, as it renders."""
    return " ".join(text.split())


def _section_5(cells):
    return _flat(next(text for kind, text in cells if kind == "markdown" and text.startswith("## 5.")))


def test_positional_encoding_picture_is_described_as_drawn(cells):
    plot = _code_with(cells, "plt.imshow(table")
    code = cells[plot][1]
    # The plotting code draws the table transposed: positions along x, features along y.
    assert "plt.imshow(table.T" in code and 'plt.xlabel("position' in code and 'plt.ylabel("feature' in code
    text = _markdown_before(cells, plot)
    assert "each column of the picture is one position" in text and "each row of the picture one feature" in text
    assert "each row is one position" not in text


def test_training_loop_is_called_by_the_word_it_prints(cells):
    training = _code_with(cells, "for epoch in range(num_epochs)")
    assert 'print(f"Epoch: ' in cells[training][1]
    section = _section_5(cells)
    assert "100 epochs (`num_epochs`)" in section
    assert not re.search(r"\b(\d+|the) steps\b", section)  # one name for the loop: epochs


def test_section_5_says_how_long_training_takes_on_gpu_and_cpu(cells):
    section = _section_5(cells)
    assert "On a Colab GPU" in section and "an estimate" in section
    assert "On a CPU, one epoch took 8 to 10 s" in section and "15 to 50 minutes" in section


def test_drive_folder_of_the_setup_cell_is_named_in_the_text(cells):
    setup = _code_with(cells, "drive.mount(")
    chdir = next(node for node in ast.walk(ast.parse(cells[setup][1]))
                 if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "chdir")
    folder = chdir.args[0].value.removeprefix("/content/drive/")
    assert folder == "MyDrive/Assignment2"
    assert f"(`{folder}`)" in _markdown_before(cells, setup)


def test_training_points_are_said_to_depend_on_every_part(cells):
    intro = _flat(cells[0][1])
    section = _section_5(cells)
    assert "never costs you points in another" not in intro
    assert "Section 5 is the exception: it trains the full model built from all of your parts" in intro
    assert "a bug in any one part can cost the Training points as well" in section
    assert "The points of sections 1 to 4 depend only on each part's own code" in section
