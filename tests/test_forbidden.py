"""The rule that attention is written from scratch: torch's ready-made attention is found however it is
reached (aliases, helpers, private entry points, lookups by name), statically by the audit
(autograder/intake/forbidden.py), and at run time by the worker's kernel watch (autograder/sandboxed/kernel_watch.py).

Every static case is the reference solution with one way of reaching torch's attention put in; each must
withhold exactly the part that reached it. Correct code written in any style must withhold nothing.
"""
import json
import subprocess
import time
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import hostile_corpus as hc
from corpus import CORRECT, MASTER
from autograder.intake import audit
from autograder.intake.notebook_code import extract

ROOT = Path(__file__).resolve().parents[1]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
MHA_INIT, MHA_BODY = hc.REF["MultiHeadAttention"]
SDPA_ARGS = "(Q, K, V, attn_mask=mask)"


def findings_for(answers, helper_cell=None, edit=None):
    """The audit of the reference with `answers` for some parts, `helper_cell` in a cell of its own and
    `edit` (old, new) made in MultiHeadAttention's cell."""
    notebook = hc.fill_handout(answers)
    if edit is not None:
        hc.edit_part(notebook, "MultiHeadAttention", *edit)
    if helper_cell is not None:
        hc.insert_after(notebook, hc.index_of_part(notebook, "MultiHeadAttention") - 1, hc._c(helper_cell))
    return audit.forbidden_api(extract(hc.renumber(notebook)))


def mha(body, init=""):
    """MultiHeadAttention with scaled_dot_product's body replaced (and lines added to __init__)."""
    return {"MultiHeadAttention": [MHA_INIT + ("\n" + hc._c(init) if init else ""), hc._c(body)]}


