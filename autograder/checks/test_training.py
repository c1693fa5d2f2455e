"""Training: the given Transformer built from all of the student's parts, with the notebook's optimizer.

The worker reports the losses, and code in the worker's process could fake them. So the worker also returns
the trained weights, by role (harness.weights_by_role), and when every other part passed its own checks (the
student's model then computes what the reference computes) the judge loads them into the reference model and
measures the loss itself: that figure, not the reported one, decides whether the loss fell.
"""
import math

import pytest

from autograder.outcome import fail
from autograder.rubric import RUBRIC

TRAINING = "Training"


@pytest.fixture(scope="module")
def runs(student, reference, settings):
    """The student's training and the reference's, side by side: the worker trains while the judge does."""
    config, steps = settings.training_config, settings.training_steps
    # The answer holds the trained weights: room for the reference model's, as float64 in base64, and the losses.
    answer_limit = 2**20 + reference.parameter_count(config) * 8 * 4 // 3
    answer = student.start("train", timeout=settings.training_timeout, config=config, steps=steps, seed=0,
                           device=settings.device, answer_limit=answer_limit)
    try:
        reference_losses = reference.training(config, steps, 0, settings.device)["losses"]
    except BaseException:
        student.client.close()  # its answer will not be read: the next call must not find it in the pipe
        raise
    return answer(), reference_losses


@pytest.fixture(scope="module")
def losses(runs):
    return runs[0]["losses"]


@pytest.fixture(scope="module")
def reference_losses(runs):
    return runs[1]


def drop(values):
    """First loss minus the mean of the last three: robust to one noisy last step."""
    return values[0] - sum(values[-3:]) / 3


def every_other_part_passed(grading):
    lines = [name for name, line in RUBRIC.items() if line.part != TRAINING]
    return all(name in grading.outcomes and grading.outcomes[name].passed for name in lines)


def test_training_loss_is_finite(losses):
    bad = [i + 1 for i, value in enumerate(losses) if not math.isfinite(value)]
    if bad:
        pytest.fail(f"the loss is not finite from step {bad[0]} on (of {len(losses)} steps)", pytrace=False)


def test_training_loss_falls(runs, losses, reference_losses, grading, reference, settings):
    needed = 0.5 * drop(reference_losses)
    if not all(math.isfinite(v) for v in losses) or drop(losses) < needed:
        pytest.fail(f"over {len(losses)} steps the loss went from {losses[0]:.3f} to {losses[-1]:.3f}; "
                    f"a working model lowers it by at least {needed:.3f}", pytrace=False)
    if not every_other_part_passed(grading):
        return  # a model unlike the reference's: only its own reported losses can say how it trained
    weights = runs[0].get("weights")
    verified = reference.run("loss_with_weights", config=settings.training_config,
                             weights=weights if isinstance(weights, dict) else {}, seed=0, device="cpu")
    if not verified["loaded"]:
        missing = ", ".join(verified["missing"] + verified["wrong_shape"])
        grading.flags.append(f"Training: the grader could not read the trained weights back ({missing}); "
                             "the losses the notebook's code reported were used")
        return
    most = reference_losses[0] - needed
    if verified["loss"] > most:
        fail(f"the trained weights, evaluated by the grader on the training batch, give a loss of "
             f"{verified['loss']:.3f}; weights that trained give at most {most:.3f}",
             "the losses your training reported are not those of the weights it trained")
