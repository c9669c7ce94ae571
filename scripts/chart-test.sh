#!/usr/bin/env bash
# The chart tests (`make chart-test`, part of `make test`):
#   1. values.schema.json is what deploy/helm/tests/gen_schema.py writes; the policy checker
#      catches each manifest that breaks one of its rules (self-test);
#   2. helm lint, with the default values and with each file in deploy/helm/verity/ci/;
#   3. helm template of each, with and without the CRD APIs (KEDA, Prometheus Operator) present,
#      validated against the Kubernetes 1.33 and 1.35 schemas (strict) and the CRD schemas in
#      deploy/helm/tests/crds, plus the policy and reference checks (deploy/helm/tests/check.py);
#   4. every file in deploy/helm/tests/bad-values/ is refused, with the message it names;
#   5. deploy/k8s is the chart's render, and `kubectl kustomize` of each overlay builds exactly
#      what helm renders for its values (then validated like the chart).
set -euo pipefail
cd "$(dirname "$0")/.."

tools="$(scripts/k8s-tools.sh)"
helm="$tools/helm"
kubectl="$tools/kubectl"
chart=deploy/helm/verity
tests=deploy/helm/tests
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
crds=(--api-versions keda.sh/v1alpha1/ScaledObject --api-versions monitoring.coreos.com/v1/ServiceMonitor)

workspace_version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
app_version="$(sed -n 's/^appVersion: "\(.*\)"/\1/p' "$chart/Chart.yaml")"
if [ "$workspace_version" != "$app_version" ]; then
  echo "chart-test: Chart.yaml appVersion $app_version is not the workspace version $workspace_version" >&2
  exit 1
fi

python3 "$tests/gen_schema.py" --check
python3 "$tests/gen_readme.py" --check
python3 "$tests/check.py" self-test

"$helm" lint --strict "$chart" --quiet
for values in "$chart"/ci/*.yaml; do
  "$helm" lint --strict "$chart" --quiet -f "$values"
done

render() { # name, then helm template arguments
  local name="$1"
  shift
  "$helm" template verity "$chart" --namespace verity --kube-version 1.33.0 "$@" > "$out/$name.yaml"
}
render default
render default-with-crds "${crds[@]}"
python3 "$tests/check.py" validate --guaranteed sequencer "$out/default.yaml"
python3 "$tests/check.py" validate --guaranteed sequencer "$out/default-with-crds.yaml"
# Prover scaling `auto`: KEDA's ScaledObject where KEDA is, Verity's autoscaler elsewhere.
has() { grep -q "^kind: $1\$" "$2" && grep -q "name: verity-$3\$" "$2"; }
has ScaledObject "$out/default-with-crds.yaml" prover || { echo "chart-test: KEDA present but no ScaledObject" >&2; exit 1; }
! grep -q '^kind: ScaledObject' "$out/default.yaml" || { echo "chart-test: ScaledObject rendered without KEDA" >&2; exit 1; }
has Deployment "$out/default.yaml" autoscaler || { echo "chart-test: no KEDA and no Verity autoscaler" >&2; exit 1; }
! grep -q 'name: verity-autoscaler$' "$out/default-with-crds.yaml" || { echo "chart-test: both KEDA and Verity's autoscaler" >&2; exit 1; }
for values in "$chart"/ci/*.yaml; do
  name="$(basename "$values" .yaml)"
  render "$name" -f "$values"
  render "$name-with-crds" -f "$values" "${crds[@]}"
  guaranteed=()
  # The production example runs the sequencer on bare metal: its egress names what it calls.
  [ "$name" = production-values ] && guaranteed=(--guaranteed sequencer --narrow-egress sequencer)
  python3 "$tests/check.py" validate "${guaranteed[@]}" "$out/$name.yaml"
  python3 "$tests/check.py" validate "${guaranteed[@]}" "$out/$name-with-crds.yaml"
done

# The alert rules as the chart renders them (default thresholds), through promtool (Debian's
# prometheus package, installed by bootstrap): syntax and types, then the unit tests that fire
# and clear each alert.
"$helm" template verity "$chart" --namespace verity --set metrics.prometheusRule.enabled=true \
  --show-only templates/prometheusrule.yaml > "$out/prometheusrule.yaml"
python3 - "$out/prometheusrule.yaml" "$out/rules.yaml" <<'PY'
import sys, yaml
rule = yaml.safe_load(open(sys.argv[1]))
yaml.safe_dump(rule["spec"], open(sys.argv[2], "w"), sort_keys=False)
PY
cp "$tests/alerts.test.yaml" "$out/alerts.test.yaml"
promtool check rules "$out/rules.yaml" >/dev/null
promtool test rules "$out/alerts.test.yaml" >/dev/null || promtool test rules "$out/alerts.test.yaml"
# Every alert has a unit test and a runbook section in docs/operations.md; every dashboard is
# valid JSON whose panels each have a description.
python3 "$tests/check_monitoring.py" "$out/rules.yaml" "$tests/alerts.test.yaml" "$chart/dashboards" docs/operations.md

for values in "$tests"/bad-values/*.yaml; do
  expected="$(sed -n '1s/^# expect: //p' "$values")"
  if [ -z "$expected" ]; then
    echo "chart-test: $values has no '# expect: <message>' first line" >&2
    exit 1
  fi
  if errors="$("$helm" template verity "$chart" -f "$values" 2>&1 >/dev/null)"; then
    echo "chart-test: $values was accepted; it must be refused with: $expected" >&2
    exit 1
  fi
  if ! grep -qF -- "$expected" <<<"$errors"; then
    echo "chart-test: $values was refused, but not with '$expected':" >&2
    echo "$errors" >&2
    exit 1
  fi
done
echo "chart-test: $(ls "$tests"/bad-values/*.yaml | wc -l) bad values files refused with their messages"

python3 scripts/render-k8s.py --helm "$helm" --check --kubectl "$kubectl"
for overlay in devnet production; do
  "$kubectl" kustomize "deploy/k8s/overlays/$overlay" > "$out/kustomize-$overlay.yaml"
  python3 "$tests/check.py" validate "$out/kustomize-$overlay.yaml"
done
echo "chart-test: passed"