CASES = {
    # The six bypasses of the old audit.
    "top-level alias": (mha(f"heads = sdpa{SDPA_ARGS}"), "sdpa = F.scaled_dot_product_attention"),
    "helper calling a helper": (mha("heads = outer(Q, K, V, mask)"), """
        def inner(q, k, v, m):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=m)

        def outer(q, k, v, m):
            return inner(q, k, v, m)
    """),
    "private math entry point": (mha("heads = torch._scaled_dot_product_attention_math(Q, K, V, mask)[0]"), None),
    "private native MHA": (mha("""
        heads = torch._native_multi_head_attention(Q, K, V, 8, 1, self.W_q.weight, self.W_q.bias,
                                                   self.W_o.weight, self.W_o.bias)[0]
    """), None),
    "vars(F)[...]": (mha(f'heads = vars(F)["scaled_dot_product_attention"]{SDPA_ARGS}'), None),
    "local alias of the module": (mha(f"f = F\nheads = f.scaled_dot_product_attention{SDPA_ARGS}"), None),
    "module stored on self": (mha(f"heads = self.f.scaled_dot_product_attention{SDPA_ARGS}", init="self.f = F"), None),
    # Further ways in.
    "helpers three deep": (mha("heads = first(Q, K, V, mask)"), """
        def third(q, k, v, m):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=m)

        def second(q, k, v, m):
            return third(q, k, v, m)

        def first(q, k, v, m):
            return second(q, k, v, m)
    """),
    "getattr with a constructed name": (
        mha(f'heads = getattr(F, "scaled_" + "dot_product_attention"){SDPA_ARGS}'), None),
    "getattr with a name known only at run time": (
        mha(f'heads = getattr(F, "".join(["scaled_", "dot_product_attention"])){SDPA_ARGS}'), None),
    "importlib": (mha(f'heads = importlib.import_module("torch.nn.functional").scaled_dot_product_attention{SDPA_ARGS}'),
                  "import importlib"),
    "__import__": (mha(f'heads = __import__("torch.nn.functional", fromlist=["x"]).scaled_dot_product_attention'
                       f'{SDPA_ARGS}'), None),
    "F.__dict__.get": (mha(f'heads = F.__dict__.get("scaled_dot_product_attention"){SDPA_ARGS}'), None),
    "sys.modules": (mha(f'heads = sys.modules["torch.nn.functional"].scaled_dot_product_attention{SDPA_ARGS}'),
                    "import sys"),
    "flash kernel through torch.ops": (
        mha("heads = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(Q, K, V)[0]"), None),
    "torch._C._nn": (mha(f"heads = torch._C._nn.scaled_dot_product_attention{SDPA_ARGS}"), None),
    "kernel choice": (mha(f"choice = torch._fused_sdp_choice{SDPA_ARGS}\n" + MHA_BODY), None),
    "a top-level lambda": (mha("heads = attend(Q, K, V, mask)"),
                           "attend = lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m)"),
    "functools.partial": (mha("heads = attend(Q, K, V, attn_mask=mask)"), """
        import functools
        attend = functools.partial(F.scaled_dot_product_attention, dropout_p=0.0)
    """),
    "module passed to a helper": (mha("heads = attend(F, Q, K, V, mask)"), """
        def attend(module, q, k, v, m):
            return module.scaled_dot_product_attention(q, k, v, attn_mask=m)
    """),
    "alias in a class body": (mha(f"heads = self.kernel{SDPA_ARGS}"), None),
    "module as a lambda's default argument": (mha("heads = attend(Q, K, V, mask)"),
                                              "attend = lambda q, k, v, m, f=F: f.scaled_dot_product_attention(q, k, v)"),
    "a closure": (mha("heads = attend(Q, K, V, mask)"), """
        def make():
            f = F
            def inner(q, k, v, m):
                return f.scaled_dot_product_attention(q, k, v, attn_mask=m)
            return inner
        attend = make()
    """),
    "getattr through the builtins' namespace": (
        mha(f'heads = __builtins__.__dict__["getattr"](F, "scaled_dot_product_attention"){SDPA_ARGS}'), None),
    "an item of an attribute set at top level": (mha(f'heads = holder.table["a"]{SDPA_ARGS}'), """
        import types
        holder = types.SimpleNamespace(table={})
        holder.table["a"] = F.scaled_dot_product_attention
    """),
    "a name set through globals()": (mha(f"heads = sdpa{SDPA_ARGS}"), """
        def setup():
            globals()["sd" + "pa"] = F.scaled_dot_product_attention
    """),
    "items of vars(F)": (mha(f'heads = [v for k, v in vars(F).items() if k.startswith("scaled_")][0]{SDPA_ARGS}'),
                         None),
    "a property of a base class": (mha(f"heads = self.attend{SDPA_ARGS}"), """
        class Base(nn.Module):
            @property
            def attend(self):
                return F.scaled_dot_product_attention
    """),
    "module stored by a base class": (mha(f"heads = self.lib.scaled_dot_product_attention{SDPA_ARGS}"), """
        class Base(nn.Module):
            def __init__(self):
                super().__init__()
                self.lib = F
    """),
    "encoder layer fast path": ({"EncoderLayer": [hc.REF["EncoderLayer"][0], hc._c("""
        output = torch._transformer_encoder_layer_fwd(X, 32, 4, None, None, None, None, True, False, 1e-5,
                                                      None, None, None, None, None, None, None, None, mask)
    """)]}, None),
    "decoder layer with nn.MultiheadAttention under another name": ({"DecoderLayer": [
        hc.REF["DecoderLayer"][0] + "\nself.library = tnn.MultiheadAttention(dim, head_num)", hc.REF["DecoderLayer"][1]]},
        "tnn = torch.nn"),
}
EDITS = {
    "alias in a class body": ("    def __init__", "    kernel = staticmethod(F.scaled_dot_product_attention)\n\n    def __init__"),
    "module stored by a base class": ("class MultiHeadAttention(nn.Module)", "class MultiHeadAttention(Base)"),
    "a property of a base class": ("class MultiHeadAttention(nn.Module)", "class MultiHeadAttention(Base)"),
}
EXPECTED_PART = {"encoder layer fast path": "EncoderLayer",
                 "decoder layer with nn.MultiheadAttention under another name": "DecoderLayer"}


