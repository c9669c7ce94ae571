#!/usr/bin/env python3
"""Writes deploy/helm/verity/values.schema.json (run by `make chart-schema`; the chart tests check
the committed file is what this prints). The schema is generated so the component shapes are
written once; JSON Schema draft-07, which every Helm 3 and 4 validates."""
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "verity" / "values.schema.json"

QUANTITY = {"type": ["string", "integer", "number"], "pattern": r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|Pi|M|G|T|P|E|Ei)?$",
            "description": "a Kubernetes quantity such as 500m, 2, 8Gi"}
RESOURCES = {
    "type": "object",
    "description": "container resources (requests and limits of cpu and memory)",
    "additionalProperties": False,
    "required": ["requests", "limits"],
    "properties": {
        k: {"type": "object", "additionalProperties": False,
            "required": ["cpu", "memory"],
            "properties": {"cpu": {"$ref": "#/definitions/quantity"},
                           "memory": {"$ref": "#/definitions/quantity"},
                           "ephemeral-storage": {"$ref": "#/definitions/quantity"}}}
        for k in ("requests", "limits")
    },
}
IMAGE = {"type": "object", "additionalProperties": False,
         "properties": {"repository": {"type": "string"},
                        "tag": {"$ref": "#/definitions/tag"}}}
TAG = {"type": "string", "pattern": "^$|^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$",
       "description": "an image tag (templates/validate.yaml refuses `latest`)"}
ADDRESS = {"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$", "description": "a 20-byte hex address, 0x-prefixed"}
PERSISTENCE = {"type": "object", "additionalProperties": False, "required": ["size"],
               "properties": {"storageClass": {"type": "string"}, "size": {"$ref": "#/definitions/quantity"}}}
PDB = {"type": "object", "additionalProperties": False, "properties": {"enabled": {"type": "boolean"}}}
AUTOSCALING = {"type": "object", "additionalProperties": False,
               "required": ["enabled", "minReplicas", "maxReplicas", "targetCPUUtilizationPercentage"],
               "properties": {"enabled": {"type": "boolean"},
                              "minReplicas": {"type": "integer", "minimum": 1},
                              "maxReplicas": {"type": "integer", "minimum": 1},
                              "targetCPUUtilizationPercentage": {"type": "integer", "minimum": 1, "maximum": 100}}}


def pod(extra=None, required=()):
    """The fields every pod-running component has, plus its own."""
    props = {
        "image": {"$ref": "#/definitions/image"},
        "resources": {"$ref": "#/definitions/resources"},
        "nodeSelector": {"type": "object", "additionalProperties": {"type": "string"}},
        "affinity": {"type": "object"},
        "tolerations": {"type": "array", "items": {"type": "object"}},
        "topologySpreadConstraints": {"type": "array", "items": {"type": "object"}},
        "podSecurityContext": {"type": "object"},
        "securityContext": {"type": "object"},
        "extraArgs": {"type": "array", "items": {"type": "string", "pattern": "^--"},
                      "description": "extra command-line flags, each starting with --"},
        "extraEnv": {"type": "array", "items": {"type": "object", "required": ["name"]}},
        "pdb": {"$ref": "#/definitions/pdb"},
    }
    props.update(extra or {})
    return {"type": "object", "additionalProperties": False,
            "required": ["resources", *required], "properties": props}


