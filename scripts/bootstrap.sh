# Sourced by ./demo and ./test: make .venv with the project installed, once.
# ./demo needs only the runtime (ECP_EXTRAS unset); ./test sets ECP_EXTRAS=test
# for the test toolchain. Re-installs only when pyproject.toml or the extras
# change (kept in a stamp file).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
EXTRAS="${ECP_EXTRAS:-}"
SPEC="$ROOT"
[ -n "$EXTRAS" ] && SPEC="$ROOT[$EXTRAS]"
STAMP="$VENV/.ecp-installed${EXTRAS:+-$EXTRAS}"
WANT="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "setting up .venv (${EXTRAS:-runtime}) ..." >&2
  # pip's and setuptools' chatter goes to a log, shown only if the install fails.
  LOG="$VENV/install.log"
  if ! { "$VENV/bin/python" -m pip install --disable-pip-version-check --upgrade pip \
         && "$VENV/bin/python" -m pip install --disable-pip-version-check -e "$SPEC"; } >"$LOG" 2>&1; then
    cat "$LOG" >&2
    echo "installing into .venv failed (log: $LOG)" >&2
    exit 1
  fi
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
