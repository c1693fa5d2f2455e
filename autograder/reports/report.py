"""The class report: DIR/report.html, one self-contained file (plots inlined), from every DIR/*/results.json.

For the staff after a batch: the score distribution, how often each check passes, the bugs most often
named, the flags raised (and which students carry them), grading times, a per-part summary, the submissions
that hit errors and a row per student with the hand-graded points. Built at the end of grade_batch, and again
on demand (`python -m autograder report DIR`, which also rewrites each student's feedback and grades.csv) from
the results alone, without regrading. Nothing on the page is fetched from elsewhere, so it can be mailed.
"""
import base64
import html
import io
import json
import statistics
import sys
import textwrap
from collections import Counter
from datetime import datetime
from pathlib import Path

from autograder.reports import feedback, hand_grading
from autograder.reports.flags import GROUPS, kind_of, kinds_of
from autograder.reports.gradebook import write_gradebook
from autograder.rubric import PARTS, RUBRIC

COLORS = dict(zip(PARTS, ("#4c6ef5", "#7950f2", "#12b886", "#f59f00", "#e64980")))
SHORT = dict(zip(PARTS, ("PE", "MHA", "encoder", "decoder", "training")))
TEST_KEYS = {line.name: key for key, line in RUBRIC.items()}


def gradebook_documents(out):
    """{key: results} of the documents in DIR that have a score and extra_data: the gradebook's rows."""
    return {key: document for key, document in load_documents(out)
            if isinstance(document, dict) and isinstance(document.get("extra_data"), dict)
            and isinstance(document.get("score"), (int, float))}


