"""docker-compose.yml's `jobs` service defines the same jobs as examples/jobs.yaml.

Starts two `cronfleet dev` servers without workers on free loopback ports: one loads
examples/jobs.yaml (`--jobs`), the other gets deploy/compose/create-example-jobs.sh run
against it, twice (the second run must change nothing). Both then list their jobs with
`-o json`, and the definitions must be identical (ids, versions and times aside).

Usage: example_jobs.py --binary PATH --script create-example-jobs.sh --jobs examples/jobs.yaml
"""

import argparse
import json
import os
import subprocess
import tempfile
import time

from deploycheck import Report, free_port, http_status

# What differs between two servers for the same definitions.
VOLATILE = {"id", "version", "created_at", "updated_at", "next_run_at", "last_run_at",
            "start", "schedule"}


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

    def jobs(self, binary):
        listed = subprocess.run([binary, "job", "list", "-o", "json", "--server", self.url],
                                capture_output=True, text=True, check=True).stdout
        return {job["name"]: {k: v for k, v in job.items() if k not in VOLATILE}
                for job in json.loads(listed)}

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=20)
        self.log.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True)
    parser.add_argument("--script", required=True)
    parser.add_argument("--jobs", required=True)
    options = parser.parse_args()
    binary = os.path.abspath(options.binary)
    report = Report("example jobs")

    with tempfile.TemporaryDirectory() as scratch:
        # The script calls `cronfleet` from PATH, as in the image.
        bin_dir = os.path.join(scratch, "bin")
        os.mkdir(bin_dir)
        os.symlink(binary, os.path.join(bin_dir, "cronfleet"))
        os.mkdir(os.path.join(scratch, "from-file"))
        os.mkdir(os.path.join(scratch, "from-script"))
        from_file = DevServer(binary, os.path.join(scratch, "from-file"),
                              ["--jobs", os.path.abspath(options.jobs)])
        from_script = DevServer(binary, os.path.join(scratch, "from-script"), [])
        try:
            env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": scratch,
                   "CRONFLEET_SERVER": from_script.url,
                   # examples/jobs.yaml's job polls cronfleet dev's own health endpoint.
                   "SYNC_INVENTORY_URL": "http://127.0.0.1:8080/healthz"}
            outputs = []
            for attempt in ("first", "second"):
                run = subprocess.run(["/bin/sh", options.script], env=env,
                                     capture_output=True, text=True)
                report.check(run.returncode == 0, f"{attempt} run of {options.script}",
                             f"exited {run.returncode}: {run.stderr.strip()}")
                outputs.append(run.stdout)
            report.check("created" not in outputs[1], "second run",
                         f"should leave existing jobs alone, said: {outputs[1].strip()}")
            expected, actual = from_file.jobs(binary), from_script.jobs(binary)
        finally:
            from_file.stop()
            from_script.stop()

    report.check(expected, options.jobs, "defines no jobs")
    for name in sorted(set(expected) | set(actual)):
        if name not in actual:
            report.fail(options.script, f"does not define {name}")
        elif name not in expected:
            report.fail(options.script, f"defines {name}, which {options.jobs} does not have")
        else:
            for field in sorted(set(expected[name]) | set(actual[name])):
                report.check(expected[name].get(field) == actual[name].get(field), f"job {name}",
                             f"{field} is {actual[name].get(field)!r} from the script, "
                             f"{expected[name].get(field)!r} from {options.jobs}")
    report.finish(f"{len(actual)} jobs, identical to {options.jobs}; a second run changes nothing")


if __name__ == "__main__":
    main()
