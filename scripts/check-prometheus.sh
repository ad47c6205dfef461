#!/usr/bin/env bash
# The monitoring files, checked with Prometheus's own tool (part of `make test`):
#   promtool check rules   every rule file parses and its expressions are valid PromQL
#   promtool test rules    the unit tests in monitoring/tests/ (every alert fires and stays quiet as it should)
# and two checks of our own: every alert has a runbook at its runbook_url (docs/runbooks/) and
# appears in at least one unit test.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v promtool >/dev/null || { echo "promtool missing (apt-get install prometheus; make setup does)" >&2; exit 1; }
promtool check rules monitoring/rules/*.yml
(cd monitoring/tests && promtool test rules ./*.yml)
python3 - <<'PY'
import pathlib, re, sys
import yaml
alerts = {}
for f in sorted(pathlib.Path("monitoring/rules").glob("*.yml")):
    for group in yaml.safe_load(f.read_text(encoding="utf-8"))["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                alerts[rule["alert"]] = rule.get("annotations", {}).get("runbook_url", "")
tested = set()
for f in pathlib.Path("monitoring/tests").glob("*.yml"):
    tested |= set(re.findall(r"alertname:\s*(\w+)", f.read_text(encoding="utf-8")))
problems = [f"{a}: no runbook_url" for a, url in alerts.items() if not url]
problems += [f"{a}: runbook {url} does not exist" for a, url in alerts.items() if url and not pathlib.Path(url).is_file()]
problems += [f"{a}: no unit test in monitoring/tests" for a in alerts if a not in tested]
for p in problems:
    print(f"check-prometheus: {p}", file=sys.stderr)
print(f"check-prometheus: {len(alerts)} alerts, each with a runbook and a unit test" if not problems else "")
sys.exit(1 if problems else 0)
PY
