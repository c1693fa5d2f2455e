"""What a check does to a set of classes: build a module, give it weights by role, run it.

The judge runs these operations on the reference classes in its own process and asks a sandboxed
worker to run the very same operations on a student's classes, so both sides go through identical
code and only the classes differ. This file is copied into each sandbox next to worker.py and
protocol.py: it imports nothing from the autograder package.
"""
import linecache
import os
import traceback

import torch
import torch.nn as nn
import torch.nn.functional as F

try:  # in the judge, a module of the autograder.sandboxed package; in the cage, a plain module
    from . import dataflow
except ImportError:
    import dataflow

# Captured before any student code runs, so that patching torch later cannot fake a training run.
_cross_entropy = F.cross_entropy
_adam = torch.optim.Adam
_adam_step = torch.optim.Adam.step
_adam_zero_grad = torch.optim.Adam.zero_grad
_backward = torch.Tensor.backward
_item = torch.Tensor.item
_manual_seed = torch.manual_seed

PREAMBLE = """\
import math
import numpy as np
import torch
import torch.nn as nn
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
"""
PART_CLASSES = ("PositionalEncoding", "MultiHeadAttention", "EncoderLayer", "DecoderLayer")


def _exec_unit(namespace, unit):
    """Run one top-level statement; a failure is reported and the others still run."""
    filename = unit["filename"]
    # Only the student's own cells: tracebacks quote no other lines, and whatever is in linecache, student code
    # can read (linecache.getlines, inspect.getsource).
    if filename.startswith("<cell"):
        linecache.cache[filename] = (len(unit["source"]), None, unit["source"].splitlines(True), filename)
    try:
        exec(compile(unit["source"], filename, "exec"), namespace)  # noqa: S102 (the sandbox is the boundary)
        return None
    except BaseException as exc:  # a student's top level may even call sys.exit
        return {"label": unit["label"], "error": describe_exception(exc)}


def load_namespaces(units, given, device="cpu", ask=None):
    """Build the two namespaces a submission is graded in.

    own: the student's code with the given FFN and Transformer on top (as nbgrader grades edited locked
    cells: with the original). isolated: the same, but MultiHeadAttention is a stand-in whose calls
    `ask(request)` answers (the judge, with the reference attention), so the encoder and decoder layers are
    judged without paying again for an attention bug, and no reference code is here to be called or read.
    """
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    namespaces, errors = {}, []
    for name in ("own", "isolated"):
        namespace = {"__name__": f"submission_{name}", "device": torch.device(device), "FAST_RUN": True}
        exec(PREAMBLE, namespace)  # noqa: S102
        for unit in units:
            error = _exec_unit(namespace, unit)
            if error and name == "own":
                errors.append(error)
        for unit in given:
            _exec_unit(namespace, unit)
        if name == "isolated":
            namespace["MultiHeadAttention"] = dataflow.attention_stand_in(ask or _nobody_to_ask)
        namespaces[name] = namespace
    defined = {cls: isinstance(namespaces["own"].get(cls), type) for cls in PART_CLASSES}
    return namespaces, {"defined": defined, "errors": errors}


def _nobody_to_ask(request):
    raise RuntimeError("the attention stand-in has no judge to ask")


