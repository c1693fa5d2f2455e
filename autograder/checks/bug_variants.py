"""A library of known bugs: the reference classes with one realistic mistake each, and what to tell the student.

A variant is written the way a student writes an answer: the code for each `### BEGIN SOLUTION` region of
the part's class in the master notebook (the handout's `# YOUR CODE HERE` stubs, in order). Its class is
the master's class with those regions replaced, so everything the handout gives (register_buffer, split,
combine, forward, `return output`) stays the master's own. Titles and hints say what is wrong in words,
never with the code that fixes it.

The variants are ours and trusted: autograder.checks.fingerprints runs them in the judge process.
"""
import re
import textwrap
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Fingerprint:
    id: str
    part: str
    title: str
    hint: str
    answers: tuple = field(repr=False)  # code for each solution region of the part's class, in order

    def public(self):
        return {"id": self.id, "title": self.title, "hint": self.hint}


def _c(text):
    return textwrap.dedent(text).strip("\n")


_REGION = re.compile(r"^([ \t]*)### BEGIN SOLUTION[ \t]*\n.*?^[ \t]*### END SOLUTION[ \t]*$", re.M | re.S)


def fill_regions(class_source, answers):
    """The master's class source with its solution regions replaced, in order, by `answers`."""
    regions = list(_REGION.finditer(class_source))
    if len(regions) != len(answers):
        raise ValueError(f"{len(answers)} answers for {len(regions)} solution regions")
    pieces, end = [], 0
    for match, answer in zip(regions, answers):
        indent = match.group(1)
        pieces += [class_source[end:match.start()], textwrap.indent(_c(answer), indent)]
        end = match.end()
    return "".join(pieces) + class_source[end:]


# ----------------------------------------------------------------- PositionalEncoding

_ANGLE = """
    pos = torch.arange(seq_len_max, dtype=torch.float32).unsqueeze(1)
    two_i = torch.arange(0, dim, 2, dtype=torch.float32)
    angle = pos / 10000 ** (two_i / dim)
"""
_INTERLEAVE = """
    PE[:, 0::2] = torch.sin(angle)
    PE[:, 1::2] = torch.cos(angle)
"""
_ANGLE_ROLE = ("the angle of the pair of columns (2i, 2i+1) at position pos is pos / 10000^(2i / dim)")

PE_BUGS = [
    ("pe_sin_cos_swapped", "Sine and cosine are swapped",
     "Column 2i holds the sine of the angle and column 2i+1 its cosine; yours has them the other way round.",
     _ANGLE + """
    PE[:, 0::2] = torch.cos(angle)
    PE[:, 1::2] = torch.sin(angle)
"""),
    ("pe_halves", "Sines and cosines fill two halves instead of alternating columns",
     "The sines go to the even columns (0, 2, 4, ...) and the cosines to the odd columns (1, 3, 5, ...), "
     "interleaved, not the first and the second half of each row.",
     _ANGLE + """
    PE[:, :dim // 2] = torch.sin(angle)
    PE[:, dim // 2:] = torch.cos(angle)
"""),
    ("pe_exponent_doubled", "The exponent counts 2i twice",
     f"In the formula, {_ANGLE_ROLE}. If your index already steps by two (0, 2, 4, ...), it is 2i itself: "
     "don't multiply it by 2 again.",
     """
    pos = torch.arange(seq_len_max, dtype=torch.float32).unsqueeze(1)
    i = torch.arange(0, dim, 2, dtype=torch.float32)
    angle = pos / 10000 ** (2 * i / dim)
""" + _INTERLEAVE),
    ("pe_exponent_halved", "The exponent uses i where the formula has 2i",
     f"In the formula, {_ANGLE_ROLE}. If your index counts the pairs (0, 1, 2, ...), the exponent is twice "
     "that index over dim.",
     """
    pos = torch.arange(seq_len_max, dtype=torch.float32).unsqueeze(1)
    i = torch.arange(0, dim // 2, dtype=torch.float32)
    angle = pos / 10000 ** (i / dim)
""" + _INTERLEAVE),
    ("pe_cos_own_exponent", "The cosine columns use their own column index in the exponent",
     f"Both columns of a pair share one angle: {_ANGLE_ROLE}. The cosine in column 2i+1 uses 2i, "
     "not 2i+1, in the exponent.",
     """
    pos = torch.arange(seq_len_max, dtype=torch.float32).unsqueeze(1)
    column = torch.arange(dim, dtype=torch.float32)
    angle = pos / 10000 ** (column / dim)
    PE[:, 0::2] = torch.sin(angle[:, 0::2])
    PE[:, 1::2] = torch.cos(angle[:, 1::2])
"""),
    ("pe_positions_from_one", "Positions are counted from 1",
     "Positions start at 0: the first row of the table is the encoding of position 0 "
     "(sine 0 and cosine 1 in alternation).",
     """
    pos = torch.arange(1, seq_len_max + 1, dtype=torch.float32).unsqueeze(1)
    two_i = torch.arange(0, dim, 2, dtype=torch.float32)
    angle = pos / 10000 ** (two_i / dim)
""" + _INTERLEAVE),
]

