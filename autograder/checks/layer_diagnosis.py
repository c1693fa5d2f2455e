"""What is wrong with a layer, in plain words: its dataflow against the reference's, first difference first.

Both reports come from the same harness operation (`layer_dataflow`): which sublayers were called in which
order, what each read (as an expression over the layer's inputs: "X", ["sub", i], ["dropout", e],
["norm", e], ["add", a, b], ["other", name, [...]]), which mask each attention got, what each dropout
received and what the layer returned. Nothing here knows a bug by name: a bug nobody listed is described
by where its dataflow departs from the reference's.
"""
import json

_INPUTS = {"X": "the layer's input X", "enc_output": "the encoder output enc_output"}
_PARTS = {"q": "queries", "k": "keys", "v": "values"}


def _key(expr):
    return json.dumps(expr, sort_keys=True)


def _is(expr, head):
    return isinstance(expr, list) and bool(expr) and expr[0] == head


def _branch(expr):
    """The sublayer index of a residual branch: sub i, possibly after dropout; else None."""
    if _is(expr, "dropout"):
        expr = expr[1]
    return expr[1] if _is(expr, "sub") else None


def _block(expr):
    """(residual, branch index, branch) of a residual sum with a sublayer's branch as one operand; else None."""
    if not _is(expr, "add") or len(expr) != 3:
        return None
    for mine, other in ((expr[1], expr[2]), (expr[2], expr[1])):
        if _branch(mine) is not None:
            return other, _branch(mine), mine
    return None


def _undropped(expr):
    return expr[1] if _is(expr, "dropout") else expr


class Words:
    def __init__(self, student, reference, kind):
        self.kind = kind
        reference_names = [self._name(s) for s in reference["sublayers"]]
        self.names = []
        for index, sublayer in enumerate(student["sublayers"]):
            same = index < len(reference["sublayers"]) and reference["sublayers"][index]["kind"] == sublayer["kind"]
            self.names.append(reference_names[index] if same else self._name(sublayer))
        self.reference_names = reference_names

    def _name(self, sublayer):
        if sublayer["kind"] == "ffn":
            return "the feed-forward sublayer"
        if sublayer["reads"]["k"] == "enc_output":
            return "the cross-attention"
        return "the masked self-attention" if self.kind == "decoder" else "the self-attention"

    def sub(self, index):
        return self.names[index] if index < len(self.names) else f"sublayer {index + 1}"

    def describe(self, expr):
        if expr is None:
            return "nothing"
        if isinstance(expr, str):
            return _INPUTS.get(expr, expr)
        head = expr[0]
        if head == "sub":
            return f"the raw output of {self.sub(expr[1])}"
        if head == "dropout":
            return f"{self.describe(expr[1])} after dropout"
        if head == "norm" and _block(expr[1]) is not None:
            return f"the output of {self.sub(_block(expr[1])[1])} after its LayerNorm"
        if head == "norm" and _is(expr[1], "add"):
            return f"a LayerNorm of the sum of {' and '.join(self.describe(e) for e in expr[1][1:])}"
        if head == "norm":
            return f"{self.describe(expr[1])} after a LayerNorm"
        if head == "add" and _block(expr) is not None:
            return f"the residual sum of {self.sub(_block(expr)[1])} before its LayerNorm"
        if head == "add":
            return f"the sum of {' and '.join(self.describe(e) for e in expr[1:])}"
        inputs = [self.describe(e) for e in expr[2]] if len(expr) > 2 else []
        if expr[1] in ("unknown", "...") or not inputs:
            return "a value computed in a way the grader cannot follow"
        return f"a value computed from {' and '.join(inputs)} with `{expr[1]}`"

    def block_difference(self, got, want):
        """Words for how a student's residual block departs from the reference's norm(residual + dropout(sub))."""
        wanted = _block(want[1]) if _is(want, "norm") else None
        if wanted is None:
            return None
        residual, index, _ = wanted
        name = self.sub(index)
        if _is(got, "dropout") and _is(got[1], "norm"):
            return f"dropout is applied after the LayerNorm of {name}; it belongs on the sublayer's output, before the residual sum"
        if _is(got, "norm") and _is(got[1], "dropout") and _is(got[1][1], "add"):
            return f"dropout is applied to the residual sum of {name}; it belongs on the sublayer's output, before the sum"
        if _is(got, "norm") and _branch(got[1]) is not None:
            return f"{name} has no residual connection: its output is normalised without adding the sublayer's input"
        if _is(got, "add") and any(_is(_undropped(e), "norm") and _branch(_undropped(e)[1]) is not None
                                   for e in got[1:]):
            return f"the residual around {name} is added after the LayerNorm; the LayerNorm belongs after the residual sum"
        if _block(got) is not None:
            return f"{name}'s residual sum goes on without a LayerNorm; a LayerNorm belongs after each residual sum"
        if _is(got, "norm") and _block(got[1]) is not None:
            got_residual, got_index, got_branch = _block(got[1])
            if got_index == index and _key(got_residual) != _key(residual):
                return (f"the residual around {name} adds {self.describe(got_residual)}; "
                        f"it should add {self.describe(residual)}")
            if got_index == index and not _is(got_branch, "dropout"):
                return f"{name}'s output gets no dropout before the residual sum"
        return None

    def reads(self, what, got, want):
        """'<what> <got>; it should <want>', with the reason where a pattern says more."""
        if _is(got, "norm") and _key(got[1]) == _key(want):
            return (f"{what} {self.describe(got)}: the LayerNorm comes before the sublayer (pre-LN); "
                    f"in this layer it belongs after the residual sum (post-LN), so it should read {self.describe(want)}")
        reason = self.block_difference(got, want)
        if reason:
            return reason
        return f"{what} {self.describe(got)}; it should read {self.describe(want)}"