@pytest.mark.parametrize("case", list(CASES))
def test_each_way_to_reach_torch_attention_withholds_its_part(case):
    answers, helper_cell = CASES[case]
    findings = findings_for(answers, helper_cell, EDITS.get(case))
    part = EXPECTED_PART.get(case, "MultiHeadAttention")
    assert list(findings.withheld) == [part], findings.flags
    assert findings.flags[0].startswith(f"forbidden API in {part}: "), findings.flags


def test_a_helper_chain_is_named_in_the_flag():
    answers, helper_cell = CASES["helpers three deep"]
    flag = findings_for(answers, helper_cell).flags[0]
    assert "F.scaled_dot_product_attention" in flag and "through first -> second -> third" in flag, flag


def test_a_name_known_only_at_run_time_is_said_so():
    answers, helper_cell = CASES["getattr with a name known only at run time"]
    flag = findings_for(answers, helper_cell).flags[0]
    assert "torch.nn.functional under a name computed at run time" in flag, flag


def test_a_cheating_attention_does_not_cost_the_layers_that_use_it():
    # The layers build MultiHeadAttention, which reaches torch's attention: they are graded with the
    # reference attention, so only MultiHeadAttention's points go.
    answers, helper_cell = CASES["helpers three deep"]
    assert list(findings_for(answers, helper_cell).withheld) == ["MultiHeadAttention"]


@pytest.mark.parametrize("name", [name for name, _ in CORRECT])
def test_correct_code_in_any_style_is_not_flagged(name):
    findings = findings_for(dict(CORRECT)[name])
    assert not findings.flags and not findings.withheld


def test_the_master_notebook_is_not_flagged():
    findings = audit.forbidden_api(extract(json.loads(MASTER.read_text(encoding="utf-8"))))
    assert not findings.flags and not findings.withheld


def test_honest_code_near_the_forbidden_names_is_not_flagged():
    findings = findings_for(mha("""
        # not F.scaled_dot_product_attention: by hand
        note = "nn.MultiheadAttention and F.scaled_dot_product_attention are not allowed"
        attention = F.softmax(Q @ K.transpose(-2, -1) / math.sqrt(self.word_dim), dim=-1)
        if mask is not None:
            attention = attention.masked_fill(~mask, 0.0)
            attention = attention / attention.sum(-1, keepdim=True).clamp_min(1e-9)
        attention = F.dropout(attention, 0.0, self.training)
        scaled_dot_product_attention = attention @ V
        heads = nn.functional.layer_norm(scaled_dot_product_attention, (V.size(-1),), eps=1e30) * 0 \\
            + torch.matmul(attention, V)
    """, init="self.act = getattr(nn, 'Softmax')(dim=-1)"), """
        def scaled_dot_product_attention(q, k, v):
            # my own, from scratch
            return torch.softmax(q @ k.transpose(-2, -1), dim=-1) @ v
        helpers = {"attention": scaled_dot_product_attention, "softmax": F.softmax}
    """)
    assert not findings.flags and not findings.withheld


def test_forbidden_names_in_comments_and_strings_are_not_uses():
    findings = audit.forbidden_api(extract(hc.toplevel_heavy_mentions(None)))
    assert not findings.flags


def test_code_the_audit_cannot_follow_fails_closed(monkeypatch):
    from autograder.intake import name_flow

    # Code nested past the judge's bounds never reaches the audit: extraction skips its cell (test_judge_bounds.py).
    # What the audit itself cannot follow within its own bounds (facts about names, steps of work) fails closed.
    monkeypatch.setattr(name_flow, "MAX_WORK", 50)
    findings = findings_for({}, "def helper():\n    x = F\n    return x")
    assert set(findings.withheld) == {"PositionalEncoding", "MultiHeadAttention", "EncoderLayer", "DecoderLayer"}
    assert findings.flags and all("cannot follow" in flag for flag in findings.flags)


