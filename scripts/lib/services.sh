# Shared by scripts/test.sh, scripts/quickstart.sh and scripts/bench: bring up PostgreSQL and
# Garage on loopback, each with a throwaway directory, and stop what was started.
# Source it; it sets FMSTEST_* variables and registers cleanup in SERVICES_CLEANUP.

SERVICES_DIR=${SERVICES_DIR:-$(mktemp -d /tmp/fms-services.XXXXXX)}
SERVICES_CLEANUP=()

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

pg_bin_dir() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    [ -x "$dir/initdb" ] && { echo "$dir"; return 0; }
  done
  command -v initdb >/dev/null && { dirname "$(command -v initdb)"; return 0; }
  return 1
}

# Use the PostgreSQL on 127.0.0.1:5432 if it answers (unless FMSTEST_PRIVATE_PG=1), else start a
# throwaway cluster from the installed server binaries. Sets FMSTEST_PG_ADMIN_URL.
ensure_postgres() {
  if [ "${FMSTEST_PRIVATE_PG:-0}" != 1 ] && pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null \
     && psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1; then
    FMSTEST_PG_ADMIN_URL="postgres://postgres@127.0.0.1:5432/postgres"
    log "using the PostgreSQL on 127.0.0.1:5432"
  else
    start_private_postgres
  fi
  export FMSTEST_PG_ADMIN_URL
}

start_private_postgres() {
  local bin port data run_as=()
  bin=$(pg_bin_dir) || { log "no PostgreSQL server binaries: apt-get install postgresql"; return 1; }
  port=$(free_port)
  data="$SERVICES_DIR/pg"
  mkdir -p "$data"
  # initdb refuses to run as root: run the cluster as the postgres user when we are root.
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres
    chown -R postgres "$data"
    chmod 755 "$SERVICES_DIR"
    run_as=(runuser -u postgres --)
  fi
  # A cluster left by an earlier run (quickstart keeps its own) is started again as it is.
  if [ ! -f "$data/data/PG_VERSION" ]; then
    "${run_as[@]}" "$bin/initdb" -D "$data/data" -U postgres -A trust --no-sync >"$data/initdb.log" 2>&1 \
      || { cat "$data/initdb.log" >&2; return 1; }
  fi
  "${run_as[@]}" "$bin/pg_ctl" -D "$data/data" -l "$data/server.log" -w \
    -o "-h 127.0.0.1 -p $port -k $data -c fsync=off -c max_connections=200" start >/dev/null \
    || { cat "$data/server.log" >&2; return 1; }
  SERVICES_CLEANUP+=("${run_as[*]} $bin/pg_ctl -D $data/data -m immediate stop")
  FMSTEST_PG_ADMIN_URL="postgres://postgres@127.0.0.1:$port/postgres"
  FMSTEST_PG_CTL="${run_as[*]} $bin/pg_ctl -D $data/data -o '-h 127.0.0.1 -p $port -k $data -c fsync=off -c max_connections=200' -l $data/server.log"
  export FMSTEST_PG_CTL
  log "started a throwaway PostgreSQL on 127.0.0.1:$port"
}

# Garage: installed with cargo if missing (about 6 minutes on two cores), started on loopback
# with a throwaway data directory, one key that may create buckets, and one bucket.
ensure_garage_binary() {
  export PATH="$HOME/.cargo/bin:$PATH"
  if ! command -v garage >/dev/null; then
    log "installing Garage (cargo install garage --locked); this takes several minutes once"
    cargo install garage --locked >"$SERVICES_DIR/garage-install.log" 2>&1 \
      || { tail -30 "$SERVICES_DIR/garage-install.log" >&2; return 1; }
  fi
}

# s3s-fs: a second S3 implementation, independent of Garage (the s3s protocol crate over a
# folder; about 4 minutes to build on two cores), for the core end-to-end tests. 0.14.1 is
# the newest release that builds with the Rust on these machines.
ensure_s3s_fs_binary() {
  export PATH="$HOME/.cargo/bin:$PATH"
  if ! command -v s3s-fs >/dev/null; then
    log "installing s3s-fs (cargo install s3s-fs --features binary); this takes a few minutes once"
    cargo install s3s-fs --version 0.14.1 --features binary --locked >"$SERVICES_DIR/s3s-fs-install.log" 2>&1 \
      || { tail -30 "$SERVICES_DIR/s3s-fs-install.log" >&2; return 1; }
  fi
}

start_garage() {
  ensure_garage_binary || return 1
  local dir="$SERVICES_DIR/garage" s3_port rpc_port admin_port
  mkdir -p "$dir/meta" "$dir/data"
  s3_port=$(free_port); rpc_port=$(free_port); admin_port=$(free_port)
  cat >"$dir/garage.toml" <<TOML
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "lmdb"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
metadata_fsync = false
data_fsync = false

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3_port"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin_port"
TOML
  chmod 600 "$dir/garage.toml"
  garage -c "$dir/garage.toml" server >"$dir/server.log" 2>&1 &
  GARAGE_PID=$!
  SERVICES_CLEANUP+=("kill $GARAGE_PID")
  local node="" i
  for i in $(seq 1 100); do
    garage -c "$dir/garage.toml" status >/dev/null 2>&1 \
      && node=$(garage -c "$dir/garage.toml" node id -q 2>/dev/null) && break
    sleep 0.2
  done
  [ -n "$node" ] || { cat "$dir/server.log" >&2; return 1; }
  garage -c "$dir/garage.toml" layout assign -z dc1 -c 10G "${node%@*}" >/dev/null
  garage -c "$dir/garage.toml" layout apply --version 1 >/dev/null
  local key_id="GK$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  local secret="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  garage -c "$dir/garage.toml" key import --yes -n fms-test "$key_id" "$secret" >/dev/null
  garage -c "$dir/garage.toml" key allow --create-bucket "$key_id" >/dev/null
  garage -c "$dir/garage.toml" bucket create fms >/dev/null
  garage -c "$dir/garage.toml" bucket allow --read --write --owner fms --key "$key_id" >/dev/null
  export FMSTEST_S3_ENDPOINT="http://127.0.0.1:$s3_port"
  export FMSTEST_S3_ADMIN="http://127.0.0.1:$admin_port"
  export FMSTEST_S3_KEY="$key_id" FMSTEST_S3_SECRET="$secret" FMSTEST_S3_BUCKET=fms
  export FMSTEST_S3_REGION=garage
  export FMSTEST_GARAGE_CONFIG="$dir/garage.toml"
  export FMSTEST_GARAGE_PID=$GARAGE_PID
  log "started Garage on $FMSTEST_S3_ENDPOINT (admin $FMSTEST_S3_ADMIN)"
}

stop_services() {
  local i
  for ((i=${#SERVICES_CLEANUP[@]}-1; i>=0; i--)); do
    eval "${SERVICES_CLEANUP[$i]}" >/dev/null 2>&1 || true
  done
  SERVICES_CLEANUP=()
  [ "${FMSTEST_KEEP_SERVICES_DIR:-0}" = 1 ] || rm -rf "$SERVICES_DIR"
}
