"""The Grafana dashboard shows what cronfleet really exports.

- The dashboard parses, has a Prometheus data-source variable `datasource`, and every
  panel (rows aside) uses it and has at least one query; panel ids are unique.
- A real system is started from the built binary: `cronfleet dev` (the coordinator, no
  in-process workers) and a `cronfleet worker` dialling it, with jobs that succeed, fail
  and wait for a handler no worker offers, and one store error provoked (the SQLite
  database is held locked past the store's busy timeout), so that every metric family
  has series. Debian's Prometheus scrapes both processes' /metrics, as a cluster's
  Prometheus would (default scrape settings).
- Every metric name in every query is one Prometheus has scraped from them; every label
  a selector matches on is a label of that metric; every label a query groups by is a
  label of a metric in it; every query, with Grafana's interval variables filled in,
  runs on that Prometheus and returns series, and every `{{label}}` in its legend is a
  label of them.
- The external metrics the HorizontalPodAutoscalers of the given builds scale on
  (components/backlog-autoscaling) are metrics Prometheus scraped as well.
- Every metric and label the alerting rules (--rules, deploy/prometheus/) name is
  scraped too, and Prometheus accepts every alert expression.

Usage: dashboard.py --binary PATH --dashboard FILE.json [--kubernetes NAME=BUILD.yaml]… [--rules FILE]…
"""

import argparse
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import yaml

from deploycheck import Report, free_port, http_status

# Grafana's variables, as a query over this short-lived system needs them (scrapes every
# second: a rate needs a few samples, a range covers the whole run).
GRAFANA_VARIABLES = {"$__rate_interval": "10s", "$__interval": "1s", "$__range": "5m"}
# Jobs that make every metric family appear: (name, handler, args). No worker offers
# `http`, so its runs wait for one.
JOBS = [
    ("succeeds", "noop", "{}"),
    ("fails", "shell", '{"script": "exit 3"}'),
    ("waits-for-a-worker", "http", '{"url": "http://127.0.0.1:9/"}'),
]
# The store's SQLite busy timeout is 10 s: a lock held longer fails a leader's store call.
STORE_LOCK_SECONDS = 25

AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
                "count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2", "start", "end"}
TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<variable>\$(?:\{[^}]*\}|\w+))
  | (?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:ms|[smhdwy])*)
  | (?P<name>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<punct>=~|!~|!=|==|<=|>=|[-+*/%^(){}\[\],=<>@])
