#!/usr/bin/env bash
# Packs your assignment into <STUDENT_ID>.tar.gz for upload.
#
#   Colab:  !bash CollectSubmission.sh 2023-18676
#   Local:  bash CollectSubmission.sh 2023-18676
#
# Run it from the assignment folder (the one holding the notebooks).
set -euo pipefail

# ---- Instructors: edit these for a new assignment --------------------------
REQUIRED_NOTEBOOK="Assignment2-1_Transformer_from_scratch.ipynb"
# Picked up when present; anything else in the folder is left out.
OPTIONAL_PATTERNS=("Assignment2-*.ipynb" "*.pth")
# -----------------------------------------------------------------------------

usage() {
    cat >&2 <<EOF
Usage: bash CollectSubmission.sh STUDENT_ID
  STUDENT_ID looks like 2023-18676 (4 digits, a dash, 5 digits).
  Example (Colab):  !bash CollectSubmission.sh 2023-18676
EOF
    exit 2
}

die() {
    echo "ERROR: $*" >&2
    echo "No archive was made. Fix the problem above and run the script again." >&2
    exit 1
}

warnings=0
warn() {
    warnings=$((warnings + 1))
    echo "" >&2
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
    echo "!! WARNING: $*" >&2
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
    echo "" >&2
}

trim() {
    local s="$1"
    s="${s#"${s%%[![:space:]]*}"}"
    printf '%s' "${s%"${s##*[![:space:]]}"}"
}

# ---- Student ID -------------------------------------------------------------
[ "$#" -eq 1 ] || usage
# Students often copy the brackets from "[STUDENT_ID]" in the instructions.
id="$(trim "$1")"
id="${id#\[}"
id="$(trim "${id%\]}")"
if ! [[ "$id" =~ ^[0-9]{4}-[0-9]{5}$ ]]; then
    echo "ERROR: '$1' is not a valid student ID." >&2
    usage
fi
archive="$id.tar.gz"

# ---- Choose files -----------------------------------------------------------
if [ ! -f "$REQUIRED_NOTEBOOK" ]; then
    # Colab saves a copy as "Copy of <name>", a browser download may add " (1)": say what is there instead.
    shopt -s nullglob nocaseglob
    similar=(*"${REQUIRED_NOTEBOOK%.ipynb}"*.ipynb)
    shopt -u nullglob nocaseglob
    if [ "${#similar[@]}" -eq 0 ]; then
        die "'$REQUIRED_NOTEBOOK' was not found in $(pwd).
Run this script from the assignment folder (the one holding the notebook). On Colab, a notebook saved
with 'File > Save a copy in Drive' lands in 'Colab Notebooks' as 'Copy of ...': move it into this folder
and rename it to '$REQUIRED_NOTEBOOK'."
    fi
    echo "ERROR: '$REQUIRED_NOTEBOOK' was not found in $(pwd), but this folder has:" >&2
    printf '         %s\n' "${similar[@]}" >&2
    if [ "${#similar[@]}" -eq 1 ]; then
        rename="mv \"${similar[0]}\" \"$REQUIRED_NOTEBOOK\""
        echo "If that is the notebook you worked in, give it the expected name and run this script again:" >&2
    else
        rename="mv \"<the notebook you worked in>\" \"$REQUIRED_NOTEBOOK\""
        echo "Give the notebook you worked in the expected name and run this script again:" >&2
    fi
    echo "    Colab:  !$rename" >&2
    echo "    Local:  $rename" >&2
    echo "(or rename it in Colab with File > Rename, or in Jupyter's file browser)." >&2
    die "the grader looks for the notebook under exactly the name '$REQUIRED_NOTEBOOK'."
fi

files=("$REQUIRED_NOTEBOOK")
shopt -s nullglob
for pattern in "${OPTIONAL_PATTERNS[@]}"; do
    for f in $pattern; do   # unquoted on purpose: let the shell expand the glob
        [ -f "$f" ] || continue
        [ "$f" != "$archive" ] || continue
        dup=no
        for seen in "${files[@]}"; do [ "$seen" != "$f" ] || dup=yes; done
        [ "$dup" = yes ] || files+=("$f")
    done
done
shopt -u nullglob

# ---- Snapshot into a staging folder -----------------------------------------
# Colab/Jupyter may autosave a notebook while we read it; copying first gives
# tar a frozen snapshot and avoids "file changed as we read it".
staging="$(mktemp -d)"
trap 'rm -rf "$staging"' EXIT
mkdir "$staging/files"
for f in "${files[@]}"; do
    cp "$f" "$staging/files/" || die "could not copy '$f'."
done