def load_documents(out):
    """(student key, results document) of each DIR/<key>/results.json that can be read, sorted by key."""
    documents = []
    for path in sorted(Path(out).glob("*/results.json")):
        try:
            documents.append((path.parent.name, json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError):
            continue
    return documents


# ----------------------------------------------------------------- plots

# Figures are drawn at about 1.5 times the size they are shown at, so text stays sharp and about 13 px.
HALF, FULL, DPI = 5.0, 10.0, 150


def _figure(width, height):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(figsize=(width, height), dpi=DPI)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    axes.tick_params(labelsize=9)
    return figure, axes


def _save(figure):
    """The figure as a data: URI, so the page carries its own images."""
    import matplotlib.pyplot as plt
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _score_histogram(scores):
    figure, axes = _figure(HALF, 3.0)
    axes.hist(scores, bins=range(0, 105, 5), color="#4c6ef5", edgecolor="white")
    mean, median = statistics.mean(scores), statistics.median(scores)
    axes.axvline(mean, color="#1f2933", linestyle="--", linewidth=1, label=f"mean {mean:.1f}")
    axes.axvline(median, color="#e64980", linestyle=":", linewidth=1.5, label=f"median {median:g}")
    axes.legend(loc="upper left", fontsize=8, frameon=False)
    axes.set(xlim=(0, 100), xlabel="score", ylabel="submissions")
    axes.yaxis.get_major_locator().set_params(integer=True)
    return _save(figure)


def _hbar(labels, values, colors, xlabel, xlim=None, fmt="{:g}", width=HALF):
    rows = sum(label.count("\n") + 1 for label in labels)
    figure, axes = _figure(width, 0.8 + 0.16 * rows + 0.12 * len(labels))
    positions = range(len(labels))[::-1]
    axes.barh(list(positions), values, color=colors, height=0.7)
    axes.set_yticks(list(positions), labels)
    for y, value in zip(positions, values):
        axes.text(value, y, " " + fmt.format(value), va="center", fontsize=8)
    axes.set_xlabel(xlabel)
    axes.set_ylim(-0.6, len(labels) - 0.4)
    axes.set_xlim(0, xlim or max(values) * 1.15)
    if xlim is None:
        axes.xaxis.get_major_locator().set_params(integer=True)
    return _save(figure)


def _times(times):
    figure, axes = _figure(HALF, 3.0)
    axes.hist(times, bins=min(30, max(5, len(times))), color="#12b886", edgecolor="white")
    axes.set(xlabel="grading time per submission (s)", ylabel="submissions")
    axes.yaxis.get_major_locator().set_params(integer=True)
    return _save(figure)


# ----------------------------------------------------------------- statistics

def _pass_rates(documents):
    passed, seen = Counter(), Counter()
    for _, document in documents:
        for test in document.get("tests", []):
            seen[test["name"]] += 1
            passed[test["name"]] += test.get("status") == "passed"
    order = [line.name for line in RUBRIC.values()] + sorted(set(seen) - set(TEST_KEYS))
    return [(name, 100 * passed[name] / seen[name]) for name in order if seen[name]]


def _named_bugs(documents):
    counts = Counter()
    for _, document in documents:
        for part, bugs in ((document.get("extra_data") or {}).get("named_bugs") or {}).items():
            counts.update((part, bug["title"]) for bug in bugs)
    return counts


def _part_rows(documents, bugs):
    rows = []
    for part in PARTS:
        got = [(document.get("extra_data") or {}).get("parts", {}).get(part, 0) for _, document in documents]
        full = sum(t.get("max_score", 0) for t in (documents[0][1].get("tests", []) if documents else [])
                   if t["name"].startswith(part + ": "))
        counts = [(title, n) for (p, title), n in bugs.most_common() if p == part]
        # Every bug tied for the most submissions, not whichever Counter happened to list first.
        common = "; ".join(title for title, n in counts if n == counts[0][1]) + f" ({counts[0][1]})" if counts else "–"
        rows.append([part, f"{full:g}", f"{statistics.mean(got):.1f}" if got else "–",
                     f"{statistics.median(got):g}" if got else "–",
                     f"{100 * sum(g >= full for g in got) / len(got):.0f}%" if got and full else "–",
                     f"{100 * sum(g <= 0 for g in got) / len(got):.0f}%" if got else "–",
                     common])
    return rows


def _flag_kinds_by_submission(documents):
    """How many submissions carry each kind of flag: a student flagged twice for the same thing counts once."""
    return Counter(kind.name for _, document in documents
                   for kind in kinds_of((document.get("extra_data") or {}).get("flags", [])))


def _flag_groups(documents):
    """{group: [(key, flags of that group)]} for the groups some student's flags fall in, in GROUPS order."""
    groups = {group: [] for group in GROUPS}
    for key, document in documents:
        mine = {}
        for flag in (document.get("extra_data") or {}).get("flags", []):
            mine.setdefault(kind_of(flag).group, []).append(flag)
        for group, flags in mine.items():
            groups[group].append((key, flags))
    return {group: rows for group, rows in groups.items() if rows}


def _student_rows(documents, hand_points):
    rows = []
    for key, document in documents:
        extra = document.get("extra_data") or {}
        parts = extra.get("parts") or {}
        score = document.get("score", 0)
        hand = hand_points.get(key)
        kinds = ", ".join(kind.name for kind in kinds_of(extra.get("flags", [])))
        rows.append([(key, f"{key}/feedback.html"), f"{score:g}", *[f"{parts.get(p, 0):g}" for p in PARTS],
                     "–" if hand is None else f"{hand:g}", f"{score + (hand or 0):g}",
                     ("not graded: " + extra["error"]) if extra.get("error") else kinds])
    return rows


def _error_rows(documents):
    rows = []
    for key, document in documents:
        extra = document.get("extra_data") or {}
        if extra.get("error"):
            problems = [extra["error"]]
        else:  # the first line of each message that says the code gave no answer, once per part
            prefixes = tuple(prefix for prefix, _ in feedback.NO_ANSWER_NOTES)
            problems = [f"{part.name}: {message.splitlines()[0][:140]}" for part in feedback.parts_of(document)
                        for message in dict.fromkeys(m for _, ok, _, _, m in part.tests
                                                     if not ok and m.startswith(prefixes))]
        if problems:
            rows.append([(key, f"{key}/feedback.html"), f"{document.get('score', 0):g}", "; ".join(dict.fromkeys(problems))])
    return rows


# ----------------------------------------------------------------- the page

CSS = feedback.CSS + """
main { max-width: 1120px; }
.grid { display:grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap:16px; }
.grid .card { margin:0; }
.card h2 { font-size:16px; margin:0 0 10px; }
.card img { max-width:100%; height:auto; display:block; }
.stats { display:flex; gap:28px; flex-wrap:wrap; }
.stat b { display:block; font-size:26px; line-height:1.1; }
.stat span { color: var(--muted); font-size:13px; }
table { border-collapse: collapse; width:100%; font-size:13.5px; }
th, td { text-align:left; padding:6px 10px; border-bottom:1px solid var(--line); vertical-align:top; }
th { color: var(--muted); font-weight:600; background:#fafbfc; }
td.num, th.num { text-align:right; font-variant-numeric: tabular-nums; }
.empty { color: var(--muted); font-style: italic; }
a { color: #364fc7; text-decoration: none; } a:hover { text-decoration: underline; }
.card h3 { font-size:14px; margin:14px 0 6px; }
h3 + table th:first-child { width: 150px; }  /* the flag groups' tables line up */
.swatch { display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:6px; }
"""


def _table(header, rows, numeric=()):
    if not rows:
        return '<p class="empty">None.</p>'
    def cell(value):  # a (text, href) pair is a link
        if isinstance(value, tuple):
            return f'<a href="{html.escape(value[1])}">{html.escape(str(value[0]))}</a>'
        return html.escape(str(value))

    cells = lambda row, tag: "".join(  # noqa: E731
        f'<{tag}{" class=num" if i in numeric else ""}>{cell(c)}</{tag}>' for i, c in enumerate(row))
    return (f"<table><thead><tr>{cells(header, 'th')}</tr></thead><tbody>"
            + "".join(f"<tr>{cells(row, 'td')}</tr>" for row in rows) + "</tbody></table>")


def _plot_card(title, image, empty="None.", note=""):
    body = f'<img src="{image}" alt="{html.escape(title)}">' if image else f'<p class="empty">{empty}</p>'
    note = f"<p class=sub>{note}</p>" if note and image else ""
    return f'<section class="card"><h2>{html.escape(title)}</h2>{note}{body}</section>'


def _flags_card(documents):
    groups = _flag_groups(documents)
    if not groups:
        return '<section class="card"><h2>Who carries which flags</h2><p class="empty">No flags.</p></section>'
    body = "".join(f"<h3>{html.escape(group)} ({len(rows)})</h3>"
                   + _table(["student", "flags"], [[(key, f"{key}/feedback.html"), "; ".join(flags)]
                                                   for key, flags in rows])
                   for group, rows in groups.items())
    return f'<section class="card"><h2>Who carries which flags</h2>{body}</section>'


def write_report(out):
    """Write DIR/report.html, plots and all; returns the path of the page."""
    out = Path(out)
    documents = load_documents(out)
    scores = [document.get("score", 0) for _, document in documents]
    times = [document.get("execution_time", 0) for _, document in documents]
    rates = _pass_rates(documents)
    bugs = _named_bugs(documents)
    flags = _flag_kinds_by_submission(documents)
    hand_points, _ = hand_grading.points_of(out)

    plots = {"scores": _score_histogram(scores) if documents else None}
    plots["tests"] = _hbar([TEST_KEYS.get(name, name).removeprefix("test_") for name, _ in rates],
                           [rate for _, rate in rates],
                           [COLORS.get(name.split(": ")[0], "#868e96") for name, _ in rates],
                           "submissions passing (%)", xlim=112, fmt="{:.0f}%", width=FULL) if rates else None
    top = bugs.most_common(12)
    plots["bugs"] = _hbar([textwrap.fill(f"{title} ({SHORT[part]})", 36) for (part, title), _ in top],
                          [n for _, n in top], [COLORS.get(part, "#868e96") for (part, _), _ in top],
                          "submissions") if top else None
    plots["flags"] = _hbar([kind for kind, _ in flags.most_common()], [n for _, n in flags.most_common()],
                           "#f59f00", "submissions") if flags else None
    plots["times"] = _times(times) if documents else None

    legend = " ".join(f'<span class="swatch" style="background:{c}"></span>{html.escape(p)}'
                      for p, c in COLORS.items())
    stats = [("submissions", len(documents)),
             ("mean score", f"{statistics.mean(scores):.1f}" if scores else "–"),
             ("median score", f"{statistics.median(scores):g}" if scores else "–"),
             ("full marks", sum(s >= 100 for s in scores)),
             ("with errors", len(_error_rows(documents))),
             ("graded by hand", len(set(hand_points) & {key for key, _ in documents})),
             ("median grading time", f"{statistics.median(times):.0f} s" if times else "–")]
    body = [f"<h1>Transformer from scratch: class report</h1><p class=sub>{html.escape(str(out.resolve()))} · "
            f"generated {datetime.now():%Y-%m-%d %H:%M}</p>",
            '<section class="card stats">' + "".join(f'<div class="stat"><b>{html.escape(str(v))}</b>'
                                                      f'<span>{html.escape(k)}</span></div>' for k, v in stats)
            + "</section>",
            '<section class="card"><h2>Per part</h2>'
            + _table(["part", "max", "mean", "median", "full marks", "zero", "most common named bug"],
                     _part_rows(documents, bugs), numeric=(1, 2, 3, 4, 5)) + "</section>",
            '<div class="grid">',
            _plot_card("Score distribution", plots["scores"], "No submissions."),
            _plot_card("Grading time", plots["times"], "No submissions."),
            "</div><div style='height:16px'></div>",
            _plot_card("Pass rate of each check", plots["tests"], "No checks.", legend),
            '<div class="grid">',
            _plot_card("Most common named bugs", plots["bugs"], "No bug was named.", "coloured by part, as above"),
            _plot_card("Flags by kind", plots["flags"], "No flags.", "submissions with at least one such flag"),
            "</div><div style='height:16px'></div>",
            '<section class="card"><h2>Submissions with errors</h2>'
            + _table(["student", "score", "what happened"], _error_rows(documents), numeric=(1,)) + "</section>",
            _flags_card(documents),
            '<section class="card"><h2>Every student</h2><p class=sub>hand: points entered in '
            f"{hand_grading.CSV_NAME} (– not yet); total: score + hand</p>"
            + _table(["student", "score", *[SHORT[p] for p in PARTS], "hand", "total", "flags"],
                     _student_rows(documents, hand_points), numeric=tuple(range(1, 9))) + "</section>"]
    page = out / "report.html"
    page.write_text('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                    f"<title>Class report</title><style>{CSS}</style></head><body><main>{''.join(body)}</main>"
                    "</body></html>\n", encoding="utf-8")
    return page


def write_safely(out):
    """For the batch: a failure here is reported and never costs the batch its gradebook."""
    try:
        return write_report(out)
    except Exception as exc:  # noqa: BLE001
        print(f"class report for {out} not written: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None


def rebuild(out):
    """Every student's feedback, grades.csv (with the hand-graded points) and the class report, from the
    results.json files already in DIR."""
    documents = load_documents(out)
    for key, document in documents:
        feedback.write_feedback(Path(out) / key, document)
    write_gradebook(out, gradebook_documents(out), say_problems=True)
    write_report(out)
    return len(documents)
