"""Fixtures of the browser tests: real cronfleet processes and Debian's chromium.

A coordinator (SQLite store, open on loopback, a quick auto-pause rule) with one worker
offering the shell handler; a second coordinator that asks for an API token; and a
headless chromium driven by Playwright.
"""

import os
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

BINARY = os.environ["CRONFLEET_BIN"]
TOKEN = "browser-test-token-7f3a"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, what: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.time() + 30
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited: {log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} is not ready at {url}: {log.read_text()}")


class Processes:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="cronfleet-console-"))
        self.running: list[subprocess.Popen] = []

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = self.dir / f"{name}.log"
        process = subprocess.Popen(
            [BINARY, *args],
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": "info"},
        )
        self.running.append(process)
        return process

    def coordinator(self, name: str, extra: list[str]) -> str:
        grpc, http = free_port(), free_port()
        process = self.start(
            name,
            [
                "coordinator",
                "--database-url", f"sqlite:{self.dir / (name + '.db')}",
                "--grpc", f"127.0.0.1:{grpc}",
                "--http", f"127.0.0.1:{http}",
                "--node-id", name,
                *extra,
            ],
        )
        wait_ready(f"http://127.0.0.1:{http}/readyz", name, process, self.dir / f"{name}.log")
        self.grpc = f"http://127.0.0.1:{grpc}"
        return f"http://127.0.0.1:{http}"

    def worker(self, name: str, coordinator: str) -> None:
        http = free_port()
        process = self.start(
            name,
            [
                "worker",
                "--coordinator", coordinator,
                "--handlers", "shell,noop",
                "--capacity", "4",
                "--node-id", name,
                "--http", f"127.0.0.1:{http}",
            ],
        )
        wait_ready(f"http://127.0.0.1:{http}/readyz", name, process, self.dir / f"{name}.log")

    def stop(self) -> None:
        for process in self.running:
            process.terminate()
        for process in self.running:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="session")
def processes():
    processes = Processes()
    yield processes
    processes.stop()


@pytest.fixture(scope="session")
def console(processes) -> str:
    """The open console of a coordinator with a worker; a job pauses after 2 failures."""
    url = processes.coordinator(
        "c1",
        [
            "--auto-pause-failures", "2", "--auto-pause-after", "1s",
            "--jaeger-url", "http://jaeger.test:16686", "--alert-interval", "500ms",
        ],
    )
    processes.worker("w1", processes.grpc)
    return url


@pytest.fixture(scope="session")
def guarded_console(processes) -> str:
    """The console of a coordinator that asks for an API token."""
    return processes.coordinator("c2", ["--api-token", TOKEN])


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            headless=True,
            args=["--no-sandbox", "--headless"],
        )
        yield browser
        browser.close()


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def screenshot(page, name: str) -> None:
    """Saves the page for the README when CRONFLEET_SCREENSHOTS names a directory."""
    directory = os.environ.get("CRONFLEET_SCREENSHOTS")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(directory) / f"{name}.png"), full_page=False)
