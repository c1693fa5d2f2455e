"""A student's feedback, from their results.json: DIR/<student_id>/feedback.md and a self-contained feedback.html.

Written for a student reading it after grades are out: per part the points, each check passed or failed
with its message, the known bug the part behaves like and a hint, notes for parts that could not be
graded, and the flags raised about the notebook. Only what results.json already says to the student is
shown: check messages are value-free by design, and the student's printed output and the grader's log
are left out.
"""
import html
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from autograder.rubric import PARTS

# How a check's message starts when the code gave no answer, and what to tell the student about it.
NO_ANSWER_NOTES = (
    ("time limit", "Your code ran past the time limit, so some checks of this part got no answer. "
                   "Look for an endless loop or very slow code, such as Python loops over large tensors."),
    ("memory limit", "Your code ran out of memory, so some checks of this part got no answer. "
                     "Look for very large tensors, for example a table built far bigger than needed."),
    ("the code crashed", "Your code crashed the grading process, so some checks of this part got no answer."),
    ("the code ended", "Your code ended the grading process (sys.exit or exit?), so some checks of this part "
                       "got no answer."),
    ("the submission could not be loaded", "Your notebook's code could not be loaded, so this part could not "
                                           "be graded."),
    ("class ", "The class for this part was not found in your notebook (or it failed to run), so this part "
               "could not be graded."),
)
BUG_LINE = re.compile(r"^Likely bug: .*$\n?", re.M)


@dataclass
class Part:
    name: str
    score: float = 0.0
    max_score: float = 0.0
    tests: list = field(default_factory=list)   # (checks, passed, points, max points, message)
    bugs: list = field(default_factory=list)    # {id, title, hint}
    notes: list = field(default_factory=list)
    flags: list = field(default_factory=list)

    @property
    def status(self):
        if self.max_score and self.score >= self.max_score:
            return "full"
        return "none" if self.score <= 0 else "partial"


def parts_of(document):
    """The document's tests grouped by part, with the named bugs, notes and flags of each part."""
    extra = document.get("extra_data") or {}
    parts = {name: Part(name) for name in PARTS}
    for test in document.get("tests", []):
        part_name, _, checks = test.get("name", "").partition(": ")
        part = parts.setdefault(part_name, Part(part_name))
        passed = test.get("status") == "passed"
        message = BUG_LINE.sub("", test.get("output") or "").strip()
        part.score += test.get("score", 0)
        part.max_score += test.get("max_score", 0)
        notes = []
        if not passed:
            notes = [note for prefix, note in NO_ANSWER_NOTES if message.startswith(prefix)]
            if message.startswith("points withheld: "):
                notes.append("Points withheld: " + message[len("points withheld: "):])
                message = ""  # said once, in the part's note
        part.notes += [note for note in notes if note not in part.notes]
        part.tests.append((checks or part_name, passed, test.get("score", 0), test.get("max_score", 0), message))
    for part_name, bugs in (extra.get("named_bugs") or {}).items():
        if part_name in parts:
            parts[part_name].bugs = list(bugs)
    for flag in extra.get("flags", []):
        for part in parts.values():
            if re.search(rf"\b{re.escape(part.name)}\b", flag):
                part.flags.append(flag)
    return [part for part in parts.values() if part.tests]


def general_flags(document):
    names = PARTS
    return [flag for flag in (document.get("extra_data") or {}).get("flags", [])
            if not any(re.search(rf"\b{re.escape(name)}\b", flag) for name in names)]


def _points(value):
    return f"{value:g}"


# ----------------------------------------------------------------- Markdown

