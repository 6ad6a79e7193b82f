# Container helpers for scripts/container-test: podman, and the base images docker/Dockerfile
# names, made locally because no registry of images can be reached from here.
#
#   docker.io/library/debian:bookworm-slim   a Debian bookworm rootfs (debootstrap minbase)
#   docker.io/library/rust:1.95-slim-bookworm that rootfs with gcc and this machine's Rust
#
# They carry the names the Dockerfile uses, so the Dockerfile is built as shipped; a user's
# `docker build` pulls the real images instead. Source after scripts/lib/services.sh.

# This VM refuses podman's default open-files limit ("error setting rlimit type 7"), and its
# cgroups are in hybrid mode, which crun (podman's default runtime on Debian) refuses ("cgroups
# in hybrid mode not supported"); runc runs there. Both go in a containers.conf of our own.
PODMAN_LIMITS=(--ulimit nofile=20000:20000 --ulimit nproc=4096:4096)
DEBIAN_IMAGE=docker.io/library/debian:bookworm-slim
RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm

ensure_podman() {
  local missing=()
  command -v podman >/dev/null || missing+=(podman)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v runc >/dev/null || missing+=(runc)
  command -v aardvark-dns >/dev/null || [ -x /usr/lib/podman/aardvark-dns ] || missing+=(aardvark-dns)
  python3 -c 'import yaml' 2>/dev/null || missing+=(python3-yaml)
  if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || { log "podman is missing and only root can install it: apt-get install ${missing[*]}"; return 1; }
    log "installing ${missing[*]} with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if ! command -v podman-compose >/dev/null; then
    log "installing podman-compose (PyPI)"
    python3 -m pip install --quiet --disable-pip-version-check podman-compose
  fi
  CONTAINERS_CONF="$SERVICES_DIR/containers.conf"
  cat >"$CONTAINERS_CONF" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"
EOF
  export CONTAINERS_CONF
}

# The Debian base image, from a minbase debootstrap (about 3 minutes once; kept in podman's
# storage afterwards).
ensure_debian_image() {
  podman image exists "$DEBIAN_IMAGE" && return 0
  local rootfs="$SERVICES_DIR/rootfs"
  log "making $DEBIAN_IMAGE with debootstrap --variant=minbase bookworm (once)"
  debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian \
    >"$SERVICES_DIR/debootstrap.log" 2>&1 || { tail -20 "$SERVICES_DIR/debootstrap.log" >&2; return 1; }
  slim_rootfs "$rootfs"
  cat >"$rootfs/etc/apt/sources.list" <<'EOF'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
  tar -C "$rootfs" -c . | podman import --change 'CMD ["bash"]' - "$DEBIAN_IMAGE" >/dev/null
  rm -rf "$rootfs"
}

