#!/usr/bin/env python3
"""Checks the chart's monitoring against its documentation and tests (run by
scripts/chart-test.sh):

  - every alert in the rendered rules has a promtool unit test that shows it firing and one
    that shows it quiet, and its runbook_url's anchor is a heading of docs/operations.md;
  - every dashboard is valid JSON, every panel has a description and is named (in bold) in
    docs/operations.md's "Dashboards" section.

    check_monitoring.py RULES_YAML ALERTS_TEST_YAML DASHBOARDS_DIR OPERATIONS_MD

Exit status 1 with one line per problem."""
import json
import re
import sys
from pathlib import Path

import yaml


def anchor(heading):
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def main(rules_path, tests_path, dashboards_dir, operations_path):
    problems = []
    rules = yaml.safe_load(Path(rules_path).read_text())
    tests = yaml.safe_load(Path(tests_path).read_text())
    operations = Path(operations_path).read_text()
    anchors = {anchor(m) for m in re.findall(r"^#+ (.+)$", operations, re.M)}

    firing, quiet = set(), set()
    for test in tests.get("tests", []):
        for case in test.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    if not alerts:
        problems.append(f"{rules_path}: no alerts")
    for rule in alerts:
        name = rule["alert"]
        if name not in firing:
            problems.append(f"alert {name}: no promtool test shows it firing")
        if name not in quiet:
            problems.append(f"alert {name}: no promtool test shows it quiet")
        url = rule.get("annotations", {}).get("runbook_url", "")
        if "#" not in url or url.split("#", 1)[1] not in anchors:
            problems.append(f"alert {name}: runbook_url {url!r} names no heading of {operations_path}")

    section = operations.split("\n## Dashboards\n", 1)
    documented = section[1].split("\n## ", 1)[0] if len(section) > 1 else ""
    if not documented:
        problems.append(f"{operations_path}: no '## Dashboards' section")
    files = sorted(Path(dashboards_dir).glob("*.json"))
    if not files:
        problems.append(f"{dashboards_dir}: no dashboards")
    for path in files:
        try:
            dashboard = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            problems.append(f"{path}: not JSON: {e}")
            continue
        for panel in dashboard.get("panels", []):
            if panel.get("type") == "row":
                continue
            title = panel.get("title", "")
            if not panel.get("description"):
                problems.append(f"{path}: panel {title!r} has no description")
            if f"**{title}**" not in documented:
                problems.append(f"{path}: panel {title!r} is not explained in {operations_path} (Dashboards)")
            if not panel.get("targets"):
                problems.append(f"{path}: panel {title!r} has no query")
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(*sys.argv[1:]))