def _fenced(text, indent="  "):
    fence = "`" * max(3, max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    body = "\n".join(indent + line for line in text.splitlines())
    return f"{indent}{fence}\n{body}\n{indent}{fence}"


def markdown(document):
    extra = document.get("extra_data") or {}
    total = sum(test.get("max_score", 0) for test in document.get("tests", []))
    lines = [f"# Transformer from scratch: feedback for {extra.get('student_id', 'you')}", "",
             f"**Score: {_points(document.get('score', 0))} / {_points(total)}**", ""]
    if extra.get("error"):
        lines += [f"> **Your submission could not be graded:** {extra['error']}", ""]
    notes = general_flags(document)
    if notes:
        lines += ["## Notes about your notebook", ""] + [f"- {flag}" for flag in notes] + [""]
    if extra.get("error"):  # every check failed with that same reason: the points are all there is to say
        return "\n".join(lines + [f"- {part.name}: {_points(part.score)} / {_points(part.max_score)}"
                                  for part in parts_of(document)]) + "\n"
    for part in parts_of(document):
        lines += [f"## {part.name}: {_points(part.score)} / {_points(part.max_score)}", ""]
        for note in part.notes:
            lines += [f"> **Note:** {note}", ""]
        for bug in part.bugs:
            lines += [f"> **Likely bug:** {bug['title']}.  ", f"> **Hint:** {bug['hint']}", ""]
        for flag in part.flags:
            lines += [f"> **Flag:** {flag}", ""]
        for checks, passed, score, max_score, message in part.tests:
            mark = "passed" if passed else "failed"
            lines.append(f"- [{mark}] {checks} ({_points(score)}/{_points(max_score)})")
            if not passed and message:
                lines.append(_fenced(message))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# ----------------------------------------------------------------- HTML

CSS = """
:root { --ink:#1f2933; --muted:#616e7c; --line:#e4e7eb; --ok:#2f9e44; --part:#e8a317; --bad:#d64545;
        --bug:#5b4bd6; --bugbg:#f1efff; --note:#9a6700; --notebg:#fff8e6; }
* { box-sizing: border-box; }
body { margin:0; background:#f5f7fa; color:var(--ink);
       font:15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 880px; margin: 0 auto; padding: 28px 20px 48px; }
h1 { font-size: 22px; margin: 0 0 4px; }
.sub { color: var(--muted); margin: 0 0 20px; }
.card { background:#fff; border:1px solid var(--line); border-radius:10px; padding:16px 20px; margin:0 0 16px; }
.summary { display:flex; gap:24px; align-items:center; flex-wrap:wrap; }
.total { font-size:40px; font-weight:700; line-height:1; }
.total small { font-size:18px; color:var(--muted); font-weight:500; }
.bars { flex:1; min-width:300px; }
.bar { display:grid; grid-template-columns: 150px 1fr 64px; gap:10px; align-items:center; margin:3px 0;
       font-size:13px; }
.track { background:#edf0f3; border-radius:5px; height:10px; overflow:hidden; }
.fill { height:100%; border-radius:5px; }
.full .fill { background: var(--ok); } .partial .fill { background: var(--part); } .none .fill { background: var(--bad); }
.part { border-left: 5px solid var(--line); } .part.full { border-left-color: var(--ok); }
.part.partial { border-left-color: var(--part); } .part.none { border-left-color: var(--bad); }
details summary { cursor: pointer; color: var(--muted); }
details[open] summary { margin-bottom: 6px; }
.part h2 { font-size:17px; margin:0 0 10px; display:flex; justify-content:space-between; }
.part h2 span { color: var(--muted); font-weight:600; }
.callout { border-radius:8px; padding:10px 14px; margin:0 0 10px; }
.bug { background:var(--bugbg); border:1px solid #d9d3ff; }
.bug b { color: var(--bug); }
.note { background:var(--notebg); border:1px solid #f3dfa8; }
.note b { color: var(--note); }
ul.tests { list-style:none; margin:0; padding:0; }
ul.tests li { padding:6px 0; border-top:1px solid var(--line); }
ul.tests li:first-child { border-top:0; }
.mark { display:inline-block; width:20px; font-weight:700; }
.pass .mark { color: var(--ok); } .fail .mark { color: var(--bad); }
.pts { float:right; color: var(--muted); font-variant-numeric: tabular-nums; }
pre { background:#f7f8fa; border:1px solid var(--line); border-radius:6px; padding:8px 10px; margin:6px 0 2px 20px;
      white-space:pre-wrap; word-break:break-word; font:12.5px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.error { background:#fdecec; border:1px solid #f5c2c2; }
footer { color: var(--muted); font-size: 12px; margin-top: 24px; }
"""


def _e(text):
    return html.escape(str(text), quote=True)


def _bar(part):
    width = 100 * part.score / part.max_score if part.max_score else 0
    return (f'<div class="bar {part.status}"><div>{_e(part.name)}</div><div class="track">'
            f'<div class="fill" style="width:{width:.1f}%"></div></div>'
            f'<div>{_points(part.score)} / {_points(part.max_score)}</div></div>')


def _part_card(part):
    out = [f'<section class="card part {part.status}"><h2>{_e(part.name)}'
           f'<span>{_points(part.score)} / {_points(part.max_score)}</span></h2>']
    out += [f'<div class="callout note"><b>Note.</b> {_e(note)}</div>' for note in part.notes]
    out += [f'<div class="callout bug"><b>Likely bug: {_e(bug["title"])}.</b><br>{_e(bug["hint"])}</div>'
            for bug in part.bugs]
    out += [f'<div class="callout note"><b>Flag.</b> {_e(flag)}</div>' for flag in part.flags]
    all_passed = all(passed for _, passed, *_ in part.tests)
    if all_passed:  # nothing to act on: the list stays folded
        out.append(f"<details><summary>All {len(part.tests)} checks passed</summary>")
    out.append('<ul class="tests">')
    for checks, passed, score, max_score, message in part.tests:
        out.append(f'<li class="{"pass" if passed else "fail"}"><span class="mark">{"✓" if passed else "✗"}</span>'
                   f'{_e(checks)}<span class="pts">{_points(score)} / {_points(max_score)}</span>')
        if not passed and message:
            out.append(f"<pre>{_e(message)}</pre>")
        out.append("</li>")
    out.append("</ul></details></section>" if all_passed else "</ul></section>")
    return "\n".join(out)


def html_page(document):
    extra = document.get("extra_data") or {}
    parts = parts_of(document)
    total = sum(part.max_score for part in parts)
    student = extra.get("student_id", "")
    body = [f"<h1>Transformer from scratch: your feedback</h1><p class=sub>{_e(student)}</p>",
            '<section class="card summary">'
            f'<div class="total">{_points(document.get("score", 0))}<small> / {_points(total)}</small></div>'
            f'<div class="bars">{"".join(_bar(part) for part in parts)}</div></section>']
    if extra.get("error"):
        body.append(f'<section class="card error"><b>Your submission could not be graded:</b> {_e(extra["error"])}'
                    "</section>")
    notes = general_flags(document)
    if notes:
        body.append('<section class="card"><h2 style="font-size:17px;margin:0 0 6px">Notes about your notebook</h2><ul>'
                    + "".join(f"<li>{_e(flag)}</li>" for flag in notes) + "</ul></section>")
    if not extra.get("error"):  # otherwise every check failed with that same reason
        body += [_part_card(part) for part in parts]
    body.append("<footer>Each check is listed with its points. Messages describe how your output differs; "
                "the hints name a common mistake your code behaves like.</footer>")
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Feedback {_e(student)}</title><style>{CSS}</style></head>"
            f"<body><main>{''.join(body)}</main></body></html>\n")


def write_feedback(folder, document):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "feedback.md").write_text(markdown(document), encoding="utf-8")
    (folder / "feedback.html").write_text(html_page(document), encoding="utf-8")


def write_safely(folder, document):
    """For the batch: a failure here is reported and never costs a submission its row."""
    try:
        write_feedback(folder, document)
        return True
    except Exception as exc:  # noqa: BLE001
        print(f"feedback for {folder} not written: {type(exc).__name__}: {exc}", file=sys.stderr)
        return False