# What makes the published image "slim": no documentation, manuals or translations, now or
# from packages installed later, and no package caches.
slim_rootfs() {
  local rootfs=$1
  [ -n "$rootfs" ] && [ -d "$rootfs/etc/dpkg" ] || { log "slim_rootfs: $rootfs is not a rootfs"; return 1; }
  mkdir -p "$rootfs/etc/dpkg/dpkg.cfg.d"
  printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
    'path-exclude /usr/share/man/*' 'path-exclude /usr/share/groff/*' 'path-exclude /usr/share/info/*' \
    'path-exclude /usr/share/lintian/*' 'path-exclude /usr/share/locale/*' \
    >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim"
  # The published image's apt settings: no package caches kept after apt-get, no
  # translations fetched.
  printf '%s\n' 'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };' \
    'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };' \
    'Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";' >"$rootfs/etc/apt/apt.conf.d/docker-clean"
  echo 'Acquire::Languages "none";' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
  find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  local dir
  for dir in man groff info lintian locale; do
    rm -rf "${rootfs:?}/usr/share/$dir"
  done
  rm -rf "${rootfs:?}"/var/cache/apt/archives/*.deb "${rootfs:?}"/var/cache/apt/*.bin "${rootfs:?}"/var/lib/apt/lists/*
}

# The Rust build image: the Debian image with gcc (as the official slim image has) and the
# toolchain this machine runs (its lib and bin, not its documentation), under the official
# image's paths.
ensure_rust_image() {
  podman image exists "$RUST_IMAGE" && return 0
  ensure_debian_image || return 1
  local toolchain context="$SERVICES_DIR/rust-image"
  toolchain=$(rustc --print sysroot)
  log "making $RUST_IMAGE from $DEBIAN_IMAGE and $toolchain (once)"
  mkdir -p "$context/rust" "$context/ca"
  cp -a "$toolchain/bin" "$toolchain/lib" "$context/rust/"
  # Where this machine reaches crates.io through a TLS proxy, its CA must be trusted in the
  # build stage too (the certificates added locally to the host's store).
  cp /usr/local/share/ca-certificates/*.crt "$context/ca/" 2>/dev/null || true
  cat >"$context/Containerfile" <<EOF
FROM $DEBIAN_IMAGE
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev \\
    && rm -rf /var/lib/apt/lists/*
COPY ca /usr/local/share/ca-certificates
RUN update-ca-certificates
COPY rust /usr/local/rust
ENV CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
EOF
  podman build "${PODMAN_LIMITS[@]}" --pull=never -q -t "$RUST_IMAGE" "$context" >/dev/null \
    || { rm -rf "$context"; return 1; }
  rm -rf "$context"
}

# Can containers run here at all? Prints the reason when not.
podman_runs() {
  podman run --rm "${PODMAN_LIMITS[@]}" --pull=never "$DEBIAN_IMAGE" true 2>&1 | tail -1
  return "${PIPESTATUS[0]}"
}

# Stand-ins for the images docker/compose.yaml names, for its trial run here:
#   docker.io/library/postgres:15-bookworm  Debian's PostgreSQL 15, with an entry point that
#                                           does what the trial needs of the official one
#   docker.io/dxflrs/garage:v2.1.0          this machine's Garage binary (see `garage --version`)
#   localhost/fms-trial-init:test           curl and jq on Debian, for docker/garage-init.sh
#                                           (the compose file's alpine:3.20 runs `apk add`)
POSTGRES_IMAGE=docker.io/library/postgres:15-bookworm
GARAGE_IMAGE=docker.io/dxflrs/garage:v2.1.0
TRIAL_INIT_IMAGE=localhost/fms-trial-init:test

ensure_trial_images() {
  ensure_debian_image || return 1
  local context="$SERVICES_DIR/trial-images"
  mkdir -p "$context"
  if ! podman image exists "$POSTGRES_IMAGE"; then
    log "making $POSTGRES_IMAGE from Debian's postgresql-15 (once)"
    cp scripts/lib/images/postgres-entrypoint.sh "$context/"
    cat >"$context/Containerfile.postgres" <<EOF
FROM $DEBIAN_IMAGE
RUN apt-get update && apt-get install -y --no-install-recommends postgresql-15 \\
    && rm -rf /var/lib/apt/lists/*
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin PGDATA=/var/lib/postgresql/data
VOLUME /var/lib/postgresql/data
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["docker-entrypoint.sh"]
EOF
    podman build "${PODMAN_LIMITS[@]}" --pull=never -q -f "$context/Containerfile.postgres" -t "$POSTGRES_IMAGE" "$context" >/dev/null || return 1
  fi
  if ! podman image exists "$GARAGE_IMAGE"; then
    ensure_garage_binary || return 1
    log "making $GARAGE_IMAGE from $(command -v garage) (once)"
    cp "$(command -v garage)" "$context/garage"
    printf 'FROM %s\nCOPY garage /garage\nENTRYPOINT ["/garage"]\nCMD ["server"]\n' "$DEBIAN_IMAGE" >"$context/Containerfile.garage"
    podman build "${PODMAN_LIMITS[@]}" --pull=never -q -f "$context/Containerfile.garage" -t "$GARAGE_IMAGE" "$context" >/dev/null || return 1
  fi
  if ! podman image exists "$TRIAL_INIT_IMAGE"; then
    log "making $TRIAL_INIT_IMAGE (curl, jq) (once)"
    printf 'FROM %s\nRUN apt-get update && apt-get install -y --no-install-recommends curl jq ca-certificates && rm -rf /var/lib/apt/lists/*\n' \
      "$DEBIAN_IMAGE" >"$context/Containerfile.init"
    podman build "${PODMAN_LIMITS[@]}" --pull=never -q -f "$context/Containerfile.init" -t "$TRIAL_INIT_IMAGE" "$context" >/dev/null || return 1
  fi
  rm -rf "$context"
}
