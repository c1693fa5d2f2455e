"""A corpus of synthetic student submissions for checking the autograder end to end.

Each submission is the release handout with its `# YOUR CODE HERE` stubs filled in. A variant gives code
for the parts it is about; every other part gets the reference solution, read from the master notebook's
`### BEGIN SOLUTION` regions, so the master stays the one source of truth.

`VARIANTS` holds correct submissions written differently from the reference (part=None: they must score
100) and submissions with one realistic bug (part = the part that must lose points; every other part,
Training aside, must keep full marks). `write_corpus(directory)` writes them as `<student_id>.ipynb`.

This module holds no tests; tests/test_grading_corpus.py grades the corpus.
"""
from __future__ import annotations

import copy
import json
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "Assignment2-1_Transformer_from_scratch.ipynb"
MASTER = ROOT / "source" / "Assignment2-1" / NOTEBOOK
RELEASE = ROOT / "release" / "Assignment2-1" / NOTEBOOK

PARTS = ("PositionalEncoding", "MultiHeadAttention", "EncoderLayer", "DecoderLayer", "Training")
GRADE_IDS = {
    "PositionalEncoding": "positional_encoding",
    "MultiHeadAttention": "multi_head_attention",
    "EncoderLayer": "encoder_layer",
    "DecoderLayer": "decoder_layer",
}

_STUB_HEAD = re.compile(r"^(?P<indent>[ \t]*)# YOUR CODE HERE[ \t]*$")
_STUB_RAISE = re.compile(r"^[ \t]*raise NotImplementedError\(.*\)[ \t]*$")
_BEGIN = re.compile(r"^[ \t]*### BEGIN SOLUTION[ \t]*$")
_END = re.compile(r"^[ \t]*### END SOLUTION[ \t]*$")


# --------------------------------------------------------------------------- notebook plumbing

def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _set_source(cell: dict, text: str) -> None:
    # Jupyter's own on-disk form: a list of lines, each but the last ending in a newline.
    cell["source"] = text.splitlines(keepends=True)


def _part_cell(notebook: dict, part: str) -> dict:
    """The code cell of a part: by its nbgrader grade_id, else the cell that defines the class."""
    code_cells = [c for c in notebook["cells"] if c.get("cell_type") == "code"]
    for cell in code_cells:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == GRADE_IDS[part]:
            return cell
    for cell in code_cells:
        if re.search(rf"^class {part}\b", _source(cell), re.M):
            return cell
    raise LookupError(f"no cell for {part} in the notebook")


def _solution_chunks(text: str) -> list[str]:
    """The code between each BEGIN/END SOLUTION pair, dedented."""
    chunks, current = [], None
    for line in text.splitlines():
        if _BEGIN.match(line):
            current = []
        elif _END.match(line):
            chunks.append(textwrap.dedent("\n".join(current)))
            current = None
        elif current is not None:
            current.append(line)
    return chunks


def reference_answers() -> dict[str, list[str]]:
    master = _load(MASTER)
    return {part: _solution_chunks(_source(_part_cell(master, part))) for part in GRADE_IDS}


def _fill_stubs(text: str, chunks: list[str], part: str) -> str:
    lines, out, used = text.splitlines(), [], 0
    i = 0
    while i < len(lines):
        head = _STUB_HEAD.match(lines[i])
        if head and i + 1 < len(lines) and _STUB_RAISE.match(lines[i + 1]):
            if used == len(chunks):
                raise ValueError(f"{part}: more stubs than the {len(chunks)} chunks given")
            indent = head.group("indent")
            body = textwrap.dedent(chunks[used]).strip("\n")
            out += [indent + line if line.strip() else "" for line in body.splitlines()]
            used += 1
            i += 2
            continue
        out.append(lines[i])
        i += 1
    if used != len(chunks):
        raise ValueError(f"{part}: {len(chunks)} chunks given for {used} stubs")
    return "\n".join(out)


@dataclass(frozen=True)
class Edited:
    """A part's stub answers plus edits to the code the handout gives around them (a student who changed a
    `DO NOT CHANGE` line of a part's own cell): each (old, new) pair replaces text once the stubs are filled."""
    chunks: tuple
    edits: tuple


def _fill_part(text: str, given, part: str) -> str:
    chunks, edits = (given.chunks, given.edits) if isinstance(given, Edited) else (given, ())
    text = _fill_stubs(text, list(chunks), part)
    for old, new in edits:
        if old not in text:
            raise ValueError(f"{part}: the given code has no {old!r} to edit")
        text = text.replace(old, new)
    return text


def fill_handout(answers: dict[str, list[str]]) -> dict:
    """The release notebook with each part's stubs replaced, in order, by the given code chunks.

    `answers` maps a part (class name) to its chunks (or an Edited); parts not given get the master's solution.
    The result looks like a notebook a student ran top to bottom: code cells carry increasing
    execution counts.
    """
    unknown = set(answers) - set(GRADE_IDS)
    if unknown:
        raise KeyError(f"not a part with code to write: {sorted(unknown)}")
    notebook = copy.deepcopy(_load(RELEASE))
    reference = reference_answers()
    for part in GRADE_IDS:
        cell = _part_cell(notebook, part)
        _set_source(cell, _fill_part(_source(cell), answers.get(part, reference[part]), part))
    count = 0
    for cell in notebook["cells"]:
        if cell.get("cell_type") == "code":
            count += 1
            cell["execution_count"] = count
            cell["outputs"] = []
    return notebook


# --------------------------------------------------------------------------- the variants

@dataclass(frozen=True)
class Variant:
    name: str
    student_id: str
    answers: dict = field(hash=False)
    part: str | None  # None: a correct submission; else the part that must lose points

    @property
    def filename(self) -> str:
        return f"{self.student_id}.ipynb"


