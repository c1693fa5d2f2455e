"""Watching a layer's forward: which sublayer was computed from what, seen in the computation itself.

A TorchFunctionMode sees every torch function the forward calls: `linear`, `layer_norm` and `dropout` with
their weight tensors, and each addition. The attention is a stand-in (attention_stand_in) that tells the
trace what it was called with. So a sublayer is known by what was computed with which parameters, never
by attribute names, hooks or registration order: `.forward()` calls, functional calls with a module's
weights, ModuleDict, ModuleList and deep copies all look the same.

Every tensor the forward makes gets an expression of where it came from, plain JSON:
"X", "enc_output", ["sub", i] (the output of the i-th sublayer call), ["dropout", e], ["norm", e],
["add", e1, e2] (operands sorted), ["other", function name, [e, ...]].
This file runs inside the sandbox too: it imports nothing from the autograder package.
"""
import json

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

PROJECTIONS = ("W_q", "W_k", "W_v", "W_o")
_ADDS = {"add", "add_", "__add__", "__radd__", "__iadd__"}
_DROPOUTS = {F.dropout, torch.dropout}
_LAYER_NORMS = {F.layer_norm, torch.layer_norm}
_LINEARS = {F.linear}
_MAX_DEPTH = 6
_active = []  # the trace of the forward now running, if any


def _key(expr):
    return json.dumps(expr, sort_keys=True)


def _clip(expr, depth=_MAX_DEPTH):
    """Expressions of long chains of unknown operations, cut: enough to tell where a value came from."""
    if not isinstance(expr, list):
        return expr
    if depth == 0:
        return ["other", "...", []]
    if expr[0] == "other":
        return ["other", expr[1], [_clip(e, depth - 1) for e in expr[2]]]
    return [expr[0]] + [_clip(e, depth - 1) for e in expr[1:]]


