"""Which of torch's fused attention kernels ran while a check's operation ran, whatever name reached them.

Two modes sit around each operation. A dispatch mode sees the aten kernels themselves (the flash kernel
that `F.scaled_dot_product_attention` picks on a CPU, the fused encoder layer), so no alias or lookup hides
them. The math path and `multi_head_attention_forward` decompose into plain matmuls and softmaxes before a
dispatch mode sees anything, so a function mode catches those at the Python API.

This is a second line, after the static audit: it runs in the worker, next to student code that can pop
the modes or patch this module. A watch removed from the stacks is reported as such.

Copied into each sandbox with worker.py: it imports nothing from the autograder package.
"""
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

# aten kernels that are real kernels (not decomposed before a dispatch mode sees them), forward and backward.
KERNELS = frozenset({
    "_scaled_dot_product_flash_attention", "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_fused_attention_overrideable", "_scaled_dot_product_attention_math_for_mps",
    "_flash_attention_forward", "_flash_attention_forward_no_dropout_inplace", "_efficient_attention_forward",
    "_cudnn_attention_forward", "_native_multi_head_attention", "_transformer_encoder_layer_fwd",
    "_triton_multi_head_attention", "_triton_scaled_dot_attention", "_fused_sdp_choice",
})
# Python-level entry points whose work decomposes (the math path) or which wrap the kernels above.
FUNCTIONS = KERNELS | {"scaled_dot_product_attention", "multi_head_attention_forward",
                       "_scaled_dot_product_attention_math", "flex_attention"}
REMOVED = "the kernel watch (removed from torch's mode stacks by the code)"


def _base_name(func):
    """`aten::_native_multi_head_attention.default` and friends -> `_native_multi_head_attention`."""
    name = getattr(func, "__name__", "")
    return name.split("::")[-1].split(".")[0] if isinstance(name, str) else ""


class _Kernels(TorchDispatchMode):
    def __init__(self, seen):
        super().__init__()
        self.seen = seen

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = _base_name(func)
        if name in KERNELS:
            self.seen.add(f"aten.{name}")
        return func(*args, **(kwargs or {}))


class _Functions(TorchFunctionMode):
    def __init__(self, seen):
        super().__init__()
        self.seen = seen

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = _base_name(func)
        if name in FUNCTIONS:
            self.seen.add(name)
        return func(*args, **(kwargs or {}))


class Watch:
    """`with Watch() as watch: ...`, then `watch.report()`: the sorted names of what ran."""

    def __init__(self):
        self.seen = set()
        self._functions, self._kernels = _Functions(self.seen), _Kernels(self.seen)

    def __enter__(self):
        self._functions.__enter__()
        self._kernels.__enter__()
        return self

    def __exit__(self, *exc):
        # Each mode leaves the stack only if it is still on top: whatever the code pushed or popped, the
        # stacks are not unwound past it, and a missing watch is reported.
        intact = True
        for stack, mode in ((torch.utils._python_dispatch._get_current_dispatch_mode_stack, self._kernels),
                            (torch.overrides._get_current_function_mode_stack, self._functions)):
            modes = stack()
            if modes and modes[-1] is mode:
                mode.__exit__(None, None, None)
            else:
                intact = False
        if not intact:
            self.seen.add(REMOVED)
        return False

    def report(self):
        return sorted(self.seen)
