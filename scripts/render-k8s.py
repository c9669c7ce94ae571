#!/usr/bin/env python3
"""Renders deploy/k8s from the Helm chart (`make manifests`), for operators without Helm:

  base/                 `helm template` of the chart's default values (release and namespace
                        `verity`, no CRD APIs: the prover pool is fixed)
  overlays/devnet/      base + patches that make it the render of ci/devnet-values.yaml
  overlays/production/  base + patches and resources that make it the render of
                        ci/production-values.yaml (standby, KEDA, ServiceMonitor, Ingress)

Each overlay is derived, not hand-written: objects only in the overlay's render become its
resources, objects only in base are deleted by a patch, and changed objects get JSON patches
(RFC 6902) computed from the difference. `kubectl kustomize overlays/X` therefore builds exactly
what `helm template` renders for X's values; the chart tests check that, and that the files here
are what this script writes (`--check`).

    render-k8s.py --helm PATH [--out deploy/k8s] [--check [--kubectl PATH]]
"""
import argparse
import filecmp
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "verity"
HEADER = "# Generated from deploy/helm/verity by `make manifests` (scripts/render-k8s.py): do not edit.\n"
KUBE_VERSION = "1.33.0"
CRD_APIS = ["keda.sh/v1alpha1/ScaledObject", "monitoring.coreos.com/v1/ServiceMonitor"]
OVERLAYS = {
    "devnet": (CHART / "ci" / "devnet-values.yaml", []),
    "production": (CHART / "ci" / "production-values.yaml", CRD_APIS),
}


class Dumper(yaml.SafeDumper):
    pass


def _str(dumper, value):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


Dumper.add_representer(str, _str)


def dump(value):
    return yaml.dump(value, Dumper=Dumper, sort_keys=False, default_flow_style=False, width=100)


def run(cmd):
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return done.stdout


def render(helm, values=None, apis=()):
    cmd = [helm, "template", "verity", str(CHART), "--namespace", "verity", "--kube-version", KUBE_VERSION]
    if values:
        cmd += ["-f", str(values)]
    for api in apis:
        cmd += ["--api-versions", api]
    out = run(cmd)
    return [d for d in yaml.safe_load_all(out) if d]


def key(doc):
    return (doc["apiVersion"], doc["kind"], doc["metadata"]["name"])


def pointer(path):
    return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in path)


def diff(old, new, path=()):
    """RFC 6902 operations turning `old` into `new` (lists of unequal length are replaced whole)."""
    if isinstance(old, dict) and isinstance(new, dict):
        ops = [{"op": "remove", "path": pointer(path + (k,))} for k in old if k not in new]
        for k, v in new.items():
            if k not in old:
                ops.append({"op": "add", "path": pointer(path + (k,)), "value": v})
            else:
                ops += diff(old[k], v, path + (k,))
        return ops
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [op for i, (a, b) in enumerate(zip(old, new)) for op in diff(a, b, path + (i,))]
    if old != new or type(old) is not type(new):
        return [{"op": "replace", "path": pointer(path), "value": new}]
    return []


def target(k):
    api, kind, name = k
    group, _, version = api.rpartition("/")
    t = {"version": version, "kind": kind, "name": name}
    if group:
        t = {"group": group, **t}
    return t


def write_tree(helm, out):
    base_docs = render(helm)
    (out / "base").mkdir(parents=True, exist_ok=True)
    (out / "base" / "verity.yaml").write_text(HEADER + "".join("---\n" + dump(d) for d in base_docs))
    (out / "base" / "kustomization.yaml").write_text(HEADER + dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": ["verity.yaml"]}))
    base = {key(d): d for d in base_docs}
    for name, (values, apis) in OVERLAYS.items():
        docs = render(helm, values, apis)
        overlay = {key(d): d for d in docs}
        added = [overlay[k] for k in overlay if k not in base]
        patches = []
        for k in base:
            if k not in overlay:
                patches.append({"patch": dump({"apiVersion": k[0], "kind": k[1], "metadata": {"name": k[2], "namespace": "verity"},
                                               "$patch": "delete"})})
            else:
                ops = diff(base[k], overlay[k])
                if ops:
                    patches.append({"target": target(k), "patch": dump(ops)})
        directory = out / "overlays" / name
        directory.mkdir(parents=True, exist_ok=True)
        resources = ["../../base"]
        if added:
            (directory / "resources.yaml").write_text(HEADER + "".join("---\n" + dump(d) for d in added))
            resources.append("resources.yaml")
        kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                         "resources": resources}
        if patches:
            kustomization["patches"] = patches
        rel = values.relative_to(ROOT)
        (directory / "kustomization.yaml").write_text(
            HEADER + f"# The render of {rel}, as base plus what differs.\n" + dump(kustomization))


def trimmed(value):
    if isinstance(value, dict):
        return {k: trimmed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [trimmed(v) for v in value]
    return value.rstrip("\n") if isinstance(value, str) else value


def files(directory):
    return sorted(p.relative_to(directory) for p in directory.rglob("*") if p.is_file() and p.name != "README.md")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--helm", required=True)
    parser.add_argument("--out", default=str(ROOT / "deploy" / "k8s"))
    parser.add_argument("--check", action="store_true", help="fail when --out differs from a fresh render")
    parser.add_argument("--kubectl", help="with --check: also build each overlay with `kubectl kustomize` "
                        "and compare it with the chart's render")
    args = parser.parse_args()
    out = Path(args.out)
    if not args.check:
        write_tree(args.helm, out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        write_tree(args.helm, fresh)
        stale = [str(f) for f in sorted(set(files(fresh)) | set(files(out)))
                 if not (out / f).is_file() or not (fresh / f).is_file() or not filecmp.cmp(out / f, fresh / f, shallow=False)]
        if stale:
            sys.exit(f"deploy/k8s is not the chart's render ({', '.join(stale)} differ): run `make manifests`")
    if args.kubectl:
        for name, (values, apis) in OVERLAYS.items():
            built = run([args.kubectl, "kustomize", str(out / "overlays" / name)])
            # kustomize drops the final newline of a block string (the NATS config); nothing else.
            got = {key(d): trimmed(d) for d in yaml.safe_load_all(built) if d}
            want = {key(d): trimmed(d) for d in render(args.helm, values, apis)}
            wrong = sorted(f"{k[1]}/{k[2]}" for k in set(got) | set(want) if got.get(k) != want.get(k))
            if wrong:
                sys.exit(f"kubectl kustomize overlays/{name} differs from helm template's render of "
                         f"{values.relative_to(ROOT)} in: {', '.join(wrong)}")
            print(f"overlays/{name}: kustomize builds the chart's render of {values.relative_to(ROOT)} "
                  f"({len(got)} objects)")
    print(f"{out}: in sync with the chart")


if __name__ == "__main__":
    main()
