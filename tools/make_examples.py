"""Build the example submissions in examples/ that the README's first command grades.

Each example is a handout filled in the way a student would (tests/corpus.py holds the variants the
grader's own tests use) and packed by the real CollectSubmission.sh, so examples/ looks exactly like
what a TA downloads. Rerun after changing the master notebook: python tools/make_examples.py
"""
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from corpus import VARIANTS, fill_handout, reference_answers  # noqa: E402

NOTEBOOK = "Assignment2-1_Transformer_from_scratch.ipynb"
FORBIDDEN_MHA = """\
self.attention = nn.MultiheadAttention(dim, head_num, batch_first=True)
self.W_q = nn.Linear(dim, dim)
self.W_k = nn.Linear(dim, dim)
self.W_v = nn.Linear(dim, dim)
self.W_o = nn.Linear(dim, dim)"""

# student ID -> (what it shows, answers for fill_handout, or None for the blank handout)
EXAMPLES = {
    "2023-00001": ("the reference solution: 100 points", {}),
    "2023-00002": ("the blank handout, submitted as released: 0 points", None),
    "2023-00003": ("the seed's decoder: one LayerNorm shared by three sublayers", "dec_one_shared_layernorm"),
    "2023-00004": ("attention scaled by sqrt(dim) instead of sqrt(word_dim)", "mha_scaled_by_sqrt_dim"),
    "2023-00005": ("positional encoding with sin and cos swapped", "pe_sin_cos_swapped"),
    "2023-00006": ("a correct solution in another style (einsum)", "einsum"),
    "2023-00007": ("nn.MultiheadAttention used in the attention part: flagged, points withheld", "forbidden"),
}


def answers_for(spec):
    if spec is None or isinstance(spec, dict):
        return spec
    if spec == "forbidden":
        chunks = reference_answers()["MultiHeadAttention"]
        return {"MultiHeadAttention": [FORBIDDEN_MHA, *chunks[1:]]}
    return {v.name: v for v in VARIANTS}[spec].answers


def main():
    out = REPO / "examples"
    for old in out.glob("*.tar.gz"):
        old.unlink()
    for student_id, (description, spec) in EXAMPLES.items():
        answers = answers_for(spec)
        with tempfile.TemporaryDirectory() as folder:
            folder = Path(folder)
            if answers is None:
                shutil.copyfile(REPO / "release" / "Assignment2-1" / NOTEBOOK, folder / NOTEBOOK)
            else:
                (folder / NOTEBOOK).write_text(json.dumps(fill_handout(answers), indent=1) + "\n", encoding="utf-8")
            shutil.copyfile(REPO / "CollectSubmission.sh", folder / "CollectSubmission.sh")
            subprocess.run(["bash", "CollectSubmission.sh", student_id], cwd=folder, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            shutil.copyfile(folder / f"{student_id}.tar.gz", out / f"{student_id}.tar.gz")
        print(f"examples/{student_id}.tar.gz  {description}")


if __name__ == "__main__":
    main()
