"""The judge's side of the layers' attention stand-in: the reference attention, computed here, never in a cage.

While a layer operation runs, the worker's stand-in MultiHeadAttention sends its inputs, its mask and its own
weights; the judge answers with the master's MultiHeadAttention on them. Requests come from a process that
runs student code, so each is checked (kinds, shapes, sizes) before the master's code sees it, only layer
operations may ask, and each may ask a bounded number of times.
"""
import functools

import torch

from autograder.sandboxed import harness, protocol

MAX_CALLS_PER_OPERATION = 16
MAX_DIM = 1024
MAX_TOKENS = 4096            # batch x length of one input
MAX_MASK_ELEMENTS = 2**22
_PROJECTIONS = ("W_q", "W_k", "W_v", "W_o")


class Refused(ValueError):
    """A callback the judge will not answer; the message says why, in words for the student."""


@functools.lru_cache(maxsize=None)
def master_attention_class():
    from autograder.reference import master_code  # late: reference imports this module
    namespace = {}
    exec(harness.PREAMBLE, namespace)  # noqa: S102 (the master is trusted)
    unit = master_code().classes["MultiHeadAttention"]
    exec(compile(unit.source, "<reference MultiHeadAttention>", "exec"), namespace)  # noqa: S102
    return namespace["MultiHeadAttention"]


def _tensor(value, what, dims=None):
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise Refused(f"{what} must be a floating-point tensor")
    if dims is not None and value.dim() != dims:
        raise Refused(f"{what} must have {dims} dimensions, not {value.dim()}")
    return value.detach().float().cpu()  # the master's attention is built on the CPU


def _checked(request):
    if not isinstance(request, dict):
        raise Refused("malformed request")
    dim, head_num = request.get("dim"), request.get("head_num")
    if not (isinstance(dim, int) and isinstance(head_num, int) and 0 < head_num <= dim <= MAX_DIM
            and dim % head_num == 0):
        raise Refused(f"an attention of dim {dim!r} with {head_num!r} heads cannot be built")
    inputs = {}
    for name in ("X_Q", "X_K", "X_V"):
        tensor = _tensor(request.get(name), name, dims=3)
        if tensor.shape[-1] != dim or tensor.shape[0] * tensor.shape[1] > MAX_TOKENS:
            raise Refused(f"{name} of shape {tuple(tensor.shape)} does not fit an attention of dim {dim}")
        inputs[name] = tensor
    mask = request.get("mask")
    if mask is not None and (not isinstance(mask, torch.Tensor) or mask.dim() > 4 or mask.numel() > MAX_MASK_ELEMENTS):
        raise Refused("the mask must be a tensor of at most 4 dimensions")
    mask = None if mask is None else mask.detach().cpu()
    weights = request.get("weights")
    if not isinstance(weights, dict) or set(weights) != set(_PROJECTIONS):
        raise Refused("the attention's weights are incomplete")
    for name in _PROJECTIONS:
        linear = weights[name]
        if not isinstance(linear, dict):
            raise Refused(f"{name} is malformed")
        if tuple(_tensor(linear.get("weight"), f"{name}.weight").shape) != (dim, dim):
            raise Refused(f"{name}.weight must have shape ({dim}, {dim})")
        if linear.get("bias") is not None and tuple(_tensor(linear["bias"], f"{name}.bias").shape) != (dim,):
            raise Refused(f"{name}.bias must have shape ({dim},)")
    return dim, head_num, inputs, mask, weights


def attend(request):
    """The reference attention's output for a stand-in's request (which is checked first)."""
    dim, head_num, inputs, mask, weights = _checked(request)
    attention = master_attention_class()(dim, head_num).eval()
    with torch.no_grad():
        for name in _PROJECTIONS:
            linear = getattr(attention, name)
            linear.weight.copy_(weights[name]["weight"])
            if weights[name].get("bias") is None:
                linear.bias.zero_()
            else:
                linear.bias.copy_(weights[name]["bias"])
        try:
            return attention(inputs["X_Q"], inputs["X_K"], inputs["X_V"], mask)
        except RuntimeError as error:  # shapes that do not go together: the student's layer passed them
            raise Refused(f"the attention could not run on these inputs: {str(error).splitlines()[0][:300]}") from None


def reply(op, message, calls_so_far):
    """The judge's answer to one callback of a worker running `op`, and its record: {"answered", "request"}."""
    request = message.get("args")
    try:
        if message.get(protocol.CALLBACK) != "attention":
            raise Refused("unknown callback")
        if not harness.may_ask_the_judge(op):
            raise Refused(f"the attention stand-in only answers during layer checks, not during `{op}`")
        if calls_so_far >= MAX_CALLS_PER_OPERATION:
            raise Refused(f"more than {MAX_CALLS_PER_OPERATION} attention calls in one check")
        answer = {"ok": True, "result": attend(request)}
    except Refused as refusal:
        return {"ok": False, "error": str(refusal)}, {"answered": False, "request": None}
    return answer, {"answered": True, "request": request}


def ask_in_process(request):
    """The stand-in's `ask` for trusted code graded in the judge's process: the answer a worker would get, or the
    same error, so a bug variant run here behaves as the same code run in a cage."""
    answer, _ = reply("layer_forward", {protocol.CALLBACK: "attention", "args": request}, 0)
    return protocol.callback_result("attention", answer)
