"""docker-compose.yml's topology as plain processes on loopback, through a rolling restart
of every coordinator and every worker, one at a time: no run lost, none run twice, no
overlap, no slot unaccounted for.

What runs is read from the compose file (as `docker-compose config` prints it), not
restated here: each cronfleet service's command and environment, `deploy.replicas`
workers, `depends_on` order, health checks (the services' own healthcheck commands) and
stop grace periods, and the one-shot `jobs` service's command (`cronfleet apply` of a
mounted job file), run once everything it depends on is up and again after the restarts,
as another `docker compose up` would. Because every process shares one loopback instead of
having a container each, values are rewritten:

- `SERVICE:PORT` (e.g. `http://coordinator-1:50051`, `etcd:2379`) → `127.0.0.1:<free port>`,
  one port per service and container port;
- a path under a volume's container path → the same path under its host path;
- a process's listen addresses (`0.0.0.0:PORT`, and the worker's default
  `127.0.0.1:8081`) and its healthcheck's `127.0.0.1/PORT` → its own free port;
- CRONFLEET_DATABASE_URL → a fresh database on the throw-away PostgreSQL server in
  $CRONFLEET_TEST_PG_URL (its credentials are not compose's);
- etcd is Debian's etcd, one member; the OTLP endpoint (Jaeger) points at a port where
  nothing listens, which must not disturb runs.

Usage: topology.py --binary PATH --compose CONFIG.yaml   (with CRONFLEET_TEST_PG_URL set)
"""

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid

import yaml

from deploycheck import Report, free_port, http_status, parse_duration

# The long-running roles; any other cronfleet service is a one-shot client command.
SERVERS = {"coordinator", "worker"}
LISTEN_DEFAULTS = {"coordinator": {"CRONFLEET_GRPC": 50051, "CRONFLEET_HTTP": 8080},
                   "worker": {"CRONFLEET_WORKER_HTTP": 8081}}
# Container ports of the services that are not cronfleet processes.
SERVICE_PORTS = {"postgres": [5432], "etcd": [2379], "jaeger": [4317]}
# The ledger jobs: (name, flags, seconds each run sleeps).
LEDGER_JOBS = [
    ("tick", ["--every", "1s"], 0.2),
    ("slow", ["--every", "1s", "--overlap", "skip"], 2.5),
    ("queued", ["--every", "2s", "--overlap", "queue"], 3.0),
]
ACTIVE = {"pending", "dispatched", "running"}


