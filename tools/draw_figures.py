"""Draw the two handout figures (model overview and attention) as PNGs.

Usage:  python tools/draw_figures.py [OUTPUT_DIR]     (default: <repo>/imgs)

Everything is drawn from code so the pictures can be regenerated whenever the
notebook's naming changes; there is no network access and no randomness.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: CI and graders have no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402
from matplotlib.path import Path as MplPath  # noqa: E402

DPI = 120
# One colour per kind of block, shared by both figures so students can match them.
COLORS = {
    "io": "#ececec",
    "embed": "#fde2c0",
    "attn": "#f9cfcf",
    "ffn": "#cfe3f5",
    "norm": "#fff1b3",
    "drop": "#e4e4e4",
    "linear": "#d4ecd0",
    "stack": "#f7f7fb",
}
EDGE = "#444444"
TAG_COLOR = "#7a1f5c"  # class names of code the students write


@dataclass
class Box:
    x: float  # centre
    y: float
    w: float
    h: float

    @property
    def top(self):
        return self.y + self.h / 2

    @property
    def bottom(self):
        return self.y - self.h / 2

    @property
    def left(self):
        return self.x - self.w / 2

    @property
    def right(self):
        return self.x + self.w / 2


def new_canvas(width, height):
    """Figure whose data units are inches, so rounded corners stay round."""
    fig = plt.figure(figsize=(width, height), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig, ax


def box(ax, x, y, w, h, text, kind, tag=None, fontsize=10, dashed=False, z=2):
    ax.add_patch(FancyBboxPatch(
        (x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0,rounding_size=0.08",
        facecolor=COLORS[kind], edgecolor=EDGE, linewidth=1.1,
        linestyle="--" if dashed else "-", zorder=z))
    # Reserve the bottom strip for the class tag so the two never collide.
    text_y = y + (0.11 if tag else 0)
    ax.text(x, text_y, text, ha="center", va="center", fontsize=fontsize,
            zorder=z + 1, linespacing=1.25)
    if tag:
        ax.text(x, y - h / 2 + 0.13, tag, ha="center", va="center", fontsize=8.5,
                family="monospace", color=TAG_COLOR, weight="bold", zorder=z + 1)
    return Box(x, y, w, h)


def arrow(ax, *points, color=EDGE, lw=1.3, style="-|>", z=1):
    """Poly-line arrow through the given points, head at the last one."""
    ax.add_patch(FancyArrowPatch(
        path=MplPath(points), arrowstyle=style, mutation_scale=13,
        color=color, linewidth=lw, zorder=z))


def column(ax, x, y0, items, width, gap=0.22):
    """Stack boxes bottom-up from y0 and connect consecutive ones.

    Each item is (text, kind, height, tag, extra_gap_before). Returns the boxes.
    """
    boxes, y = [], y0
    for text, kind, h, tag, extra in items:
        y += extra
        boxes.append(box(ax, x, y + h / 2, width, h, text, kind, tag=tag))
        y += h + gap
    for a, b in zip(boxes, boxes[1:]):
        arrow(ax, (x, a.top), (x, b.bottom))
    return boxes


def residual(ax, below, sub, norm, side):
    """Skip connection: branch under `sub`, go round it, land on `norm`'s side."""
    y_branch = (below.top + sub.bottom) / 2
    edge = norm.left if side < 0 else norm.right
    x_out = edge + side * 0.32
    ax.plot([sub.x], [y_branch], "o", color=EDGE, markersize=4, zorder=3)
    arrow(ax, (sub.x, y_branch), (x_out, y_branch), (x_out, norm.y), (edge, norm.y))


def layer_frame(ax, boxes, side, name, pad=0.55):
    """Dashed frame round one encoder/decoder layer, with class tag and xN."""
    b0, b1 = boxes[0], boxes[-1]
    left, right = b0.left - pad, b0.right + pad
    # Low enough that the layer input (first residual branch) sits inside.
    bottom, top = b0.bottom - 0.55, b1.top + 0.42
    ax.add_patch(FancyBboxPatch(
        (left, bottom), right - left, top - bottom,
        boxstyle="round,pad=0,rounding_size=0.15", facecolor=COLORS["stack"],
        edgecolor="#8888aa", linewidth=1.4, linestyle=(0, (5, 3)), zorder=0))
    ax.text(left + 0.15, top - 0.2, name, ha="left", va="center", fontsize=10,
            family="monospace", color=TAG_COLOR, weight="bold")
    lx = left - 0.15 if side < 0 else right + 0.15
    ha = "right" if side < 0 else "left"
    ymid = (bottom + top) / 2
    ax.text(lx, ymid + 0.2, "× N", ha=ha, va="center", fontsize=18, weight="bold")
    ax.text(lx, ymid - 0.2, "(layer_num = 3)", ha=ha, va="center", fontsize=9.5)
    return top


