"""docker-compose.yml's `jobs` service applies examples/jobs.yaml, and may run again.

Reads the service from the compose file (as `docker-compose config` prints it): it must be
the image's `cronfleet apply` of a job file mounted read-only from the repository — that
file must be examples/jobs.yaml —, with an API token the coordinators accept, against a
coordinator it waits for (`depends_on`, `service_healthy`), and never restarted.

Then starts two `cronfleet dev` servers without workers on free loopback ports: one loads
examples/jobs.yaml (`--jobs`), the other gets the service's exact command (the mounted
path mapped to the repository's file, CRONFLEET_SERVER to the server), twice: the first
run must create every job of the file, the second report them all unchanged. Both
servers' `cronfleet job list -o yaml` must then be the same job file, `start` aside (the
time each server created its `every` jobs), and the applied jobs managed by the apply's
manager (`managed_by` is not in the job file; `dev --jobs` sets none).

Usage: example_jobs.py --binary PATH --compose CONFIG.yaml --jobs examples/jobs.yaml [--service jobs]
"""

import argparse
import json
import os
import re
import subprocess
import tempfile
import time
import urllib.parse

import yaml

from deploycheck import Report, free_port, http_status

SUMMARY = re.compile(r"^(\d+) created, (\d+) updated, (\d+) unchanged, (\d+) deleted$", re.M)


class DevServer:
    def __init__(self, binary, directory, extra):
        self.grpc, self.http = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.grpc}"
        self.log = open(os.path.join(directory, "dev.log"), "w")
        self.process = subprocess.Popen(
            [binary, "dev", "--workers", "0", "--data-dir", directory,
             "--grpc", f"127.0.0.1:{self.grpc}", "--http", f"127.0.0.1:{self.http}", *extra],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while http_status(self.http, "/readyz") != 200:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"cronfleet dev did not start: see {self.log.name}")
            time.sleep(0.1)

    def list(self, binary, output):
        return subprocess.run([binary, "job", "list", "-o", output, "--server", self.url],
                              capture_output=True, text=True, check=True).stdout

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=20)
        self.log.close()


def mounts(service):
    """Container path → (host path, read-only), from short (`SRC:DST[:MODE]`) or long syntax."""
    found = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            found[volume["target"]] = (volume.get("source"), bool(volume.get("read_only")))
        else:
            source, target, *mode = volume.split(":")
            found[target] = (source, "ro" in ",".join(mode).split(","))
    return found


def host_path(path, service):
    """The host file behind a container path, and whether it is mounted read-only."""
    for target, (source, read_only) in sorted(mounts(service).items(), key=lambda m: -len(m[0])):
        if source and (path == target or path.startswith(target.rstrip("/") + "/")):
            return source + path[len(target.rstrip("/")):], read_only
    return None, False


def file_argument(args):
    """The value of -f / --file, and its index in args."""
    for index, arg in enumerate(args):
        if arg in ("-f", "--file") and index + 1 < len(args):
            return args[index + 1], index + 1
        if arg.startswith("--file="):
            return arg.split("=", 1)[1], index
        if arg.startswith("-f") and len(arg) > 2:
            return arg[2:], index
    return None, None


def option(args, name, default):
    for index, arg in enumerate(args):
        if arg == name and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return default


def role(service):
    command = service.get("command") or []
    return command[0] if command else None