def _mask(name):
    return "no mask" if name is None else (f"`{name}`" if name != "another mask" else "a mask that is neither of its inputs")


def differences(student, reference, kind):
    """Every difference between the two dataflows, in order, as (tag, words)."""
    words = Words(student, reference, kind)
    found = []
    mine, theirs = student["sublayers"], reference["sublayers"]
    for index, wanted in enumerate(theirs):
        name = words.reference_names[index]
        if index >= len(mine):
            found.append(("calls", f"{name} is never called: the layer calls {len(mine)} sublayers, "
                                   f"the reference {len(theirs)}"))
            break
        got = mine[index]
        if got["kind"] != wanted["kind"]:
            found.append(("calls", f"sublayer {index + 1} of the forward is {words._name(got)}; it should be {name}"))
            break
        if wanted["kind"] == "attention":
            for part in ("q", "k", "v"):
                if _key(got["reads"][part]) != _key(wanted["reads"][part]):
                    found.append(("reads", words.reads(f"{name}'s {_PARTS[part]} come from", got["reads"][part],
                                                       wanted["reads"][part]).replace("; it should read", "; they should come from")))
                    break
            if got["mask"] != wanted["mask"]:
                found.append(("mask", f"{name} receives {_mask(got['mask'])}; it needs {_mask(wanted['mask'])}"))
        elif _key(got["reads"]) != _key(wanted["reads"]):
            found.append(("reads", words.reads(f"{name} reads", got["reads"], wanted["reads"])))
    if len(mine) > len(theirs):
        found.append(("calls", f"the layer calls {len(mine)} sublayers; the reference {len(theirs)}"))
    if student["distinct_norms"] < student["norm_calls"] and reference["distinct_norms"] == reference["norm_calls"]:
        found.append(("sharing", f"one LayerNorm is used for {student['norm_calls'] - student['distinct_norms'] + 1} "
                                 "sublayers; each sublayer needs its own"))
    if student["distinct_attentions"] < student["attention_calls"] and \
            reference["distinct_attentions"] == reference["attention_calls"]:
        found.append(("sharing", "one attention module does both the self-attention and the cross-attention; "
                                 "each needs its own"))
    if _key(student["output"]) != _key(reference["output"]):
        if student["output"] == "X":
            text = "the layer returns its input X unchanged: the sublayers' results never reach the output"
        else:
            text = words.block_difference(student["output"], reference["output"]) or \
                f"the layer returns {words.describe(student['output'])}; it should return {words.describe(reference['output'])}"
        found.append(("output", text))
    found += [("dropout", text) for text in _dropout_differences(words, student["dropouts"], reference["dropouts"])]
    return found


def _dropout_differences(words, got, wanted):
    got_keys, wanted_keys = [_key(e) for e in got], [_key(e) for e in wanted]
    texts = []  # a dropout in the wrong place first: it usually explains the missing one too
    for expr, key in zip(got, got_keys):
        if key not in wanted_keys:
            texts.append(f"dropout is applied to {words.describe(expr)}; it belongs right after each sublayer, "
                         "before the residual sum")
    for expr, key in zip(wanted, wanted_keys):
        if key not in got_keys:
            texts.append(f"{words.describe(expr).replace('the raw output of ', '')}'s output gets no dropout")
    return texts


def diagnose(student, reference, kind, prefer=()):
    """The first difference, those tagged in `prefer` first; "" when the dataflows agree."""
    found = differences(student, reference, kind)
    for tag in prefer:
        for found_tag, text in found:
            if found_tag == tag:
                return text
    return found[0][1] if found else ""
