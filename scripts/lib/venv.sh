# Sourced by scripts: installs missing system packages (Debian, as root) and makes the Python venvs
# with real Celery: tests/requirements.txt (current Celery, with kombu[sqs] and moto[server] for SQS) and proto-fixtures/requirements-5.3.txt
# (Celery 5.3.6, for the mixed-version chord test), tests/requirements-exporter.txt (celery-exporter,
# for the series-compatibility test). Sets CELERIAC_TEST_PYTHON, CELERIAC_TEST_PYTHON_CELERY536 and
# CELERIAC_TEST_PYTHON_EXPORTER.

ensure_system_packages() {
  local need=()
  base_packages
  # prometheus + promtool: the observability tests scrape celeriac with a private Prometheus;
  # prometheus-pushgateway: the warm job's push is tested against a real Pushgateway.
  { command -v prometheus && command -v promtool; } >/dev/null 2>&1 || need+=(prometheus)
  command -v prometheus-pushgateway >/dev/null 2>&1 || need+=(prometheus-pushgateway)
  install_packages "${need[@]}" || return 1
  command -v cargo >/dev/null 2>&1 || { echo "cargo is missing (install Rust)" >&2; return 1; }
  ensure_databases
}

# Only what scripts/demo uses: Redis, Python with venv, a C toolchain, cargo.
ensure_demo_packages() {
  local need=()
  base_packages
  install_packages "${need[@]}" || return 1
  command -v cargo >/dev/null 2>&1 || { echo "cargo is missing (install Rust)" >&2; return 1; }
}

# Adds to the caller's `need` the packages every script needs.
base_packages() {
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  command -v python3 >/dev/null 2>&1 || need+=(python3)
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv python3-pip)
  command -v cc >/dev/null 2>&1 || need+=(build-essential)
  command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
}

install_packages() {
  [ $# -gt 0 ] || return 0
  if [ "$(id -u)" != 0 ]; then
    echo "missing $*; run as root or install them" >&2
    return 1
  fi
  echo "installing $*"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

# PostgreSQL (5432, user postgres without password from 127.0.0.1) and MariaDB (3306, root
# without password) for the cache's source tests. Installs and starts them when missing; tests
# create and drop their own databases.
ensure_databases() {
  local fresh_pg=0
  local need=()
  command -v pg_ctlcluster >/dev/null 2>&1 || { need+=(postgresql postgresql-client); fresh_pg=1; }
  command -v mariadbd >/dev/null 2>&1 || need+=(mariadb-server mariadb-client)
  if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
      echo "missing ${need[*]}; run as root or install them" >&2
      return 1
    fi
    echo "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  fi
  if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    local version
    version=$(ls /etc/postgresql | sort -n | tail -1)
    if [ "$fresh_pg" = 1 ]; then
      # A cluster we just installed: let local test clients in as postgres without a password.
      sed -i -E 's/^(host +all +all +(127\.0\.0\.1\/32|::1\/128) +)[a-z0-9-]+$/\1trust/' \
        "/etc/postgresql/$version/main/pg_hba.conf"
    fi
    pg_ctlcluster "$version" main start
    for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
  fi
  if ! mariadb-admin -uroot -h127.0.0.1 ping >/dev/null 2>&1; then
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
    (mariadbd --user=mysql --bind-address=127.0.0.1 >/tmp/mariadbd.log 2>&1 &)
    for _ in $(seq 100); do mariadb-admin -uroot -h127.0.0.1 ping >/dev/null 2>&1 && break; sleep 0.2; done
    mariadb -uroot -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD(''); FLUSH PRIVILEGES" 2>/dev/null || true
  fi
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

# A venv holding exactly the pins of a requirements file, installed without dependency
# resolution, re-created when the file changes: ensure_pinned_venv VENV REQUIREMENTS WHAT.
ensure_pinned_venv() {
  local venv=$1 req=$2 what=$3
  local stamp="$venv/.requirements.sha256"
  local want
  want=$(sha256sum "$req" | cut -d' ' -f1)
  if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "creating $venv ($what from PyPI)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check --no-deps -r "$req"
    echo "$want" > "$stamp"
  fi
}

# A second venv with Celery 5.3.6 (the exact pins of the 5.3 wire fixtures), for tests that run a
# Python 5.3.6 worker beside celeriac.
ensure_venv_celery536() {
  local root=$1
  ensure_pinned_venv "$root/.venv-celery536" "$root/proto-fixtures/requirements-5.3.txt" "Celery 5.3.6"
  export CELERIAC_TEST_PYTHON_CELERY536="$root/.venv-celery536/bin/python"
}

# A third venv with celery-exporter (danihodovic/celery-exporter) and its exact pins, for the test
# that compares its series with celeriac's.
ensure_venv_exporter() {
  local root=$1
  ensure_pinned_venv "$root/.venv-exporter" "$root/tests/requirements-exporter.txt" "celery-exporter"
  export CELERIAC_TEST_PYTHON_EXPORTER="$root/.venv-exporter/bin/python"
}
