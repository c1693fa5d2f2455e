"""Training: the given Transformer built from all of the student's parts, with the notebook's optimizer."""
import math

import pytest


@pytest.fixture(scope="module")
def runs(student, reference, settings):
    """The student's training and the reference's, side by side: the worker trains while the judge does."""
    config, steps = settings.training_config, settings.training_steps
    answer = student.start("train", timeout=settings.training_timeout, config=config, steps=steps, seed=0,
                           device=settings.device)
    try:
        reference_losses = reference.training(config, steps, 0, settings.device)["losses"]
    except BaseException:
        student.client.close()  # its answer will not be read: the next call must not find it in the pipe
        raise
    return answer()["losses"], reference_losses


@pytest.fixture(scope="module")
def losses(runs):
    return runs[0]


@pytest.fixture(scope="module")
def reference_losses(runs):
    return runs[1]


def drop(values):
    """First loss minus the mean of the last three: robust to one noisy last step."""
    return values[0] - sum(values[-3:]) / 3


def test_training_loss_is_finite(losses):
    bad = [i + 1 for i, value in enumerate(losses) if not math.isfinite(value)]
    if bad:
        pytest.fail(f"the loss is not finite from step {bad[0]} on (of {len(losses)} steps)", pytrace=False)


def test_training_loss_falls(losses, reference_losses):
    needed = 0.5 * drop(reference_losses)
    if not all(math.isfinite(v) for v in losses) or drop(losses) < needed:
        pytest.fail(f"over {len(losses)} steps the loss went from {losses[0]:.3f} to {losses[-1]:.3f}; "
                    f"a working model lowers it by at least {needed:.3f}", pytrace=False)
