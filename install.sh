#!/usr/bin/env bash
# Makes .venv with a Python >= 3.12 (JAX >= 0.11 needs it), installs the versions pinned in
# requirements.txt, then n2v_jax itself (editable: the checkout is the installed code).
#
#   bash install.sh            # then: .venv/bin/python -m n2v_jax.train ... (or n2v-train)
#   PYTHON=/path/to/python3.12 bash install.sh
#
# The interpreter is, in this order: $PYTHON; python3.12 (the version requirements.txt was
# verified on), python3.13, python3 on PATH if it is >= 3.12; a pyenv-installed 3.12+. An existing .venv on an older
# Python is replaced (it cannot run this JAX).
set -euo pipefail
cd "$(dirname "$0")"

ok() {  # ok PYTHON: true if it runs and is a Python >= 3.12
  "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1
}

find_python() {
  if [ -n "${PYTHON:-}" ]; then
    ok "$PYTHON" && { echo "$PYTHON"; return; }
    echo "install.sh: PYTHON=$PYTHON is not a Python >= 3.12" >&2; return 1
  fi
  for p in python3.12 python3.13 python3; do
    if command -v "$p" >/dev/null && ok "$(command -v "$p")"; then command -v "$p"; return; fi
  done
  if command -v pyenv >/dev/null; then
    root=$(pyenv root)
    for v in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.1[2-9]' | sort -V); do
      if ok "$root/versions/$v/bin/python3"; then echo "$root/versions/$v/bin/python3"; return; fi
    done
  fi
  echo "install.sh: no Python >= 3.12 found (tried \$PYTHON, python3.13, python3.12, python3," \
       "pyenv); install one, or give it as PYTHON=/path/to/python3.12" >&2
  return 1
}

py=$(find_python)
if [ -x .venv/bin/python ] && ! ok .venv/bin/python; then
  echo "install.sh: .venv uses $(.venv/bin/python -V 2>&1); replacing it with $("$py" -V)" >&2
  rm -rf .venv
fi
[ -x .venv/bin/python ] || "$py" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt
.venv/bin/python -m pip install -q --no-deps -e .  # what requirements.txt pinned serves it
echo "install.sh: .venv ready ($(.venv/bin/python -V))" >&2
