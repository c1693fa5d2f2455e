"""The assignment, in one place: every module of the grader reads what it needs to know about the notebook from
here, so a new part, check file, cell or training setting is one edit.

- the notebook: its name and where the master (the one source of truth) and the release live;
- the parts students write: their class, nbgrader cell (grade_id), points, the check file that grades them
  (its rubric lines, one per property, are in rubric.py) and the harness operations that run their code;
- the given cells the grader loads after the student's code, the hand-graded answer cell;
- the Training check's configurations, on a CPU and on a GPU.
"""
from dataclasses import dataclass
from pathlib import Path

NAME = "Assignment2-1"
NOTEBOOK = "Assignment2-1_Transformer_from_scratch.ipynb"
REPO = Path(__file__).resolve().parents[1]
MASTER = REPO / "source" / NAME / NOTEBOOK
RELEASE = REPO / "release" / NAME / NOTEBOOK


@dataclass(frozen=True)
class Part:
    name: str               # the class students write (Training: the given model built from all of them)
    grade_id: str | None    # the nbgrader cell that holds the class
    points: float
    checks: str             # the file in autograder/checks with this part's checks
    operations: tuple = ()  # harness operations (autograder/sandboxed/harness.py) that run this part's class


PARTS = (
    Part("PositionalEncoding", "positional_encoding", 15, "test_positional_encoding.py", ("pe",)),
    Part("MultiHeadAttention", "multi_head_attention", 30, "test_multi_head_attention.py",
         ("mha_info", "mha_sdp", "mha_forward")),
    Part("EncoderLayer", "encoder_layer", 20, "test_encoder_layer.py"),
    Part("DecoderLayer", "decoder_layer", 25, "test_decoder_layer.py"),
    Part("Training", None, 10, "test_training.py", ("train",)),
)
PART_NAMES = tuple(part.name for part in PARTS)
CLASS_PARTS = tuple(part for part in PARTS if part.grade_id)  # the four classes students write
GIVEN_CELLS = {"FFN": "ffn", "Transformer": "transformer"}    # loaded after the student's code, as released
FREE_RESPONSE = "what_you_tried"                              # the hand-graded answer cell

# Training on a CPU: a small model that still shows a clear fall in a few seconds. On a GPU: the notebook's own
# configuration and number of epochs.
TRAINING = {
    "cpu": {"config": {"vocab": 200, "dim": 64, "head_num": 4, "layer_num": 2, "FFN_dim": 128, "seq_len_max": 16,
                       "batch_size": 16, "dropout": 0.1}, "steps": 40, "timeout": 90.0},
    "cuda": {"config": {"vocab": 5000, "dim": 512, "head_num": 4, "layer_num": 3, "FFN_dim": 2048, "seq_len_max": 100,
                        "batch_size": 64, "dropout": 0.1}, "steps": 100, "timeout": 300.0},
}


def part(name):
    return next(p for p in PARTS if p.name == name)


def classes_needed(op, kind=None):
    """The student classes a harness operation runs (a layer operation: the layer of its `kind`)."""
    if op == "train":
        return tuple(p.name for p in CLASS_PARTS)
    for p in PARTS:
        if op in p.operations:
            return (p.name,)
    return ("EncoderLayer" if kind == "encoder" else "DecoderLayer",)


def part_of(op, kind=None):
    """The part whose code a harness operation runs (a layer operation: the layer of its `kind`)."""
    for p in PARTS:
        if op in p.operations:
            return p.name
    return "EncoderLayer" if kind == "encoder" else "DecoderLayer"