def log(message):
    print(f"  [{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Topology:
    def __init__(self, binary, compose, scratch, database_url, etcd_url):
        self.binary = binary
        self.services = compose["services"]
        self.scratch = scratch
        self.database_url = database_url
        self.bin_dir = os.path.join(scratch, "bin")
        os.mkdir(self.bin_dir)
        os.symlink(binary, os.path.join(self.bin_dir, "cronfleet"))
        # SERVICE:PORT → 127.0.0.1:free, for every service and container port.
        self.ports = {}
        for name, service in self.services.items():
            for port in self.container_ports(name, service):
                self.ports[(name, port)] = free_port()
        self.ports[("etcd", 2379)] = int(etcd_url.rsplit(":", 1)[1])
        self.processes = {}  # (service, replica) → Popen
        self.next_replica = {}
        # Client commands authenticate as compose's own client (the `jobs` service) does.
        self.client_env = dict(os.environ)
        for service in self.services.values():
            if self.is_one_shot(service) and "CRONFLEET_API_TOKEN" in (service.get("environment") or {}):
                self.client_env["CRONFLEET_API_TOKEN"] = str(service["environment"]["CRONFLEET_API_TOKEN"])

    def is_cronfleet(self, service):
        return "build" in service or re.search(r"(^|/)cronfleet(:|$)", str(service.get("image", "")))

    def role(self, service):
        command = service.get("command") or []
        return None if service.get("entrypoint") else (command[0] if command else None)

    def is_one_shot(self, service):
        return self.is_cronfleet(service) and self.role(service) not in SERVERS

    def container_ports(self, name, service):
        if not self.is_cronfleet(service):
            return SERVICE_PORTS.get(name, [])
        env = service.get("environment") or {}
        ports = []
        for variable, default in LISTEN_DEFAULTS.get(self.role(service), {}).items():
            ports.append(int(str(env.get(variable, f":{default}")).rsplit(":", 1)[1]))
        return ports

    def own_ports(self, name):
        """Container port → loopback port for a new process of `name`. A single-replica
        service keeps its ports across restarts (others reach it by name); replicas get
        fresh ones (nothing reaches them by name)."""
        service = self.services[name]
        replicated = (service.get("deploy") or {}).get("replicas", service.get("scale", 1)) > 1
        return {port: free_port() if replicated else local
                for (owner, port), local in self.ports.items() if owner == name}

    def rewrite(self, text, own):
        text = str(text)
        for (service, port), local in self.ports.items():
            text = re.sub(rf"\b{re.escape(service)}:{port}\b", f"127.0.0.1:{local}", text)
        for port, local in own.items():
            text = re.sub(rf"(0\.0\.0\.0|127\.0\.0\.1):{port}\b", f"127.0.0.1:{local}", text)
            text = text.replace(f"127.0.0.1/{port}", f"127.0.0.1/{local}")
        return text

    def environment(self, name, own):
        service = self.services[name]
        env = {"PATH": f"{self.bin_dir}:{os.environ['PATH']}", "HOME": self.scratch}
        for key, value in (service.get("environment") or {}).items():
            env[key] = self.rewrite("" if value is None else value, own)
        for variable, default in LISTEN_DEFAULTS.get(self.role(service), {}).items():
            if variable not in env:
                env[variable] = f"127.0.0.1:{own[default]}"
        if "CRONFLEET_DATABASE_URL" in env:
            env["CRONFLEET_DATABASE_URL"] = self.database_url
        return env

    def command(self, name, own):
        service = self.services[name]
        mounts = {}
        for volume in service.get("volumes", []):
            if isinstance(volume, dict):
                mounts[volume["target"].rstrip("/")] = volume["source"]
            else:
                source, target = volume.split(":")[:2]
                mounts[target.rstrip("/")] = source

        def host(word):
            for target, source in sorted(mounts.items(), key=lambda m: -len(m[0])):
                if word == target or word.startswith(target + "/"):
                    return source + word[len(target):]
            return self.rewrite(word, own)

        entrypoint = service.get("entrypoint") or [self.binary]
        words = list(entrypoint) + list(service.get("command") or [])
        return [host(word) for word in words]

    def run_once(self, name):
        """Runs a one-shot service to its end; returns the last line it printed."""
        process = self.start(name)
        status = process.wait(timeout=120)
        if status != 0:
            raise Failure(f"{process.label} exited {status}; see {process.log_path}")
        with open(process.log_path) as output:
            lines = [line.strip() for line in output if line.strip()]
        return f"{process.label}: `{' '.join(process.args[1:])}` exited 0" + (
            f": {lines[-1]}" if lines else "")

    def start(self, name):
        replica = self.next_replica.get(name, 1)
        self.next_replica[name] = replica + 1
        log_path = os.path.join(self.scratch, f"{name}-{replica}.log")
        own = self.own_ports(name)
        with open(log_path, "a") as log_file:
            process = subprocess.Popen(self.command(name, own), env=self.environment(name, own),
                                       cwd=self.scratch, stdin=subprocess.DEVNULL,
                                       stdout=log_file, stderr=subprocess.STDOUT)
        process.log_path = log_path
        process.label = f"{name}#{replica}"
        process.own = own
        self.processes[(name, replica)] = process
        return process

    def healthy(self, name, process):
        test = self.services[name].get("healthcheck", {}).get("test")
        if not test:
            return True
        if test[0] == "CMD-SHELL":
            command = ["/bin/sh", "-c", test[1]]
        else:
            command = test[1:]
        env = self.environment(name, process.own)
        command = [self.rewrite(word, process.own) for word in command]
        return subprocess.run(command, env=env, capture_output=True, timeout=10).returncode == 0

    def wait_healthy(self, name, process, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise Failure(f"{process.label} exited {process.returncode}; see {process.log_path}")
            if self.healthy(name, process):
                return
            time.sleep(0.2)
        raise Failure(f"{process.label} not healthy after {timeout}s; see {process.log_path}")

    def stop(self, name, process):
        """SIGTERM, then wait as long as the compose file lets it take."""
        grace = parse_duration(self.services[name].get("stop_grace_period", "10s"))
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            status = process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            raise Failure(f"{process.label} still running {grace:g}s after SIGTERM (compose would kill it)")
        if status != 0:
            raise Failure(f"{process.label} exited {status} after SIGTERM; see {process.log_path}")
        return time.monotonic() - started

    def coordinator_urls(self):
        return [f"http://127.0.0.1:{self.ports[(name, 50051)]}"
                for name, service in self.services.items() if self.role(service) == "coordinator"]

    def cli(self, *args):
        """A client command against the first coordinator that answers."""
        error = ""
        for url in self.coordinator_urls():
            result = subprocess.run([self.binary, *args, "--server", url], env=self.client_env,
                                    capture_output=True, text=True, timeout=60)
            if result.returncode == 0:
                return result.stdout
            error = result.stderr.strip()
        raise Failure(f"cronfleet {' '.join(args)} failed on every coordinator: {error}")

    def runs(self, job):
        return json.loads(self.cli("runs", "--job", job, "--limit", "10000", "-o", "json"))

    def stop_all(self):
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


class Failure(Exception):
    pass


def start_order(services):
    """Service names so that each comes after what it depends on."""
    order, placed = [], set()
    while len(order) < len(services):
        progressed = False
        for name, service in services.items():
            needs = set(service.get("depends_on") or {}) & set(services)
            if name not in placed and needs <= placed:
                order.append(name)
                placed.add(name)
                progressed = True
        if not progressed:
            raise Failure("depends_on has a cycle")
    return order


def timestamp(text):
    """RFC 3339 with up to nanoseconds → seconds since the epoch."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00")
    return datetime.datetime.fromisoformat(text).timestamp()


def read_ledger(path):
    runs = {}
    starts = {}
    if os.path.exists(path):
        with open(path) as file:
            for line in file:
                fields = line.split()
                if len(fields) != 4:
                    continue
                kind, job, run, at = fields
                run = int(run)
                if kind == "start":
                    starts[run] = starts.get(run, 0) + 1
                    runs[run] = {"job": job, "start": float(at), "end": None}
                elif kind == "end" and run in runs:
                    runs[run]["end"] = float(at)
    return runs, starts


def wait_for_progress(topology, since, count=2, timeout=30):
    """Until `count` runs of tick started after `since` have succeeded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [run for run in topology.runs("tick")
                if run["state"] == "succeeded" and run["started_at"]
                and timestamp(run["started_at"]) > since]
        if len(done) >= count:
            return
        time.sleep(0.3)
    raise Failure(f"no progress: fewer than {count} runs of tick succeeded within {timeout}s")


def wait_until_running(topology, process, timeout=15):
    """Waits until the worker process runs a run; says which (its node id is the default,
    <host name>-<pid>)."""
    node_id = f"{socket.gethostname()}-{process.pid}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for job, _, _ in LEDGER_JOBS:
            for run in topology.runs(job):
                if run["state"] == "running" and run["worker"] == node_id:
                    return f"while running run {run['id']} of {job}"
        time.sleep(0.2)
    return "idle"


def run_scenario(topology, ledger, report):
    services = topology.services
    coordinators = [n for n, s in services.items() if topology.is_cronfleet(s) and topology.role(s) == "coordinator"]
    workers = [n for n, s in services.items() if topology.is_cronfleet(s) and topology.role(s) == "worker"]
    one_shots = [n for n, s in services.items() if topology.is_one_shot(s)]
    report.check(len(coordinators) >= 2, "compose", f"expected two coordinators or more, found {coordinators}")
    report.check(workers, "compose", "no worker service")

    live = {}  # service → list of running processes
    for name in start_order({n: s for n, s in services.items() if topology.is_cronfleet(s)}):
        service = services[name]
        if name in one_shots:
            log(topology.run_once(name))
            continue
        replicas = (service.get("deploy") or {}).get("replicas", service.get("scale", 1))
        live[name] = [topology.start(name) for _ in range(replicas)]
        for process in live[name]:
            topology.wait_healthy(name, process)
        log(f"{name}: {replicas} process(es) healthy")

    example_jobs = json.loads(topology.cli("job", "list", "-o", "json"))
    report.check(len(example_jobs) >= 5, "jobs service",
                 f"expected the example jobs, found {[job['name'] for job in example_jobs]}")

    for name, flags, seconds in LEDGER_JOBS:
        script = (f'echo "start $CRONFLEET_JOB $CRONFLEET_RUN_ID $(date +%s.%N)" >> {ledger}; '
                  f'sleep {seconds}; '
                  f'echo "end $CRONFLEET_JOB $CRONFLEET_RUN_ID $(date +%s.%N)" >> {ledger}')
        topology.cli("job", "create", name, "--handler", "shell", *flags,
                     "--args", json.dumps({"script": script}))
    wait_for_progress(topology, 0, count=3)
    log("ledger jobs running")

    for name in coordinators:
        for index, process in enumerate(list(live[name])):
            took = topology.stop(name, process)
            replacement = topology.start(name)
            topology.wait_healthy(name, replacement)
            live[name][index] = replacement
            restarted = time.time()
            wait_for_progress(topology, restarted)
            log(f"{process.label}: stopped in {took:.2f}s (exit 0), {replacement.label} healthy, runs go on")

    for name in workers:
        for index, process in enumerate(list(live[name])):
            # Stop it in the middle of a run, so that the drain has something to finish.
            busy = wait_until_running(topology, process)
            took = topology.stop(name, process)
            replacement = topology.start(name)
            topology.wait_healthy(name, replacement)
            live[name][index] = replacement
            wait_for_progress(topology, time.time())
            log(f"{process.label}: stopped {busy}, drained in {took:.2f}s (exit 0), "
                f"{replacement.label} healthy, runs go on")

    # Another `docker compose up` runs the one-shots again: safe, and it changes no job list.
    for name in one_shots:
        log(topology.run_once(name))
    names = {job["name"] for job in json.loads(topology.cli("job", "list", "-o", "json"))}
    expected = {job["name"] for job in example_jobs} | {name for name, _, _ in LEDGER_JOBS}
    report.check(names == expected, "jobs service, run again",
                 f"jobs are now {sorted(names)}, were {sorted(expected)}")

    for name, _, _ in LEDGER_JOBS:
        topology.cli("job", "pause", name, "--note", "end of the rolling-restart test")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        runs = {name: topology.runs(name) for name, _, _ in LEDGER_JOBS}
        if not any(run["state"] in ACTIVE for job_runs in runs.values() for run in job_runs):
            break
        time.sleep(0.5)
    return runs


def check_outcome(runs, ledger, report, replicas):
    entries, starts = read_ledger(ledger)
    twice = [run for run, count in starts.items() if count > 1]
    report.check(not twice, "ledger", f"runs executed more than once: {twice}")

    all_runs = [run for job_runs in runs.values() for run in job_runs]
    by_id = {run["id"]: run for run in all_runs}
    states = {}
    for run in all_runs:
        states[run["state"]] = states.get(run["state"], 0) + 1
    bad = [f"run {r['id']} of {r['job']}: {r['state']} {r.get('error') or ''}".strip()
           for r in all_runs if r["state"] not in ("succeeded", "skipped", "missed")]
    report.check(not bad, "runs", "not succeeded, skipped or missed: " + "; ".join(bad[:10]))

    for run in all_runs:
        if run["state"] == "succeeded":
            entry = entries.get(run["id"])
            report.check(entry and entry["end"] is not None, f"run {run['id']} of {run['job']}",
                         "succeeded but has no start and end in the ledger")
    for run_id, entry in entries.items():
        report.check(by_id.get(run_id, {}).get("state") == "succeeded", f"ledger run {run_id}",
                     f"ran, but its record says {by_id.get(run_id, {}).get('state')}")

    def end_of(run_id, entry):
        # A run killed before its script wrote `end` ended at the latest when its record did.
        if entry["end"] is not None:
            return entry["end"]
        finished = by_id.get(run_id, {}).get("finished_at")
        return timestamp(finished) if finished else float("inf")

    for job in runs:
        intervals = sorted((e["start"], end_of(run, e), run) for run, e in entries.items() if e["job"] == job)
        for (start_a, end_a, run_a), (start_b, _, run_b) in zip(intervals, intervals[1:]):
            report.check(end_a <= start_b, f"job {job}",
                         f"run {run_a} ({start_a:.3f}–{end_a:.3f}) overlaps run {run_b} (from {start_b:.3f})")

    # Every 1-second slot of tick, from its first to its last, is run, skipped or missed.
    slots = set()
    tick = [run for run in runs["tick"] if run["trigger"] in ("schedule", "catch_up") and run["slot"]]
    if tick:
        origin = min(timestamp(run["slot"]) for run in tick)
        for run in tick:
            first = round(timestamp(run["slot"]) - origin)
            last = round(timestamp(run["last_slot"]) - origin) if run.get("last_slot") else first
            slots.update(range(first, last + 1))
        missing = sorted(set(range(0, max(slots) + 1)) - slots)
        report.check(not missing, "job tick", f"slots neither run, skipped nor missed: +{missing[:10]}s")

    epochs = sorted({run["epoch"] for run in all_runs if run.get("epoch")})
    report.check(len(epochs) >= 2, "leadership", f"runs came from epochs {epochs}: leadership never moved")
    workers = {run["worker"] for run in all_runs if run["state"] == "succeeded" and run["worker"]}
    report.check(len(workers) > replicas, "workers",
                 f"runs ran on {len(workers)} workers; the restarted ones never ran anything")
    return (f"{len(entries)} runs executed ({', '.join(f'{n} {s}' for s, n in sorted(states.items()))}), "
            f"epochs {epochs}, {len(workers)} workers, {len(slots)} tick slots accounted for")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True)
    parser.add_argument("--compose", required=True)
    options = parser.parse_args()
    binary = os.path.abspath(options.binary)
    server_url = os.environ.get("CRONFLEET_TEST_PG_URL")
    if not server_url:
        sys.exit("CRONFLEET_TEST_PG_URL is not set (scripts/validate-deploy sets it)")
    with open(options.compose) as file:
        compose = yaml.safe_load(file)
    report = Report("compose topology, rolling restart")

    scratch = tempfile.mkdtemp(prefix="cronfleet-topology-")
    database = f"topology_{uuid.uuid4().hex[:12]}"
    database_url = urllib.parse.urlsplit(server_url)._replace(path=f"/{database}").geturl()
    subprocess.run(["psql", server_url, "-qc", f"CREATE DATABASE {database}"], check=True)
    etcd_port, peer_port = free_port(), free_port()
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    etcd = subprocess.Popen(
        ["etcd", "--name", "topology", "--data-dir", os.path.join(scratch, "etcd"),
         "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
         "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
         "--initial-cluster", f"topology=http://127.0.0.1:{peer_port}"],
        stdout=open(os.path.join(scratch, "etcd.log"), "w"), stderr=subprocess.STDOUT)
    topology = Topology(binary, compose, scratch, database_url, etcd_url)
    ledger = os.path.join(scratch, "ledger")
    failed = True
    try:
        deadline = time.monotonic() + 30
        while http_status(etcd_port, "/health") != 200:
            if etcd.poll() is not None or time.monotonic() > deadline:
                raise Failure(f"etcd did not start; see {scratch}/etcd.log")
            time.sleep(0.1)
        runs = run_scenario(topology, ledger, report)
        worker_replicas = sum((s.get("deploy") or {}).get("replicas", 1)
                              for s in compose["services"].values()
                              if topology.is_cronfleet(s) and topology.role(s) == "worker")
        summary = check_outcome(runs, ledger, report, worker_replicas)
        failed = bool(report.failures)
    except Failure as error:
        report.fail("scenario", str(error))
        summary = ""
    finally:
        topology.stop_all()
        etcd.kill()
        etcd.wait()
        subprocess.run(["psql", server_url, "-qc", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"],
                       check=False)
        if failed:
            print(f"  logs kept in {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    report.finish(summary)


if __name__ == "__main__":
    main()