# --------------------------------------------------------------------------- the second line: at run time

def _watched(function):
    from autograder.sandboxed import kernel_watch

    with kernel_watch.Watch() as watch:
        function()
    return watch.report()


def _qkv():
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(2, 4, 6, 8, generator=generator) for _ in range(3)]


def test_the_kernel_watch_sees_fused_attention_under_any_name():
    q, k, v = _qkv()
    hidden = eval("F.scaled_" + "dot_product_attention", {"F": F})  # nothing the audit could read
    assert "aten._scaled_dot_product_flash_attention_for_cpu" in _watched(lambda: hidden(q, k, v))
    assert "_scaled_dot_product_attention_math" in _watched(lambda: torch._scaled_dot_product_attention_math(q, k, v))
    assert "_scaled_dot_product_attention_math" in _watched(
        lambda: torch.ops.aten._scaled_dot_product_attention_math(q, k, v))
    mha = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        assert "multi_head_attention_forward" in _watched(lambda: mha(x, x, x))
        layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True).eval()
        assert _watched(lambda: layer(x))


def test_the_kernel_watch_is_quiet_for_attention_from_scratch():
    q, k, v = _qkv()
    assert _watched(lambda: torch.softmax(q @ k.transpose(-2, -1) / 8**0.5, dim=-1) @ v) == []
    assert _watched(lambda: F.dropout(F.layer_norm(q, (8,)), 0.1) + F.softmax(q, -1)) == []


def test_a_watch_removed_by_the_code_says_so():
    from autograder.sandboxed import kernel_watch

    report = _watched(torch._C._pop_torch_function_stack)
    assert report == [kernel_watch.REMOVED]
    assert torch._C._len_torch_function_stack() == 0 and torch._C._len_torch_dispatch_stack() == 0


