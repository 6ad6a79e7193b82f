#!/usr/bin/env python3
"""Bring up docker/compose.yaml (the local trial: PostgreSQL, Garage, garage-init and
FileMetadataSync) with podman-compose and check that the sample folder ends up in the catalog
and the store. Called by scripts/container-test after it made the stand-in images.

The shipped file cannot run unchanged here; the copy that runs differs only as printed under
"differences" (images that cannot be pulled, host ports, absolute paths, the sample folder).
Exit 0 when the trial synced, 1 otherwise.
"""

import argparse
import os
import subprocess
import sys
import time

import yaml

from container_checks import expected_paths, free_port

PROJECT = "fms-trial"


def adapt(compose, repo, sample, init_image, prebuilt, pg_port, http_port):
    """The compose file as it can run here, and the list of what was changed."""
    docker = os.path.join(repo, "docker")
    differences = []
    services = compose["services"]

    def absolute(service):
        volumes = []
        for volume in services[service].get("volumes", []):
            host, rest = volume.split(":", 1)
            if host.startswith("."):
                local = sample if host == "../sample" else os.path.normpath(os.path.join(docker, host))
                if host == "../sample":
                    differences.append(f"{service}: {host} is the test's sample tree {sample}")
                host = local
            volumes.append(f"{host}:{rest}")
        services[service]["volumes"] = volumes

    for service in services:
        absolute(service)
    differences.append("relative host paths made absolute (the compose file is run from a copy)")
    services["db"]["ports"] = [f"127.0.0.1:{pg_port}:5432"]
    differences.append(f"db: published on 127.0.0.1:{pg_port}, not 5432 (this machine's own PostgreSQL has it)")
    services["filemetasync"]["ports"] = [f"127.0.0.1:{http_port}:9187"]
    differences.append(f"filemetasync: published on 127.0.0.1:{http_port}, not 9187")
    old = services["garage-init"]
    differences.append(f"garage-init: image {old['image']} with `apk add curl jq` is {init_image} "
                       "(Debian with curl and jq), entrypoint `sh /garage-init.sh`")
    old["image"] = init_image
    old["entrypoint"] = ["sh", "/garage-init.sh"]
    services["filemetasync"]["build"]["context"] = repo
    if prebuilt:
        services["filemetasync"]["build"]["additional_contexts"] = {"build": prebuilt}
        differences.append(f"filemetasync: built with additional_contexts build={prebuilt}: the binary cargo "
                           "built stands in for the Dockerfile's build stage")
    differences.append("db and garage images are local stand-ins under the same names: Debian's postgresql-15 "
                       f"and this machine's Garage ({garage_version()})")
    differences.append("started in two steps (the other services, then filemetasync with --no-deps once its "
                       "depends_on conditions hold), since podman 4.3 cannot start the whole chain at once")
    return compose, differences


def garage_version():
    result = subprocess.run(["garage", "--version"], capture_output=True, text=True)
    return (result.stdout.strip() or "unknown").splitlines()[0]


def compose_cmd(file, *args):
    return ["podman-compose", "-p", PROJECT, "-f", file, *args]


# podman builds OCI images unless told otherwise, and OCI images drop HEALTHCHECK.
os.environ.setdefault("BUILDAH_FORMAT", "docker")


