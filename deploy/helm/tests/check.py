#!/usr/bin/env python3
"""Checks rendered Kubernetes manifests (the chart's `helm template` output, deploy/k8s's
kustomize builds): schema validation against the Kubernetes versions given (kubernetes-validate,
strict), the CRDs this chart uses against the schemas in crds/, policy (every container has
resources, probes, a pinned image and runs non-root with a locked-down security context), and
references (every selector, scale target and serviceName points at something rendered).

    check.py validate [--k8s 1.33.0,1.35.0] [--guaranteed COMPONENT] FILE...
    check.py self-test      # each policy rule catches the manifest that breaks it

Exit status 1 with one line per problem."""
import argparse
import json
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

HERE = Path(__file__).resolve().parent
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): HERE / "crds" / "keda.sh_v1alpha1_ScaledObject.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): HERE / "crds" / "monitoring.coreos.com_v1_ServiceMonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): HERE / "crds" / "monitoring.coreos.com_v1_PrometheusRule.json",
    ("cert-manager.io/v1", "Certificate"): HERE / "crds" / "cert-manager.io_v1_Certificate.json",
}


def name_of(doc):
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def pod_spec(doc):
    if doc.get("kind") in WORKLOADS:
        return doc.get("spec", {}).get("template", {}).get("spec", {})
    if doc.get("kind") == "Pod":
        return doc.get("spec", {})
    return None


def pod_labels(doc):
    if doc.get("kind") == "Pod":
        return doc.get("metadata", {}).get("labels", {}) or {}
    return doc.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {}) or {}


def matches(selector, labels):
    """A label selector (matchLabels/matchExpressions, or a Service's plain map) against labels."""
    if selector is None:
        return False
    if "matchLabels" in selector or "matchExpressions" in selector:
        plain = selector.get("matchLabels", {}) or {}
        for expr in selector.get("matchExpressions", []) or []:
            key, op, values = expr["key"], expr["operator"], expr.get("values", [])
            if op == "In" and labels.get(key) not in values:
                return False
            if op == "NotIn" and labels.get(key) in values:
                return False
            if op == "Exists" and key not in labels:
                return False
            if op == "DoesNotExist" and key in labels:
                return False
    else:
        plain = selector
    return all(labels.get(k) == v for k, v in plain.items())


def schema_problems(docs, versions):
    problems = []
    for doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key in CRD_SCHEMAS:
            schema = json.loads(CRD_SCHEMAS[key].read_text())
            for error in jsonschema.Draft7Validator(schema).iter_errors(doc):
                path = "/".join(str(p) for p in error.absolute_path)
                problems.append(f"{name_of(doc)}: schema ({key[0]}): at /{path}: {error.message}")
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = "/".join(str(p) for p in error.path)
                problems.append(f"{name_of(doc)}: schema (Kubernetes {version}): at /{path}: {error.message}")
            except kubernetes_validate.SchemaNotFoundError:
                problems.append(f"{name_of(doc)}: no schema for {key[0]} {key[1]} in Kubernetes {version} "
                                "and none in deploy/helm/tests/crds")
    return problems


def effective(container, pod, field):
    value = (container.get("securityContext") or {}).get(field)
    if value is None:
        value = (pod.get("securityContext") or {}).get(field)
    return value


