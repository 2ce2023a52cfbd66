"""What the deploy checks share: reporting, durations as the binary writes them, the
binary's own description of its flags, and small network helpers.

Run by scripts/validate-deploy; not imported by anything else."""

import functools
import re
import socket
import subprocess
import sys


class Report:
    """Collects failures so that one run shows all of them; `finish` exits non-zero if any."""

    def __init__(self, name):
        self.name = name
        self.failures = []

    def fail(self, where, message):
        self.failures.append(f"{where}: {message}")

    def check(self, condition, where, message):
        if not condition:
            self.fail(where, message)
        return condition

    def finish(self, summary):
        if self.failures:
            print(f"{self.name}: {len(self.failures)} problem(s)", file=sys.stderr)
            for failure in self.failures:
                print(f"  - {failure}", file=sys.stderr)
            sys.exit(1)
        print(f"{self.name}: ok — {summary}")


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text):
    """Seconds in a duration as the binary and compose write them: 30s, 1m30s, 500ms, 2h."""
    text = re.sub(r"\s+", "", str(text))
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


@functools.lru_cache(maxsize=None)
def accepted(binary, subcommand):
    """The long flags, short flags and environment variables `cronfleet SUBCOMMAND --help`
    lists."""
    help_text = subprocess.run(
        [binary, subcommand, "--help"], capture_output=True, text=True, check=True
    ).stdout
    flags = set(re.findall(r"(?<![\w-])--([a-z][a-z0-9-]*)", help_text))
    # `-f, --file <FILE>`: a short flag is listed beside its long one.
    shorts = set(re.findall(r"(?<![\w-])-([A-Za-z]), --[a-z]", help_text))
    # `[env: NAME=VALUE]`, or `[env: NAME]` for settings whose values --help hides (tokens).
    envs = set(re.findall(r"\[env: ([A-Z][A-Z0-9_]*)[=\]]", help_text))
    return flags, shorts, envs


def subcommands(binary):
    help_text = subprocess.run(
        [binary, "--help"], capture_output=True, text=True, check=True
    ).stdout
    commands = help_text.split("Commands:", 1)[1].split("Options:", 1)[0]
    return {line.split()[0] for line in commands.splitlines() if line.strip()}


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_status(port, path, host="127.0.0.1", timeout=2.0):
    """The status of GET path, or None if nothing answers."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
            )
            first = sock.recv(64).decode(errors="replace")
            return int(first.split()[1])
    except (OSError, ValueError, IndexError):
        return None