# ----------------------------------------------------------------- MultiHeadAttention

_MHA_INIT = """
    self.W_q = nn.Linear(dim, dim)
    self.W_k = nn.Linear(dim, dim)
    self.W_v = nn.Linear(dim, dim)
    self.W_o = nn.Linear(dim, dim)
"""


def _sdp(scores="Q @ K.transpose(-2, -1) / math.sqrt(self.word_dim)",
         masking="scores = scores.masked_fill(mask == 0, float('-inf'))",
         softmax="probs = torch.softmax(scores, dim=-1)", after="heads = probs @ V"):
    """A scaled_dot_product body with one line swapped for the bug's own."""
    return "\n".join([f"scores = {scores}", "if mask is not None:", f"    {masking}", softmax, after])


_SCALE = "The scores Q·Kᵀ are divided by the square root of one head's size (word_dim = dim / head_num)"
_BEFORE_SOFTMAX = ("Blocked positions must be excluded before the softmax, by giving them a score of -inf, "
                   "so that each query's weights over the allowed keys still sum to 1.")

MHA_BUGS = [
    ("mha_scaled_by_sqrt_dim", "Scores scaled by √dim instead of √word_dim",
     f"{_SCALE}, not of the whole model dimension dim.",
     _sdp(scores="Q @ K.transpose(-2, -1) / math.sqrt(self.dim)")),
    ("mha_not_scaled", "Scores are not scaled", f"{_SCALE}, before the softmax.",
     _sdp(scores="Q @ K.transpose(-2, -1)")),
    ("mha_scaled_without_sqrt", "Scores divided by word_dim instead of its square root",
     f"{_SCALE}: the square root, not word_dim itself.",
     _sdp(scores="Q @ K.transpose(-2, -1) / self.word_dim")),
    ("mha_scaled_after_softmax", "The scaling is applied after the softmax",
     f"{_SCALE} before the softmax; dividing the probabilities afterwards makes them sum to less than 1.",
     _sdp(softmax="probs = torch.softmax(scores, dim=-1) / math.sqrt(self.word_dim)")),
    ("mha_softmax_over_queries", "Softmax over the queries instead of the keys",
     "Each query's weights over the keys must sum to 1, so the softmax runs along the keys' axis "
     "(the last one), not along the queries.",
     _sdp(softmax="probs = torch.softmax(scores, dim=-2)")),
    ("mha_mask_after_softmax", "The mask is applied after the softmax",
     f"{_BEFORE_SOFTMAX} Zeroing probabilities after the softmax leaves rows that no longer sum to 1.",
     _c("""
        scores = Q @ K.transpose(-2, -1) / math.sqrt(self.word_dim)
        probs = torch.softmax(scores, dim=-1)
        if mask is not None:
            probs = probs.masked_fill(mask == 0, 0.0)
        heads = probs @ V
     """)),
    ("mha_mask_inverted", "The mask is inverted",
     "In this assignment True (1) in a mask means 'may attend'. The positions to block are where the "
     "mask is False (0).",
     _sdp(masking="scores = scores.masked_fill(mask == 1, float('-inf'))")),
    ("mha_mask_transposed", "The mask blocks queries instead of keys",
     "A mask's last axis indexes the keys: a padding mask of shape (batch, 1, 1, len_k) blocks columns of "
     "the score matrix (keys), never its rows (queries). Use it as given, without transposing it.",
     _sdp(masking="scores = scores.masked_fill(mask.transpose(-2, -1) == 0, float('-inf'))")),
    ("mha_mask_ignored", "The mask is never applied",
     f"scaled_dot_product receives a mask whenever some keys must not be seen. {_BEFORE_SOFTMAX}",
     _sdp(masking="pass")),
    ("mha_masked_scores_zero", "Masked scores are set to 0 instead of -inf",
     "A score of 0 still gets a weight of e^0 in the softmax. Blocked positions need -inf (or a very large "
     "negative number) so that their weight becomes exactly 0.",
     _sdp(masking="scores = scores.masked_fill(mask == 0, 0.0)")),
    ("mha_returns_weights", "Returns the attention weights instead of the weighted values",
     "scaled_dot_product returns the attention weights applied to V: one vector of size word_dim per "
     "query and head, shape (batch, heads, len_q, word_dim).",
     _sdp(after="heads = probs")),
]

