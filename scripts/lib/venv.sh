# Sourced by scripts: installs missing system packages (Debian, as root) and makes the Python venv
# with real Celery from tests/requirements.txt. Sets CELERIAC_TEST_PYTHON.

ensure_system_packages() {
  local need=()
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  command -v python3 >/dev/null 2>&1 || need+=(python3)
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv python3-pip)
  command -v cc >/dev/null 2>&1 || need+=(build-essential)
  command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
  # prometheus + promtool: the observability tests scrape celeriac with a private Prometheus.
  { command -v prometheus && command -v promtool; } >/dev/null 2>&1 || need+=(prometheus)
  if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
      echo "missing ${need[*]}; run as root or install them" >&2
      return 1
    fi
    echo "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  fi
  command -v cargo >/dev/null 2>&1 || { echo "cargo is missing (install Rust)" >&2; return 1; }
}

ensure_venv() {
  local root=$1
  local venv="$root/.venv-test"
  local stamp="$venv/.requirements.sha256"
  local want
  want=$(sha256sum "$root/tests/requirements.txt" | cut -d' ' -f1)
  if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "creating $venv (real Celery from PyPI)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$root/tests/requirements.txt"
    echo "$want" > "$stamp"
  fi
  export CELERIAC_TEST_PYTHON="$venv/bin/python"
}