def psql(url, sql):
    result = subprocess.run(["psql", url, "-Atqc", sql], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def wait_for_dependencies(depends_on, seconds=120):
    """What compose's depends_on conditions ask, checked with podman: healthy, or exited 0."""
    deadline = time.monotonic() + seconds
    for service, rule in depends_on.items():
        container = f"{PROJECT}_{service}_1"
        condition = rule.get("condition", "service_started")
        while True:
            state = subprocess.run(["podman", "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", container],
                                   capture_output=True, text=True).stdout.split()
            if condition == "service_healthy":
                done = subprocess.run(["podman", "healthcheck", "run", container], capture_output=True).returncode == 0
            elif condition == "service_completed_successfully":
                done = state[:1] == ["exited"] and state[1:] == ["0"]
                if state[:1] == ["exited"] and not done:
                    print(f"FAIL  {service} exited with {state[1]}")
                    return False
            else:
                done = state[:1] == ["running"]
            if done:
                break
            if time.monotonic() > deadline:
                print(f"FAIL  {service} did not reach {condition} within {seconds} s (state {state})")
                return False
            time.sleep(1)
    return True


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repo", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--init-image", required=True)
    parser.add_argument("--prebuilt", default="", help="a folder standing in for the Dockerfile's build stage")
    parser.add_argument("--files", type=int, default=300)
    options = parser.parse_args()

    sample = os.path.join(options.work, "sample")
    subprocess.run([options.corpus, sample, "--files", str(options.files), "--seed", "7", "--large", "1",
                    "--manifest", os.path.join(options.work, "trial-manifest.json")], check=True,
                   capture_output=True)
    subprocess.run(["chmod", "-R", "a+rX", sample], check=True)
    expected = expected_paths(os.path.join(options.work, "trial-manifest.json"))

    with open(os.path.join(options.repo, "docker", "compose.yaml")) as handle:
        compose = yaml.safe_load(handle)
    pg_port, http_port = free_port(), free_port()
    compose, differences = adapt(compose, options.repo, sample, options.init_image, options.prebuilt,
                                 pg_port, http_port)
    file = os.path.join(options.work, "compose.yaml")
    with open(file, "w") as handle:
        yaml.safe_dump(compose, handle, sort_keys=False)
    print("differences between docker/compose.yaml and what ran:")
    for difference in differences:
        print(f"  - {difference}")

    subprocess.run(compose_cmd(file, "down", "-v"), capture_output=True)
    started = time.monotonic()
    ok = False
    try:
        # podman 4.3 cannot start a container whose --requires chain is longer than one link
        # ("depends on container … not found in input list") and ignores `condition:
        # service_healthy`: bring up the services filemetasync depends on, wait for what its
        # depends_on asks (db healthy, garage-init exited 0), then filemetasync alone.
        first = [name for name in compose["services"] if name != "filemetasync"]
        up = subprocess.run(compose_cmd(file, "up", "-d", *first), capture_output=True, text=True)
        if up.returncode != 0:
            print(f"FAIL  podman-compose up {' '.join(first)}: {up.stderr.strip()[-1500:]}")
            return 1
        if not wait_for_dependencies(compose["services"]["filemetasync"].get("depends_on", {})):
            return 1
        up = subprocess.run(compose_cmd(file, "up", "-d", "--no-deps", "--build", "filemetasync"), capture_output=True, text=True)
        if up.returncode != 0:
            print(f"FAIL  podman-compose up filemetasync: {up.stderr.strip()[-1500:]}")
            return 1
        url = f"postgres://fms:fms-trial@127.0.0.1:{pg_port}/fms"
        deadline = time.monotonic() + 300
        seen = None
        while time.monotonic() < deadline:
            row = psql(url, "SELECT count(*) FILTER (WHERE f.deleted_at IS NULL), "
                            "count(*) FILTER (WHERE c.uploaded_at IS NULL) "
                            "FROM files f JOIN file_contents c USING (sha256) WHERE f.root = 'sample'")
            if row:
                seen = row
                live, waiting = (int(n) for n in row.split("|"))
                if live == len(expected) and waiting == 0:
                    ok = True
                    break
            time.sleep(2)
        took = time.monotonic() - started
        check = subprocess.run(["podman", "healthcheck", "run", f"{PROJECT}_filemetasync_1"],
                               capture_output=True, text=True)
        health = check.returncode == 0 or f"{check.returncode} {(check.stdout + check.stderr).strip()}"
        if ok and health is True:
            print(f"PASS  the trial compose came up and synced {len(expected)} sample files in {took:.1f} s; "
                  "filemetasync is healthy")
            return 0
        print(f"FAIL  the trial compose: synced={ok} (files, not uploaded: {seen}; expected {len(expected)}) "
              f"healthy={health} after {took:.1f} s")
        return 1
    finally:
        if not ok:
            for service in ["garage-init", "filemetasync"]:
                logs = subprocess.run(["podman", "logs", f"{PROJECT}_{service}_1"], capture_output=True, text=True)
                print(f"--- {service} (last 15 lines) ---")
                print("\n".join((logs.stdout + logs.stderr).splitlines()[-15:]))
        subprocess.run(compose_cmd(file, "down", "-v", "-t", "10"), capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