def policy_problems(docs, guaranteed=()):
    problems = []
    for doc in docs:
        spec = pod_spec(doc)
        if spec is None:
            continue
        where = name_of(doc)
        if spec.get("hostPID") or spec.get("hostIPC"):
            problems.append(f"{where}: shares the host's PID or IPC namespace")
        init = spec.get("initContainers", []) or []
        # A Job's pod runs to completion: no service to probe.
        runs_to_completion = doc.get("kind") == "Job"
        for container in (spec.get("containers", []) or []) + init:
            c = f"{where} container {container.get('name')}"
            is_init = container in init or runs_to_completion
            resources = container.get("resources") or {}
            for kind in ("requests", "limits"):
                for res in ("cpu", "memory"):
                    if res not in (resources.get(kind) or {}):
                        problems.append(f"{c}: no resources.{kind}.{res}")
            if not is_init:
                for probe in ("readinessProbe", "livenessProbe"):
                    if probe not in container:
                        problems.append(f"{c}: no {probe}")
            image = container.get("image", "")
            last = image.rsplit("/", 1)[-1]
            if "@sha256:" not in image and (":" not in last or last.endswith(":latest") or last.endswith(":")):
                problems.append(f"{c}: image {image!r} is not pinned to a tag or digest")
            if effective(container, spec, "runAsNonRoot") is not True:
                problems.append(f"{c}: runAsNonRoot is not true")
            if effective(container, spec, "runAsUser") == 0:
                problems.append(f"{c}: runs as uid 0")
            sc = container.get("securityContext") or {}
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{c}: allowPrivilegeEscalation is not false")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{c}: readOnlyRootFilesystem is not true")
            if sc.get("privileged"):
                problems.append(f"{c}: privileged")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                problems.append(f"{c}: capabilities do not drop ALL")
            seccomp = effective(container, spec, "seccompProfile") or {}
            if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
                problems.append(f"{c}: seccompProfile is not RuntimeDefault")
            if "/verity-" in image and not is_init:
                if "grpc" not in (container.get("readinessProbe") or {}):
                    problems.append(f"{c}: readiness is not on the gRPC health service")
                if ((container.get("livenessProbe") or {}).get("httpGet") or {}).get("path") != "/metrics":
                    problems.append(f"{c}: liveness is not on /metrics")
            component = pod_labels(doc).get("app.kubernetes.io/component")
            if component in guaranteed and not is_init:
                if (resources.get("requests") or {}) != (resources.get("limits") or {}):
                    problems.append(f"{c}: requests differ from limits (not Guaranteed QoS)")
    return problems


def reference_problems(docs):
    problems = []
    workloads = [d for d in docs if pod_spec(d) is not None]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d.get("kind"), {})[d["metadata"]["name"]] = d

    def some_pod(selector):
        return any(matches(selector, pod_labels(w)) for w in workloads)

    for d in docs:
        kind, where, spec = d.get("kind"), name_of(d), d.get("spec", {})
        if kind == "Service" and spec.get("selector") and not some_pod(spec["selector"]):
            problems.append(f"{where}: its selector matches no pod")
        if kind == "Service":
            for port in spec.get("ports", []):
                target = port.get("targetPort")
                if isinstance(target, str) and not any(
                    matches(spec.get("selector"), pod_labels(w))
                    and any(p.get("name") == target for c in pod_spec(w).get("containers", []) for p in c.get("ports", []))
                    for w in workloads
                ):
                    problems.append(f"{where}: targetPort {target!r} is no named port of its pods")
        if kind in ("PodDisruptionBudget", "NetworkPolicy"):
            selector = spec.get("selector") if kind == "PodDisruptionBudget" else spec.get("podSelector")
            if not some_pod(selector):
                problems.append(f"{where}: its selector matches no pod")
        if kind in ("Deployment", "StatefulSet") and not matches(spec.get("selector"), pod_labels(d)):
            problems.append(f"{where}: its selector does not match its own pod template")
        if kind == "StatefulSet":
            svc = by_kind.get("Service", {}).get(spec.get("serviceName"))
            if svc is None or svc["spec"].get("clusterIP") != "None":
                problems.append(f"{where}: serviceName {spec.get('serviceName')!r} is no headless Service rendered here")
        if kind in ("HorizontalPodAutoscaler", "ScaledObject"):
            ref = spec.get("scaleTargetRef", {})
            target = by_kind.get(ref.get("kind", "Deployment"), {}).get(ref.get("name"))
            if target is None:
                problems.append(f"{where}: scale target {ref.get('kind')}/{ref.get('name')} is not rendered")
            elif "replicas" in target.get("spec", {}):
                problems.append(f"{where}: its target {name_of(target)} sets spec.replicas (they would fight)")
    # Resources a Role may name that the chart itself renders (others, e.g. the chain's Secret,
    # are the operator's).
    kinds_of = {"deployments": "Deployment", "deployments/scale": "Deployment", "leases": "Lease",
                "statefulsets": "StatefulSet"}
    for role in by_kind.get("Role", {}).values():
        for rule in role.get("rules", []):
            for resource in rule.get("resources", []):
                kind = kinds_of.get(resource)
                for name in rule.get("resourceNames", []) or []:
                    if kind and name not in by_kind.get(kind, {}):
                        problems.append(f"{name_of(role)}: grants {resource} {name!r}, which is not rendered")
    for binding in by_kind.get("RoleBinding", {}).values():
        if binding["roleRef"]["name"] not in by_kind.get(binding["roleRef"]["kind"], {}):
            problems.append(f"{name_of(binding)}: binds {binding['roleRef']['name']}, which is not rendered")
        for subject in binding.get("subjects", []):
            if subject["kind"] == "ServiceAccount" and subject["name"] not in by_kind.get("ServiceAccount", {}):
                problems.append(f"{name_of(binding)}: subject {subject['name']} is not rendered")
    for w in workloads:
        account = pod_spec(w).get("serviceAccountName")
        if account and account not in by_kind.get("ServiceAccount", {}):
            problems.append(f"{name_of(w)}: serviceAccountName {account} is not rendered")
        if pod_spec(w).get("automountServiceAccountToken") is not False and not account:
            problems.append(f"{name_of(w)}: mounts the default service account's token (set "
                            "automountServiceAccountToken: false or a serviceAccountName)")
        for volume in pod_spec(w).get("volumes", []) or []:
            cm = (volume.get("configMap") or {}).get("name", "")
            if cm.endswith("-nats") and cm not in by_kind.get("ConfigMap", {}):
                problems.append(f"{name_of(w)}: ConfigMap {cm} is not rendered")
    return problems


