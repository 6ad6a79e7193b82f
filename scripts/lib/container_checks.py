#!/usr/bin/env python3
"""Run the FileMetadataSync image the way docker/compose.synology.yaml says, with podman, and
check what a Synology owner relies on. Called by scripts/container-test, which builds the image
and starts the PostgreSQL (a throwaway cluster it may stop) and the Garage used here.

Every check prints one line, PASS or FAIL with what was expected and what was seen; figures
(time to healthy, to sync the share, to stop; the image size) are printed at the end and
written as JSON to --figures. Exit 0 when every check passed, 1 otherwise.

Environment (from scripts/lib/services.sh): FMSTEST_PG_ADMIN_URL, FMSTEST_PG_CTL,
FMSTEST_S3_ENDPOINT, FMSTEST_S3_KEY, FMSTEST_S3_SECRET, FMSTEST_S3_BUCKET, FMSTEST_S3_REGION.
"""

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse

import yaml

LIMITS = ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"]
NAME = "fms-container-test"


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Checks:
    def __init__(self):
        self.failed = []
        self.passed = 0

    def check(self, ok, what, seen=""):
        if ok:
            self.passed += 1
            print(f"PASS  {what}", flush=True)
        else:
            self.failed.append(what)
            print(f"FAIL  {what}" + (f": {seen}" if seen else ""), flush=True)
        return ok


def run(args, check=True, **kwargs):
    result = subprocess.run(args, capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])} … failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return result


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def expected_paths(manifest):
    """The paths a sync registers, from fms-corpus's manifest (one JSON object per line)."""
    with open(manifest) as handle:
        entries = [json.loads(line) for line in handle if line.strip()]
    return {entry["path"] for entry in entries if not entry["ignored"]}


def psql(url, sql):
    return run(["psql", url, "-Atqc", sql]).stdout.strip()


def pg_ctl(action):
    # FMSTEST_PG_CTL is the throwaway cluster's pg_ctl with its data directory and options.
    return subprocess.run(f"{os.environ['FMSTEST_PG_CTL']} -w {action}", shell=True,
                          capture_output=True, text=True)


def wait_until(seconds, probe, step=0.5):
    """Call probe until it returns a true value or the time is up; (value, seconds taken)."""
    started = time.monotonic()
    while True:
        value = probe()
        if value or time.monotonic() - started > seconds:
            return value, time.monotonic() - started
        time.sleep(step)


def healthy():
    return subprocess.run(["podman", "healthcheck", "run", NAME], capture_output=True).returncode == 0


def log_lines():
    result = run(["podman", "logs", NAME], check=False)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]


def events(msg):
    found = []
    for line in log_lines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("msg") == msg:
            found.append(event)
    return found


def inspect(template):
    return run(["podman", "inspect", "--format", template, NAME]).stdout.strip()


def compose_run_args(compose_file, mounts):
    """The `podman run` arguments that docker/compose.synology.yaml's service asks for, with
    the host side of each volume replaced by the test's own folder (mounts: container path ->
    host path). Returns (arguments, grace seconds, differences)."""
    with open(compose_file) as handle:
        service = yaml.safe_load(handle)["services"]["filemetasync"]
    args, differences = [], []
    user = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: os.environ.get(m.group(1), m.group(2)), service["user"])
    args += ["--user", user]
    for key, value in service.get("environment", {}).items():
        args += ["-e", f"{key}={value}"]
    for volume in service.get("volumes", []):
        host, inside, *mode = volume.split(":")
        if inside not in mounts:
            differences.append(f"volume {host}:{inside} left out (no such share here)")
            continue
        args += ["-v", f"{mounts[inside]}:{inside}" + (f":{mode[0]}" if mode else "")]
    if service.get("read_only"):
        # podman mounts tmpfs on /tmp and /run under --read-only unless told not to; Docker
        # does not, so neither does the test.
        args += ["--read-only", "--read-only-tmpfs=false"]
    for option in service.get("security_opt", []):
        args += ["--security-opt", option.replace(":true", "")]
    grace = int(str(service.get("stop_grace_period", "10s")).rstrip("s"))
    args += ["--stop-timeout", str(grace)]
    if service.get("ports"):
        differences.append(f"ports {service['ports']} not published: the container uses the host's network "
                           "to reach the test's PostgreSQL and Garage on loopback")
    if service.get("container_name"):
        differences.append(f"container name {NAME}, not {service['container_name']} (a test never touches a real one)")
    if service.get("restart"):
        args += ["--restart", service["restart"]]
    if service.get("logging", {}).get("driver") == "json-file":
        differences.append("logging driver json-file (Docker's) is podman's k8s-file here; `podman logs` reads it")
    return args, grace, differences


