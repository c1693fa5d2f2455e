"""The Training check does not take the worker's word for it: the worker returns the trained weights, by role,
and when every other part passed its own checks the judge loads them into the reference model and measures the
loss itself (autograder/checks/test_training.py, harness.op_loss_with_weights)."""
import pytest
import torch

import hostile_corpus as hc
from autograder.cage import sandbox
from autograder.pipeline import CPU_TRAINING, Settings, grade_submission
from autograder.reference import reference

pytestmark = pytest.mark.skipif(not sandbox.isolation_available()["bwrap"],
                                reason="grading needs bwrap (apt-get install -y bubblewrap)")

# Replaces the worker's training with one that trains nothing and reports a loss falling by 0.1 a step.
FAKE_TRAINING = hc._c('''
    import sys


    def _fake_training(ns, config, steps, seed=0, device="cpu"):
        real = sys.modules["harness"].op_train(ns, config, 0, seed, device)
        real["losses"] = [5.5 - 0.1 * step for step in range(steps)]
        return real


    def _install_fake():
        sys.modules["harness"].OPERATIONS["train"] = ("own", _fake_training)
''')


def grade(tmp_path, notebook):
    path = tmp_path / "2099-00801.ipynb"
    path.write_bytes(hc.dumps(notebook))
    return grade_submission(path, Settings())[1]


def training_tests(results):
    return {t["name"].split(": ", 1)[1]: t for t in results["tests"] if t["name"].startswith("Training")}


def test_reported_losses_that_the_weights_do_not_bear_out_lose_the_points(tmp_path):
    notebook = hc._prepend_to_part(hc.fill_handout({}), "PositionalEncoding", FAKE_TRAINING, "_install_fake()")
    results = grade(tmp_path, notebook)
    parts = results["extra_data"]["parts"]
    assert (parts["PositionalEncoding"], parts["MultiHeadAttention"], parts["EncoderLayer"],
            parts["DecoderLayer"]) == (15, 30, 20, 25), results["output"]
    falls = next(t for name, t in training_tests(results).items() if "falls" in name)
    assert falls["score"] == 0 and "not those of the weights it trained" in falls["output"], falls


def test_an_honest_correct_notebook_is_verified_and_keeps_its_points(tmp_path):
    results = grade(tmp_path, hc.fill_handout(hc.NOT_THE_MASTER))
    assert results["score"] == 100, results["output"]
    assert not any("could not read the trained weights" in flag for flag in results["extra_data"]["flags"])


def test_weights_by_role_name_the_same_parameters_in_any_style():
    """The reference's own trained weights load back into a fresh reference model and give the loss it ended on."""
    trained = reference("cpu").run("train", config=CPU_TRAINING, steps=5, seed=0, device="cpu")
    verified = reference("cpu").run("loss_with_weights", config=CPU_TRAINING, weights=trained["weights"])
    assert verified["loaded"] and verified["loss"] < trained["losses"][0]
    shuffled = dict(trained["weights"])
    shuffled.pop(next(iter(shuffled)))
    assert not reference("cpu").run("loss_with_weights", config=CPU_TRAINING, weights=shuffled)["loaded"]
    wrong = {name: torch.zeros(3) for name in trained["weights"]}
    assert not reference("cpu").run("loss_with_weights", config=CPU_TRAINING, weights=wrong)["loaded"]
