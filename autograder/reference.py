"""The reference implementation, read from the master notebook's solution cells (the one source of truth).

The master is trusted, so its classes run in the judge's own process, through the same harness
operations the worker runs on a student's classes.
"""
import functools
import json
from pathlib import Path

from autograder import MASTER, RELEASE, REPO
from autograder.cage import attention_oracle  # noqa: F401 (paths: where the other modules and tests find them)
from autograder.sandboxed import harness
from autograder.intake.notebook_code import GIVEN_CELLS, PART_CELLS, extract



@functools.lru_cache(maxsize=None)
def master_code(path=MASTER):
    code = extract(json.loads(Path(path).read_text(encoding="utf-8")))
    missing = [name for name in (*PART_CELLS, *GIVEN_CELLS) if name not in code.classes]
    if missing:
        raise RuntimeError(f"the master notebook {path} lacks {missing}")
    return code


def load_arguments(student_units, device="cpu"):
    """What a worker needs to build its namespaces: the student's code and the given code. Nothing of the
    master's solutions: the layers' attention is answered by the judge (attention_oracle)."""
    master = master_code()
    return {
        "units": [u.as_message() for u in student_units],
        "given": [_renamed(master.classes[name], f"<given {name}>") for name in GIVEN_CELLS],
        "device": device,
    }


def load_in_process(units, device="cpu"):
    """Namespaces of trusted code (the master, our bug variants) in this process, the attention answered here."""
    return harness.load_namespaces(**load_arguments(units, device), ask=attention_oracle.ask_in_process)


def _renamed(unit, filename):
    """Master code must not run under a student cell's name: tracebacks would show the master's lines
    as the student's (linecache is keyed by file name), and error messages only quote `<cell ...>` frames."""
    return {**unit.as_message(), "filename": filename}


class Reference:
    """Runs harness operations on the master's classes, in this process."""

    def __init__(self, device="cpu"):
        self.namespaces, report = load_in_process(master_code().units, device)
        if report["errors"] or not all(report["defined"].values()):
            raise RuntimeError(f"the master notebook's code does not load: {report}")

    def run(self, op, **args):
        return harness.run(self.namespaces, op, args)

    @functools.lru_cache(maxsize=None)
    def _cached_training(self, key):
        config, steps, seed, device = json.loads(key)
        return self.run("train", config=config, steps=steps, seed=seed, device=device)

    def training(self, config, steps, seed, device):
        return self._cached_training(json.dumps([config, steps, seed, device], sort_keys=True))

    @functools.lru_cache(maxsize=None)
    def _cached_count(self, key):
        config = json.loads(key)
        model = self.namespaces["own"]["Transformer"](
            config["vocab"], config["vocab"], config["dim"], config["head_num"], config["layer_num"],
            config["FFN_dim"], config["seq_len_max"], config["dropout"])
        return sum(p.numel() for p in model.parameters())

    def parameter_count(self, config):
        """How many parameters the reference Transformer has in this training configuration."""
        return self._cached_count(json.dumps(config, sort_keys=True))


@functools.lru_cache(maxsize=None)
def reference(device="cpu"):
    return Reference(device)