def config_text(pg_url, http_port, roots):
    s3 = {key: os.environ[f"FMSTEST_S3_{key.upper()}"] for key in ["endpoint", "key", "secret", "bucket", "region"]}
    text = f'''agent = "container-test"

[database]
url = "{pg_url}"

[storage]
kind = "s3"
bucket = "{s3['bucket']}"
endpoint = "{s3['endpoint']}"
region = "{s3['region']}"
access_key_id = "{s3['key']}"
secret_access_key = "{s3['secret']}"

[watch]
mode = "poll"
poll_interval = "1s"
debounce = "1s"

[scan]
schedule = "0 3 * * *"
on_start = true

[http]
listen = "127.0.0.1:{http_port}"
'''
    for label in roots:
        text += f'\n[[roots]]\nlabel = "{label}"\npath = "/data/{label}"\n'
    return text


def replace_file(path, text):
    """Save as an editor on the NAS does: write a new file, then rename it over the old one."""
    temporary = path + ".new"
    with open(temporary, "w") as handle:
        handle.write(text)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--image", required=True)
    parser.add_argument("--work", required=True, help="an empty folder for shares and configuration")
    parser.add_argument("--corpus", required=True, help="the fms-corpus binary")
    parser.add_argument("--compose", default="docker/compose.synology.yaml")
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--figures", help="write the figures here as JSON")
    options = parser.parse_args()
    checks = Checks()
    figures = {}

    work = options.work
    os.chmod(work, 0o755)
    shares = {"projects": os.path.join(work, "projects"), "documents": os.path.join(work, "documents")}
    config_dir = os.path.join(work, "config")
    os.makedirs(config_dir, mode=0o755)
    run([options.corpus, shares["projects"], "--files", str(options.files), "--seed", "13",
         "--manifest", os.path.join(work, "manifest.json")])
    expected = expected_paths(os.path.join(work, "manifest.json"))
    run(["chmod", "-R", "a+rX", shares["projects"]])
    # A share the container's user may not read: owned by root, mode 0700.
    os.makedirs(shares["documents"])
    with open(os.path.join(shares["documents"], "plan.pdf"), "w") as handle:
        handle.write("not for the container's user\n")
    os.chmod(shares["documents"], 0o700)

    admin = os.environ["FMSTEST_PG_ADMIN_URL"]
    psql(admin, "DROP DATABASE IF EXISTS fms_container WITH (FORCE)")
    psql(admin, "CREATE DATABASE fms_container")
    pg_url = urllib.parse.urlunparse(urllib.parse.urlparse(admin)._replace(path="/fms_container"))
    http_port = free_port()
    config_file = os.path.join(config_dir, "filemetasync.toml")
    replace_file(config_file, config_text(pg_url, http_port, ["projects"]))

    mounts = {"/config": config_dir, "/data/projects": shares["projects"], "/data/documents": shares["documents"]}
    compose_args, grace, differences = compose_run_args(options.compose, mounts)
    subprocess.run(["podman", "rm", "-f", NAME], capture_output=True)
    command = ["podman", "run", "-d", "--name", NAME, "--network", "host", *LIMITS, *compose_args, options.image]
    log("podman " + " ".join(command[1:]))
    started = time.monotonic()
    run(command)
    try:
        scenario(checks, figures, started, pg_url, shares, config_file, http_port, expected, grace)
    finally:
        if checks.failed:
            print("--- the container's log (last 40 lines) ---")
            print("\n".join(log_lines()[-40:]))
        subprocess.run(["podman", "rm", "-f", "-t", "0", NAME], capture_output=True)
        psql(admin, "DROP DATABASE IF EXISTS fms_container WITH (FORCE)")

    size = int(run(["podman", "image", "inspect", "--format", "{{.Size}}", options.image]).stdout.strip())
    figures["image_bytes"] = size
    saved = subprocess.run(f"podman save {options.image} | gzip -1 | wc -c", shell=True,
                           capture_output=True, text=True)
    figures["image_gzip_bytes"] = int(saved.stdout.strip() or 0)
    figures["differences_from_compose"] = differences
    print("figures:")
    for key, value in figures.items():
        print(f"  {key}: {value}")
    if options.figures:
        with open(options.figures, "w") as handle:
            json.dump(figures, handle, indent=2)
    print(f"{checks.passed} passed, {len(checks.failed)} failed" +
          (": " + "; ".join(checks.failed) if checks.failed else ""))
    return 1 if checks.failed else 0