schema = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Values of the Verity chart",
    "type": "object",
    "additionalProperties": False,
    "definitions": {"quantity": QUANTITY, "resources": RESOURCES, "image": IMAGE, "tag": TAG, "address": ADDRESS,
                    "persistence": PERSISTENCE, "pdb": PDB, "autoscaling": AUTOSCALING},
    "properties": {
        "global": {"type": "object"},
        "nameOverride": {"type": "string", "maxLength": 30},
        "fullnameOverride": {"type": "string", "maxLength": 30},
        "image": {"type": "object", "additionalProperties": False, "required": ["registry"],
                  "properties": {"registry": {"type": "string", "minLength": 1},
                                 "tag": {"$ref": "#/definitions/tag"},
                                 "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]}}},
        "imagePullSecrets": {"type": "array", "items": {"type": "object", "required": ["name"]}},
        "chain": {"type": "object", "additionalProperties": False, "required": ["configMap", "keysSecret"],
                  "properties": {"configMap": {"type": "string", "minLength": 1},
                                 "keysSecret": {"type": "string", "minLength": 1}}},
        "tls": {"type": "object", "additionalProperties": False,
                "required": ["enabled", "secretPrefix", "healthPort"],
                "properties": {
                    "enabled": {"type": "boolean"},
                    "secretPrefix": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$"},
                    "healthPort": {"type": "integer", "minimum": 1024, "maximum": 65535,
                                   "not": {"enum": [7100, 7200, 7300, 7500, 7600, 7700, 8545]}},
                    "certManager": {"type": "object", "additionalProperties": False,
                                    "properties": {
                                        "enabled": {"type": "boolean"},
                                        "issuerRef": {"type": "object", "additionalProperties": False,
                                                      "required": ["name"],
                                                      "properties": {"name": {"type": "string", "minLength": 1},
                                                                     "kind": {"enum": ["Issuer", "ClusterIssuer"]},
                                                                     "group": {"type": "string"}}},
                                        "duration": {"type": "string", "pattern": "^[0-9]+h$"},
                                        "renewBefore": {"type": "string", "pattern": "^[0-9]+h$"}}}}},
        "proving": {"type": "object", "additionalProperties": False,
                    "properties": {
                        "enabled": {"type": "boolean"},
                        "finalityQuorum": {"type": "integer", "minimum": 1},
                        "proofQuorum": {"type": "integer", "minimum": 1},
                        "stepsPerProof": {"type": ["integer", "null"], "minimum": 1},
                        "largerSegments": {
                            "type": "array",
                            "items": {"type": "integer", "minimum": 2},
                            "uniqueItems": True,
                        },
                        "kzgParams": {"type": "object", "additionalProperties": False,
                                      "properties": {"volume": {"type": "object"},
                                                     "file": {"type": "string", "minLength": 1}}}}},
        "telemetry": {"type": "object", "additionalProperties": False,
                      "properties": {"logFormat": {"enum": ["json", "text"]},
                                     "logLevel": {"type": "string", "minLength": 1},
                                     "otlpEndpoint": {"type": "string"},
                                     "metricsPort": {"type": "integer", "minimum": 1024, "maximum": 65535,
                                                     "not": {"enum": [7100, 7200, 7300, 7500, 7600, 8545]}}}},
        "podSecurityContext": {"type": "object"},
        "securityContext": {"type": "object"},
        "nats": {"type": "object", "additionalProperties": False, "properties": {
            **pod()["properties"],
            "enabled": {"type": "boolean"},
            "url": {"type": "string", "pattern": "^$|^(nats|tls)://"},
            "monitoringEndpoint": {"type": "string"},
            "replicas": {"enum": [1, 3], "description": "1, or 3 for a JetStream cluster"},
            "auth": {"type": "object", "additionalProperties": False,
                     "required": ["enabled", "configMap", "secretPrefix"],
                     "properties": {"enabled": {"type": "boolean"},
                                    "configMap": {"type": "string", "minLength": 1},
                                    "secretPrefix": {"type": "string",
                                                     "pattern": "^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$"}}},
            "tls": {"type": "object", "additionalProperties": False, "required": ["enabled"],
                    "properties": {"enabled": {"type": "boolean"}}},
            "image": {"type": "object", "additionalProperties": False, "required": ["repository", "tag"],
                      "properties": {"repository": {"type": "string"},
                                     "tag": {"$ref": "#/definitions/tag"},
                                     "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]}}},
            "jetstream": {"type": "object", "additionalProperties": False,
                          "properties": {"maxFileStore": {"type": "string", "pattern": "^[0-9]+(Mi|Gi|Ti)$"},
                                         "maxMemoryStore": {"type": "string", "pattern": "^[0-9]+(Mi|Gi|Ti)$"},
                                         "syncInterval": {"type": "string", "pattern": "^$|^always$|^[0-9]+(ms|s|m)$"}}},
            "persistence": {"$ref": "#/definitions/persistence"}}},
        "sequencer": pod({
            "hostNetwork": {"type": "boolean"},
            "miniBlockIntervalMs": {"type": "integer", "minimum": 1},
            "blockIntervalMs": {"type": "integer", "minimum": 1},
            "executionThreads": {"type": ["integer", "null"], "minimum": 1},
            "feeRecipient": {"anyOf": [{"const": ""}, {"$ref": "#/definitions/address"}]},
            "lease": {"type": "object", "additionalProperties": False,
                      "properties": {"renewMs": {"type": "integer", "minimum": 1},
                                     "ttlMs": {"type": "integer", "minimum": 2}}},
            "persistence": {"$ref": "#/definitions/persistence"},
            "terminationGracePeriodSeconds": {"type": "integer", "minimum": 1},
            "standby": {"type": "object", "additionalProperties": False,
                        "properties": {"enabled": {"type": "boolean"}}},
        }, required=("persistence",)),
        "ingress": pod({"replicas": {"type": "integer", "minimum": 1},
                        "autoscaling": {"$ref": "#/definitions/autoscaling"}}),
        "gateway": pod({
            "replicas": {"type": "integer", "minimum": 1},
            "autoscaling": {"$ref": "#/definitions/autoscaling"},
            "service": {"type": "object", "additionalProperties": False, "properties": {
                "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}}}},
            "k8sIngress": {"type": "object", "additionalProperties": False, "properties": {
                "enabled": {"type": "boolean"}, "className": {"type": "string"},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                "host": {"type": "string", "minLength": 1}, "tls": {"type": "array"}}},
        }),
        "replicas": {"type": "object", "additionalProperties": False, "properties": {
            "image": {"$ref": "#/definitions/image"},
            "full": pod({"replicas": {"type": "integer", "minimum": 1},
                         "persistence": {"$ref": "#/definitions/persistence"}}, required=("persistence",)),
            "witness": pod({"persistence": {"$ref": "#/definitions/persistence"}}, required=("persistence",)),
            "verifier": pod({"persistence": {"$ref": "#/definitions/persistence"}}, required=("persistence",)),
        }},
        "prover": pod({
            "pools": {"type": "array", "minItems": 1, "uniqueItems": True,
                      "items": {"type": "string", "pattern": "^[a-z0-9]{1,8}$"},
                      "description": "prover pool names, one key each (prover-<pool>.key)"},
            "ackWaitSecs": {"type": "integer", "minimum": 1},
            "autoscaling": {"type": "object", "additionalProperties": False,
                            "required": ["mode", "minReplicas", "maxReplicas"],
                            "properties": {
                                "mode": {"enum": ["auto", "keda", "verity", "fixed"],
                                         "description": "auto (KEDA when installed, else Verity's autoscaler), keda, verity or fixed"},
                                "minReplicas": {"type": "integer", "minimum": 0},
                                "maxReplicas": {"type": "integer", "minimum": 1},
                                "lagPerWorker": {"type": "integer", "minimum": 1},
                                "pollingIntervalSeconds": {"type": "integer", "minimum": 1},
                                "cooldownPeriodSeconds": {"type": "integer", "minimum": 0},
                                "latencyTargetSeconds": {"type": "integer", "minimum": 1},
                                "secondsPerJob": {"type": "number", "exclusiveMinimum": 0},
                                "scaleUpCooldownSeconds": {"type": "integer", "minimum": 0}}},
        }),
        "autoscaler": pod(),
        "busInit": pod({
            "waitSeconds": {"type": "integer", "minimum": 1},
            "streamReplicas": {"anyOf": [{"const": ""}, {"enum": [1, 3, 5]}]},
            "provingReplicas": {"anyOf": [{"const": ""}, {"enum": [1, 3, 5]}]},
            "backoffLimit": {"type": "integer", "minimum": 0},
            "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
        }, required=("waitSeconds",)),
        "metrics": {"type": "object", "additionalProperties": False, "properties": {
            "serviceMonitor": {"type": "object", "additionalProperties": False, "properties": {
                "enabled": {"type": "boolean"},
                "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m)$"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}}}},
            "dashboards": {"type": "object", "additionalProperties": False, "properties": {
                "enabled": {"type": "boolean"},
                "label": {"type": "string", "minLength": 1},
                "labelValue": {"type": "string"},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}}}},
            "prometheusRule": {"type": "object", "additionalProperties": False, "properties": {
                "enabled": {"type": "boolean"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "runbookBaseUrl": {"type": "string", "pattern": "^https?://"},
                "sequencerStalledFor": {"type": "string", "pattern": "^[0-9]+(s|m|h)$"},
                "safeLagBlocks": {"type": "integer", "minimum": 1},
                "proverBacklogJobs": {"type": "integer", "minimum": 0},
                "replicaBehindEvents": {"type": "integer", "minimum": 1},
                "streamFill": {"type": "number", "exclusiveMinimum": 0, "maximum": 1}}}}},
        "networkPolicy": {"type": "object", "additionalProperties": False, "properties": {
            "enabled": {"type": "boolean"},
            "metricsFrom": {"type": "array", "items": {"type": "object"}},
            "natsMonitoringFrom": {"type": "array", "items": {"type": "object"}},
            "externalNats": {"type": "array", "items": {"type": "object"}},
            "kubeApi": {"type": "array", "items": {"type": "object"}},
            "sequencerNodes": {"type": "array", "items": {"type": "object"}},
            "otlp": {"type": "array", "items": {"type": "object"}},
            "rpcFrom": {"type": "array", "items": {"type": "object"}}}},
    },
}

text = json.dumps(schema, indent=2) + "\n"
if len(sys.argv) > 1 and sys.argv[1] == "--check":
    if OUT.read_text() != text:
        sys.exit(f"{OUT} is not what {__file__} writes: run `make chart-schema`")
else:
    OUT.write_text(text)