""", re.X)


class Failure(Exception):
    pass


def log(message):
    print(f"  [{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------------------- PromQL


def tokens(expr):
    result, at = [], 0
    while at < len(expr):
        match = TOKEN.match(expr, at)
        if not match:
            raise ValueError(f"cannot read {expr[at:at + 20]!r}")
        if match.lastgroup != "space":
            result.append((match.lastgroup, match.group()))
        at = match.end()
    return result


def read_query(expr):
    """The selectors of a PromQL query — (metric name, labels matched on) — and the labels
    its by/without/on/ignoring/group_* clauses name."""
    words = tokens(expr)
    selectors, grouping = [], set()
    at = 0

    def following(index):
        return words[index][1] if index < len(words) else None

    def label_list(index):  # words[index] is "("
        names = []
        index += 1
        while following(index) not in (")", None):
            if words[index][0] == "name":
                names.append(words[index][1])
            index += 1
        return names, index + 1

    def matchers(index):  # words[index] is "{"
        found = []
        index += 1
        while following(index) not in ("}", None):
            if words[index][0] == "name" and following(index + 1) in ("=", "!=", "=~", "!~"):
                value = words[index + 2][1][1:-1] if index + 2 < len(words) else ""
                found.append((words[index][1], words[index + 1][1], value))
                index += 3
            else:
                index += 1
        return found, index + 1

    while at < len(words):
        kind, text = words[at]
        if kind == "name":
            lower = text.lower()
            if lower in GROUPING:
                if following(at + 1) == "(":
                    names, at = label_list(at + 1)
                    grouping.update(names)
                else:
                    at += 1
            elif lower in KEYWORDS or lower in AGGREGATIONS or following(at + 1) == "(":
                at += 1  # an operator or a function
            else:
                at += 1
                found = []
                if following(at) == "{":
                    found, at = matchers(at)
                selectors.append((text, [name for name, _, _ in found if name != "__name__"]))
        elif text == "{":
            found, at = matchers(at)
            names = [value for name, op, value in found if name == "__name__" and op == "="]
            selectors.append((names[0] if names else None,
                              [name for name, _, _ in found if name != "__name__"]))
        elif text == "[":
            while following(at) not in ("]", None):
                at += 1
            at += 1
        else:
            at += 1
    return selectors, grouping


def fill_variables(expr):
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value).replace("${" + name[1:] + "}", value)
    unknown = re.findall(r"\$\{?\w+\}?", expr)
    if unknown:
        raise ValueError(f"uses dashboard variables this check cannot fill in: {', '.join(unknown)}")
    return expr


# ------------------------------------------------------------------------- dashboard


def panels_of(dashboard):
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows keep theirs inside


def datasource_uid(value):
    return value.get("uid") if isinstance(value, dict) else value


def check_structure(dashboard, report):
    """The shape Grafana imports; the queries of every panel, as (where, target)."""
    variables = (dashboard.get("templating") or {}).get("list", [])
    report.check(any(v.get("type") == "datasource" and v.get("query") == "prometheus"
                     and v.get("name") == "datasource" for v in variables),
                 "templating", "no Prometheus data-source variable named `datasource`")
    report.check(dashboard.get("uid") and dashboard.get("title"), "dashboard", "needs a uid and a title")
    queries, ids = [], []
    for panel in panels_of(dashboard):
        where = f"panel {panel.get('id')} {panel.get('title')!r}"
        ids.append(panel.get("id"))
        report.check(panel.get("title") and panel.get("gridPos"), where, "needs a title and a gridPos")
        if panel.get("type") == "row":
            continue
        report.check(datasource_uid(panel.get("datasource")) == "${datasource}", where,
                     f"datasource is {panel.get('datasource')!r}, not the ${{datasource}} variable")
        targets = panel.get("targets") or []
        if not report.check(targets, where, "has no query"):
            continue
        for target in targets:
            target_where = f"{where} query {target.get('refId')}"
            report.check(datasource_uid(target.get("datasource", panel.get("datasource"))) == "${datasource}",
                         target_where, "does not use the ${datasource} variable")
            if report.check(str(target.get("expr", "")).strip(), target_where, "has no PromQL expression"):
                queries.append((target_where, target))
    duplicates = sorted({i for i in ids if ids.count(i) > 1}, key=str)
    report.check(not duplicates, "panels", f"ids used more than once: {duplicates}")
    return queries


# ------------------------------------------------------------------------ the system


class System:
    """cronfleet dev (as the coordinator) and one worker, scraped by Prometheus."""

    def __init__(self, binary, scratch):
        self.binary, self.scratch = binary, scratch
        self.processes = []
        self.grpc, self.http, self.worker_http = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.grpc}"
        self.prometheus_port = free_port()

    def spawn(self, name, command):
        log_file = open(os.path.join(self.scratch, f"{name}.log"), "w")
        process = subprocess.Popen(command, cwd=self.scratch, stdin=subprocess.DEVNULL,
                                   stdout=log_file, stderr=subprocess.STDOUT)
        process.label = name
        self.processes.append(process)
        return process

    def wait_for(self, process, port, path, timeout=30):
        deadline = time.monotonic() + timeout
        while http_status(port, path) != 200:
            if process.poll() is not None or time.monotonic() > deadline:
                raise Failure(f"{process.label} is not answering {path}; see {self.scratch}/{process.label}.log")
            time.sleep(0.1)

    def start_cronfleet(self):
        data = os.path.join(self.scratch, "data")
        coordinator = self.spawn("coordinator", [
            self.binary, "dev", "--workers", "0", "--data-dir", data,
            "--grpc", f"127.0.0.1:{self.grpc}", "--http", f"127.0.0.1:{self.http}"])
        self.wait_for(coordinator, self.http, "/readyz")
        worker = self.spawn("worker", [
            self.binary, "worker", "--coordinator", self.url, "--handlers", "noop,shell",
            "--node-id", "dashboard-check-worker", "--http", f"127.0.0.1:{self.worker_http}"])
        self.wait_for(worker, self.worker_http, "/readyz")
        for name, handler, args in JOBS:
            subprocess.run([self.binary, "job", "create", name, "--handler", handler, "--every", "1s",
                            "--args", args, "--server", self.url],
                           check=True, capture_output=True, text=True)
        self.database = os.path.join(data, "cronfleet.db")

    def metrics(self, port):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.read().decode()

    def provoke_store_error(self):
        """Holds the store's write lock until a leader's store call fails on it."""
        database = sqlite3.connect(self.database, timeout=30, isolation_level=None)
        try:
            database.execute("BEGIN EXCLUSIVE")
            deadline = time.monotonic() + STORE_LOCK_SECONDS
            while "cronfleet_store_errors_total{" not in self.metrics(self.http):
                if time.monotonic() > deadline:
                    raise Failure(f"no store error counted with the database locked for {STORE_LOCK_SECONDS}s")
                time.sleep(0.5)
        finally:
            database.execute("ROLLBACK")
            database.close()

    def start_prometheus(self):
        config = os.path.join(self.scratch, "prometheus.yml")
        with open(config, "w") as file:
            yaml.safe_dump({
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {"job_name": "cronfleet-coordinator",
                     "static_configs": [{"targets": [f"127.0.0.1:{self.http}"]}]},
                    {"job_name": "cronfleet-worker",
                     "static_configs": [{"targets": [f"127.0.0.1:{self.worker_http}"]}]},
                ]}, file)
        prometheus = self.spawn("prometheus", [
            "prometheus", f"--config.file={config}",
            f"--storage.tsdb.path={os.path.join(self.scratch, 'tsdb')}",
            f"--web.listen-address=127.0.0.1:{self.prometheus_port}", "--log.level=warn"])
        self.wait_for(prometheus, self.prometheus_port, "/-/ready")

    def api(self, path, **params):
        url = f"http://127.0.0.1:{self.prometheus_port}/api/v1/{path}?{urllib.parse.urlencode(params, doseq=True)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.load(response)["data"]
        except urllib.error.HTTPError as error:
            body = json.load(error)
            raise ValueError(f"{body.get('errorType')}: {body.get('error')}") from None

    def wait_for_scrapes(self, seconds):
        """Until both targets are up and have been scraped for `seconds`."""
        deadline = time.monotonic() + 30
        while True:
            targets = self.api("targets")["activeTargets"]
            if len(targets) == 2 and all(t["health"] == "up" for t in targets):
                break
            if time.monotonic() > deadline:
                raise Failure(f"Prometheus cannot scrape cronfleet: {[(t['scrapeUrl'], t['lastError']) for t in targets]}")
            time.sleep(0.5)
        time.sleep(seconds)

    def stop(self):
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


# ------------------------------------------------------------------------- the checks


def external_metrics(specs):
    """(where, name) of every External metric of every HorizontalPodAutoscaler."""
    found = []
    for spec in specs:
        build, path = spec.split("=", 1)
        with open(path) as file:
            for obj in yaml.safe_load_all(file):
                if obj and obj.get("kind") == "HorizontalPodAutoscaler":
                    for metric in obj["spec"].get("metrics", []):
                        if metric["type"] == "External":
                            found.append((f"{build}: HorizontalPodAutoscaler {obj['metadata']['name']}",
                                          metric["external"]["metric"]["name"]))
    return found


def rule_queries(path):
    """The expressions of the alerting rules in `path`, as (where, target) like panels'."""
    with open(path) as file:
        rules = yaml.safe_load(file)
    return [(f"{path}: {rule['alert']}", {"expr": rule["expr"]})
            for group in rules["groups"] for rule in group["rules"] if "alert" in rule]


