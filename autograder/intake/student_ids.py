"""Which student a submitted file belongs to, read from its name alone.

A row of the gradebook belongs to student ID X only when the file's name is X's submission name, in one of
these forms (the suffix .tar.gz/.tgz/.tar/.ipynb removed first):

1. The student's own name for it: exactly X, as CollectSubmission.sh makes it, optionally in brackets or
   parentheses (the handout writes "[STUDENT_ID].tar.gz") and optionally followed by the copy marker that a
   browser or an LMS adds to a second download of the same name: "X (1)", "X(1)", "X-1".
2. An LMS bulk download that wrapped the student's own name: the last "_" field is X as in 1, and everything
   before it is exactly one LMS's own prefix:
     Canvas      sortablename_[LATE_]userid_submissionid_X.tar.gz
     Moodle      Full Name_participantid_assignsubmission_file_X.tar.gz
     Blackboard  Assignment_username_attempt_YYYY-MM-DD-HH-MM-SS_X.tar.gz
3. An LMS download that wrote X as one of its own fields, near the front, followed by its own vocabulary:
     X_attempt_<date>[_...]                          (Blackboard, when user names are student IDs)
     Assignment_X_attempt_YYYY-MM-DD-HH-MM-SS[_...]  (the same, with the assignment's name first)
     First Last_X_[...]                              (a full name of two or more capitalised words, then X)

and nowhere in the name is there an ID other than X. Anything else is graded under `unknown-<name>` with a flag
that says why.

What tells a wrapper from a student's own file name: an LMS writes fixed fields in a fixed order (numbers it
assigned, its own keywords, a timestamp, the student's display name) and puts the student's original file name
last, whole. A student's own name for a file is free text: "notes_for_2023-00002", "copy of 2023-00002",
"2023-00002_final". So the ID counts only where an LMS would have put it, and the student's own part of a
wrapped name must be exactly an ID: "smithjohn_1_2_notes_for_2023-00002.ipynb" (Canvas around a student's
free-text name) is not 2023-00002's either. The rule is conservative on purpose: a name it does not know costs
a TA a rename, while a name it wrongly trusts puts one student's file in another's row. Uploads collected
outside an LMS carry no identity but their name, so there a student could always name a file after a classmate;
the ID in a name is only as trustworthy as whoever collected the files.
"""
import re

ID_PATTERN = r"[0-9]{4}-[0-9]{5}"
STUDENT_ID_RE = re.compile(rf"\A{ID_PATTERN}\Z")
SUBMISSION_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".ipynb")
NO_ID = "file name holds no valid student ID (YYYY-NNNNN)"

_ANY_ID = re.compile(rf"(?<![0-9]){ID_PATTERN}(?![0-9])")
_OWN_NAME = re.compile(rf"\s*(?:\[\s*({ID_PATTERN})\s*\]|\(\s*({ID_PATTERN})\s*\)|({ID_PATTERN}))\s*"
                       r"(?:\(\d{1,3}\)|-\d{1,3})?\s*")
_TIMESTAMP = r"\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}"
_DATE = rf"\d{{4}}-\d{{2}}-\d{{2}}(?:-\d{{2}}-\d{{2}}-\d{{2}})?"
_LMS_PREFIXES = [re.compile(pattern, re.IGNORECASE) for pattern in (
    r"[^_]+(?:_late)?_\d+_\d+",                   # Canvas
    r"[^_]+_\d+_assignsubmission_file",           # Moodle
    rf"[^_]+_[^_]+_attempt_{_TIMESTAMP}",         # Blackboard
)]


def strip_suffix(name):
    lower = name.lower()
    for suffix in SUBMISSION_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name.rsplit(".", 1)[0] if "." in name else name


def own_name_id(text):
    """The ID when `text` is a student's own submission name (form 1), else None."""
    match = _OWN_NAME.fullmatch(text)
    return next((group for group in match.groups() if group), None) if match else None


def _full_name(field):
    words = [w for w in re.split(r"[ ,]+", field) if w]
    return len(words) >= 2 and all(w[0].isupper() and all(c.isalpha() or c in "'.-" for c in w) for w in words)


def _wrapped(fields):
    """Form 2: an LMS prefix, then the student's own name."""
    prefix = "_".join(fields[:-1])
    return len(fields) > 1 and own_name_id(fields[-1]) is not None and any(
        p.fullmatch(prefix) for p in _LMS_PREFIXES)


def _lms_field(fields):
    """Form 3: the ID is a field the LMS wrote itself."""
    lowered = [field.lower() for field in fields]
    if own_name_id(fields[0]):
        return lowered[1:2] == ["attempt"] and len(fields) > 2 and re.fullmatch(_DATE, fields[2]) is not None
    if len(fields) > 2 and own_name_id(fields[1]):
        blackboard = lowered[2] == "attempt" and len(fields) > 3 and re.fullmatch(_TIMESTAMP, fields[3])
        return bool(blackboard) or _full_name(fields[0])
    return False


def read(name):
    """(student ID or None, a note for the row's flags or None) for a submitted file's name."""
    stem = strip_suffix(name)
    mentioned = sorted(set(_ANY_ID.findall(stem)))
    if not mentioned:
        return None, NO_ID
    if len(mentioned) > 1:
        return None, f"file name holds several student IDs ({', '.join(mentioned)}); none was used"
    student_id = mentioned[0]
    if own_name_id(stem):
        return student_id, None
    fields = stem.split("_")
    if _wrapped(fields) or _lms_field(fields):
        return student_id, f"student ID {student_id} read from an LMS download's file name {_show(name)}"
    return None, (f"file name {_show(name)} mentions {student_id} but is not a submission name for it "
                  f"({student_id}.tar.gz, or an LMS download's name); not used")


def _show(name, limit=120):
    """File names are the student's text: printable and short in a flag."""
    clean = "".join(c if c.isprintable() else "?" for c in name)
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."