# ----------------------------------------------------------------- EncoderLayer and DecoderLayer

_ENC_INIT = """
    self.self_attn = MultiHeadAttention(dim, head_num)
    self.ffn = FFN(dim, FFN_dim)
    self.norm1 = nn.LayerNorm(dim)
    self.norm2 = nn.LayerNorm(dim)
    self.dropout = nn.Dropout(dropout)
"""
_DEC_INIT = """
    self.self_attn = MultiHeadAttention(dim, head_num)
    self.cross_attn = MultiHeadAttention(dim, head_num)
    self.ffn = FFN(dim, FFN_dim)
    self.norm1 = nn.LayerNorm(dim)
    self.norm2 = nn.LayerNorm(dim)
    self.norm3 = nn.LayerNorm(dim)
    self.dropout = nn.Dropout(dropout)
"""
# (short name, name in words, the sublayer call on X)
ENC_BRANCHES = (("self_attn", "self-attention", "self.self_attn(X, X, X, mask)"),
                ("ffn", "feed-forward network", "self.ffn(X)"))
DEC_BRANCHES = (("self_attn", "self-attention", "self.self_attn(X, X, X, self_attn_mask)"),
                ("cross_attn", "cross-attention", "self.cross_attn(X, enc_output, enc_output, cross_attn_mask)"),
                ("ffn", "feed-forward network", "self.ffn(X)"))
POST_LN = "X = self.norm{k}(X + self.dropout({call}))"


def _forward(branches, line=POST_LN, odd=None, odd_line=None):
    """One line per sublayer in the reference's post-LN form; branch `odd` written as `odd_line`."""
    lines = [(odd_line if index == odd else line).format(k=index + 1, call=call)
             for index, (_, _, call) in enumerate(branches)]
    return "\n".join(lines + ["output = X"])


_POST_LN_RULE = ("Each sublayer's output goes through dropout, is added to the sublayer's input (the residual), "
                 "and the sum goes through that sublayer's LayerNorm")


def _layer_bugs(short, branches, init):
    bugs = []
    for index, (key, name, _) in enumerate(branches):
        bugs.append((f"{short}_no_residual_{key}", f"No residual connection around the {name}",
                     f"{_POST_LN_RULE}. Here the {name}'s input is never added back.",
                     init, _forward(branches, odd=index, odd_line="X = self.norm{k}(self.dropout({call}))")))
        bugs.append((f"{short}_no_dropout_{key}", f"No dropout on the {name}'s output",
                     f"{_POST_LN_RULE}. Here the {name}'s output skips the dropout.",
                     init, _forward(branches, odd=index, odd_line="X = self.norm{k}(X + {call})")))
    bugs.append((f"{short}_dropout_after_layernorm", "Dropout applied after the LayerNorm",
                 f"{_POST_LN_RULE}. Dropout acts on the sublayer's output before the residual sum, "
                 "not on the normalised result.",
                 init, _forward(branches, line="X = self.dropout(self.norm{k}(X + {call}))")))
    norms = "".join(f"    self.norm{k} = nn.LayerNorm(dim)\n" for k in range(1, len(branches) + 1))
    bugs.append((f"{short}_shared_layernorm", "One LayerNorm shared by several sublayers",
                 "Each sublayer needs its own LayerNorm, with its own learned scale and shift.",
                 init.replace(norms, "    self.norm = nn.LayerNorm(dim)\n"),
                 _forward(branches, line="X = self.norm(X + self.dropout({call}))")))
    return bugs