@pytest.mark.slow
def test_attention_hidden_from_the_audit_is_caught_at_run_time_through_the_cli(tmp_path):
    hidden = mha('heads = eval("F.scaled_" + "dot_product_attention")(Q, K, V, attn_mask=mask)')
    submissions = tmp_path / "in"
    submissions.mkdir()
    for student, answers in (("2097-00001", hidden), ("2097-00002", {})):
        (submissions / f"{student}.ipynb").write_text(json.dumps(hc.fill_handout(answers)), encoding="utf-8")
    assert not findings_for(hidden).flags  # the audit cannot see it: only the run time can

    def grade(*extra):
        out = tmp_path / ("out" + "".join(extra))
        done = subprocess.run([PYTHON, "-m", "autograder", "grade", str(submissions), "--out", str(out), *extra],
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return {s: json.loads((out / s / "results.json").read_text()) for s in ("2097-00001", "2097-00002")}

    results = grade()
    cheat, honest = results["2097-00001"], results["2097-00002"]
    ran = [f for f in cheat["extra_data"]["flags"] if f.startswith("forbidden API ran in")]
    assert ran == ["forbidden API ran in MultiHeadAttention: aten._scaled_dot_product_flash_attention_for_cpu"], ran
    assert cheat["extra_data"]["parts"]["MultiHeadAttention"] == 0
    assert all(t["output"].startswith("points withheld") for t in cheat["tests"]
               if t["name"].startswith("MultiHeadAttention"))
    assert cheat["score"] == 70, cheat["output"]  # every other part keeps its points
    assert honest["score"] == 100 and not any("forbidden" in f for f in honest["extra_data"]["flags"]), honest["output"]

    allowed = grade("--allow-forbidden")["2097-00001"]
    assert allowed["score"] == 100 and any(f.startswith("forbidden API ran in MultiHeadAttention")
                                           for f in allowed["extra_data"]["flags"]), allowed["output"]


def test_what_ran_is_charged_to_the_part_whose_operation_ran_it():
    from autograder.pipeline import forbidden_runs

    records = [("mha_sdp", None, ["aten._scaled_dot_product_flash_attention_for_cpu"]),
               ("layer_forward", "encoder", ["multi_head_attention_forward"]),
               ("layer_structure", "decoder", ["aten._native_multi_head_attention"]),
               ("mha_forward", None, ["scaled_dot_product_attention"])]
    assert forbidden_runs(records) == {"MultiHeadAttention": "aten._scaled_dot_product_flash_attention_for_cpu",
                                       "EncoderLayer": "multi_head_attention_forward",
                                       "DecoderLayer": "aten._native_multi_head_attention"}


def test_a_cheating_helper_class_costs_only_the_part_that_uses_it():
    # Every layer calls super().__init__(): a method call on an object the audit knows nothing about must
    # not tie the layer to every class in the notebook that has an __init__.
    findings = findings_for(mha("heads = self.kernel(Q, K, V, mask)", init="self.kernel = Kernel()"), """
        class Kernel(nn.Module):
            def __init__(self):
                super().__init__()
                self.attend = F.scaled_dot_product_attention

            def forward(self, q, k, v, m):
                return self.attend(q, k, v, attn_mask=m)
    """)
    assert list(findings.withheld) == ["MultiHeadAttention"], findings.flags


def test_methods_are_followed_through_instances_and_the_class():
    findings = findings_for(mha("heads = type(self).kernel(Q, K, V, attn_mask=mask)"), None)
    assert not findings.flags  # no such attribute anywhere: nothing to find
    edit = ("    def __init__", "    kernel = staticmethod(F.scaled_dot_product_attention)\n\n    def __init__")
    body = "heads = type(self).kernel(Q, K, V, attn_mask=mask)"
    notebook = hc.fill_handout(mha(body))
    hc.edit_part(notebook, "MultiHeadAttention", *edit)
    assert list(audit.forbidden_api(extract(notebook)).withheld) == ["MultiHeadAttention"]
    helper = """
        class Library:
            kernel = staticmethod(F.scaled_dot_product_attention)
        library = Library()
    """
    assert list(findings_for(mha(f"heads = library.kernel{SDPA_ARGS}"), helper).withheld) == ["MultiHeadAttention"]
    called = """
        class Attend:
            def __call__(self, q, k, v, m):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=m)
        attend = Attend()
    """
    assert list(findings_for(mha("heads = attend(Q, K, V, mask)"), called).withheld) == ["MultiHeadAttention"]
    given_the_module = """
        class Kernel(nn.Module):
            def __init__(self, library):
                super().__init__()
                self.library = library

            def forward(self, q, k, v, m, other):
                return self.library.scaled_dot_product_attention(q, k, v, attn_mask=m)

        class Plain(nn.Module):
            def forward(self, q, k, v, m, library):
                return library.scaled_dot_product_attention(q, k, v, attn_mask=m)
    """
    for init, body in (("self.kernel = Kernel(F)", "heads = self.kernel(Q, K, V, mask, None)"),
                       ("self.plain = Plain()", "heads = self.plain(Q, K, V, mask, F)")):
        findings = findings_for(mha(body, init=init), given_the_module)
        assert list(findings.withheld) == ["MultiHeadAttention"], (init, findings.flags)


def test_code_too_large_to_follow_fails_closed_quickly():
    functions = "\n".join(f"def f{i}():\n    pass" for i in range(200))
    every = "[" + ", ".join(f"f{i}" for i in range(200)) + "]"
    # 30 000 facts about names in a cell well under the judge's 100 KB per cell (test_judge_bounds.py)
    lists = f"v0 = {every}\n" + "\n".join(f"v{j} = v{j - 1}" for j in range(1, 150))
    started = time.process_time()
    findings = findings_for({}, functions + "\n" + lists)
    assert time.process_time() - started < 10
    assert set(findings.withheld) == {"PositionalEncoding", "MultiHeadAttention", "EncoderLayer", "DecoderLayer"}
    assert all("cannot follow (more than 20000 facts about names)" in flag for flag in findings.flags), findings.flags