def check_queries(system, queries, report, need_series=True):
    """Each query names scraped metrics and their labels and runs on Prometheus; with
    `need_series`, it must return series too (a dashboard's panels; an alert's expression
    is rightly empty on a healthy system)."""
    scraped = set(system.api("label/__name__/values"))
    labels_of = {}

    def labels(metric):
        if metric not in labels_of:
            series = system.api("series", **{"match[]": metric})
            labels_of[metric] = {label for one in series for label in one} - {"__name__"}
        return labels_of[metric]

    names = set()
    for where, target in queries:
        expr = target["expr"]
        try:
            selectors, grouping = read_query(expr)
            filled = fill_variables(expr)
        except ValueError as error:
            report.fail(where, f"{error}: {expr}")
            continue
        if not report.check(selectors, where, f"selects no metric: {expr}"):
            continue
        known = True
        for metric, matched in selectors:
            if not report.check(metric in scraped, where,
                                f"metric {metric} is not exported by cronfleet (not in a scrape of a live "
                                f"coordinator and worker): {expr}"):
                known = False
                continue
            names.add(metric)
            for label in matched:
                report.check(label in labels(metric), where,
                             f"{metric} has no label {label} (it has {', '.join(sorted(labels(metric)))})")
        if not known:
            continue
        in_query = set().union(*(labels(metric) for metric, _ in selectors))
        for label in sorted(grouping - in_query):
            report.fail(where, f"groups by {label}, a label of none of its metrics: {expr}")
        try:
            result = system.api("query", query=filled)["result"]
        except ValueError as error:
            report.fail(where, f"Prometheus rejects it ({error}): {filled}")
            continue
        if not need_series:
            continue
        if not report.check(result, where, f"returns nothing from a live cronfleet: {filled}"):
            continue
        for label in re.findall(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", target.get("legendFormat", "")):
            report.check(all(label in series["metric"] for series in result), where,
                         f"legend shows {{{{{label}}}}}, which its series do not have "
                         f"({sorted(result[0]['metric'])})")
    return names, scraped


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True)
    parser.add_argument("--dashboard", required=True)
    parser.add_argument("--kubernetes", action="append", default=[], metavar="NAME=FILE")
    parser.add_argument("--rules", action="append", default=[], metavar="FILE",
                        help="Prometheus alerting rules whose metrics and labels must be exported")
    options = parser.parse_args()
    binary = os.path.abspath(options.binary)
    report = Report("Grafana dashboard")

    try:
        with open(options.dashboard) as file:
            dashboard = json.load(file)
    except (OSError, json.JSONDecodeError) as error:
        report.fail(options.dashboard, f"does not parse: {error}")
        report.finish("")
    queries = check_structure(dashboard, report)
    hpa_metrics = external_metrics(options.kubernetes)

    scratch = tempfile.mkdtemp(prefix="cronfleet-dashboard-")
    system = System(binary, scratch)
    names, scraped = set(), set()
    alerts, rule_names = [], set()
    try:
        log("starting cronfleet dev and a worker, with jobs that succeed, fail and wait")
        system.start_cronfleet()
        time.sleep(3)
        log("holding the SQLite store locked until a store call fails")
        system.provoke_store_error()
        log("Prometheus scraping both")
        system.start_prometheus()
        system.wait_for_scrapes(seconds=12)
        names, scraped = check_queries(system, queries, report)
        alerts = [query for path in options.rules for query in rule_queries(path)]
        rule_names, _ = check_queries(system, alerts, report, need_series=False)
        for where, metric in hpa_metrics:
            report.check(metric in scraped, where,
                         f"scales on external metric {metric}, which cronfleet does not export")
    except Failure as error:
        report.fail("live system", str(error))
    finally:
        system.stop()
        if report.failures:
            print(f"  logs kept in {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    panels = sum(1 for panel in panels_of(dashboard) if panel.get("type") != "row")
    report.finish(
        f"{panels} panels, {len(queries)} queries over {len(names)} metrics, every one scraped by "
        f"Prometheus from a live coordinator and worker and answering with series; "
        f"HPA external metrics {', '.join(sorted({m for _, m in hpa_metrics})) or '(none)'} exported; "
        f"{len(alerts)} alert expressions over {len(rule_names)} metrics, every metric and label exported "
        f"and every expression accepted by Prometheus")


if __name__ == "__main__":
    main()