def describe_exception(exc, limit=1500):
    """The exception and the student's own frames, short: enough to find the line, nothing of ours."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith("<cell")]
    lines = [f"{f.filename[1:-1]}, line {f.lineno}, in {f.name}: {(f.line or '').strip()}" for f in frames[-3:]]
    lines.append("".join(traceback.format_exception_only(type(exc), exc)).strip())
    return "\n".join(lines)[:limit]


# ----------------------------------------------------------------- PositionalEncoding / attention

def _stored_table(module):
    """The PE table and how it is stored: as a buffer (the given code), a parameter, or a plain attribute."""
    for kind, named in (("buffer", module.named_buffers(recurse=False)),
                        ("parameter", module.named_parameters(recurse=False))):
        for name, tensor in named:
            if name == "PE":
                return kind, tensor
    value = module.__dict__.get("PE")
    return ("attribute", value) if isinstance(value, torch.Tensor) else (None, None)


def _dtype_name(value):
    return str(value.dtype).replace("torch.", "") if isinstance(value, torch.Tensor) else None


def _sendable(value):
    """Half-precision tensors travel as float32 (the wire has no such dtype); their dtype goes by name."""
    if not isinstance(value, torch.Tensor):
        return value
    value = value.detach()
    return value.float() if value.is_floating_point() and value.dtype != torch.float64 else value


def op_pe(ns, dim, seq_len_max, X):
    pe = ns["PositionalEncoding"](dim, seq_len_max)
    stored_as, table = _stored_table(pe)
    # A forward that raises still leaves the table to be checked: the error goes back as the forward's answer.
    try:
        with torch.no_grad():
            out, forward_error = pe(X), None
    except Exception as exc:  # noqa: BLE001
        out, forward_error = None, describe_exception(exc)
    return {"PE": _sendable(table), "stored_as": stored_as, "dtype": _dtype_name(table),
            "parameters": [name for name, _ in pe.named_parameters()], "out": _sendable(out),
            "out_dtype": _dtype_name(out), "forward_error": forward_error}


def _linear_info(module):
    weight = getattr(module, "weight", None)
    if not isinstance(module, nn.Module) or not isinstance(weight, torch.Tensor):
        return None
    return {"weight": list(weight.shape), "bias": getattr(module, "bias", None) is not None}


def op_mha_info(ns, dim, head_num):
    mha = ns["MultiHeadAttention"](dim, head_num)
    info = {name: _linear_info(getattr(mha, name, None)) for name in ("W_q", "W_k", "W_v", "W_o")}
    info["parameters"] = sum(p.numel() for p in mha.parameters())
    return info


def _set_linear(linear, weights):
    with torch.no_grad():
        linear.weight.copy_(weights["weight"])
        if getattr(linear, "bias", None) is not None:
            linear.bias.copy_(weights["bias"])


def op_mha_sdp(ns, dim, head_num, Q, K, V, mask=None):
    _manual_seed(0)
    mha = ns["MultiHeadAttention"](dim, head_num).eval()
    with torch.no_grad():
        return mha.scaled_dot_product(Q, K, V, mask)


def op_mha_forward(ns, dim, head_num, weights, X_Q, X_K, X_V, mask=None):
    _manual_seed(0)
    mha = ns["MultiHeadAttention"](dim, head_num).eval()
    for name, linear_weights in weights.items():
        _set_linear(getattr(mha, name), linear_weights)
    with torch.no_grad():
        return mha(X_Q, X_K, X_V, mask)


# ----------------------------------------------------------------- encoder and decoder layers

def _build_layer(ns, kind, dims):
    _manual_seed(0)
    cls = ns["EncoderLayer" if kind == "encoder" else "DecoderLayer"]
    return cls(dims["dim"], dims["head_num"], dims["FFN_dim"], dims["dropout"])


def _run_layer(layer, kind, inputs):
    if kind == "encoder":
        return layer(inputs["X"], inputs["mask"])
    return layer(inputs["X"], inputs["enc_output"], inputs["cross_attn_mask"], inputs["self_attn_mask"])


def _trace(layer, kind, dims, inputs):
    """One eval-mode forward under observation: (the trace, the output)."""
    named = {"X": inputs["X"]}
    if kind == "encoder":
        masks = {"mask": inputs["mask"]}
    else:
        named["enc_output"] = inputs["enc_output"]
        masks = {"self_attn_mask": inputs["self_attn_mask"], "cross_attn_mask": inputs["cross_attn_mask"]}
    trace = dataflow.Trace(named, masks, dims["FFN_dim"])
    was_training = layer.training
    layer.eval()
    with torch.no_grad(), trace:
        output = _run_layer(layer, kind, inputs)
    layer.train(was_training)
    return trace, output


def op_layer_structure(ns, kind, dims, inputs):
    layer = _build_layer(ns, kind, dims)
    report = _trace(layer, kind, dims, inputs)[0].report(None)
    counts = ("norm_calls", "distinct_norms", "attention_calls", "distinct_attentions", "ffn_calls", "distinct_ffns")
    return {**{key: report[key] for key in counts}, "parameters": sum(p.numel() for p in layer.parameters())}


def op_layer_dataflow(ns, kind, dims, inputs):
    """What each sublayer read, which mask each attention got, what each dropout received, what came out."""
    trace, output = _trace(_build_layer(ns, kind, dims), kind, dims, inputs)
    return trace.report(output)


def _assign_role_weights(roles, weights):
    with torch.no_grad():
        for role, (what, target) in roles.items():
            if role not in weights:
                continue
            if what == "attention":
                for name, linear_weights in weights[role].items():
                    _set_linear(getattr(target, name), linear_weights)
            elif what == "ffn":
                for (weight, bias), index in zip(target, ("0", "2")):
                    _copy_parameters(weight, bias, weights[role][index])
            else:
                _copy_parameters(*target, weights[role])


def _copy_parameters(weight, bias, values):
    if isinstance(weight, torch.Tensor):
        weight.copy_(values["weight"])
    if isinstance(bias, torch.Tensor):
        bias.copy_(values["bias"])


def op_layer_forward(ns, kind, dims, weights, inputs, train=False):
    layer = _build_layer(ns, kind, dims)
    trace, _ = _trace(layer, kind, dims, inputs)
    _assign_role_weights(trace.roles(kind == "decoder"), weights)
    layer.train(train)
    _manual_seed(0)
    with torch.no_grad():
        return _run_layer(layer, kind, inputs)


# ----------------------------------------------------------------- training

def _model_and_batch(ns, config, seed, device):
    _manual_seed(seed)
    vocab = config["vocab"]
    model = ns["Transformer"](vocab, vocab, config["dim"], config["head_num"], config["layer_num"],
                              config["FFN_dim"], config["seq_len_max"], config["dropout"]).to(device)
    generator = torch.Generator().manual_seed(seed)
    shape = (config["batch_size"], config["seq_len_max"])
    src = torch.randint(1, vocab, shape, generator=generator).to(device)
    tgt = torch.randint(1, vocab, shape, generator=generator).to(device)
    return model, src, tgt


def op_loss_with_weights(ns, config, weights, seed=0, device="cpu"):
    """The eval-mode loss, on the training batch, of a model built from these classes and given `weights` (by
    role, as weights_by_role names them). The judge runs it on the reference classes with a student's trained
    weights: a loss the worker reports can be faked, this one cannot."""
    model, src, tgt = _model_and_batch(ns, config, seed, device)
    targets = weights_by_role(ns, model, config)
    missing = sorted(set(targets) - set(weights))
    wrong = sorted(name for name in set(targets) & set(weights)
                   if not isinstance(weights[name], torch.Tensor) or weights[name].shape != targets[name].shape)
    if missing or wrong:
        return {"loaded": False, "missing": missing[:5], "wrong_shape": wrong[:5]}
    with torch.no_grad():
        for name, target in targets.items():
            target.copy_(weights[name].to(target.dtype))
        model.eval()
        logits = model(src, tgt[:, :-1])
        loss = _cross_entropy(logits.reshape(-1, config["vocab"]), tgt[:, 1:].reshape(-1), ignore_index=0)
    return {"loaded": True, "loss": float(_item(loss))}


def op_train(ns, config, steps, seed=0, device="cpu"):
    """The notebook's training loop on a fixed random batch, with the student's parts inside the given model."""
    fraction = os.environ.get("AUTOGRADER_GPU_MEMORY_FRACTION")
    if fraction and device == "cuda":
        # The training worker on a GPU has no address-space cap (sandbox.Limits.for_training): this caps the
        # device memory instead. Code in the same process could lift it; it is a limit, not a wall.
        torch.cuda.set_per_process_memory_fraction(float(fraction))
    model, src, tgt = _model_and_batch(ns, config, seed, device)
    vocab = config["vocab"]
    optimizer = _adam(model.parameters(), lr=0.0001, betas=(0.9, 0.98), eps=1e-9)
    model.train()
    losses = []
    for _ in range(steps):
        _adam_zero_grad(optimizer)
        logits = model(src, tgt[:, :-1])
        loss = _cross_entropy(logits.reshape(-1, vocab), tgt[:, 1:].reshape(-1), ignore_index=0)
        _backward(loss)
        _adam_step(optimizer)
        losses.append(float(_item(loss)))
    with torch.no_grad():
        trained = {role: tensor.detach().to("cpu").clone() for role, tensor in weights_by_role(ns, model, config).items()}
    return {"losses": losses, "weights": trained}


def _attention_calls(ns, layer):
    """Which MultiHeadAttention of the layer is called with which keys, however it is called: each instance's
    forward is wrapped for one traced pass (an instance attribute, so `.forward()` calls are seen too)."""
    calls, wrapped = [], []
    for module in layer.modules():
        if isinstance(module, ns["MultiHeadAttention"]) and "forward" not in vars(module):
            def watch(*args, _module=module, _forward=module.forward, **kwargs):
                keys = args[1] if len(args) > 1 else kwargs.get("X_K")
                calls.append((_module, keys))
                return _forward(*args, **kwargs)
            module.forward = watch
            wrapped.append(module)
    return calls, wrapped


def weights_by_role(ns, model, config):
    """A Transformer's parameters named by what they do, not by attribute names: `given.<name>` for the given
    model's own, and `<encoder|decoder>.<i>.<role>.<parameter>` for each layer's sublayers, roles found from a
    traced pass (dataflow.Trace; an attention reading the encoder output is the cross-attention). The judge
    loads a student's trained weights into the reference model with it (autograder/checks/training_audit.py)."""
    dims = {"dim": config["dim"], "head_num": config["head_num"], "FFN_dim": config["FFN_dim"], "dropout": 0.0}
    found = {f"given.{name}": value for name, value in model.named_parameters()
             if name.split(".")[0] in ("enc_embeds", "dec_embeds", "Linear")}
    generator = torch.Generator().manual_seed(0)
    device = next(model.parameters()).device
    for kind in ("encoder", "decoder"):
        for index, layer in enumerate(getattr(model, kind)):
            X = torch.randn(1, 5, dims["dim"], generator=generator).to(device)
            mask = torch.ones(1, 1, 1, 5, dtype=torch.bool, device=device)
            inputs = {"X": X, "mask": mask, "enc_output": torch.randn(1, 5, dims["dim"], generator=generator).to(device),
                      "cross_attn_mask": mask, "self_attn_mask": torch.tril(mask.expand(1, 1, 5, 5))}
            calls, wrapped = _attention_calls(ns, layer)
            try:
                roles = _trace(layer, kind, dims, inputs)[0].roles(kind == "decoder")
            finally:
                for module in wrapped:
                    del module.forward
            attentions = {}
            for module, keys in calls:
                role = "cross_attn" if kind == "decoder" and keys is inputs["enc_output"] else "self_attn"
                attentions.setdefault(role, module)
            prefix = f"{kind}.{index}"
            for role, module in attentions.items():
                for name in ("W_q", "W_k", "W_v", "W_o"):
                    for part in ("weight", "bias"):
                        value = getattr(getattr(module, name, None), part, None)
                        if isinstance(value, torch.Tensor):
                            found[f"{prefix}.{role}.{name}.{part}"] = value
            for role, (what, target) in roles.items():
                if what == "ffn":
                    for (weight, bias), linear in zip(target, ("0", "2")):
                        found.update({f"{prefix}.ffn.{linear}.weight": weight, f"{prefix}.ffn.{linear}.bias": bias})
                elif what == "norm":
                    found.update({f"{prefix}.{role}.weight": target[0], f"{prefix}.{role}.bias": target[1]})
    return {name: value for name, value in found.items() if isinstance(value, torch.Tensor)}


OPERATIONS = {
    "pe": ("own", op_pe),
    "mha_info": ("own", op_mha_info),
    "mha_sdp": ("own", op_mha_sdp),
    "mha_forward": ("own", op_mha_forward),
    "layer_structure": ("isolated", op_layer_structure),
    "layer_forward": ("isolated", op_layer_forward),
    "layer_dataflow": ("isolated", op_layer_dataflow),
    "train": ("own", op_train),
    "loss_with_weights": ("own", op_loss_with_weights),
}


def may_ask_the_judge(op):
    """Only the layer operations run the attention stand-in: during any other, a call to it is refused, or a
    student's own MultiHeadAttention could get the reference's answers through it."""
    return op in OPERATIONS and OPERATIONS[op][0] == "isolated"


def run(namespaces, op, args):
    namespace_name, function = OPERATIONS[op]
    return function(namespaces[namespace_name], **args)