ENC_BUGS = _layer_bugs("enc", ENC_BRANCHES, _ENC_INIT) + [
    ("enc_pre_layernorm", "LayerNorm before the sublayers (pre-LN) instead of after",
     f"This assignment uses the original post-LN layout. {_POST_LN_RULE}: normalise after the residual sum, "
     "not the sublayer's input.",
     _ENC_INIT, """
        h = self.norm1(X)
        X = X + self.dropout(self.self_attn(h, h, h, mask))
        X = X + self.dropout(self.ffn(self.norm2(X)))
        output = X
     """),
    ("enc_residual_from_input", "The feed-forward residual adds the layer's input",
     "The residual around the feed-forward network adds that sublayer's own input (the output of the "
     "first LayerNorm), not the X the layer was called with.",
     _ENC_INIT, """
        attended = self.norm1(X + self.dropout(self.self_attn(X, X, X, mask)))
        output = self.norm2(X + self.dropout(self.ffn(attended)))
     """),
    ("enc_mask_not_passed", "The padding mask is not passed to the self-attention",
     "The encoder's self-attention gets the padding mask, so that no token attends to padding.",
     _ENC_INIT, _forward(ENC_BRANCHES, odd=0, odd_line="X = self.norm1(X + self.dropout(self.self_attn(X, X, X)))")),
]

_CROSS = "X = self.norm2(X + self.dropout(self.cross_attn({q}, {k}, {v}, {mask})))"
DEC_BUGS = _layer_bugs("dec", DEC_BRANCHES, _DEC_INIT) + [
    ("dec_pre_layernorm", "LayerNorm before the sublayers (pre-LN) instead of after",
     f"This assignment uses the original post-LN layout. {_POST_LN_RULE}: normalise after the residual sum, "
     "not the sublayer's input.",
     _DEC_INIT, """
        h = self.norm1(X)
        X = X + self.dropout(self.self_attn(h, h, h, self_attn_mask))
        X = X + self.dropout(self.cross_attn(self.norm2(X), enc_output, enc_output, cross_attn_mask))
        X = X + self.dropout(self.ffn(self.norm3(X)))
        output = X
     """),
    ("dec_shared_attention", "One attention module does both the self- and the cross-attention",
     "The self-attention and the cross-attention learn different projections: each needs its own "
     "MultiHeadAttention.",
     _DEC_INIT.replace("    self.cross_attn = MultiHeadAttention(dim, head_num)\n", ""),
     _forward(DEC_BRANCHES).replace("self.cross_attn", "self.self_attn")),
    ("dec_masks_swapped", "The two masks are swapped",
     "The self-attention over the target takes self_attn_mask (padding and causal); the cross-attention "
     "over the encoder output takes cross_attn_mask (source padding).",
     _DEC_INIT, """
        X = self.norm1(X + self.dropout(self.self_attn(X, X, X, cross_attn_mask)))
        X = self.norm2(X + self.dropout(self.cross_attn(X, enc_output, enc_output, self_attn_mask)))
        X = self.norm3(X + self.dropout(self.ffn(X)))
        output = X
     """),
    ("dec_cross_queries_from_encoder", "Queries and keys are swapped in the cross-attention",
     "In the cross-attention the queries come from the decoder (X); the keys and values come from the "
     "encoder output.",
     _DEC_INIT, _forward(DEC_BRANCHES, odd=1, odd_line=_CROSS.format(q="enc_output", k="X", v="X",
                                                                       mask="cross_attn_mask"))),
    ("dec_cross_ignores_encoder", "The cross-attention never looks at the encoder output",
     "The second attention is where the decoder reads the source sentence: its keys and values are the "
     "encoder output.",
     _DEC_INIT, _forward(DEC_BRANCHES, odd=1, odd_line=_CROSS.format(q="X", k="X", v="X", mask="cross_attn_mask"))),
    ("dec_self_mask_missing", "The decoder's self-attention gets no mask",
     "Without self_attn_mask each target position can attend to later ones (the future) and to padding.",
     _DEC_INIT, _forward(DEC_BRANCHES, odd=0, odd_line="X = self.norm1(X + self.dropout(self.self_attn(X, X, X)))")),
]


def _build():
    fingerprints = [Fingerprint(i, "PositionalEncoding", t, h, (a,)) for i, t, h, a in PE_BUGS]
    fingerprints += [Fingerprint(i, "MultiHeadAttention", t, h, (_MHA_INIT, a)) for i, t, h, a in MHA_BUGS]
    fingerprints += [Fingerprint(i, "EncoderLayer", t, h, (init, fwd)) for i, t, h, init, fwd in ENC_BUGS]
    fingerprints += [Fingerprint(i, "DecoderLayer", t, h, (init, fwd)) for i, t, h, init, fwd in DEC_BUGS]
    ids = [f.id for f in fingerprints]
    assert len(set(ids)) == len(ids), "fingerprint ids must be unique"
    return tuple(fingerprints)


FINGERPRINTS = _build()