# ---- Check the notebooks (on the snapshot, i.e. exactly what gets packed) ----
notebooks=()
for f in "${files[@]}"; do
    case "$f" in *.ipynb) notebooks+=("$staging/files/$f") ;; esac
done

if command -v python3 >/dev/null 2>&1; then
    # Prints one line per problem: "INVALID|NOOUTPUT|STUB<TAB>name<TAB>detail".
    report="$(python3 - "${notebooks[@]}" <<'PY'
import json, os, re, sys

ansi = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

def text(value):
    return "".join(value) if isinstance(value, list) else str(value or "")

def is_stub_source(src):
    return any(line.strip().startswith("raise NotImplementedError")
               for line in text(src).splitlines())

def is_stub_output(out):
    if out.get("ename") == "NotImplementedError":
        return True
    blob = json.dumps(out.get("text", "")) + json.dumps(out.get("data", {})) \
        + json.dumps(out.get("traceback", []))
    return "raise NotImplementedError" in ansi.sub("", blob)

for path in sys.argv[1:]:
    name = os.path.basename(path)
    try:
        with open(path, encoding="utf-8") as fh:
            nb = json.load(fh)
    except (ValueError, UnicodeDecodeError) as exc:
        print(f"INVALID\t{name}\tnot valid JSON ({exc})")
        continue
    if not isinstance(nb, dict) or nb.get("nbformat") != 4 \
            or not isinstance(nb.get("cells"), list):
        print(f"INVALID\t{name}\tnot an nbformat-4 notebook")
        continue
    code = [c for c in nb["cells"] if isinstance(c, dict) and c.get("cell_type") == "code"]
    if code and not any(c.get("outputs") for c in code):
        print(f"NOOUTPUT\t{name}\t")
    stubs = [i for i, c in enumerate(nb["cells"], 1)
             if isinstance(c, dict) and c.get("cell_type") == "code"
             and (is_stub_source(c.get("source"))
                  or any(is_stub_output(o) for o in c.get("outputs") or []
                         if isinstance(o, dict)))]
    if stubs:
        print(f"STUB\t{name}\t{', '.join(map(str, stubs))}")
PY
)" || die "the notebook checker (python3) crashed."

    invalid=no
    while IFS=$'\t' read -r kind name detail; do
        case "$kind" in
            INVALID)
                echo "ERROR: '$name' is damaged: $detail." >&2
                echo "       Re-download it (File > Download > .ipynb) or restore a saved copy." >&2
                invalid=yes ;;
            NOOUTPUT)
                warn "'$name' has NO cell outputs. The TAs need them to grade:
!! run all cells (Runtime > Run all), save, then run this script again." ;;
            STUB)
                warn "'$name' still has unfinished TO DO code
!! ('raise NotImplementedError') in cell(s) $detail. Those parts will score 0." ;;
        esac
    done <<<"$report"
    [ "$invalid" = no ] || die "invalid notebook(s); see above."
else
    warn "python3 not found, so the notebooks were NOT checked for problems."
fi

# ---- Build the archive ------------------------------------------------------
names=()
for f in "${files[@]}"; do names+=("$(basename "$f")"); done
# Build beside the snapshot and move into place at the end, so a failed run
# never leaves a half-written archive (or destroys the previous good one).
# COPYFILE_DISABLE keeps macOS tar from adding "._*" metadata files.
COPYFILE_DISABLE=1 tar -czf "$staging/out.tar.gz" -C "$staging/files" "${names[@]}" ||
    die "tar failed to create the archive."
packed="$(tar -tzf "$staging/out.tar.gz")" || die "the new archive could not be read back."
[ "$(printf '%s\n' "$packed" | wc -l)" -eq "${#names[@]}" ] ||
    die "the archive is missing files."

if [ -e "$archive" ]; then
    echo "Note: replacing the existing $archive."
fi
mv -f "$staging/out.tar.gz" "$archive" || die "could not write $archive in $(pwd)."

if command -v sha256sum >/dev/null 2>&1; then
    sha="$(sha256sum "$archive" | awk '{print $1}')"
elif command -v shasum >/dev/null 2>&1; then
    sha="$(shasum -a 256 "$archive" | awk '{print $1}')"
else
    sha="$(python3 -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$archive")"
fi

echo ""
echo "Created $archive with ${#names[@]} file(s):"
printf '%s\n' "$packed" | sed 's/^/  /'
echo "SHA-256: $sha  $archive"
if [ "$warnings" -gt 0 ]; then
    # Repeated here because the warnings may have scrolled out of view.
    echo "The archive was made, but there were $warnings WARNING(s) above. Please read them" >&2
    echo "before uploading: you probably want to fix them and run this script again." >&2
else
    echo "All checks passed. Upload $archive as your submission."
fi