def scenario(checks, figures, started, pg_url, shares, config_file, http_port, expected, grace):
    ok, _ = wait_until(120, healthy)
    took = time.monotonic() - started
    figures["seconds_to_healthy"] = round(took, 1)
    if not checks.check(ok, f"the HEALTHCHECK reports healthy after the start ({took:.1f} s)",
                        "still unhealthy after 120 s"):
        return

    def synced():
        row = psql(pg_url, "SELECT count(*) FILTER (WHERE f.deleted_at IS NULL AND f.root = 'projects'), "
                           "count(*) FILTER (WHERE c.uploaded_at IS NULL) "
                           "FROM files f JOIN file_contents c USING (sha256)")
        live, not_uploaded = (int(n) for n in row.split("|"))
        return live == len(expected) and not_uploaded == 0
    ok, _ = wait_until(300, synced, step=1)
    figures["seconds_to_sync_share_from_start"] = round(time.monotonic() - started, 1)
    figures["share_files"] = len(expected)
    stored = psql(pg_url, "SELECT coalesce(json_agg(path), '[]') FROM files WHERE root = 'projects' AND deleted_at IS NULL")
    missing = expected - set(json.loads(stored))
    checks.check(ok and not missing, f"all {len(expected)} files of the mounted share are registered and uploaded",
                 f"{len(missing)} missing, e.g. {sorted(missing)[:3]}")

    # A file created in the share while the container runs.
    new_file = os.path.join(shares["projects"], "neu angelegt.txt")
    with open(new_file, "w") as handle:
        handle.write(f"created at {time.time()}\n")
    os.chmod(new_file, 0o644)
    query = ("SELECT c.uploaded_at IS NOT NULL FROM files f JOIN file_contents c USING (sha256) "
             "WHERE f.root = 'projects' AND f.path = 'neu angelegt.txt' AND f.deleted_at IS NULL")
    ok, took = wait_until(30, lambda: psql(pg_url, query) == "t")
    checks.check(ok, f"a file created in the mounted share is registered and uploaded ({took:.1f} s)",
                 "not registered and uploaded within 30 s")

    # PostgreSQL stopped: unhealthy; started again: healthy, without a container restart.
    stopped = pg_ctl("stop -m fast")
    checks.check(stopped.returncode == 0, "the test's PostgreSQL stops", stopped.stderr)
    ok, took = wait_until(30, lambda: not healthy())
    checks.check(ok, f"the HEALTHCHECK reports unhealthy while PostgreSQL is stopped ({took:.1f} s)",
                 "still healthy after 30 s")
    time.sleep(3)
    restarted = pg_ctl("start")
    checks.check(restarted.returncode == 0, "the test's PostgreSQL starts again", restarted.stderr)
    ok, took = wait_until(90, healthy)
    checks.check(ok, f"healthy again once PostgreSQL is back ({took:.1f} s)", "still unhealthy after 90 s")

    # The configuration replaced on the host (write a new file, rename it over the old one):
    # a second root, the share the container's user may not read.
    before = len(events("configuration reloaded"))
    start_time = inspect("{{.State.StartedAt}}")
    with open(config_file) as handle:
        text = handle.read()
    replace_file(config_file, text + '\n[[roots]]\nlabel = "documents"\npath = "/data/documents"\n')
    ok, took = wait_until(30, lambda: len(events("configuration reloaded")) > before)
    reloads = events("configuration reloaded")
    checks.check(ok and reloads[-1].get("outcome") == "applied",
                 f"the configuration saved by rename on the host is applied inside the container ({took:.1f} s)",
                 json.dumps(reloads[-1]) if reloads else "no `configuration reloaded` event in 30 s")
    ok, _ = wait_until(30, lambda: [e for e in events("root unavailable") if e.get("root") == "documents"])
    unavailable = [e for e in events("root unavailable") if e.get("root") == "documents"]
    checks.check(bool(unavailable) and "denied" in json.dumps(unavailable[0]).lower(),
                 "a share the container's user cannot read gives a `root unavailable` event naming the refusal",
                 json.dumps(unavailable[:1]) or "no such event in 30 s")
    last_status = {}

    def status_lists_it():
        status = subprocess.run(["podman", "exec", NAME, "filemetasync", "status"], capture_output=True, text=True)
        last_status["text"] = status.stdout[-600:] + status.stderr[-300:]
        return status.returncode == 0 and re.search(r"root documents\s+unavailable", status.stdout) is not None
    # The daemon's heartbeat (every 5 s) carries it to the catalog, where `status` reads it.
    listed, took = wait_until(20, status_lists_it, step=1)
    checks.check(listed, f"`filemetasync status` in the container lists the unreadable share ({took:.1f} s)",
                 last_status.get("text", ""))
    time.sleep(5)
    same_start = inspect("{{.State.StartedAt}}") == start_time
    restarts = inspect("{{.RestartCount}}")
    running = inspect("{{.State.Running}}")
    checks.check(same_start and restarts == "0" and running == "true",
                 "the container keeps running: no restart and no crash loop after the reload and the unreadable share",
                 f"running={running} restarts={restarts} same start={same_start}")

    # The log: JSON lines an operator can filter.
    lines = log_lines()
    not_json = []
    for line in lines:
        try:
            json.loads(line)["msg"]
        except (ValueError, KeyError, TypeError):
            not_json.append(line)
    checks.check(lines and not not_json, f"`podman logs` is JSON lines with a `msg` ({len(lines)} lines)",
                 f"{len(not_json)} other lines, e.g. {not_json[:2]}")
    restarted_actors = events("actor restarted")
    figures["actor_restarted_events"] = len(restarted_actors)
    checks.check(bool(restarted_actors) and all("actor" in e and "reason" in e for e in restarted_actors),
                 f"`actor restarted` can be filtered from the log, with actor and reason "
                 f"({len(restarted_actors)} while PostgreSQL was down)",
                 json.dumps(restarted_actors[:2]))

    # Stop as Docker and podman do: SIGTERM, then SIGKILL after the grace period.
    stop_started = time.monotonic()
    stopped = subprocess.run(["podman", "stop", "-t", str(grace), NAME], capture_output=True, text=True)
    took = time.monotonic() - stop_started
    figures["seconds_to_stop"] = round(took, 2)
    code = inspect("{{.State.ExitCode}}")
    checks.check(stopped.returncode == 0 and code == "0" and took < grace,
                 f"`podman stop` ends the container with exit 0 within the {grace} s grace period ({took:.1f} s)",
                 f"exit code {code} after {took:.1f} s {stopped.stderr.strip()}")
    leases = psql(pg_url, "SELECT count(*) FROM upload_queue WHERE lease_owner IS NOT NULL")
    checks.check(leases == "0", "no upload lease is left held after the stop", f"{leases} held")


if __name__ == "__main__":
    sys.exit(main())