def sublayer_items(attn_specs):
    """[attention -> dropout -> add&norm]* then feed-forward -> dropout -> add&norm."""
    items = []
    for i, (text, h) in enumerate(attn_specs):
        items += [(text, "attn", h, "MultiHeadAttention", 0.12 if i else 0.6),
                  ("Dropout", "drop", 0.3, None, 0.0),
                  ("Add & LayerNorm", "norm", 0.42, None, 0.0)]
    items += [("Feed-forward\nLinear → ReLU → Linear", "ffn", 0.62, None, 0.12),
              ("Dropout", "drop", 0.3, None, 0.0),
              ("Add & LayerNorm", "norm", 0.42, None, 0.0)]
    return items


def embed_items(tokens, token_h=0.42):
    return [(tokens, "io", token_h, None, 0.0),
            ("Embedding  (vocab → dim)", "embed", 0.42, None, 0.0),
            ("+ positional encoding", "embed", 0.62, "PositionalEncoding", 0.0),
            ("Dropout", "drop", 0.3, None, 0.0)]


def draw_model(path):
    width, height, bw = 11.6, 13.5, 2.9
    fig, ax = new_canvas(width, height)
    enc_x, dec_x, y0 = 3.35, 8.25, 0.3

    enc = column(ax, enc_x, y0, embed_items("Source tokens  (batch, src_len)") +
                 sublayer_items([("Multi-head self-attention\n(source padding mask)", 0.8)]),
                 bw)
    dec_items = embed_items("Target tokens, shifted right\n(batch, tgt_len)", 0.62)
    dec_items += sublayer_items([
        ("Masked multi-head self-attention\n(causal + target padding mask)", 0.8),
        ("Multi-head cross-attention\nQ: decoder,  K, V: encoder output\n"
         "(source padding mask)", 1.0)])
    dec_items += [("Linear  (dim → tgt_vocab)", "linear", 0.42, None, 0.55),
                  ("Logits  (batch, tgt_len, tgt_vocab)\n"
                   "(softmax: inside the cross-entropy loss)", "io", 0.62, None, 0.0)]
    dec = column(ax, dec_x, y0, dec_items, bw)

    # Indices: 0-3 embedding stage, then groups of (sublayer, dropout, add&norm).
    # Post-LN: each skip lands on the Add & LayerNorm *after* its sublayer.
    for start in (3, 6):
        residual(ax, enc[start], enc[start + 1], enc[start + 3], side=-1)
    for start in (3, 6, 9):
        residual(ax, dec[start], dec[start + 1], dec[start + 3], side=+1)
    enc_top = layer_frame(ax, enc[4:10], -1, "EncoderLayer")
    layer_frame(ax, dec[4:13], +1, "DecoderLayer")

    # The last encoder layer's output is the memory every decoder layer attends to.
    cross, last = dec[7], enc[-1]
    y_route, x_mid = enc_top + 0.45, (enc_x + dec_x) / 2
    arrow(ax, (enc_x, last.top), (enc_x, y_route), (x_mid, y_route), (x_mid, cross.y),
          (cross.left, cross.y), color="#b03030", lw=1.8)
    ax.text(enc_x, y_route + 0.22, "encoder output (memory)\nfeeds every decoder layer",
            ha="center", va="bottom", fontsize=9.5, color="#b03030")
    ax.text(x_mid - 0.08, (y_route + cross.y) / 2, "K, V", ha="right", va="center",
            fontsize=10, color="#b03030", weight="bold")
    ax.text(dec_x - 0.1, (dec[6].top + cross.bottom) / 2, "Q", ha="right",
            va="center", fontsize=10, weight="bold")

    ax.text(width / 2, height - 0.35, "Encoder–decoder Transformer (post-LayerNorm)",
            ha="center", va="center", fontsize=15, weight="bold")
    ax.text(enc_x, y_route + 1.0, "Encoder", ha="center", fontsize=13, weight="bold")
    ax.text(dec_x, dec[-1].top + 0.12, "Decoder", ha="center", va="bottom", fontsize=13,
            weight="bold")
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    plt.close(fig)


