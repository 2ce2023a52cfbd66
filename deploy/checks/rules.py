"""The Prometheus alerting rules (deploy/prometheus/) are valid, tested, and one set.

- `promtool check rules` accepts cronfleet-rules.yml, and `promtool test rules` passes
  cronfleet-rules.test.yml;
- every alert has a severity (critical or warning), a summary and a description, and the
  tests make every alert fire at least once (a rule no test fires is untested);
- prometheus-rule.yaml is a PrometheusRule whose spec is exactly cronfleet-rules.yml's
  groups, and promtool accepts that spec too.

(That every metric and label the rules name is one cronfleet exports is checked against a
live coordinator by dashboard.py --rules.)

Usage: rules.py --rules FILE --tests FILE --prometheus-rule FILE
"""

import argparse
import os
import subprocess
import tempfile

import yaml

from deploycheck import Report

SEVERITIES = {"critical", "warning"}


def promtool(report, where, *args):
    result = subprocess.run(["promtool", *args], capture_output=True, text=True)
    output = (result.stdout + result.stderr).strip()
    return report.check(result.returncode == 0, where, f"promtool {' '.join(args)} failed:\n{output}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rules", required=True)
    parser.add_argument("--tests", required=True)
    parser.add_argument("--prometheus-rule", required=True)
    options = parser.parse_args()
    report = Report("Prometheus rules")

    promtool(report, options.rules, "check", "rules", options.rules)
    # promtool reads the tests' rule_files relative to the test file.
    promtool(report, options.tests, "test", "rules", options.tests)

    rules = yaml.safe_load(open(options.rules))
    alerts = [rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule]
    for rule in alerts:
        where = f"{options.rules}: {rule['alert']}"
        report.check(rule.get("labels", {}).get("severity") in SEVERITIES, where,
                     f"severity must be one of {sorted(SEVERITIES)}")
        for annotation in ("summary", "description"):
            report.check(rule.get("annotations", {}).get(annotation), where, f"has no {annotation}")

    tests = yaml.safe_load(open(options.tests))
    fired = {case["alertname"] for test in tests["tests"] for case in test.get("alert_rule_test", [])
             if case.get("exp_alerts")}
    for rule in alerts:
        report.check(rule["alert"] in fired, options.tests, f"no test makes {rule['alert']} fire")

    resource = yaml.safe_load(open(options.prometheus_rule))
    where = options.prometheus_rule
    report.check(resource.get("apiVersion") == "monitoring.coreos.com/v1"
                 and resource.get("kind") == "PrometheusRule", where,
                 "is not a monitoring.coreos.com/v1 PrometheusRule")
    report.check(resource.get("metadata", {}).get("name"), where, "has no metadata.name")
    report.check(resource.get("spec") == rules, where,
                 f"its spec differs from {options.rules}: regenerate it from that file")
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as spec:
        yaml.safe_dump(resource.get("spec"), spec)
    try:
        promtool(report, where, "check", "rules", spec.name)
    finally:
        os.unlink(spec.name)

    report.finish(f"{len(alerts)} alerts ({', '.join(rule['alert'] for rule in alerts)}): "
                  f"promtool check and test pass, each fires in a test, the PrometheusRule is the same set")


if __name__ == "__main__":
    main()