class Trace(TorchFunctionMode):
    """Records one forward: the sublayer calls in order, what each read, each dropout's input, each LayerNorm."""

    def __init__(self, named_inputs, masks, hidden_dim):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.masks = masks                 # name -> mask tensor the layer was given
        self.labels = {}                   # id(tensor) -> (tensor, expr); the tensor is kept so ids stay unique
        self.history = []                  # (tensor, expr), oldest first, for values that arrive by another way
        self.sublayers = []                # {"kind", "module", "reads", "mask"?}
        self.attention_modules = []        # stand-in modules, in first-call order
        self.attention_roles = []          # per sublayer call of kind attention: the module
        self.norms = []                    # (weight, bias) of each distinct LayerNorm, first use first
        self.norm_calls = 0
        self.ffns = []                     # [first linear (weight, bias), second linear (weight, bias)]
        self.dropouts = []                 # expression of what each dropout call received
        self.paused = False
        self._open_ffn, self._open_ffn_weights = None, []
        for name, tensor in named_inputs.items():
            self._label(tensor, name)

    # -- expressions

    def _label(self, tensor, expr):
        self.labels[id(tensor)] = (tensor, expr)
        self.history.append((tensor, expr))

    def expr(self, value):
        if not isinstance(value, torch.Tensor):
            return None if value is None else ["other", type(value).__name__, []]
        known = self.labels.get(id(value))
        if known is not None and known[0] is value:
            return known[1]
        for tensor, expr in reversed(self.history):
            if tensor.shape == value.shape and tensor.dtype == value.dtype and torch.equal(tensor, value):
                return expr
        return ["other", "unknown", []]

    def mask_name(self, mask):
        if mask is None:
            return None
        for name, tensor in self.masks.items():
            if mask is tensor or (isinstance(mask, torch.Tensor) and mask.shape == tensor.shape
                                  and torch.equal(mask.to(tensor.dtype), tensor)):
                return name
        return "another mask"

    # -- what the forward calls

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if self.paused or not isinstance(result, torch.Tensor):
            return result
        name = getattr(func, "__name__", "")
        if func in _LINEARS:
            self._linear(args, kwargs, result)
        elif func in _LAYER_NORMS:
            self._layer_norm(args, kwargs, result)
        elif func in _DROPOUTS:
            received = self.expr(args[0] if args else kwargs.get("input"))
            self.dropouts.append(received)
            self._label(result, ["dropout", received])
        elif name in _ADDS and len(args) >= 2:
            self._add(args[0], args[1], result)
        else:
            self._other(name, args, result)
        return result

    def _linear(self, args, kwargs, result):
        source = args[0] if args else kwargs.get("input")
        weight = args[1] if len(args) > 1 else kwargs.get("weight")
        bias = args[2] if len(args) > 2 else kwargs.get("bias")
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else ()
        if len(shape) == 2 and shape[0] == self.hidden_dim and shape[0] != shape[1]:
            # The first linear map of a feed-forward sublayer: the sublayer starts here.
            self._open_ffn = {"kind": "ffn", "module": self._ffn_index(weight), "reads": self.expr(source)}
            self._open_ffn_weights = [(weight, bias)]
            self._label(result, ["other", "ffn hidden", []])
        elif len(shape) == 2 and shape[1] == self.hidden_dim and self._open_ffn is not None:
            if self._open_ffn["module"] == len(self.ffns):
                self.ffns.append(self._open_ffn_weights + [(weight, bias)])
            self.sublayers.append(self._open_ffn)
            self._open_ffn = None
            self._label(result, ["sub", len(self.sublayers) - 1])
        else:
            self._other("linear", args, result)

    def _ffn_index(self, weight):
        for index, pair in enumerate(self.ffns):
            if pair[0][0] is weight:
                return index
        return len(self.ffns)

    def _layer_norm(self, args, kwargs, result):
        weight = args[2] if len(args) > 2 else kwargs.get("weight")
        bias = args[3] if len(args) > 3 else kwargs.get("bias")
        self.norm_calls += 1
        if weight is None or not any(w is weight for w, _ in self.norms):
            self.norms.append((weight, bias))
        self._label(result, ["norm", self.expr(args[0] if args else kwargs.get("input"))])

    def _add(self, first, second, result):
        operands = []
        for value in (first, second):
            if not isinstance(value, torch.Tensor) and value == 0:
                continue  # sum() starts from 0
            operands.append(self.expr(value))
        expr = operands[0] if len(operands) == 1 else ["add"] + sorted(operands, key=_key)
        self._label(result, expr)

    def _other(self, name, args, result):
        inputs = [a for a in args if isinstance(a, torch.Tensor)]
        for value in inputs:  # a copy, a view of the same shape, a move: the same value goes on
            if value.shape == result.shape and value.dtype == result.dtype and torch.equal(value, result):
                self._label(result, self.expr(value))
                return
        self._label(result, _clip(["other", name, [self.expr(a) for a in inputs[:3]]]))

    def attention(self, module, X_Q, X_K, X_V, mask, result):
        if not any(m is module for m in self.attention_modules):
            self.attention_modules.append(module)
        index = next(i for i, m in enumerate(self.attention_modules) if m is module)
        self.sublayers.append({"kind": "attention", "module": index, "mask": self.mask_name(mask),
                               "reads": {"q": self.expr(X_Q), "k": self.expr(X_K), "v": self.expr(X_V)}})
        self.attention_roles.append(module)
        self._label(result, ["sub", len(self.sublayers) - 1])

    # -- the whole forward

    def __enter__(self):
        _active.append(self)
        return super().__enter__()

    def __exit__(self, *exc):
        _active.remove(self)
        return super().__exit__(*exc)

    def report(self, output):
        return {"sublayers": self.sublayers, "dropouts": self.dropouts, "output": self.expr(output),
                "norm_calls": self.norm_calls, "distinct_norms": len(self.norms),
                "attention_calls": len(self.attention_roles), "distinct_attentions": len(self.attention_modules),
                "ffn_calls": sum(s["kind"] == "ffn" for s in self.sublayers), "distinct_ffns": len(self.ffns)}

    def roles(self, has_encoder_output):
        """Weight roles from the dataflow: an attention whose keys are the encoder output is the cross-attention,
        the k-th LayerNorm (by its weight) is norm{k}, the first feed-forward is ffn. A module keeps its first role."""
        roles, taken = {}, set()
        attention_calls = iter(self.attention_roles)
        for sublayer in self.sublayers:
            if sublayer["kind"] == "attention":
                module = next(attention_calls)
                role = "cross_attn" if has_encoder_output and sublayer["reads"]["k"] == "enc_output" else "self_attn"
                if role not in roles and id(module) not in taken:
                    roles[role] = ("attention", module)
                    taken.add(id(module))
        if self.ffns:
            roles["ffn"] = ("ffn", self.ffns[0])
        for index, norm in enumerate(self.norms):
            roles[f"norm{index + 1}"] = ("norm", norm)
        return roles


class _Paused:
    """Work of the grader's own inside a traced forward (sending tensors to the judge) stays out of the trace."""

    def __enter__(self):
        self.trace = _active[-1] if _active else None
        if self.trace is not None:
            self.trace.paused = True
        return self.trace

    def __exit__(self, *exc):
        if self.trace is not None:
            self.trace.paused = False


def attention_stand_in(ask):
    """A MultiHeadAttention for grading a layer: it holds W_q, W_k, W_v, W_o like the real one, but computes
    nothing itself. `ask(request)` returns the judge's answer, computed with the reference attention."""

    class MultiHeadAttention(nn.Module):
        def __init__(self, dim, head_num):
            super().__init__()
            self.dim, self.head_num, self.word_dim = dim, head_num, dim // head_num
            for name in PROJECTIONS:
                setattr(self, name, nn.Linear(dim, dim))

        def forward(self, X_Q, X_K, X_V, mask=None):
            if mask is not None and not isinstance(mask, torch.Tensor):
                raise TypeError(f"the attention's mask must be a tensor or None, not {type(mask).__name__}")
            with _Paused() as trace:
                weights = {name: {"weight": getattr(self, name).weight, "bias": getattr(self, name).bias}
                           for name in PROJECTIONS}
                answer = ask({"dim": self.dim, "head_num": self.head_num, "X_Q": X_Q, "X_K": X_K, "X_V": X_V,
                              "mask": mask, "weights": weights})
                answer = answer.to(device=X_Q.device, dtype=X_Q.dtype)
                if trace is not None:
                    trace.attention(self, X_Q, X_K, X_V, mask, answer)
            return answer

    return MultiHeadAttention
