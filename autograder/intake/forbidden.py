"""Finding torch's ready-made attention in a submission without running it.

A part uses a forbidden API when an expression in its class, or in any notebook function, lambda, class or
statement its class refers to (transitively: helpers of helpers, methods of other classes, top-level
aliases), may be a torch path through one of the names below, or a lookup on a torch module under a name
computed at run time. "May be" is answered by a dataflow over names (name_flow.py), not by a list of attack
patterns, so an alias of an alias is as visible as the name itself; a name in a comment or a string is not
a use. Code the analysis cannot follow fails closed. `exec`/`eval` of strings are not read: the worker's
kernel watch (sandboxed/kernel_watch.py) is the second line for those (docs/threat_model.md).
"""
import ast

from autograder.intake.name_flow import Dataflow, NotSettled
from autograder.intake.notebook_code import GIVEN_CELLS, PART_CELLS

PUBLIC = {"MultiheadAttention", "Transformer", "TransformerEncoder", "TransformerDecoder", "TransformerEncoderLayer",
          "TransformerDecoderLayer", "scaled_dot_product_attention", "multi_head_attention_forward", "flex_attention"}
# The entry points torch 2.13 exposes to the fused kernels (dir(torch), torch.ops.aten, torch._C._nn).
PRIVATE = {
    "_scaled_dot_product_attention_math", "_scaled_dot_product_attention_math_for_mps",
    "_scaled_dot_product_flash_attention", "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_fused_attention_overrideable", "_fused_sdp_choice", "_native_multi_head_attention",
    "_transformer_encoder_layer_fwd", "_triton_multi_head_attention", "_triton_scaled_dot_attention",
    "_flash_attention_forward", "_flash_attention_forward_no_dropout_inplace", "_efficient_attention_forward",
    "_cudnn_attention_forward",
}
FORBIDDEN = PUBLIC | PRIVATE


class AuditIncomplete(Exception):
    """The notebook is too convoluted to follow (too deep to walk, or no fixpoint): its parts fail closed."""


def describe(atom):
    if atom[0] == "computed":
        return f"a lookup on {atom[1]} under a name computed at run time"
    return atom[1]


def first_uses(trees):
    """Per top-level statement (cell index, position): its first forbidden use as (line, what), and the
    statements it refers to. Raises AuditIncomplete when the code cannot be followed."""
    try:
        flow = Dataflow(trees, FORBIDDEN, sealed=set(PART_CELLS) | set(GIVEN_CELLS)).run()
    except RecursionError:
        raise AuditIncomplete("the code is nested too deeply to follow") from None
    except NotSettled as error:
        raise AuditIncomplete(str(error)) from None
    first = {}
    for owner, uses in flow.uses.items():
        line, _, node, atom = min(uses, key=lambda use: use[:2])
        dotted = _dotted(node)
        first[owner] = (line, dotted if dotted and atom[0] == "path" else describe(atom))
    return first, flow.refers


def _dotted(node):
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name) and parts:
        return ".".join([node.id] + parts[::-1])
    return None


def part_uses(trees, class_cells):
    """Part -> where it uses a forbidden API, directly or through what it refers to (helpers, lambdas,
    top-level statements, methods of other classes), in words."""
    first, refers = first_uses(trees)
    stops = set(PART_CELLS) | set(GIVEN_CELLS)
    names = {(index, position): getattr(node, "name", f"the statement on line {node.lineno}")
             for index, tree in trees.items() for position, node in enumerate(tree.body)}
    found = {}
    for part in PART_CELLS:
        cell = class_cells.get(part)
        starts = [(cell, p) for p, node in enumerate(trees.get(cell, ast.Module(body=[])).body)
                  if isinstance(node, ast.ClassDef) and node.name == part]
        path = _search(starts, first, refers, lambda owner: names[owner] in stops, names)
        if path is not None:
            (index, position), chain = path
            line, what = first[(index, position)]
            through = f" through {' -> '.join(chain)}" if chain else ""
            found[part] = f"{what} (cell {index}, line {line}){through}"
    return found


def _search(starts, first, refers, stop, names):
    """Breadth first from the part's class to the nearest statement with a forbidden use."""
    queue, seen = [(s, []) for s in starts], set(starts)
    while queue:
        owner, chain = queue.pop(0)
        if owner in first:
            return owner, chain
        for nxt in sorted(refers.get(owner, ())):
            if nxt not in seen and not stop(nxt):
                seen.add(nxt)
                queue.append((nxt, chain + [names[nxt]]))
    return None
