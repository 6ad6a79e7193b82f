#!/usr/bin/env bash
# Try FileMetadataSync on one folder, with nothing to set up:
#
#   scripts/quickstart.sh [FOLDER]
#
# Syncs FOLDER (default: a generated sample tree of a NAS document share, made by the
# project's own generator, `fms-corpus` in corpus/) into a private PostgreSQL cluster and a local-folder object
# store, both kept in .quickstart/, and prints the summary and the catalog's status. Run it
# again to see a no-change rescan; delete .quickstart/ to start over.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
export SERVICES_DIR="$repo/.quickstart" FMSTEST_KEEP_SERVICES_DIR=1 FMSTEST_PRIVATE_PG=1
mkdir -p "$SERVICES_DIR"
source scripts/lib/services.sh
trap stop_services EXIT

if ! pg_bin_dir >/dev/null 2>&1 || ! command -v python3 >/dev/null || ! command -v psql >/dev/null; then
  log "installing PostgreSQL and Python with apt-get"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-client python3 >/dev/null
fi

log "building filemetasync (release; the first build takes several minutes)"
cargo build --release --quiet -p filemetasync -p fms-corpus --bins
binary="$repo/target/release/filemetasync"

folder=${1:-}
if [ -z "$folder" ]; then
  folder="$SERVICES_DIR/sample"
  if [ ! -d "$folder" ]; then
    log "generating a sample NAS tree in $folder"
    "$repo/target/release/fms-corpus" "$folder" --files 3000 --large 1 --large-mib 32 \
      --manifest "$SERVICES_DIR/sample.manifest.jsonl"
  fi
fi
folder=$(cd "$folder" && pwd)

ensure_postgres
db_url="${FMSTEST_PG_ADMIN_URL%/*}/filemetasync"
psql "$FMSTEST_PG_ADMIN_URL" -Atc "SELECT 1 FROM pg_database WHERE datname = 'filemetasync'" | grep -q 1 \
  || psql "$FMSTEST_PG_ADMIN_URL" -qc "CREATE DATABASE filemetasync"

# The embedded default configuration: one root, the local-folder store.
config="$SERVICES_DIR/filemetasync.toml"
cat >"$config" <<TOML
agent = "quickstart"
[database]
url = "$db_url"
[storage]
kind = "local"
path = "$SERVICES_DIR/store"
[[roots]]
label = "quickstart"
path = "$folder"
[log]
format = "text"
level = "warning"
TOML

log "syncing $folder"
"$binary" --config "$config" scan --wait
echo
"$binary" --config "$config" status
echo
log "objects are in $SERVICES_DIR/store/files; the catalog is database 'filemetasync' of the cluster in $SERVICES_DIR/pg"