def load(paths):
    docs = []
    for path in paths:
        for doc in yaml.safe_load_all(Path(path).read_text()):
            if doc:
                docs.append(doc)
    return docs


def network_problems(docs, narrow_egress=()):
    """NetworkPolicy ingress open to every namespace (an empty `namespaceSelector` peer): only the
    public JSON-RPC port (8545) may be. For the components in `narrow_egress`, egress to anywhere
    (`0.0.0.0/0`) but DNS."""
    problems = []
    for doc in docs:
        if doc.get("kind") != "NetworkPolicy":
            continue
        component = ((doc.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/component")
        if component in narrow_egress:
            for rule in (doc.get("spec") or {}).get("egress") or []:
                ports = sorted(p.get("port") for p in rule.get("ports") or [])
                if ports == [53, 53]:
                    continue  # DNS, UDP and TCP
                peers = rule.get("to")
                anywhere = not peers or any(
                    (peer.get("ipBlock") or {}).get("cidr") in ("0.0.0.0/0", "::/0")
                    or (peer.get("namespaceSelector") == {} and "podSelector" not in peer)
                    for peer in peers)
                if anywhere:
                    problems.append(f"{name_of(doc)}: egress to anywhere on ports {ports or 'all'}")
        for rule in (doc.get("spec") or {}).get("ingress") or []:
            ports = {p.get("port") for p in rule.get("ports") or []}
            if ports == {8545}:
                continue
            for peer in rule.get("from") or []:
                if peer.get("namespaceSelector") == {} and "podSelector" not in peer:
                    problems.append(f"{name_of(doc)}: ports {sorted(ports, key=str)} open to every namespace")
    return problems


# The private key file each component may mount from the chain's keys Secret.
OWN_KEYS = {
    "sequencer": {"sequencer.key", "standby.key"},
    "replica-verifier": {"verifier.key"},
}


# Components that neither serve nor call gRPC (only NATS): no certificate of their own.
NO_GRPC = {"bus-init"}


def credential_problems(docs):
    """Each Verity pod serves and calls gRPC with a certificate (--tls-cert) and connects to NATS
    with an nkey (--nats-nkey-file), each from a Secret of its own component (`<prefix>-<component>`,
    `-prover-<pool>` for a prover pool) mounted read-only, and mounts no other component's Secret;
    from the shared keys Secret it projects only its own key file."""
    problems = []
    for doc in docs:
        spec = pod_spec(doc)
        if spec is None:
            continue
        containers = [c for c in spec.get("containers") or [] if "/verity-" in c.get("image", "")]
        if not containers:
            continue
        where = name_of(doc)
        labels = pod_labels(doc)
        component = labels.get("app.kubernetes.io/component", "")
        own = component + (f"-{labels['verity.io/prover-pool']}" if component == "prover" else "")
        own_volumes = set()
        for volume in spec.get("volumes") or []:
            secret = volume.get("secret")
            if secret is None:
                continue
            name = secret.get("secretName", "")
            items = [i.get("key") for i in secret.get("items") or []]
            if name.endswith(f"-{own}"):
                own_volumes.add(volume.get("name"))
            elif items:
                allowed = OWN_KEYS.get(component, set()) | ({f"prover-{labels.get('verity.io/prover-pool')}.key"} if component == "prover" else set())
                strangers = [i for i in items if i not in allowed]
                if strangers or len(items) != 1:
                    problems.append(f"{where}: mounts {items} of Secret {name}; only its own key file may be")
            else:
                problems.append(f"{where}: mounts Secret {name}, which is not its own ({own})")
        for container in containers:
            c = f"{where} container {container.get('name')}"
            args = container.get("args") or []
            mounts = {m.get("name"): m for m in container.get("volumeMounts") or []}
            for flag, path, what in (("--tls-cert=", "/etc/verity/tls", "gRPC without a certificate"),
                                     ("--nats-nkey-file=", "/etc/verity/nats", "NATS without a credential"),
                                     ("--nats-tls-ca=", "/etc/verity/tls", "NATS in plaintext")):
                if flag == "--tls-cert=" and component in NO_GRPC:
                    continue
                if not any(a.startswith(flag) for a in args):
                    problems.append(f"{c}: {what} (no {flag.rstrip('=')})")
                    continue
                mounted = [m for n, m in mounts.items() if n in own_volumes and m.get("mountPath") == path]
                if not mounted:
                    problems.append(f"{c}: its own Secret ({own}) is not mounted at {path}")
                elif not mounted[0].get("readOnly"):
                    problems.append(f"{c}: its Secret at {path} is mounted writable")
    return problems


def self_test():
    """Every rule must catch the manifest that breaks it (a checker that cannot fail checks nothing)."""
    good = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {"selector": {"matchLabels": {"app": "x"}},
                 "template": {"metadata": {"labels": {"app": "x"}}, "spec": {
                     "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                     "containers": [{
                         "name": "c", "image": "ghcr.io/verity-rollup/verity-gateway:0.1.0",
                         "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
                         "readinessProbe": {"grpc": {"port": 7600}},
                         "livenessProbe": {"httpGet": {"path": "/metrics", "port": 9100}},
                         "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                             "capabilities": {"drop": ["ALL"]}}}]}}}}
    assert policy_problems([good]) == [], policy_problems([good])
    assert schema_problems([good], ["1.33.0"]) == [], schema_problems([good], ["1.33.0"])

    def broken(edit):
        doc = json.loads(json.dumps(good))
        edit(doc["spec"]["template"]["spec"], doc["spec"]["template"]["spec"]["containers"][0])
        return doc

    cases = [
        (lambda p, c: c["resources"]["limits"].pop("memory"), "no resources.limits.memory"),
        (lambda p, c: c.pop("readinessProbe"), "no readinessProbe"),
        (lambda p, c: c.update(image="ghcr.io/verity-rollup/verity-gateway"), "is not pinned"),
        (lambda p, c: c.update(image="nats:latest"), "is not pinned"),
        (lambda p, c: p["securityContext"].pop("runAsNonRoot"), "runAsNonRoot is not true"),
        (lambda p, c: c["securityContext"].update(runAsUser=0), "runs as uid 0"),
        (lambda p, c: c["securityContext"].pop("allowPrivilegeEscalation"), "allowPrivilegeEscalation"),
        (lambda p, c: c["securityContext"].update(readOnlyRootFilesystem=False), "readOnlyRootFilesystem"),
        (lambda p, c: c["securityContext"].update(capabilities={"drop": ["NET_RAW"]}), "do not drop ALL"),
        (lambda p, c: p["securityContext"].pop("seccompProfile"), "seccompProfile"),
        (lambda p, c: c.update(readinessProbe={"tcpSocket": {"port": 7600}}), "not on the gRPC health"),
        (lambda p, c: c.update(livenessProbe={"httpGet": {"path": "/", "port": 9100}}), "not on /metrics"),
    ]
    for edit, expected in cases:
        found = policy_problems([broken(edit)])
        assert any(expected in p for p in found), f"rule {expected!r} missed: {found}"
    qos = broken(lambda p, c: c["resources"]["limits"].update(cpu="2"))
    qos["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] = "sequencer"
    assert any("Guaranteed" in p for p in policy_problems([qos], guaranteed=("sequencer",)))
    typo = broken(lambda p, c: c.update(imagePullPolice="Always"))
    assert any("imagePullPolice" in p for p in schema_problems([typo], ["1.33.0"])), "strict schema missed a typo"
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
           "spec": {"selector": {"app": "y"}, "ports": [{"port": 1, "targetPort": "grpc"}]}}
    assert any("matches no pod" in p for p in reference_problems([good, svc]))
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "r"},
            "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                       "resourceNames": ["missing"], "verbs": ["get"]}]}
    assert any("not rendered" in p for p in reference_problems([good, role]))
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
           "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "missing"}, "maxReplicas": 2}}
    assert any("not rendered" in p for p in reference_problems([good, hpa]))
    scaled = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "p"},
              "spec": {"scaleTargetRef": {"name": "x"},
                       "triggers": [{"type": "nats-jetstream", "metadata": {"stream": "S"}}]}}
    assert any("consumer" in p for p in schema_problems([scaled], ["1.33.0"])), "CRD schema missed a field"
    policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "n"},
              "spec": {"podSelector": {}, "ingress": [
                  {"from": [{"namespaceSelector": {}}], "ports": [{"port": 8545}]},
                  {"from": [{"podSelector": {}}], "ports": [{"port": 9100}]}]}}
    assert network_problems([policy]) == [], network_problems([policy])
    policy["spec"]["ingress"][1]["from"].append({"namespaceSelector": {}})
    assert any("every namespace" in p for p in network_problems([policy])), "open metrics missed"
    egress = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": {"name": "e", "labels": {"app.kubernetes.io/component": "sequencer"}},
              "spec": {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/28"}}],
                                                      "ports": [{"port": 443}]}]}}
    assert network_problems([egress], ("sequencer",)) == [], network_problems([egress], ("sequencer",))
    egress["spec"]["egress"][0]["to"][0]["ipBlock"]["cidr"] = "0.0.0.0/0"
    assert any("egress to anywhere" in p for p in network_problems([egress], ("sequencer",))), "open egress missed"
    egress["spec"]["egress"][0].pop("to")
    assert any("egress to anywhere" in p for p in network_problems([egress], ("sequencer",))), "egress without `to` missed"
    egress["spec"]["egress"][0]["to"] = [{"namespaceSelector": {}}]
    assert any("egress to anywhere" in p for p in network_problems([egress], ("sequencer",))), "every namespace missed"
    tls_pod = json.loads(json.dumps(good))
    tls_pod["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] = "gateway"
    pod_spec_ = tls_pod["spec"]["template"]["spec"]
    pod_spec_["containers"][0]["args"] = ["--tls-cert=/etc/verity/tls/tls.crt", "--nats-nkey-file=/etc/verity/nats/nkey",
                                           "--nats-tls-ca=/etc/verity/tls/ca.crt"]
    pod_spec_["containers"][0]["volumeMounts"] = [{"name": "tls", "mountPath": "/etc/verity/tls", "readOnly": True},
                                                  {"name": "nats-key", "mountPath": "/etc/verity/nats", "readOnly": True}]
    pod_spec_["volumes"] = [{"name": "tls", "secret": {"secretName": "verity-tls-gateway"}},
                            {"name": "nats-key", "secret": {"secretName": "verity-nats-gateway",
                                                            "items": [{"key": "nkey", "path": "nkey"}]}}]
    assert credential_problems([tls_pod]) == [], credential_problems([tls_pod])
    tls_cases = [
        (lambda p: p["containers"][0]["args"].pop(0), "no --tls-cert"),
        (lambda p: p["containers"][0]["args"].pop(1), "no --nats-nkey-file"),
        (lambda p: p["containers"][0]["args"].pop(2), "no --nats-tls-ca"),
        (lambda p: p["volumes"][1]["secret"].update(secretName="verity-nats-ingress"), "not mounted at /etc/verity/nats"),
        (lambda p: p["volumes"][0]["secret"].update(secretName="verity-tls-sequencer"), "not its own"),
        (lambda p: p["containers"][0]["volumeMounts"][0].pop("readOnly"), "mounted writable"),
        (lambda p: p["volumes"].append({"name": "key", "secret": {"secretName": "verity-keys",
                                                                   "items": [{"key": "sequencer.key", "path": "k"}]}}),
         "only its own key file"),
        (lambda p: p["volumes"].append({"name": "key", "secret": {"secretName": "verity-keys"}}), "not its own"),
    ]
    for edit, expected in tls_cases:
        doc = json.loads(json.dumps(tls_pod))
        edit(doc["spec"]["template"]["spec"])
        found = credential_problems([doc])
        assert any(expected in p for p in found), f"credential rule {expected!r} missed: {found}"
    nats = {"kind": "ConfigMap", "metadata": {"name": "nats"}, "data": {"nats.conf": (
        "port: 4222\ntls {\n  cert_file: /etc/nats/tls/tls.crt\n}\njetstream {\n}\ncluster {\n  port: 6222\n"
        "  tls {\n    verify: true\n  }\n}\n")}}
    assert nats_tls_problems([nats]) == [], nats_tls_problems([nats])
    nats_cases = [
        (lambda c: c.replace("tls {\n  cert_file", "# {\n  cert_file"), "clients in plaintext"),
        (lambda c: c.replace("verify: true", "verify: false"), "routes without mutual TLS"),
        (lambda c: c.replace("  tls {\n    verify: true\n  }\n", ""), "routes without mutual TLS"),
    ]
    for edit, expected in nats_cases:
        doc = json.loads(json.dumps(nats))
        doc["data"]["nats.conf"] = edit(doc["data"]["nats.conf"])
        found = nats_tls_problems([doc])
        assert any(expected in p for p in found), f"NATS rule {expected!r} missed: {found}"
    print(f"check.py self-test: {len(cases) + len(tls_cases) + len(nats_cases) + 9} rules each caught their broken manifest")


def nats_tls_problems(docs):
    """The bundled NATS serves its clients over TLS only (a top-level `tls` block), and a clustered
    one routes over mutual TLS (`verify: true` in the `cluster` block's `tls`)."""
    problems = []
    for doc in docs:
        if doc.get("kind") != "ConfigMap" or "nats.conf" not in (doc.get("data") or {}):
            continue
        lines = [line.split("#", 1)[0].rstrip() for line in doc["data"]["nats.conf"].splitlines()]
        if "tls {" not in lines:
            problems.append(f"{name_of(doc)}: NATS serves its clients in plaintext (no top-level tls block)")
        if "cluster {" in lines:
            block = lines[lines.index("cluster {") + 1:]
            block = block[:block.index("}")] if "}" in block else block
            if "  tls {" not in block or "    verify: true" not in block:
                problems.append(f"{name_of(doc)}: NATS routes without mutual TLS (cluster tls with verify: true)")
    return problems


# A public user nkey (of no secret anyone holds), for the stub authorization of `nats_config`.
STUB_NKEY = "UB6PTGHV3VEKBAU2YUDHY4GD3P3QB2GGIY36EYJYD27KVXDWGXFLHO2N"


def stub_certificate(directory):
    """A self-signed `tls.crt`, `tls.key` and `ca.crt` in `directory`, for `nats-server -t` to load."""
    import shutil
    import subprocess
    if shutil.which("openssl") is None:
        return "openssl is not installed (needed to check a nats.conf with TLS; apt-get install openssl)"
    directory.mkdir()
    run = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                          "-subj", "/CN=stub", "-days", "1", "-keyout", str(directory / "tls.key"),
                          "-out", str(directory / "tls.crt")], capture_output=True, text=True)
    if run.returncode != 0:
        return f"openssl could not make a stub certificate: {run.stderr.strip()}"
    shutil.copy(directory / "tls.crt", directory / "ca.crt")
    return None