def _c(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


# ---- reusable pieces

PE_REFERENCE_LIKE = _c("""
    position = torch.arange(seq_len_max, dtype=torch.float32)[:, None]
    even = torch.arange(0, dim, 2, dtype=torch.float32)
    angle = position / torch.pow(10000.0, even / dim)
""")

MHA_INIT = _c("""
    self.W_q = nn.Linear(dim, dim)
    self.W_k = nn.Linear(dim, dim)
    self.W_v = nn.Linear(dim, dim)
    self.W_o = nn.Linear(dim, dim)
""")


def _mha_sdp(scores="Q @ K.transpose(-2, -1) / math.sqrt(self.word_dim)",
             masking="scores = scores.masked_fill(~mask, float('-inf'))",
             softmax="probs = torch.softmax(scores, dim=-1)",
             after="heads = probs @ V"):
    """A scaled_dot_product body with one line swapped for a variant's own."""
    return "\n".join([f"scores = {scores}", "if mask is not None:", textwrap.indent(_c(masking), "    "),
                      _c(softmax), _c(after)])


ENC_INIT = _c("""
    self.self_attn = MultiHeadAttention(dim, head_num)
    self.ffn = FFN(dim, FFN_dim)
    self.norm1 = nn.LayerNorm(dim)
    self.norm2 = nn.LayerNorm(dim)
    self.dropout = nn.Dropout(dropout)
""")

DEC_INIT = _c("""
    self.self_attn = MultiHeadAttention(dim, head_num)
    self.cross_attn = MultiHeadAttention(dim, head_num)
    self.ffn = FFN(dim, FFN_dim)
    self.norm1 = nn.LayerNorm(dim)
    self.norm2 = nn.LayerNorm(dim)
    self.norm3 = nn.LayerNorm(dim)
    self.dropout = nn.Dropout(dropout)
""")


# ---- correct submissions, each written differently from the reference

CORRECT = [
    ("mask_minus_1e9", {
        "MultiHeadAttention": [MHA_INIT, _mha_sdp(masking="scores = scores.masked_fill(mask == 0, -1e9)")],
    }),
    ("mask_finfo_min", {
        "MultiHeadAttention": [MHA_INIT, _c("""
            d_k = Q.size(-1)
            scores = torch.matmul(Q, K.transpose(2, 3)) / d_k ** 0.5
            if mask is not None:
                scores = scores.masked_fill(mask.logical_not(), torch.finfo(scores.dtype).min)
            heads = torch.matmul(F.softmax(scores, dim=-1), V)
        """)],
    }),
    ("mask_torch_where", {
        "MultiHeadAttention": [MHA_INIT, _mha_sdp(
            masking="scores = torch.where(mask.bool(), scores, torch.full_like(scores, float('-inf')))")],
    }),
    ("mask_additive", {
        "MultiHeadAttention": [MHA_INIT, _mha_sdp(
            masking="scores = scores + (~mask.bool()).to(scores.dtype) * -1e9")],
    }),
    ("einsum", {
        "MultiHeadAttention": [MHA_INIT, _c("""
            scores = torch.einsum("bhqd,bhkd->bhqk", Q, K) / math.sqrt(self.word_dim)
            if mask is not None:
                scores = scores.masked_fill(mask == False, float("-inf"))  # noqa: E712
            weights = scores.softmax(dim=-1)
            heads = torch.einsum("bhqk,bhkd->bhqd", weights, V)
        """)],
    }),
    ("loop_over_heads", {
        "MultiHeadAttention": [MHA_INIT, _c("""
            if mask is not None:  # any broadcastable mask -> one entry per (batch, head, query, key)
                mask = mask.expand(Q.size(0), Q.size(1), Q.size(2), K.size(2))
            per_head = []
            for h in range(Q.size(1)):
                s = Q[:, h] @ K[:, h].transpose(-1, -2) / math.sqrt(self.word_dim)  # (batch, len_q, len_k)
                if mask is not None:
                    s = s.masked_fill(~mask[:, h], float("-inf"))
                per_head.append(torch.softmax(s, dim=-1) @ V[:, h])
            heads = torch.stack(per_head, dim=1)
        """)],
    }),
    ("loop_over_batch", {
        "MultiHeadAttention": [MHA_INIT, _c("""
            batch_num, head_num, len_q, len_k = Q.size(0), Q.size(1), Q.size(2), K.size(2)
            if mask is not None:
                mask = torch.broadcast_to(mask, (batch_num, head_num, len_q, len_k))
            outputs = []
            for b in range(batch_num):
                s = Q[b] @ K[b].transpose(-1, -2) / math.sqrt(self.word_dim)  # (head_num, len_q, len_k)
                if mask is not None:
                    s = s.masked_fill(mask[b] == 0, float("-inf"))
                outputs.append(torch.softmax(s, dim=-1) @ V[b])
            heads = torch.stack(outputs)
        """)],
    }),
    ("softmax_module_no_bias", {
        "MultiHeadAttention": [_c("""
            self.W_q = nn.Linear(dim, dim, bias=False)
            self.W_k = nn.Linear(dim, dim, bias=False)
            self.W_v = nn.Linear(dim, dim, bias=False)
            self.W_o = nn.Linear(dim, dim, bias=False)
            self.softmax = nn.Softmax(dim=-1)
        """), _mha_sdp(softmax="probs = self.softmax(scores)")],
    }),
    ("functional_dropout", {
        "EncoderLayer": [_c("""
            self.self_attn = MultiHeadAttention(dim, head_num)
            self.ffn = FFN(dim, FFN_dim)
            self.norm1 = nn.LayerNorm(dim)
            self.norm2 = nn.LayerNorm(dim)
            self.p = dropout
        """), _c("""
            attended = F.dropout(self.self_attn(X, X, X, mask), self.p, self.training)
            X = self.norm1(X + attended)
            output = self.norm2(X + F.dropout(self.ffn(X), self.p, self.training))
        """)],
        "DecoderLayer": [_c("""
            self.self_attn = MultiHeadAttention(dim, head_num)
            self.cross_attn = MultiHeadAttention(dim, head_num)
            self.ffn = FFN(dim, FFN_dim)
            self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.p = dropout
        """), _c("""
            X = self.norm1(X + F.dropout(self.self_attn(X, X, X, self_attn_mask), self.p, self.training))
            X = self.norm2(X + F.dropout(self.cross_attn(X, enc_output, enc_output, cross_attn_mask),
                                         self.p, self.training))
            output = self.norm3(X + F.dropout(self.ffn(X), self.p, self.training))
        """)],
    }),
    ("renamed_and_reordered", {
        "EncoderLayer": [_c("""
            self.drop = nn.Dropout(dropout)
            self.ln_b = nn.LayerNorm(dim)
            self.ln_a = nn.LayerNorm(dim)
            self.mlp = FFN(dim, FFN_dim)
            self.attn = MultiHeadAttention(dim, head_num)
        """), _c("""
            h = self.ln_a(X + self.drop(self.attn(X, X, X, mask)))
            output = self.ln_b(h + self.drop(self.mlp(h)))
        """)],
        "DecoderLayer": [_c("""
            self.mlp = FFN(dim, FFN_dim)
            self.ln_c = nn.LayerNorm(dim)
            self.ln_b = nn.LayerNorm(dim)
            self.ln_a = nn.LayerNorm(dim)
            self.drop = nn.Dropout(dropout)
            self.attn_enc = MultiHeadAttention(dim, head_num)
            self.attn = MultiHeadAttention(dim, head_num)
        """), _c("""
            h = self.ln_a(X + self.drop(self.attn(X, X, X, self_attn_mask)))
            h = self.ln_b(h + self.drop(self.attn_enc(h, enc_output, enc_output, cross_attn_mask)))
            output = self.ln_c(h + self.drop(self.mlp(h)))
        """)],
    }),
    ("layernorms_in_modulelist", {
        "EncoderLayer": [_c("""
            self.self_attn = MultiHeadAttention(dim, head_num)
            self.ffn = FFN(dim, FFN_dim)
            self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(2)])
            self.dropout = nn.Dropout(dropout)
        """), _c("""
            sublayers = [lambda x: self.self_attn(x, x, x, mask), self.ffn]
            for norm, sublayer in zip(self.norms, sublayers):
                X = norm(X + self.dropout(sublayer(X)))
            output = X
        """)],
        "DecoderLayer": [_c("""
            self.self_attn = MultiHeadAttention(dim, head_num)
            self.cross_attn = MultiHeadAttention(dim, head_num)
            self.ffn = FFN(dim, FFN_dim)
            self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(3))
            self.dropout = nn.Dropout(dropout)
        """), _c("""
            X = self.norms[0](X + self.dropout(self.self_attn(X, X, X, self_attn_mask)))
            X = self.norms[1](X + self.dropout(self.cross_attn(X, enc_output, enc_output, cross_attn_mask)))
            output = self.norms[2](X + self.dropout(self.ffn(X)))
        """)],
    }),
    ("pe_exp_log", {
        "PositionalEncoding": [_c("""
            position = torch.arange(0, seq_len_max).unsqueeze(1).float()
            two_i = torch.arange(0, dim, 2).float()
            div_term = torch.exp(-math.log(10000.0) * two_i / dim)
            PE[:, 0::2] = torch.sin(position * div_term)
            PE[:, 1::2] = torch.cos(position * div_term)
        """)],
    }),
    ("pe_double_loop", {
        "PositionalEncoding": [_c("""
            for pos in range(seq_len_max):
                for i in range(0, dim, 2):
                    angle = pos / (10000 ** (i / dim))
                    PE[pos, i] = math.sin(angle)
                    PE[pos, i + 1] = math.cos(angle)
        """)],
    }),
    ("pe_stack_interleave", {
        "PositionalEncoding": [PE_REFERENCE_LIKE + "\n" + _c("""
            # (seq_len_max, dim/2, 2) -> (seq_len_max, dim): sin, cos, sin, cos, ...
            PE = torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1).reshape(seq_len_max, dim)
        """)],
    }),
    ("pe_numpy_cast_back", {
        # Built in NumPy (float64), then cast to the model's float32 before the given code stores it.
        "PositionalEncoding": [_c("""
            position = np.arange(seq_len_max)[:, None]
            rates = 1.0 / np.power(10000.0, np.arange(0, dim, 2) / dim)
            table = np.zeros((seq_len_max, dim))
            table[:, 0::2] = np.sin(position * rates)
            table[:, 1::2] = np.cos(position * rates)
            PE = torch.from_numpy(table).float()
        """)],
    }),
    ("sdp_query_scaled_first", {
        # Scales the queries before the product, and masks with a boolean index on a copy.
        "MultiHeadAttention": [MHA_INIT, _c("""
            scores = (Q / self.word_dim ** 0.5) @ K.transpose(-1, -2)
            if mask is not None:
                blocked = (mask == 0).expand_as(scores)
                scores = scores.clone()
                scores[blocked] = float("-inf")
            heads = torch.matmul(scores.softmax(-1), V)
        """)],
    }),
    ("separate_dropouts", {
        "EncoderLayer": [_c("""
            self.self_attn = MultiHeadAttention(dim, head_num)
            self.attn_dropout = nn.Dropout(dropout)
            self.norm1 = nn.LayerNorm(dim)
            self.ffn = FFN(dim, FFN_dim)
            self.ffn_dropout = nn.Dropout(dropout)
            self.norm2 = nn.LayerNorm(dim)
        """), _c("""
            X = self.norm1(X + self.attn_dropout(self.self_attn(X, X, X, mask)))
            X = self.norm2(X + self.ffn_dropout(self.ffn(X)))
            output = X
        """)],
        "DecoderLayer": [_c("""
            self.self_attn = MultiHeadAttention(dim, head_num)
            self.drop1 = nn.Dropout(dropout)
            self.norm1 = nn.LayerNorm(dim)
            self.cross_attn = MultiHeadAttention(dim, head_num)
            self.drop2 = nn.Dropout(dropout)
            self.norm2 = nn.LayerNorm(dim)
            self.ffn = FFN(dim, FFN_dim)
            self.drop3 = nn.Dropout(dropout)
            self.norm3 = nn.LayerNorm(dim)
        """), _c("""
            X = self.norm1(X + self.drop1(self.self_attn(X, X, X, self_attn_mask)))
            X = self.norm2(X + self.drop2(self.cross_attn(X, enc_output, enc_output, cross_attn_mask)))
            X = self.norm3(X + self.drop3(self.ffn(X)))
            output = X
        """)],
    }),
    ("decoder_keyword_calls", {
        "DecoderLayer": [DEC_INIT, _c("""
            attended = self.self_attn(X_Q=X, X_K=X, X_V=X, mask=self_attn_mask)
            X = self.norm1(X + self.dropout(attended))
            attended = self.cross_attn(X, X_K=enc_output, X_V=enc_output, mask=cross_attn_mask)
            X = self.norm2(X + self.dropout(attended))
            X = self.norm3(X + self.dropout(self.ffn(X)))
            output = X
        """)],
    }),
    ("step_by_step", {
        # The seed student's style, one temporary per sublayer, with a LayerNorm per sublayer.
        "EncoderLayer": [ENC_INIT, _c("""
            attn_out = self.self_attn(X, X, X, mask)
            attn_out = self.dropout(attn_out)
            X = X + attn_out
            X = self.norm1(X)

            ffn_out = self.ffn(X)
            ffn_out = self.dropout(ffn_out)
            X = X + ffn_out
            X = self.norm2(X)
            output = X
        """)],
        "DecoderLayer": [DEC_INIT, _c("""
            residual = X
            X = self.self_attn(X, X, X, self_attn_mask)
            X = self.norm1(residual + self.dropout(X))

            residual = X
            X = self.cross_attn(X, enc_output, enc_output, cross_attn_mask)
            X = self.norm2(residual + self.dropout(X))

            residual = X
            X = self.ffn(X)
            X = self.norm3(residual + self.dropout(X))
            output = X
        """)],
    }),
    # Styles the layer checks must see through (issue 10): the grader observes what was computed with which
    # weights, so how a sublayer is reached does not matter.
    ("explicit_forward_calls", {
        "EncoderLayer": [ENC_INIT, _c("""
            X = self.norm1.forward(X + self.dropout.forward(self.self_attn.forward(X, X, X, mask)))
            output = self.norm2.forward(X + self.dropout.forward(self.ffn.forward(X)))
        """)],
        "DecoderLayer": [DEC_INIT, _c("""
            X = self.norm1.forward(X + self.dropout.forward(self.self_attn.forward(X, X, X, self_attn_mask)))
            X = self.norm2.forward(X + self.dropout.forward(
                self.cross_attn.forward(X, enc_output, enc_output, cross_attn_mask)))
            output = self.norm3.forward(X + self.dropout.forward(self.ffn.forward(X)))
        """)],
    }),
    ("functional_layer_norm_with_module_weights", {
        "EncoderLayer": [ENC_INIT, _c("""
            def norm(module, x):
                return F.layer_norm(x, module.normalized_shape, module.weight, module.bias, module.eps)
            X = norm(self.norm1, X + F.dropout(self.self_attn(X, X, X, mask), self.dropout.p, self.training))
            output = norm(self.norm2, X + F.dropout(self.ffn(X), self.dropout.p, self.training))
        """)],
        "DecoderLayer": [DEC_INIT, _c("""
            def norm(module, x):
                return F.layer_norm(x, module.normalized_shape, module.weight, module.bias, module.eps)
            X = norm(self.norm1, torch.add(X, self.dropout(self.self_attn(X, X, X, self_attn_mask))))
            X = norm(self.norm2, torch.add(X, self.dropout(self.cross_attn(X, enc_output, enc_output, cross_attn_mask))))
            output = norm(self.norm3, torch.add(X, self.dropout(self.ffn(X))))
        """)],
    }),
    ("deepcopy_clones", {
        "EncoderLayer": [_c("""
            import copy
            norm = nn.LayerNorm(dim)
            self.norms = nn.ModuleList([copy.deepcopy(norm) for _ in range(2)])
            self.attention = MultiHeadAttention(dim, head_num)
            self.feed_forward = FFN(dim, FFN_dim)
            self.drop = nn.Dropout(dropout)
        """), _c("""
            X = self.norms[0](X + self.drop(self.attention(X, X, X, mask)))
            output = self.norms[1](X + self.drop(self.feed_forward(X)))
        """)],
        "DecoderLayer": [_c("""
            import copy
            attention = MultiHeadAttention(dim, head_num)
            self.attentions = nn.ModuleList([copy.deepcopy(attention) for _ in range(2)])
            self.norms = nn.ModuleList([copy.deepcopy(nn.LayerNorm(dim)) for _ in range(3)])
            self.feed_forward = FFN(dim, FFN_dim)
            self.drop = nn.Dropout(dropout)
        """), _c("""
            X = self.norms[0](X + self.drop(self.attentions[0](X, X, X, self_attn_mask)))
            X = self.norms[1](X + self.drop(self.attentions[1](X, enc_output, enc_output, cross_attn_mask)))
            output = self.norms[2](X + self.drop(self.feed_forward(X)))
        """)],
    }),
    ("helper_per_sublayer", {
        "EncoderLayer": [ENC_INIT, _c("""
            def attention_block(x):
                return self.norm1(x + self.dropout(self.self_attn(x, x, x, mask)))

            def feed_forward_block(x):
                return self.norm2(x + self.dropout(self.ffn(x)))

            output = feed_forward_block(attention_block(X))
        """)],
        "DecoderLayer": [DEC_INIT, _c("""
            def sublayer(x, norm, compute):
                return norm(x + self.dropout(compute(x)))

            X = sublayer(X, self.norm1, lambda x: self.self_attn(x, x, x, self_attn_mask))
            X = sublayer(X, self.norm2, lambda x: self.cross_attn(x, enc_output, enc_output, cross_attn_mask))
            output = sublayer(X, self.norm3, self.ffn)
        """)],
    }),
    ("module_dict", {
        "EncoderLayer": [_c("""
            self.parts = nn.ModuleDict({
                "norm_after_ffn": nn.LayerNorm(dim),
                "ffn": FFN(dim, FFN_dim),
                "norm_after_attention": nn.LayerNorm(dim),
                "attention": MultiHeadAttention(dim, head_num),
                "dropout": nn.Dropout(dropout),
            })
        """), _c("""
            p = self.parts
            X = p["norm_after_attention"](X + p["dropout"](p["attention"](X, X, X, mask)))
            output = p["norm_after_ffn"](X + p["dropout"](p["ffn"](X)))
        """)],
        "DecoderLayer": [_c("""
            self.parts = nn.ModuleDict({
                "ffn": FFN(dim, FFN_dim),
                "cross": MultiHeadAttention(dim, head_num),
                "self": MultiHeadAttention(dim, head_num),
                "norms": nn.ModuleList([nn.LayerNorm(dim) for _ in range(3)]),
                "dropout": nn.Dropout(dropout),
            })
        """), _c("""
            p = self.parts
            X = p["norms"][0](X + p["dropout"](p["self"](X, X, X, self_attn_mask)))
            X = p["norms"][1](X + p["dropout"](p["cross"](X, enc_output, enc_output, cross_attn_mask)))
            output = p["norms"][2](X + p["dropout"](p["ffn"](X)))
        """)],
    }),
    ("residual_with_sum_and_in_place_add", {
        "EncoderLayer": [ENC_INIT, _c("""
            attended = self.dropout(self.self_attn(X, X, X, mask))
            X = self.norm1(sum([X, attended]))
            h = self.dropout(self.ffn(X))
            h += X
            output = self.norm2(h)
        """)],
        "DecoderLayer": [DEC_INIT, _c("""
            X = self.norm1(X.add(self.dropout(self.self_attn(X, X, X, self_attn_mask))))
            h = self.dropout(self.cross_attn(X, enc_output.clone(), enc_output.contiguous(), cross_attn_mask))
            X = self.norm2(h + X)
            output = self.norm3(self.dropout(self.ffn(X)) + X)
        """)],
    }),
]


# ---- one realistic bug each, and the part it belongs to

BUGS = [
    # PositionalEncoding
    ("pe_sin_cos_swapped", "PositionalEncoding", {"PositionalEncoding": [PE_REFERENCE_LIKE + "\n" + _c("""
        PE[:, 0::2] = torch.cos(angle)
        PE[:, 1::2] = torch.sin(angle)
    """)]}),
    ("pe_halves_not_interleaved", "PositionalEncoding", {"PositionalEncoding": [PE_REFERENCE_LIKE + "\n" + _c("""
        PE[:, :dim // 2] = torch.sin(angle)
        PE[:, dim // 2:] = torch.cos(angle)
    """)]}),
    ("pe_exponent_doubled", "PositionalEncoding", {"PositionalEncoding": [_c("""
        position = torch.arange(seq_len_max, dtype=torch.float32)[:, None]
        i = torch.arange(0, dim, 2, dtype=torch.float32)  # already 2i
        angle = position / 10000 ** (2 * i / dim)
        PE[:, 0::2] = torch.sin(angle)
        PE[:, 1::2] = torch.cos(angle)
    """)]}),
    ("pe_exponent_per_column", "PositionalEncoding", {"PositionalEncoding": [_c("""
        position = torch.arange(seq_len_max, dtype=torch.float32)[:, None]
        column = torch.arange(dim, dtype=torch.float32)
        angle = position / 10000 ** (column / dim)  # odd column 2i+1 uses (2i+1)/dim
        PE[:, 0::2] = torch.sin(angle[:, 0::2])
        PE[:, 1::2] = torch.cos(angle[:, 1::2])
    """)]}),
    ("pe_positions_from_one", "PositionalEncoding", {"PositionalEncoding": [_c("""
        position = torch.arange(1, seq_len_max + 1, dtype=torch.float32).unsqueeze(1)
        two_i = torch.arange(0, dim, 2, dtype=torch.float32)
        angle = position / 10000 ** (two_i / dim)
        PE[:, 0::2] = torch.sin(angle)
        PE[:, 1::2] = torch.cos(angle)
    """)]}),
    # MultiHeadAttention
    ("mha_scaled_by_sqrt_dim", "MultiHeadAttention", {"MultiHeadAttention": [
        MHA_INIT, _mha_sdp(scores="Q @ K.transpose(-2, -1) / math.sqrt(self.dim)")]}),
    ("mha_not_scaled", "MultiHeadAttention", {"MultiHeadAttention": [
        MHA_INIT, _mha_sdp(scores="Q @ K.transpose(-2, -1)")]}),
    ("mha_softmax_over_queries", "MultiHeadAttention", {"MultiHeadAttention": [
        MHA_INIT, _mha_sdp(softmax="probs = torch.softmax(scores, dim=-2)")]}),
    ("mha_mask_after_softmax", "MultiHeadAttention", {"MultiHeadAttention": [MHA_INIT, _c("""
        scores = Q @ K.transpose(-2, -1) / math.sqrt(self.word_dim)
        probs = torch.softmax(scores, dim=-1)
        if mask is not None:
            probs = probs.masked_fill(mask == 0, 0.0)
        heads = probs @ V
    """)]}),
    ("mha_mask_inverted", "MultiHeadAttention", {"MultiHeadAttention": [
        MHA_INIT, _mha_sdp(masking="scores = scores.masked_fill(mask == 1, float('-inf'))")]}),
    ("mha_masked_scores_set_to_zero", "MultiHeadAttention", {"MultiHeadAttention": [
        MHA_INIT, _mha_sdp(masking="scores = scores.masked_fill(~mask, 0.0)")]}),
    # PositionalEncoding and MultiHeadAttention, written for the property probes (autograder/checks/probe_*.py).
    # Those in UNSEEN were written before the probes and not looked at while the probes were written.
    ("pe_float64_never_cast", "PositionalEncoding", {"PositionalEncoding": [_c("""
        position = np.arange(seq_len_max)[:, None]
        rates = 1.0 / np.power(10000.0, np.arange(0, dim, 2) / dim)
        table = np.zeros((seq_len_max, dim))
        table[:, 0::2] = np.sin(position * rates)
        table[:, 1::2] = np.cos(position * rates)
        PE = torch.from_numpy(table)
    """)]}),
    ("pe_as_parameter", "PositionalEncoding", {"PositionalEncoding": Edited(
        (PE_REFERENCE_LIKE + "\n" + "PE[:, 0::2] = torch.sin(angle)\nPE[:, 1::2] = torch.cos(angle)",),
        (("self.register_buffer('PE', PE.unsqueeze(0))", "self.PE = nn.Parameter(PE.unsqueeze(0))"),))}),
    ("pe_exponent_off_by_one_column", "PositionalEncoding", {"PositionalEncoding": [_c("""
        position = torch.arange(seq_len_max, dtype=torch.float32)[:, None]
        i = torch.arange(0, dim, 2, dtype=torch.float32)
        angle = position / 10000 ** ((i + 1) / dim)
        PE[:, 0::2] = torch.sin(angle)
        PE[:, 1::2] = torch.cos(angle)
    """)]}),
    ("pe_forward_adds_whole_table", "PositionalEncoding", {"PositionalEncoding": Edited(
        (PE_REFERENCE_LIKE + "\n" + "PE[:, 0::2] = torch.sin(angle)\nPE[:, 1::2] = torch.cos(angle)",),
        (("return X + self.PE[:, :X.size(1)]", "return X + self.PE"),))}),
    ("pe_base_1000", "PositionalEncoding", {"PositionalEncoding": [_c("""
        position = torch.arange(seq_len_max, dtype=torch.float32)[:, None]
        two_i = torch.arange(0, dim, 2, dtype=torch.float32)
        angle = position / 1000 ** (two_i / dim)
        PE[:, 0::2] = torch.sin(angle)
        PE[:, 1::2] = torch.cos(angle)
    """)]}),
    ("pe_forward_scales_input", "PositionalEncoding", {"PositionalEncoding": Edited(
        (PE_REFERENCE_LIKE + "\n" + "PE[:, 0::2] = torch.sin(angle)\nPE[:, 1::2] = torch.cos(angle)",),
        (("return X + self.PE[:, :X.size(1)]", "return X * math.sqrt(X.size(-1)) + self.PE[:, :X.size(1)]"),))}),
    ("pe_forward_adds_last_rows", "PositionalEncoding", {"PositionalEncoding": Edited(
        (PE_REFERENCE_LIKE + "\n" + "PE[:, 0::2] = torch.sin(angle)\nPE[:, 1::2] = torch.cos(angle)",),
        (("return X + self.PE[:, :X.size(1)]", "return X + self.PE[:, -X.size(1):]"),))}),
    ("pe_table_transposed", "PositionalEncoding", {"PositionalEncoding": Edited(
        (PE_REFERENCE_LIKE + "\n" + "PE[:, 0::2] = torch.sin(angle)\nPE[:, 1::2] = torch.cos(angle)",),
        (("self.register_buffer('PE', PE.unsqueeze(0))", "self.register_buffer('PE', PE.T.unsqueeze(0))"),))}),
    ("mha_scaled_by_2", "MultiHeadAttention", {"MultiHeadAttention": [
        MHA_INIT, _mha_sdp(scores="Q @ K.transpose(-2, -1) / 2")]}),
    ("mha_masked_scores_minus_one", "MultiHeadAttention", {"MultiHeadAttention": [
        MHA_INIT, _mha_sdp(masking="scores = scores.masked_fill(~mask, -1.0)")]}),
    ("mha_returns_probabilities", "MultiHeadAttention", {"MultiHeadAttention": [
        MHA_INIT, _mha_sdp(after="heads = probs")]}),
    ("mha_no_output_projection", "MultiHeadAttention", {"MultiHeadAttention": Edited(
        (MHA_INIT, _mha_sdp()), (("output = self.W_o(self.combine(heads))", "output = self.combine(heads)"),))}),
    ("mha_key_value_projections_swapped", "MultiHeadAttention", {"MultiHeadAttention": Edited(
        (MHA_INIT, _mha_sdp()), (("K = self.split(self.W_k(X_K))", "K = self.split(self.W_v(X_K))"),
                                 ("V = self.split(self.W_v(X_V))", "V = self.split(self.W_k(X_V))")))}),
    ("mha_sdp_in_float64", "MultiHeadAttention", {"MultiHeadAttention": [
        MHA_INIT, _mha_sdp(scores="Q.double() @ K.double().transpose(-2, -1) / math.sqrt(self.word_dim)",
                           after="heads = probs @ V.double()")]}),
    ("mha_scaled_by_query_length", "MultiHeadAttention", {"MultiHeadAttention": [
        MHA_INIT, _mha_sdp(scores="Q @ K.transpose(-2, -1) / math.sqrt(Q.size(-2))")]}),
    ("mha_softmax_over_heads", "MultiHeadAttention", {"MultiHeadAttention": [
        MHA_INIT, _mha_sdp(softmax="probs = torch.softmax(scores, dim=1)")]}),
    ("mha_dropout_in_sdp", "MultiHeadAttention", {"MultiHeadAttention": [
        MHA_INIT, _mha_sdp(softmax="probs = F.dropout(torch.softmax(scores, dim=-1), 0.1)")]}),
    ("mha_combine_without_transpose", "MultiHeadAttention", {"MultiHeadAttention": Edited(
        (MHA_INIT, _mha_sdp()), (("return X.transpose(1, 2).contiguous().view(batch_num, seq_len, self.dim)",
                                  "return X.contiguous().view(batch_num, seq_len, self.dim)"),))}),
    ("mha_mask_added_as_numbers", "MultiHeadAttention", {"MultiHeadAttention": [
        MHA_INIT, _mha_sdp(masking="scores = scores + mask")]}),
    ("mha_queries_from_key_input", "MultiHeadAttention", {"MultiHeadAttention": Edited(
        (MHA_INIT, _mha_sdp()), (("Q = self.split(self.W_q(X_Q))", "Q = self.split(self.W_q(X_K))"),))}),
    # EncoderLayer
    ("enc_pre_layernorm", "EncoderLayer", {"EncoderLayer": [ENC_INIT, _c("""
        h = self.norm1(X)
        X = X + self.dropout(self.self_attn(h, h, h, mask))
        X = X + self.dropout(self.ffn(self.norm2(X)))
        output = X
    """)]}),
    ("enc_no_attention_residual", "EncoderLayer", {"EncoderLayer": [ENC_INIT, _c("""
        X = self.norm1(self.dropout(self.self_attn(X, X, X, mask)))
        X = self.norm2(X + self.dropout(self.ffn(X)))
        output = X
    """)]}),
    ("enc_dropout_after_layernorm", "EncoderLayer", {"EncoderLayer": [ENC_INIT, _c("""
        X = self.dropout(self.norm1(X + self.self_attn(X, X, X, mask)))
        X = self.dropout(self.norm2(X + self.ffn(X)))
        output = X
    """)]}),
    ("enc_no_ffn_dropout", "EncoderLayer", {"EncoderLayer": [ENC_INIT, _c("""
        X = self.norm1(X + self.dropout(self.self_attn(X, X, X, mask)))
        X = self.norm2(X + self.ffn(X))
        output = X
    """)]}),
    ("enc_one_shared_layernorm", "EncoderLayer", {"EncoderLayer": [_c("""
        self.self_attn = MultiHeadAttention(dim, head_num)
        self.ffn = FFN(dim, FFN_dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
    """), _c("""
        X = self.norm(X + self.dropout(self.self_attn(X, X, X, mask)))
        X = self.norm(X + self.dropout(self.ffn(X)))
        output = X
    """)]}),
    ("enc_mask_not_passed", "EncoderLayer", {"EncoderLayer": [ENC_INIT, _c("""
        X = self.norm1(X + self.dropout(self.self_attn(X, X, X)))
        X = self.norm2(X + self.dropout(self.ffn(X)))
        output = X
    """)]}),
    # DecoderLayer
    ("dec_one_shared_layernorm", "DecoderLayer", {"DecoderLayer": [_c("""
        self.attn_self = MultiHeadAttention(dim, head_num)
        self.attn_cross = MultiHeadAttention(dim, head_num)
        self.feed_forward = FFN(dim, FFN_dim)
        self.layer_norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
    """), _c("""
        h = self.attn_self(X, X, X, self_attn_mask)
        X = self.layer_norm(X + self.drop(h))
        h = self.attn_cross(X, enc_output, enc_output, cross_attn_mask)
        X = self.layer_norm(X + self.drop(h))
        h = self.feed_forward(X)
        X = self.layer_norm(X + self.drop(h))
        output = X
    """)]}),
    ("dec_one_attention_for_both", "DecoderLayer", {"DecoderLayer": [_c("""
        self.attn = MultiHeadAttention(dim, head_num)
        self.ffn = FFN(dim, FFN_dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
    """), _c("""
        X = self.norm1(X + self.dropout(self.attn(X, X, X, self_attn_mask)))
        X = self.norm2(X + self.dropout(self.attn(X, enc_output, enc_output, cross_attn_mask)))
        X = self.norm3(X + self.dropout(self.ffn(X)))
        output = X
    """)]}),
    ("dec_masks_swapped", "DecoderLayer", {"DecoderLayer": [DEC_INIT, _c("""
        X = self.norm1(X + self.dropout(self.self_attn(X, X, X, cross_attn_mask)))
        X = self.norm2(X + self.dropout(self.cross_attn(X, enc_output, enc_output, self_attn_mask)))
        X = self.norm3(X + self.dropout(self.ffn(X)))
        output = X
    """)]}),
    ("dec_cross_queries_from_encoder", "DecoderLayer", {"DecoderLayer": [DEC_INIT, _c("""
        X = self.norm1(X + self.dropout(self.self_attn(X, X, X, self_attn_mask)))
        X = self.norm2(X + self.dropout(self.cross_attn(enc_output, X, X, cross_attn_mask)))
        X = self.norm3(X + self.dropout(self.ffn(X)))
        output = X
    """)]}),
    ("dec_no_cross_residual", "DecoderLayer", {"DecoderLayer": [DEC_INIT, _c("""
        X = self.norm1(X + self.dropout(self.self_attn(X, X, X, self_attn_mask)))
        X = self.norm2(self.dropout(self.cross_attn(X, enc_output, enc_output, cross_attn_mask)))
        X = self.norm3(X + self.dropout(self.ffn(X)))
        output = X
    """)]}),
    ("dec_pre_layernorm", "DecoderLayer", {"DecoderLayer": [DEC_INIT, _c("""
        h = self.norm1(X)
        X = X + self.dropout(self.self_attn(h, h, h, self_attn_mask))
        h = self.norm2(X)
        X = X + self.dropout(self.cross_attn(h, enc_output, enc_output, cross_attn_mask))
        X = X + self.dropout(self.ffn(self.norm3(X)))
        output = X
    """)]}),
    ("dec_no_cross_dropout", "DecoderLayer", {"DecoderLayer": [DEC_INIT, _c("""
        X = self.norm1(X + self.dropout(self.self_attn(X, X, X, self_attn_mask)))
        X = self.norm2(X + self.cross_attn(X, enc_output, enc_output, cross_attn_mask))
        X = self.norm3(X + self.dropout(self.ffn(X)))
        output = X
    """)]}),
    # Layer bugs of issue 10. The grader must say what is wrong from the dataflow, not only that points were lost
    # (tests/test_layer_dataflow.py holds the words each must get).
    ("enc_ffn_reads_layer_input", "EncoderLayer", {"EncoderLayer": [ENC_INIT, _c("""
        h = self.norm1(X + self.dropout(self.self_attn(X, X, X, mask)))
        output = self.norm2(h + self.dropout(self.ffn(X)))
    """)]}),
    ("enc_residual_after_norm", "EncoderLayer", {"EncoderLayer": [ENC_INIT, _c("""
        X = X + self.dropout(self.norm1(self.self_attn(X, X, X, mask)))
        output = X + self.dropout(self.norm2(self.ffn(X)))
    """)]}),
    ("enc_dropout_on_residual", "EncoderLayer", {"EncoderLayer": [ENC_INIT, _c("""
        X = self.norm1(self.dropout(X + self.self_attn(X, X, X, mask)))
        output = self.norm2(self.dropout(X + self.ffn(X)))
    """)]}),
    ("enc_returns_input", "EncoderLayer", {"EncoderLayer": [ENC_INIT, _c("""
        h = self.norm1(X + self.dropout(self.self_attn(X, X, X, mask)))
        h = self.norm2(h + self.dropout(self.ffn(h)))
        output = X
    """)]}),
    ("dec_cross_keys_from_decoder_input", "DecoderLayer", {"DecoderLayer": [DEC_INIT, _c("""
        X = self.norm1(X + self.dropout(self.self_attn(X, X, X, self_attn_mask)))
        X = self.norm2(X + self.dropout(self.cross_attn(X, X, X, cross_attn_mask)))
        output = self.norm3(X + self.dropout(self.ffn(X)))
    """)]}),
    ("dec_cross_mask_not_passed", "DecoderLayer", {"DecoderLayer": [DEC_INIT, _c("""
        X = self.norm1(X + self.dropout(self.self_attn(X, X, X, self_attn_mask)))
        X = self.norm2(X + self.dropout(self.cross_attn(X, enc_output, enc_output)))
        output = self.norm3(X + self.dropout(self.ffn(X)))
    """)]}),
    ("dec_residual_after_norm", "DecoderLayer", {"DecoderLayer": [DEC_INIT, _c("""
        X = X + self.dropout(self.norm1(self.self_attn(X, X, X, self_attn_mask)))
        X = X + self.dropout(self.norm2(self.cross_attn(X, enc_output, enc_output, cross_attn_mask)))
        output = X + self.dropout(self.norm3(self.ffn(X)))
    """)]}),
    ("dec_dropout_on_residual", "DecoderLayer", {"DecoderLayer": [DEC_INIT, _c("""
        X = self.norm1(self.dropout(X + self.self_attn(X, X, X, self_attn_mask)))
        X = self.norm2(self.dropout(X + self.cross_attn(X, enc_output, enc_output, cross_attn_mask)))
        output = self.norm3(self.dropout(X + self.ffn(X)))
    """)]}),
    ("dec_returns_input", "DecoderLayer", {"DecoderLayer": [DEC_INIT, _c("""
        h = self.norm1(X + self.dropout(self.self_attn(X, X, X, self_attn_mask)))
        h = self.norm2(h + self.dropout(self.cross_attn(h, enc_output, enc_output, cross_attn_mask)))
        h = self.norm3(h + self.dropout(self.ffn(h)))
        output = X
    """)]}),
    # "Unseen": written after the diagnosis code, which was not changed for them.
    ("enc_branch_scaled_by_half", "EncoderLayer", {"EncoderLayer": [ENC_INIT, _c("""
        X = self.norm1(X + 0.5 * self.dropout(self.self_attn(X, X, X, mask)))
        output = self.norm2(X + self.dropout(self.ffn(X)))
    """)]}),
    ("enc_residual_counted_twice", "EncoderLayer", {"EncoderLayer": [ENC_INIT, _c("""
        X = self.norm1(X + X + self.dropout(self.self_attn(X, X, X, mask)))
        output = self.norm2(X + self.dropout(self.ffn(X)))
    """)]}),
    ("enc_mask_inverted_by_layer", "EncoderLayer", {"EncoderLayer": [ENC_INIT, _c("""
        X = self.norm1(X + self.dropout(self.self_attn(X, X, X, ~mask)))
        output = self.norm2(X + self.dropout(self.ffn(X)))
    """)]}),
    ("enc_returns_sum_before_last_norm", "EncoderLayer", {"EncoderLayer": [ENC_INIT, _c("""
        X = self.norm1(X + self.dropout(self.self_attn(X, X, X, mask)))
        output = X + self.dropout(self.ffn(X))
    """)]}),
    ("dec_sublayers_out_of_order", "DecoderLayer", {"DecoderLayer": [DEC_INIT, _c("""
        X = self.norm1(X + self.dropout(self.cross_attn(X, enc_output, enc_output, cross_attn_mask)))
        X = self.norm2(X + self.dropout(self.self_attn(X, X, X, self_attn_mask)))
        output = self.norm3(X + self.dropout(self.ffn(X)))
    """)]}),
    ("dec_ffn_reads_raw_cross_output", "DecoderLayer", {"DecoderLayer": [DEC_INIT, _c("""
        X = self.norm1(X + self.dropout(self.self_attn(X, X, X, self_attn_mask)))
        h = self.cross_attn(X, enc_output, enc_output, cross_attn_mask)
        X = self.norm2(X + self.dropout(h))
        output = self.norm3(X + self.dropout(self.ffn(h)))
    """)]}),
    ("dec_cross_values_from_decoder", "DecoderLayer", {"DecoderLayer": [DEC_INIT, _c("""
        X = self.norm1(X + self.dropout(self.self_attn(X, X, X, self_attn_mask)))
        X = self.norm2(X + self.dropout(self.cross_attn(X, enc_output, X, cross_attn_mask)))
        output = self.norm3(X + self.dropout(self.ffn(X)))
    """)]}),
    ("dec_self_attention_queries_from_encoder", "DecoderLayer", {"DecoderLayer": [DEC_INIT, _c("""
        X = self.norm1(X + self.dropout(self.self_attn(enc_output, X, X, self_attn_mask)))
        X = self.norm2(X + self.dropout(self.cross_attn(X, enc_output, enc_output, cross_attn_mask)))
        output = self.norm3(X + self.dropout(self.ffn(X)))
    """)]}),
    ("dec_ffn_residual_from_layer_input", "DecoderLayer", {"DecoderLayer": [DEC_INIT, _c("""
        h = self.norm1(X + self.dropout(self.self_attn(X, X, X, self_attn_mask)))
        h = self.norm2(h + self.dropout(self.cross_attn(h, enc_output, enc_output, cross_attn_mask)))
        output = self.norm3(X + self.dropout(self.ffn(h)))
    """)]}),
    ("dec_no_self_attention_dropout", "DecoderLayer", {"DecoderLayer": [DEC_INIT, _c("""
        X = self.norm1(X + self.self_attn(X, X, X, self_attn_mask))
        X = self.norm2(X + self.dropout(self.cross_attn(X, enc_output, enc_output, cross_attn_mask)))
        output = self.norm3(X + self.dropout(self.ffn(X)))
    """)]}),
]


# Bugs no probe was written for (see above): the probes must explain them without a special case.
UNSEEN = frozenset({"pe_base_1000", "pe_forward_scales_input", "mha_scaled_by_query_length", "mha_softmax_over_heads",
                    "mha_dropout_in_sdp", "mha_mask_added_as_numbers", "mha_queries_from_key_input"})


def _build_variants() -> list[Variant]:
    variants = [Variant(name, f"2099-{10001 + i}", answers, None) for i, (name, answers) in enumerate(CORRECT)]
    variants += [Variant(name, f"2099-{20001 + i}", answers, part) for i, (name, part, answers) in enumerate(BUGS)]
    names = [v.name for v in variants]
    assert len(set(names)) == len(names), "variant names must be unique"
    for variant in variants:
        assert variant.part is None or variant.part in PARTS[:4], variant
        assert set(variant.answers) <= set(GRADE_IDS), variant.name
    return variants


VARIANTS = _build_variants()


def write_corpus(directory, names=None) -> list[Variant]:
    """Write every variant (or those named in `names`) as <student_id>.ipynb under `directory`; returns them."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    chosen = [v for v in VARIANTS if names is None or v.name in names]
    for variant in chosen:
        notebook = fill_handout(variant.answers)
        (directory / variant.filename).write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n",
                                                  encoding="utf-8")
    return chosen