def check_service(name, services, jobs_file, report):
    """The service's shape. Returns its command (the file argument's host path in place of
    the container's) and environment, or None where it cannot be run."""
    where = f"docker-compose.yml: service {name}"
    service = services.get(name)
    if not report.check(service, "docker-compose.yml", f"no service {name}"):
        return None
    command = service.get("command") or []
    if isinstance(command, str):
        command = command.split()
    if not report.check(not service.get("entrypoint") and command[:1] == ["apply"], where,
                        f"should run the image's `cronfleet apply`, runs "
                        f"{service.get('entrypoint') or ''} {command}"):
        return None
    args = command[1:]
    path, index = file_argument(args)
    if not report.check(path, where, f"`cronfleet apply` without -f FILE: {command}"):
        return None
    source, read_only = host_path(path, service)
    if not report.check(source, where, f"{path} is not in a volume mounted from the host"):
        return None
    if not report.check(os.path.isfile(source), where, f"{path} is {source}, which is no file"):
        return None
    report.check(read_only, where, f"the volume holding {path} should be mounted read-only (:ro)")
    report.check(os.path.samefile(source, jobs_file), where,
                 f"applies {source}, not {jobs_file}")
    args[index] = args[index].replace(path, os.path.abspath(source))
    report.check(not service.get("restart") or service["restart"] == "no", where,
                 f"a one-shot: restart should be \"no\", is {service.get('restart')!r}")

    env = {key: "" if value is None else str(value)
           for key, value in (service.get("environment") or {}).items()}
    server = urllib.parse.urlsplit(env.get("CRONFLEET_SERVER", ""))
    coordinator = services.get(server.hostname or "")
    if report.check(coordinator and role(coordinator) == "coordinator", where,
                    f"CRONFLEET_SERVER={env.get('CRONFLEET_SERVER')!r} should name a coordinator service"):
        coordinator_env = coordinator.get("environment") or {}
        grpc = str(coordinator_env.get("CRONFLEET_GRPC", ":50051")).rsplit(":", 1)[1]
        report.check(str(server.port) == grpc, where,
                     f"CRONFLEET_SERVER's port {server.port} is not {server.hostname}'s gRPC port {grpc}")
        condition = ((service.get("depends_on") or {}).get(server.hostname) or {}).get("condition")
        report.check(condition == "service_healthy", where,
                     f"should wait for {server.hostname} (depends_on condition service_healthy), "
                     f"has {condition!r}")
        accepted = [t.strip() for t in str(coordinator_env.get("CRONFLEET_API_TOKEN") or "").split(",")
                    if t.strip()]
        report.check(not accepted or env.get("CRONFLEET_API_TOKEN") in accepted, where,
                     f"CRONFLEET_API_TOKEN is not one that {server.hostname} accepts")
    return [*command[:1], *args], env


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True)
    parser.add_argument("--compose", required=True)
    parser.add_argument("--jobs", required=True)
    parser.add_argument("--service", default="jobs")
    options = parser.parse_args()
    binary = os.path.abspath(options.binary)
    report = Report("example jobs")

    with open(options.compose) as file:
        services = yaml.safe_load(file)["services"]
    with open(options.jobs) as file:
        names = [job["name"] for job in yaml.safe_load(file)["jobs"]]
    checked = check_service(options.service, services, options.jobs, report)
    if checked is None:
        report.finish("")
    command, service_env = checked
    manager = option(command, "--manager", "apply")
    shown = " ".join(command)

    with tempfile.TemporaryDirectory() as scratch:
        os.mkdir(os.path.join(scratch, "from-file"))
        os.mkdir(os.path.join(scratch, "applied"))
        from_file = DevServer(binary, os.path.join(scratch, "from-file"),
                              ["--jobs", os.path.abspath(options.jobs)])
        applied = DevServer(binary, os.path.join(scratch, "applied"), [])
        try:
            # The service's environment (its API token: `cronfleet dev` takes any), aimed
            # at the server; nothing else from ours.
            env = {**service_env, "PATH": os.environ["PATH"], "HOME": scratch,
                   "CRONFLEET_SERVER": applied.url}
            expected = {"first": (len(names), 0, 0, 0), "second": (0, 0, len(names), 0)}
            for attempt, counts in expected.items():
                run = subprocess.run([binary, *command], env=env, cwd=scratch,
                                     capture_output=True, text=True)
                if not report.check(run.returncode == 0, f"{attempt} run of `cronfleet {shown}`",
                                    f"exited {run.returncode}: {run.stderr.strip()}"):
                    continue
                summary = SUMMARY.search(run.stdout)
                said = summary.group(0) if summary else run.stdout.strip()
                report.check(summary and tuple(map(int, summary.groups())) == counts,
                             f"{attempt} run of `cronfleet {shown}`",
                             f"should say {counts[0]} created, {counts[1]} updated, {counts[2]} "
                             f"unchanged, {counts[3]} deleted; said: {said}")
            lists = {"file": yaml.safe_load(from_file.list(binary, "yaml")),
                     "apply": yaml.safe_load(applied.list(binary, "yaml"))}
            owners = {job["name"]: job.get("managed_by")
                      for job in json.loads(applied.list(binary, "json"))}
        finally:
            from_file.stop()
            applied.stop()

    report.check(names, options.jobs, "defines no jobs")
    expected = {job["name"]: job for job in lists["file"]["jobs"]}
    actual = {job["name"]: job for job in lists["apply"]["jobs"]}
    report.check(sorted(expected) == sorted(names), f"cronfleet dev --jobs {options.jobs}",
                 f"loaded {sorted(expected)}, the file has {sorted(names)}")
    for name in sorted(set(expected) | set(actual)):
        if name not in actual:
            report.fail(f"service {options.service}", f"does not define {name}")
        elif name not in expected:
            report.fail(f"service {options.service}", f"defines {name}, which {options.jobs} does not have")
        else:
            # `start`: when each server created the job; whether it has one must agree.
            for field in sorted(set(expected[name]) | set(actual[name])):
                want, got = expected[name].get(field), actual[name].get(field)
                if field == "start" and want is not None and got is not None:
                    continue
                report.check(want == got, f"job {name}",
                             f"{field} is {got!r} from the service, {want!r} from "
                             f"cronfleet dev --jobs {options.jobs}")
            report.check(owners.get(name) == manager, f"job {name}",
                         f"managed by {owners.get(name)!r} after the service's apply, not {manager!r}")
    report.finish(f"service {options.service} runs `cronfleet {' '.join(services[options.service]['command'])}`: "
                  f"the first run created {len(actual)} jobs, the same as `cronfleet dev --jobs "
                  f"{options.jobs}` (start aside; managed by {manager}); the second reported all unchanged")


if __name__ == "__main__":
    main()