def draw_scaled_dot(ax, ox):
    """Left panel; ox shifts the whole panel horizontally."""
    cx, vx, w = ox + 2.1, ox + 4.15, 2.5
    q = box(ax, cx - 0.65, 0.6, 0.9, 0.46, "Q", "io", fontsize=12)
    k = box(ax, cx + 0.65, 0.6, 0.9, 0.46, "K", "io", fontsize=12)
    v = box(ax, vx, 0.6, 0.9, 0.46, "V", "io", fontsize=12)
    mm1 = box(ax, cx, 1.7, w, 0.5, r"MatMul$(Q,\ K^{\top})$", "attn")
    scale = box(ax, cx, 2.7, w, 0.5, r"Scale:  $\times\ 1/\sqrt{d_k}$", "norm")
    mask = box(ax, cx, 3.75, w, 0.7, "Mask  (optional)\n" + r"masked scores $\to\ {-\infty}$",
               "drop", dashed=True)
    soft = box(ax, cx, 4.85, w, 0.6, "Softmax\n(over keys, last dim)", "linear")
    mm2 = box(ax, (cx + vx) / 2 - 0.1, 6.0, 3.2, 0.5, r"MatMul(weights$,\ V$)", "attn")
    out = box(ax, mm2.x, 6.95, 3.2, 0.46, "Output  (…, q_len, word_dim)", "io")
    for a, b in ((q, mm1), (k, mm1)):
        arrow(ax, (a.x, a.top), (a.x, b.bottom))
    for a, b in ((mm1, scale), (scale, mask), (mask, soft), (mm2, out)):
        arrow(ax, (a.x, a.top), (a.x, b.bottom))
    arrow(ax, (cx, soft.top), (cx, mm2.bottom))
    arrow(ax, (vx, v.top), (vx, mm2.bottom))
    # Shapes sit in the gap between the score chain and the V line; "…" = (batch, head_num).
    for y, note in (((mm1.top + scale.bottom) / 2, "scores  (…, q_len, k_len)"),
                    ((soft.top + mm2.bottom) / 2, "weights  (…, q_len, k_len)")):
        ax.text(cx + 0.12, y, note, ha="left", va="center", fontsize=8.5,
                color="#555555", style="italic")
    ax.text(ox + 2.6, 8.3, "Scaled dot-product attention", ha="center",
            fontsize=14, weight="bold")
    ax.text(ox + 2.6, 7.95, r"softmax$\left(QK^{\top}/\sqrt{d_k} + \mathrm{mask}\right)V$",
            ha="center", va="center", fontsize=11)
    ax.text(ox + 2.6, 7.55, "$d_k$ = word_dim = dim / head_num;   … = (batch, head_num)",
            ha="center", va="center", fontsize=9.5, color="#333333")


def draw_multihead(ax, ox):
    """Right panel: projections, head split, per-head attention, merge."""
    xs = [ox + 1.3, ox + 2.8, ox + 4.3]
    cx = xs[1]
    ins = [box(ax, x, 0.6, 1.15, 0.46, t, "io", fontsize=12)
           for x, t in zip(xs, ("$X_Q$", "$X_K$", "$X_V$"))]
    lins = [box(ax, x, 1.6, 1.25, 0.46, f"Linear ${t}$", "linear")
            for x, t in zip(xs, ("W_q", "W_k", "W_v"))]
    split = box(ax, cx, 2.75, 4.6, 0.7, "Split into head_num heads\n"
                "(batch, seq_len, dim) → (batch, head_num, seq_len, word_dim)",
                "embed", fontsize=9.5)
    # Offset copies behind the front box suggest one attention per head.
    for i in (2, 1):
        box(ax, cx + 0.14 * i, 4.05 + 0.12 * i, 3.5, 0.8, "", "attn", z=2 - i * 0.1)
    att = box(ax, cx, 4.05, 3.5, 0.8, "Scaled dot-product attention\n"
              "one per head, in parallel (mask broadcast)", "attn", z=2.5)
    comb = box(ax, cx, 5.45, 4.6, 0.7, "Combine heads (transpose + concat)\n"
               "(batch, head_num, seq_len, word_dim) → (batch, seq_len, dim)",
               "embed", fontsize=9.5)
    wo = box(ax, cx, 6.4, 1.6, 0.46, "Linear $W_o$", "linear")
    out = box(ax, cx, 7.25, 3.0, 0.46, "Output  (batch, seq_len, dim)", "io")
    for a, b in zip(ins, lins):
        arrow(ax, (a.x, a.top), (a.x, b.bottom))
    for lin, name in zip(lins, "QKV"):
        arrow(ax, (lin.x, lin.top), (lin.x, split.bottom))
        arrow(ax, (lin.x, split.top), (lin.x, att.bottom))
        ax.text(lin.x + 0.08, (split.top + att.bottom) / 2, name, ha="left",
                va="center", fontsize=10, weight="bold")
    for a, b in ((att, comb), (comb, wo), (wo, out)):
        arrow(ax, (cx, a.top + (0.24 if a is att else 0)), (cx, b.bottom))
    ax.text(att.right + 0.36, att.y + 0.12, "× head_num", ha="left", va="center",
            fontsize=11, weight="bold")
    ax.text(cx, 8.3, "Multi-head attention", ha="center", fontsize=14, weight="bold")
    ax.text(cx, 7.95, "class MultiHeadAttention", ha="center", va="center", fontsize=10,
            family="monospace", color=TAG_COLOR, weight="bold")


def draw_attention(path):
    width, height = 11.8, 8.8
    fig, ax = new_canvas(width, height)
    draw_scaled_dot(ax, 0.2)
    ax.plot([5.55, 5.55], [0.3, 8.2], color="#bbbbbb", lw=1, ls=":")
    draw_multihead(ax, 5.7)
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    plt.close(fig)


def main(out_dir=None):
    out = Path(out_dir) if out_dir else Path(__file__).resolve().parents[1] / "imgs"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in (("Model_small.png", draw_model), ("Attention.png", draw_attention)):
        draw(out / name)
        written.append(out / name)
        print(out / name)
    return written


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