def nats_config_problems(docs):
    """The bundled NATS's rendered configuration is one `nats-server -t` accepts (with a stub of
    the `auth.conf` that `verity chain init` writes when auth is on)."""
    import shutil
    import subprocess
    import tempfile
    problems = []
    server = shutil.which("nats-server") or ("/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None)
    for doc in docs:
        if doc.get("kind") != "ConfigMap" or "nats.conf" not in (doc.get("data") or {}):
            continue
        if server is None:
            return [f"{name_of(doc)}: nats-server is not installed (scripts/bootstrap.sh installs it)"]
        with tempfile.TemporaryDirectory() as tmp:
            conf = (doc["data"]["nats.conf"].replace("/data", f"{tmp}/data").replace("/var/run/nats", tmp)
                    .replace("/etc/nats/tls", f"{tmp}/tls"))
            if f"{tmp}/tls" in conf:
                problem = stub_certificate(Path(tmp, "tls"))
                if problem:
                    return [f"{name_of(doc)}: {problem}"]
            Path(tmp, "nats.conf").write_text(conf)
            Path(tmp, "auth.conf").write_text(f'authorization {{\n  users = [ {{ nkey: "{STUB_NKEY}" }} ]\n}}\n')
            run = subprocess.run([server, "-c", str(Path(tmp, "nats.conf")), "-t"], capture_output=True, text=True,
                                 env={"POD_NAME": "nats-0", "PATH": "/usr/bin:/bin"})
            if run.returncode != 0:
                problems.append(f"{name_of(doc)}: nats-server refuses its nats.conf: {(run.stderr or run.stdout).strip()}")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate")
    v.add_argument("--k8s", default="1.33.0,1.35.0", help="Kubernetes versions, comma-separated")
    v.add_argument("--guaranteed", action="append", default=[], help="a component whose pods must be Guaranteed QoS")
    v.add_argument("--narrow-egress", action="append", default=[],
                   help="a component whose NetworkPolicy may not allow egress to anywhere")
    v.add_argument("files", nargs="+")
    sub.add_parser("self-test")
    args = parser.parse_args()
    if args.command == "self-test":
        self_test()
        return
    docs = load(args.files)
    if not docs:
        sys.exit(f"{' '.join(args.files)}: no manifests")
    problems = (schema_problems(docs, args.k8s.split(","))
                + policy_problems(docs, tuple(args.guaranteed))
                + network_problems(docs, tuple(args.narrow_egress))
                + credential_problems(docs)
                + nats_config_problems(docs)
                + nats_tls_problems(docs)
                + reference_problems(docs))
    for problem in problems:
        print(problem)
    kinds = sorted({d["kind"] for d in docs})
    if problems:
        sys.exit(f"{' '.join(args.files)}: {len(problems)} problems in {len(docs)} manifests")
    print(f"{' '.join(args.files)}: {len(docs)} manifests valid ({', '.join(kinds)})")


if __name__ == "__main__":
    main()
