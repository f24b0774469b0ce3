#!/usr/bin/env python3
"""Tests of the skupper Helm chart, without a cluster.

    python3 charts/tests/test_chart.py        # from anywhere; needs charts/requirements-test.txt
    python3 charts/tests/run_in_venv.py target/tmp/chart-venv charts/tests/test_chart.py   # installs them

- lints the chart with Helm's own linter (helm-python-sdk binds Helm's Go SDK: no helm binary);
- renders it offline for a matrix of values and validates every rendered object against the
  Kubernetes 1.30 OpenAPI schemas (kubernetes-validate, strict: unknown fields are errors);
  the OpenShift Route is checked against a strict schema of its own (below);
- checks the structure of what was rendered (deployments, containers, ports, probes, security
  contexts, resources, services per ingress, RBAC, network policies; with console.enabled the
  console container, its Secret and TLS volumes, config-sync's --serve-records, Service
  skupper-router-local and the console's Ingress or Route);
- checks that values.schema.json refuses bad values;
- checks that the console password survives an upgrade (Helm's `lookup`, answered by a fake
  API server on 127.0.0.1 that serves only what `lookup` asks for).

Prints one line per check and ends with "N passed, N failed"; exits 1 on any failure, 2 when a
package is missing.
"""

from __future__ import annotations

import base64
import copy
import http.server
import json
import os
import re
import sys
import threading
import time
import traceback
from typing import Any, Callable

try:
    import helm_python as helm
    import jsonschema
    import kubernetes_validate
    import yaml
except ImportError as missing:  # run_in_venv.py installs these: a missing one is a failure, not a skip.
    print(f"missing Python package: {missing}; run through charts/tests/run_in_venv.py, "
          "or pip install -r charts/requirements-test.txt")
    sys.exit(2)

HERE = os.path.dirname(os.path.abspath(__file__))
CHART = os.path.normpath(os.path.join(HERE, "..", "skupper"))
RELEASE = "skupper"
NAMESPACE = "west"
KUBE_VERSION = "1.30"

# Kinds that exist outside namespaces: none of these may ever be rendered.
CLUSTER_SCOPED = {
    "APIService",
    "CertificateSigningRequest",
    "ClusterRole",
    "ClusterRoleBinding",
    "CSIDriver",
    "CSINode",
    "CustomResourceDefinition",
    "FlowSchema",
    "IngressClass",
    "MutatingWebhookConfiguration",
    "Namespace",
    "Node",
    "PersistentVolume",
    "PriorityClass",
    "PriorityLevelConfiguration",
    "RuntimeClass",
    "StorageClass",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "ValidatingWebhookConfiguration",
    "VolumeAttachment",
}
# Everything the chart may render (all namespaced).
ALLOWED_KINDS = {
    "ConfigMap",
    "Deployment",
    "Ingress",
    "NetworkPolicy",
    "Role",
    "RoleBinding",
    "Route",
    "Secret",
    "Service",
    "ServiceAccount",
}
ROUTER_EXPOSED = {"inter-router": 55671, "edge": 45671, "claims": 8081}
SERVICE_TYPE = {
    "loadbalancer": "LoadBalancer",
    "nodeport": "NodePort",
    "route": "ClusterIP",
    "ingress": "ClusterIP",
    "none": "ClusterIP",
}
ALL_VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}

# route.openshift.io/v1 Route: the fields of OpenShift's API (4.x), strict.
ROUTE_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "route.openshift.io/v1"},
        "kind": {"const": "Route"},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["to"],
            "properties": {
                "host": {"type": "string"},
                "subdomain": {"type": "string"},
                "path": {"type": "string"},
                "to": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["kind", "name"],
                    "properties": {
                        "kind": {"const": "Service"},
                        "name": {"type": "string"},
                        "weight": {"type": "integer", "minimum": 0, "maximum": 256},
                    },
                },
                "alternateBackends": {"type": "array"},
                "port": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["targetPort"],
                    "properties": {"targetPort": {"type": ["string", "integer"]}},
                },
                "tls": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["termination"],
                    "properties": {
                        "termination": {"enum": ["edge", "passthrough", "reencrypt"]},
                        "insecureEdgeTerminationPolicy": {"enum": ["Allow", "None", "Redirect"]},
                        "certificate": {"type": "string"},
                        "key": {"type": "string"},
                        "caCertificate": {"type": "string"},
                        "destinationCACertificate": {"type": "string"},
                    },
                },
                "wildcardPolicy": {"enum": ["None", "Subdomain"]},
            },
        },
    },
}


class Failed(Exception):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise Failed(message)


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: extra's keys win."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_chart() -> helm.Chart:
    return helm.Chart.load(CHART)


def render(values: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """Render offline; returns the objects and the NOTES.txt text."""
    with load_chart() as chart:
        manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return parse(manifests)


def parse(manifests: dict[str, str]) -> tuple[list[dict[str, Any]], str]:
    objects: list[dict[str, Any]] = []
    notes = ""
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc is None:
                continue
            check(isinstance(doc, dict), f"{path}: a document is not a mapping")
            doc["__template__"] = path
            objects.append(doc)
    return objects, notes


def strip(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != "__template__"}


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = find(objects, kind, name)
    check(len(found) == 1, f"expected one {kind} {name}, found {len(found)}")
    return found[0]


def by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in items}


# --- validation ---------------------------------------------------------------------------


def validate_objects(objects: list[dict[str, Any]]) -> None:
    route_validator = jsonschema.Draft7Validator(ROUTE_SCHEMA)
    for obj in objects:
        what = f"{obj['kind']}/{obj['metadata']['name']} ({obj['__template__']})"
        data = strip(obj)
        if obj["apiVersion"] == "route.openshift.io/v1":
            errors = sorted(route_validator.iter_errors(data), key=lambda e: list(e.path))
            check(not errors, f"{what}: " + "; ".join(e.message for e in errors))
            continue
        try:
            kubernetes_validate.validate(data, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            raise Failed(f"{what}: {path}: {e.message}") from None
        except kubernetes_validate.SchemaNotFoundError as e:
            raise Failed(f"{what}: {e.message}") from None


# --- structure ----------------------------------------------------------------------------


def expected_image(values: dict[str, Any], repository: str) -> str:
    registry = values["image"]["registry"].rstrip("/")
    tag = values["image"]["tag"] or "0.1.0"
    return f"{registry}/{repository}:{tag}" if registry else f"{repository}:{tag}"


def check_scope(objects: list[dict[str, Any]]) -> None:
    seen: set[tuple[str, str]] = set()
    for obj in objects:
        kind, name = obj["kind"], obj["metadata"]["name"]
        check(kind not in CLUSTER_SCOPED, f"cluster-scoped {kind}/{name} rendered")
        check(kind in ALLOWED_KINDS, f"unexpected kind {kind}/{name}")
        check(
            obj["metadata"].get("namespace") == NAMESPACE,
            f"{kind}/{name} is not in the release namespace {NAMESPACE}",
        )
        check((kind, name) not in seen, f"{kind}/{name} rendered twice")
        seen.add((kind, name))
        labels = obj["metadata"].get("labels", {})
        check(labels.get("app.kubernetes.io/part-of") == "skupper", f"{kind}/{name}: part-of label")
        check(labels.get("app.kubernetes.io/instance") == RELEASE, f"{kind}/{name}: instance label")


def check_pod_security(name: str, pod: dict[str, Any], values: dict[str, Any]) -> None:
    sc = pod.get("securityContext", {})
    want = values["securityContext"]
    check(sc.get("runAsNonRoot") is True, f"{name}: pod runAsNonRoot")
    check(sc.get("runAsUser") == want["runAsUser"], f"{name}: pod runAsUser")
    check(sc.get("runAsGroup") == want["runAsGroup"], f"{name}: pod runAsGroup")
    check(sc.get("fsGroup") == want["fsGroup"], f"{name}: pod fsGroup")
    check(sc.get("seccompProfile") == {"type": "RuntimeDefault"}, f"{name}: pod seccompProfile")
    check(not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"),
          f"{name}: host namespaces")
    for volume in pod.get("volumes", []):
        check("hostPath" not in volume, f"{name}: hostPath volume {volume['name']}")
    for container in pod.get("initContainers", []) + pod["containers"]:
        what = f"{name}/{container['name']}"
        csc = container.get("securityContext", {})
        check(csc.get("allowPrivilegeEscalation") is False, f"{what}: allowPrivilegeEscalation")
        check(csc.get("readOnlyRootFilesystem") is True, f"{what}: readOnlyRootFilesystem")
        check(csc.get("capabilities", {}).get("drop") == ["ALL"], f"{what}: capabilities drop ALL")
        check(not csc.get("capabilities", {}).get("add"), f"{what}: capabilities added")
        check(not csc.get("privileged"), f"{what}: privileged")
        check(csc.get("runAsUser", 1) != 0, f"{what}: runs as root")
        check(container.get("imagePullPolicy") == values["image"]["pullPolicy"],
              f"{what}: imagePullPolicy {container.get('imagePullPolicy')}")


def check_resources(what: str, container: dict[str, Any], want: dict[str, Any]) -> None:
    res = container.get("resources", {})
    requests = res.get("requests", {})
    check("cpu" in requests and "memory" in requests, f"{what}: cpu and memory requests")
    check(requests == want["requests"], f"{what}: requests {requests} != {want['requests']}")
    if want.get("limits"):
        check(res.get("limits") == want["limits"], f"{what}: limits {res.get('limits')}")
    else:
        check("limits" not in res, f"{what}: limits rendered though none were given")


def check_scheduling(what: str, pod: dict[str, Any], component: dict[str, Any]) -> None:
    for field in ("nodeSelector", "tolerations", "affinity"):
        want = component.get(field)
        if want:
            check(pod.get(field) == want, f"{what}: {field} {pod.get(field)} != {want}")
        else:
            check(field not in pod, f"{what}: {field} rendered though empty")


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in container.get("env", []):
        if "value" in item:
            out[item["name"]] = item["value"]
        else:
            out[item["name"]] = ("fieldRef", item["valueFrom"]["fieldRef"]["fieldPath"])
    return out


def ports_of(container: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


def check_deployments(objects: list[dict[str, Any]], values: dict[str, Any]) -> None:
    deployments = find(objects, "Deployment")
    check(
        sorted(d["metadata"]["name"] for d in deployments)
        == ["skupper-router", "skupper-service-controller"],
        f"deployments: {[d['metadata']['name'] for d in deployments]}",
    )
    check(not find(objects, "StatefulSet") and not find(objects, "DaemonSet"), "other workloads")
    site_name = values["site"]["name"] or NAMESPACE

    # skupper-router: router + config-sync.
    router_dep = one(objects, "Deployment", "skupper-router")
    labels = router_dep["metadata"]["labels"]
    for key, value in {
        "app.kubernetes.io/name": "skupper-router",
        "app.kubernetes.io/part-of": "skupper",
        "skupper.io/component": "router",
        "application": "skupper-router",
    }.items():
        check(labels.get(key) == value, f"skupper-router label {key}={labels.get(key)}")
    check(router_dep["spec"]["replicas"] == values["router"]["replicas"], "router replicas")
    selector = router_dep["spec"]["selector"]["matchLabels"]
    pod_meta = router_dep["spec"]["template"]["metadata"]
    check(selector.items() <= pod_meta["labels"].items(), "router selector does not match its pods")
    annotations = pod_meta.get("annotations", {})
    for key, value in values["router"]["podAnnotations"].items():
        check(annotations.get(key) == value, f"router pod annotation {key}")
    check(annotations.get("prometheus.io/port") == "9090", "router prometheus annotation")
    check(re.fullmatch(r"[0-9a-f]{64}", annotations.get("checksum/router-config", "")) is not None,
          "router pods roll when their configuration changes")
    pod = router_dep["spec"]["template"]["spec"]
    check(pod.get("serviceAccountName") == "skupper-router", "router serviceAccountName")
    check([c["name"] for c in pod["containers"]] == ["router", "config-sync"],
          f"router containers {[c['name'] for c in pod['containers']]}")
    check_pod_security("skupper-router", pod, values)
    check_scheduling("skupper-router", pod, values["router"])
    volumes = by_name(pod["volumes"])
    check(volumes.get("run", {}).get("emptyDir") == {}, "router volume run: emptyDir")
    config_volume = [v for v in pod["volumes"] if "configMap" in v]
    check(len(config_volume) == 1 and config_volume[0]["configMap"]["name"] == "skupper-router-config",
          "router config volume")
    containers = by_name(pod["containers"])

    router = containers["router"]
    check(router["image"] == expected_image(values, values["router"]["image"]["repository"]),
          f"router image {router['image']}")
    check(router["command"] == ["van-router", "--config", "/etc/van/router.yaml"], "router command")
    env = env_of(router)
    check(env.get("VAN_ROUTER_ID") == ("fieldRef", "metadata.name"), "VAN_ROUTER_ID")
    check(env.get("VAN_SITE_ID") == ("fieldRef", "metadata.namespace"), "VAN_SITE_ID")
    check(ports_of(router) == {"inter-router": 55671, "edge": 45671, "metrics": 9090},
          f"router ports {ports_of(router)}")
    for probe in ("livenessProbe", "readinessProbe"):
        get = router.get(probe, {}).get("httpGet", {})
        check(get.get("path") == "/healthz" and get.get("port") in (9090, "metrics"),
              f"router {probe}: {router.get(probe)}")
    mounts = {m["mountPath"]: m for m in router["volumeMounts"]}
    check(mounts.get("/etc/van", {}).get("name") == config_volume[0]["name"]
          and mounts["/etc/van"].get("readOnly") is True, "router mounts its config read-only")
    check(mounts.get("/var/run/van", {}).get("name") == "run", "router mounts run")
    check_resources("skupper-router/router", router, values["router"]["resources"])

    sync = containers["config-sync"]
    check(sync["image"] == expected_image(values, values["configSync"]["image"]["repository"]),
          f"config-sync image {sync['image']}")
    # With the console, config-sync also passes the router's records on (health port, API
    # token); never without it.
    check(sync["command"] == [
        "van-config-sync", "--controller", "skupper:8080",
        "--controller-token-file", "/var/run/secrets/skupper/api/token", "--router",
        "unix:/var/run/van/router.sock", "--claims-forward", "0.0.0.0:8081=skupper:8081",
        "--health-listen", "0.0.0.0:9091",
    ] + (["--serve-records"] if values["console"]["enabled"] else []),
        f"config-sync command {sync['command']}")
    check(ports_of(sync) == {"claims": 8081, "health": 9091}, f"config-sync ports {ports_of(sync)}")
    # Ready once the router holds the desired configuration: gRPC health on --health-listen.
    ready = sync.get("readinessProbe", {})
    check(ready.get("grpc", {}).get("port") == 9091 and set(ready) - {"grpc"} <= {
              "periodSeconds", "failureThreshold", "initialDelaySeconds", "timeoutSeconds"},
          f"config-sync readinessProbe is gRPC on 9091: {ready}")
    check("livenessProbe" not in sync, "config-sync has no liveness probe (a lost router is "
          "no reason to restart it)")
    check(env_of(sync) == {"VAN_SECRETS_NAMESPACE": ("fieldRef", "metadata.namespace"),
                           "VAN_ROUTER_PEERS": "skupper-router-peers:55671",
                           "POD_IP": ("fieldRef", "status.podIP")},
          f"config-sync env {env_of(sync)}")
    sync_mounts = {m["mountPath"]: m for m in sync["volumeMounts"]}
    check(set(sync_mounts) == {"/var/run/van", "/var/run/secrets/skupper/api"}
          and sync_mounts["/var/run/van"]["name"] == "run",
          f"config-sync mounts run and the API token only: {set(sync_mounts)}")
    check_api_token_mount("skupper-router/config-sync", pod, sync_mounts)
    check("/var/run/secrets/skupper/api" not in mounts, "the router container gets no API token")
    check_resources("skupper-router/config-sync", sync, values["configSync"]["resources"])

    # skupper-service-controller: controller.
    ctl_dep = one(objects, "Deployment", "skupper-service-controller")
    labels = ctl_dep["metadata"]["labels"]
    check(labels.get("skupper.io/component") == "controller", "controller component label")
    check(labels.get("app.kubernetes.io/part-of") == "skupper", "controller part-of label")
    check(ctl_dep["spec"]["replicas"] == 1, "one controller")
    pod_meta = ctl_dep["spec"]["template"]["metadata"]
    check(ctl_dep["spec"]["selector"]["matchLabels"].items() <= pod_meta["labels"].items(),
          "controller selector does not match its pod")
    for key, value in values["controller"]["podAnnotations"].items():
        check(pod_meta.get("annotations", {}).get(key) == value, f"controller annotation {key}")
    pod = ctl_dep["spec"]["template"]["spec"]
    check(pod.get("serviceAccountName") == "skupper-service-controller",
          "controller serviceAccountName")
    want_containers = ["controller", "console"] if values["console"]["enabled"] else ["controller"]
    check([c["name"] for c in pod["containers"]] == want_containers,
          f"controller pod containers {[c['name'] for c in pod['containers']]}")
    check_pod_security("skupper-service-controller", pod, values)
    check_scheduling("skupper-service-controller", pod, values["controller"])
    ctl = pod["containers"][0]
    check(ctl["image"] == expected_image(values, values["controller"]["image"]["repository"]),
          f"controller image {ctl['image']}")
    check(ctl["command"] == ["van-controller", "--platform", "kubernetes", "--api-token-file",
                             "/var/run/secrets/skupper/api/token"], "controller command")
    ctl_mounts = {m["mountPath"]: m for m in ctl.get("volumeMounts", [])}
    check(set(ctl_mounts) == {"/var/run/secrets/skupper/api"},
          f"controller mounts the API token only: {set(ctl_mounts)}")
    check_api_token_mount("skupper-service-controller", pod, ctl_mounts)
    env = env_of(ctl)
    check(env == {
        "POD_NAMESPACE": ("fieldRef", "metadata.namespace"),
        "SKUPPER_SITE_NAME": site_name,
        "SKUPPER_ROUTER_MODE": values["router"]["mode"],
        "SKUPPER_INGRESS": values["ingress"],
        "SKUPPER_INGRESS_HOST": values["ingressHost"],
    }, f"controller env {env}")
    # The console's port belongs to the console container (check_console_container).
    check(ports_of(ctl) == {"api": 8080, "claims": 8081}, f"controller ports {ports_of(ctl)}")
    startup = ctl.get("startupProbe", {})
    # The controller may wait 120 s for a load balancer's address before it serves.
    check(startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3) > 120,
          f"controller startupProbe outlasts the load-balancer wait: {startup}")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        check(ctl.get(probe, {}).get("grpc", {}).get("port") == 8080,
              f"controller {probe} is not gRPC on 8080: {ctl.get(probe)}")
        check("httpGet" not in ctl[probe] and "tcpSocket" not in ctl[probe], f"controller {probe}")
    check_resources("skupper-service-controller/controller", ctl, values["controller"]["resources"])


def check_configmaps(objects: list[dict[str, Any]], values: dict[str, Any]) -> None:
    cm = one(objects, "ConfigMap", "skupper-router-config")
    check(set(cm["data"]) == {"router.yaml"}, "skupper-router-config keys")
    conf = yaml.safe_load(cm["data"]["router.yaml"])
    check(conf == {
        "router": {"id": "set-by-env", "site": "set-by-env", "mode": values["router"]["mode"]},
        "admin": {"listen": "unix:/var/run/van/router.sock"},
        "metrics": {"listen": "0.0.0.0:9090"},
        "log": {"format": "json", "level": values["router"]["logLevel"]},
    }, f"router.yaml {conf}")

    site = one(objects, "ConfigMap", "skupper-site")
    check(site["data"] == {
        "name": values["site"]["name"] or NAMESPACE,
        "router-mode": values["router"]["mode"],
        "ingress": values["ingress"],
        "ingress-host": values["ingressHost"],
        "console": "true" if values["console"]["enabled"] else "false",
        "console-authentication": values["console"]["auth"],
        "service-sync": "true",
    }, f"skupper-site {site['data']}")


def pod_ports(objects: list[dict[str, Any]], selector: dict[str, str]) -> dict[str, int]:
    """Named container ports of the pods a Service selector picks."""
    ports: dict[str, int] = {}
    matched = 0
    for dep in find(objects, "Deployment"):
        labels = dep["spec"]["template"]["metadata"]["labels"]
        if selector.items() <= labels.items():
            matched += 1
            for container in dep["spec"]["template"]["spec"]["containers"]:
                ports.update(ports_of(container))
    check(matched == 1, f"selector {selector} picks {matched} deployments")
    return ports


def check_services(objects: list[dict[str, Any]], values: dict[str, Any]) -> None:
    want_services = ["skupper", "skupper-router", "skupper-router-peers"]
    if values["console"]["enabled"]:
        want_services.append("skupper-router-local")
    check(sorted(s["metadata"]["name"] for s in find(objects, "Service")) == sorted(want_services),
          f"services {[s['metadata']['name'] for s in find(objects, 'Service')]}")
    peers = one(objects, "Service", "skupper-router-peers")
    check(peers["spec"].get("clusterIP") == "None" and peers["spec"].get("publishNotReadyAddresses"),
          f"skupper-router-peers is headless and lists pods before they are ready: {peers['spec']}")
    check(peers["spec"]["selector"].get("skupper.io/component") == "router", "peers selector")
    check([(p["name"], p["port"]) for p in peers["spec"]["ports"]] == [("inter-router", 55671)],
          f"skupper-router-peers ports {peers['spec']['ports']}")
    ingress = values["ingress"]
    svc = one(objects, "Service", "skupper-router")
    check(svc["spec"]["type"] == SERVICE_TYPE[ingress],
          f"skupper-router type {svc['spec']['type']} for ingress {ingress}")
    ports = {p["name"]: p["port"] for p in svc["spec"]["ports"]}
    # Only what other sites need: never the records (9091), which only the console may read.
    check(ports == ROUTER_EXPOSED, f"skupper-router ports {ports}")
    check(all(p["targetPort"] != "health" and p["port"] != 9091 for p in svc["spec"]["ports"]),
          "skupper-router exposes config-sync's health port")
    check(svc["spec"]["selector"].get("skupper.io/component") == "router", "router selector")
    targets = pod_ports(objects, svc["spec"]["selector"])
    for port in svc["spec"]["ports"]:
        check(targets.get(port["targetPort"]) == port["port"],
              f"skupper-router port {port['name']}: target {port['targetPort']} not in its pods")

    svc = one(objects, "Service", "skupper")
    check(svc["spec"].get("type", "ClusterIP") == "ClusterIP", "skupper Service type")
    ports = {p["name"]: p["port"] for p in svc["spec"]["ports"]}
    want = {"api": 8080, "claims": 8081}
    if values["console"]["enabled"]:
        want["console"] = 8010
    check(ports == want, f"skupper ports {ports}")
    check(svc["spec"]["selector"].get("skupper.io/component") == "controller", "skupper selector")
    targets = pod_ports(objects, svc["spec"]["selector"])
    for port in svc["spec"]["ports"]:
        check(targets.get(port["targetPort"]) == port["port"],
              f"skupper port {port['name']}: target {port['targetPort']} not in its pod")

    if values["console"]["enabled"]:
        local = one(objects, "Service", "skupper-router-local")
        spec = local["spec"]
        check(spec.get("type", "ClusterIP") == "ClusterIP" and "clusterIP" not in spec,
              f"skupper-router-local is a plain ClusterIP Service: {spec}")
        check(local["metadata"]["labels"].get("skupper.io/component") == "router",
              "skupper-router-local labels")
        check(spec["selector"] == one(objects, "Service", "skupper-router")["spec"]["selector"],
              f"skupper-router-local selects the router pods: {spec['selector']}")
        check(spec["ports"] == [{"name": "records", "port": 9091, "targetPort": "health",
                                 "protocol": "TCP", "appProtocol": "grpc"}],
              f"skupper-router-local ports {spec['ports']}")
        # The target is config-sync's --health-listen port, where --serve-records answers.
        check(pod_ports(objects, spec["selector"]).get("health") == 9091,
              "skupper-router-local: target health not in the router pods")


def check_ingress_objects(objects: list[dict[str, Any]], values: dict[str, Any]) -> None:
    """The router's Routes/Ingress for other sites (the console's are check_console_exposure's)."""
    ingress = values["ingress"]
    routes = [r for r in find(objects, "Route") if r["metadata"]["name"] != "skupper-console"]
    ingresses = [i for i in find(objects, "Ingress") if i["metadata"]["name"] != "skupper-console"]
    if ingress == "route":
        check(len(routes) == len(ROUTER_EXPOSED), f"{len(routes)} Routes")
        targets = set()
        for route in routes:
            spec = route["spec"]
            check(route["apiVersion"] == "route.openshift.io/v1", "Route apiVersion")
            check(spec["to"] == {"kind": "Service", "name": "skupper-router", "weight": 100},
                  f"Route to {spec['to']}")
            check(spec["tls"]["termination"] == "passthrough", "Route TLS passthrough")
            name = spec["port"]["targetPort"]
            targets.add(name)
            if values["ingressHost"]:
                check(spec.get("host") == f"{name}.{values['ingressHost']}", f"Route host {spec}")
            else:
                check("host" not in spec, "Route host without ingressHost")
        check(targets == set(ROUTER_EXPOSED), f"Route ports {targets}")
    else:
        check(not routes, f"Routes rendered for ingress {ingress}")
    if ingress == "ingress":
        check(len(ingresses) == 1, f"{len(ingresses)} Ingresses")
        ing = ingresses[0]
        check(ing["metadata"]["annotations"].get("nginx.ingress.kubernetes.io/ssl-passthrough")
              == "true", "ssl-passthrough annotation")
        hosts = {}
        for rule in ing["spec"]["rules"]:
            paths = rule["http"]["paths"]
            check(len(paths) == 1, "one path per host")
            backend = paths[0]["backend"]["service"]
            check(backend["name"] == "skupper-router", f"Ingress backend {backend}")
            hosts[rule["host"]] = backend["port"]["name"]
        want = {f"{name}.{values['ingressHost']}": name for name in ROUTER_EXPOSED}
        check(hosts == want, f"Ingress hosts {hosts}")
    else:
        check(not ingresses, f"Ingress rendered for ingress {ingress}")


def check_rbac(objects: list[dict[str, Any]], values: dict[str, Any]) -> None:
    accounts = sorted(a["metadata"]["name"] for a in find(objects, "ServiceAccount"))
    check(accounts == ["skupper-router", "skupper-service-controller"], f"accounts {accounts}")
    roles = {r["metadata"]["name"]: r for r in find(objects, "Role")}
    check(sorted(roles) == ["skupper-router", "skupper-service-controller"], f"roles {sorted(roles)}")
    for role in roles.values():
        check(role["metadata"]["namespace"] == NAMESPACE, "Role outside the release namespace")
        for rule in role["rules"]:
            check("*" not in rule["verbs"] and "*" not in rule["resources"]
                  and "*" not in rule["apiGroups"], f"wildcard in {role['metadata']['name']}")
    bindings = find(objects, "RoleBinding")
    check(len(bindings) == 2, f"{len(bindings)} RoleBindings")
    for binding in bindings:
        name = binding["metadata"]["name"]
        check(binding["metadata"]["namespace"] == NAMESPACE, f"RoleBinding {name} namespace")
        check(binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                     "name": name}, f"RoleBinding {name} roleRef")
        check(binding["subjects"] == [{"kind": "ServiceAccount", "name": name,
                                       "namespace": NAMESPACE}], f"RoleBinding {name} subjects")

    def grants(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
        out: dict[tuple[str, str], set[str]] = {}
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    out.setdefault((group, resource), set()).update(rule["verbs"])
        return out

    router = grants(roles["skupper-router"])
    check(router == {("", "secrets"): {"get", "list", "watch"}}, f"router Role {router}")
    check([r.get("resourceNames") for r in roles["skupper-router"]["rules"]]
          == [["skupper-router-tls"]], "the router pod reads its TLS Secret and no other")
    ctl = grants(roles["skupper-service-controller"])
    want = {
        ("", "services"): ALL_VERBS,
        ("", "secrets"): ALL_VERBS,
        ("", "configmaps"): ALL_VERBS,
        ("", "pods"): {"get", "list", "watch"},
        ("", "events"): {"create", "patch"},
        ("apps", "deployments"): {"get", "list", "watch"},
        ("apps", "statefulsets"): {"get", "list", "watch"},
    }
    if values["ingress"] == "route":
        want[("route.openshift.io", "routes")] = ALL_VERBS
    if values["ingress"] == "ingress":
        want[("networking.k8s.io", "ingresses")] = ALL_VERBS
    check(ctl == want, f"controller Role {ctl}")


def check_api_token_mount(name: str, pod: dict[str, Any], mounts: dict[str, Any]) -> None:
    """The controller API's bearer token: Secret skupper-api-token, read-only, not world-readable."""
    mount = mounts.get("/var/run/secrets/skupper/api", {})
    check(mount.get("readOnly") is True, f"{name}: API token mounted read-only")
    volume = by_name(pod["volumes"]).get(mount.get("name"), {})
    secret = volume.get("secret", {})
    check(secret.get("secretName") == "skupper-api-token", f"{name}: API token volume {volume}")
    check(secret.get("defaultMode") == 0o440, f"{name}: API token mode {secret.get('defaultMode')}")


def check_api_token(objects: list[dict[str, Any]]) -> None:
    secret = one(objects, "Secret", "skupper-api-token")
    check(set(secret["data"]) == {"token"}, f"API token keys {set(secret['data'])}")
    token = base64.b64decode(secret["data"]["token"]).decode()
    # The controller refuses tokens shorter than 16 characters.
    check(re.fullmatch(r"[A-Za-z0-9]{40}", token) is not None, "API token")


def check_console(objects: list[dict[str, Any]], values: dict[str, Any]) -> None:
    check_api_token(objects)
    secrets = [s for s in find(objects, "Secret") if s["metadata"]["name"] != "skupper-api-token"]
    internal = values["console"]["enabled"] and values["console"]["auth"] == "internal"
    if internal:
        check([s["metadata"]["name"] for s in secrets] == ["skupper-console-users"],
              f"secrets {[s['metadata']['name'] for s in secrets]}")
        data = secrets[0]["data"]
        check(set(data) == {"admin"}, f"console users {set(data)}")
        password = base64.b64decode(data["admin"]).decode()
        check(re.fullmatch(r"[A-Za-z0-9]{24}", password) is not None, "console password")
    else:
        check(not secrets, f"Secret rendered without internal console auth: {secrets}")
    check_console_container(objects, values)
    check_console_exposure(objects, values)


CONSOLE_USERS_DIR = "/etc/skupper/console-users"
CONSOLE_TLS_DIR = "/etc/skupper/console-tls"


def check_console_container(objects: list[dict[str, Any]], values: dict[str, Any]) -> None:
    """Container `console` of the controller pod, its volumes, and what it calls."""
    console = values["console"]
    pod = one(objects, "Deployment", "skupper-service-controller")["spec"]["template"]["spec"]
    volumes = by_name(pod["volumes"])
    containers = by_name(pod["containers"])
    if not console["enabled"]:
        check("console" not in containers, "console container without console.enabled")
        check(set(volumes) == {"api-token"}, f"controller pod volumes {set(volumes)}")
        return
    internal = console["auth"] == "internal"
    c = containers["console"]
    check(c["image"] == expected_image(values, console["image"]["repository"]),
          f"console image {c['image']}")
    want = ["van-console",
            "--router", "skupper-router-local:9091",
            "--router-token-file", "/var/run/secrets/skupper/api/token",
            "--listen", "0.0.0.0:8010",
            "--auth", console["auth"]]
    if internal:
        want += ["--users-dir", CONSOLE_USERS_DIR]
    want += ["--tls-cert", f"{CONSOLE_TLS_DIR}/tls.crt", "--tls-key", f"{CONSOLE_TLS_DIR}/tls.key"]
    # The site's certificate is written after the pod starts: the console waits for it.
    if not console["tls"]["secretName"]:
        want += ["--tls-wait"]
    want += ["--retention", console["retention"]]
    check(c["command"] == want, f"console command {c['command']}")
    check("args" not in c and "env" not in c, "console: flags in command only")
    check(ports_of(c) == {"console": 8010}, f"console ports {ports_of(c)}")
    check(all(p.get("protocol") == "TCP" for p in c["ports"]), "console port protocol")
    # The router's records come from the Service the chart renders, on config-sync's port.
    local = one(objects, "Service", "skupper-router-local")
    check([p["port"] for p in local["spec"]["ports"]] == [9091], "console --router port")
    for probe in ("readinessProbe", "livenessProbe"):
        got = c.get(probe, {})
        check(got.get("tcpSocket") == {"port": "console"},
              f"console {probe} is not a TCP probe of port console: {got}")
        check(not {"httpGet", "grpc", "exec"} & set(got), f"console {probe}: {got}")
    check("startupProbe" not in c, "console startupProbe")
    check_resources("skupper-service-controller/console", c, console["resources"])

    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    want_mounts = {"/var/run/secrets/skupper/api", CONSOLE_TLS_DIR}
    if internal:
        want_mounts.add(CONSOLE_USERS_DIR)
    check(set(mounts) == want_mounts, f"console mounts {set(mounts)}")
    check(all(m.get("readOnly") is True for m in mounts.values()), "console mounts read-only")
    check(not any("subPath" in m for m in mounts.values()),
          "console mounts with subPath (kubelet would never update them)")
    check_api_token_mount("skupper-service-controller/console", pod, mounts)
    for other in pod["containers"]:
        if other["name"] != "console":
            paths = {m["mountPath"] for m in other.get("volumeMounts", [])}
            check(not paths & {CONSOLE_USERS_DIR, CONSOLE_TLS_DIR},
                  f"{other['name']} mounts the console's users or TLS")

    # Users: the whole Secret, one file per user whose content is the password.
    if internal:
        users = volumes[mounts[CONSOLE_USERS_DIR]["name"]]
        check(users.get("secret") == {"secretName": "skupper-console-users", "defaultMode": 0o440},
              f"console users volume {users}")
        check(set(one(objects, "Secret", "skupper-console-users")["data"]) == {"admin"},
              "console users file")
    else:
        check(not any(v.get("secret", {}).get("secretName") == "skupper-console-users"
                      for v in volumes.values()), "console users volume with auth unsecured")

    # TLS: the user's kubernetes.io/tls Secret, or the site server certificate that the
    # controller writes (optional: the pod starts before the Secret exists).
    tls = volumes[mounts[CONSOLE_TLS_DIR]["name"]].get("secret", {})
    own = console["tls"]["secretName"]
    if own:
        want_tls = {"secretName": own, "defaultMode": 0o440, "items": [
            {"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"}]}
    else:
        want_tls = {"secretName": "skupper-router-tls", "optional": True, "defaultMode": 0o440,
                    "items": [{"key": "site-server.tls.crt", "path": "tls.crt"},
                              {"key": "site-server.tls.key", "path": "tls.key"}]}
    check(tls == want_tls, f"console TLS volume {tls}")
    check(not find(objects, "Secret", "skupper-router-tls"),
          "the chart renders skupper-router-tls, which the controller owns")


def check_console_exposure(objects: list[dict[str, Any]], values: dict[str, Any]) -> None:
    """Ingress / Route skupper-console: to port console of Service skupper, HTTPS kept to the end."""
    console = values["console"]
    ingresses = find(objects, "Ingress", "skupper-console")
    routes = find(objects, "Route", "skupper-console")
    if console["enabled"] and console["ingress"]["enabled"]:
        check(len(ingresses) == 1, f"{len(ingresses)} console Ingresses")
        ing = ingresses[0]
        check(ing["apiVersion"] == "networking.k8s.io/v1", "console Ingress apiVersion")
        check(ing["metadata"]["labels"].get("skupper.io/component") == "controller",
              "console Ingress labels")
        want_annotations = {k: v for k, v in console["ingress"]["annotations"].items()
                            if v is not None}
        check(ing["metadata"].get("annotations", {}) == want_annotations,
              f"console Ingress annotations {ing['metadata'].get('annotations')}")
        spec = ing["spec"]
        if console["ingress"]["className"]:
            check(spec.get("ingressClassName") == console["ingress"]["className"],
                  "console Ingress class")
        else:
            check("ingressClassName" not in spec, "console Ingress class without className")
        check("tls" not in spec and "defaultBackend" not in spec, f"console Ingress spec {spec}")
        check(spec["rules"] == [{"host": console["ingress"]["host"], "http": {"paths": [{
            "path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "skupper", "port": {"name": "console"}}}}]}}],
            f"console Ingress rules {spec['rules']}")
    else:
        check(not ingresses, "console Ingress rendered")
    if console["enabled"] and console["route"]["enabled"]:
        check(len(routes) == 1, f"{len(routes)} console Routes")
        spec = routes[0]["spec"]
        check(routes[0]["metadata"]["labels"].get("skupper.io/component") == "controller",
              "console Route labels")
        check(spec["to"] == {"kind": "Service", "name": "skupper", "weight": 100},
              f"console Route to {spec['to']}")
        check(spec["port"] == {"targetPort": "console"}, f"console Route port {spec['port']}")
        # The console terminates TLS itself: the router passes it through.
        check(spec["tls"] == {"termination": "passthrough", "insecureEdgeTerminationPolicy": "None"},
              f"console Route TLS {spec['tls']}")
        if console["route"]["host"]:
            check(spec.get("host") == console["route"]["host"], f"console Route host {spec}")
        else:
            check("host" not in spec, "console Route host without console.route.host")
    else:
        check(not routes, "console Route rendered")
    # Both lead to a port the skupper Service has.
    for obj in ingresses + routes:
        ports = {p["name"] for p in one(objects, "Service", "skupper")["spec"]["ports"]}
        check("console" in ports, f"{obj['kind']} skupper-console: Service skupper has no console port")


def check_network_policy(objects: list[dict[str, Any]], values: dict[str, Any]) -> None:
    policies = {p["metadata"]["name"]: p for p in find(objects, "NetworkPolicy")}
    if not values["networkPolicy"]["enabled"]:
        check(not policies, "NetworkPolicy rendered though disabled")
        return
    check(sorted(policies) == ["skupper-router", "skupper-service-controller"],
          f"policies {sorted(policies)}")
    router_dep = one(objects, "Deployment", "skupper-router")
    ctl_dep = one(objects, "Deployment", "skupper-service-controller")

    router = policies["skupper-router"]["spec"]
    check(router["podSelector"]["matchLabels"].items()
          <= router_dep["spec"]["template"]["metadata"]["labels"].items(), "router policy selector")
    check(router["policyTypes"] == ["Ingress"], "router policy types")
    open_rules = [r for r in router["ingress"] if "from" not in r]
    check(len(open_rules) == 1, "one rule open to every source")
    ports = sorted(p["port"] for p in open_rules[0]["ports"])
    check(ports == sorted(ROUTER_EXPOSED.values()), f"router open ports {ports}")
    from_rules = [r for r in router["ingress"] if "from" in r]
    # Applications of this namespace reach the service listeners (any port).
    check(from_rules[0] == {"from": [{"podSelector": {}}]}, f"router rule {from_rules[0]}")
    if values["console"]["enabled"]:
        # The console (this release's controller pod) reads the records on config-sync's port.
        check(len(from_rules) == 2, f"router policy rules {from_rules}")
        selector = from_rules[1]["from"][0]["podSelector"]["matchLabels"]
        check(len(from_rules[1]["from"]) == 1 and selector == {
            "application": "skupper-service-controller", "skupper.io/component": "controller",
            "app.kubernetes.io/instance": RELEASE}, f"records rule from {from_rules[1]['from']}")
        check(selector.items() <= ctl_dep["spec"]["template"]["metadata"]["labels"].items(),
              "records rule does not select the controller pod")
        check(not selector.items() <= router_dep["spec"]["template"]["metadata"]["labels"].items(),
              "records rule selects the router pods")
        check(from_rules[1]["ports"] == [{"port": 9091, "protocol": "TCP"}],
              f"records rule ports {from_rules[1]['ports']}")
    else:
        check(len(from_rules) == 1, f"router policy rules {from_rules}")

    ctl = policies["skupper-service-controller"]["spec"]
    check(ctl["podSelector"]["matchLabels"].items()
          <= ctl_dep["spec"]["template"]["metadata"]["labels"].items(), "controller policy selector")
    check(ctl["policyTypes"] == ["Ingress"], "controller policy types")
    check(len(ctl["ingress"]) == 1, "controller policy: one rule")
    rule = ctl["ingress"][0]
    check(rule.get("from") == [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/part-of": "skupper", "app.kubernetes.io/instance": RELEASE}}}],
        f"controller policy from {rule.get('from')}")
    check(sorted(p["port"] for p in rule["ports"]) == [8010, 8080, 8081], "controller policy ports")
    selected = rule["from"][0]["podSelector"]["matchLabels"]
    for dep in (router_dep, ctl_dep):
        check(selected.items() <= dep["spec"]["template"]["metadata"]["labels"].items(),
              f"{dep['metadata']['name']} pods not allowed to reach the controller")


def check_notes(notes: str, values: dict[str, Any]) -> None:
    if values["router"]["mode"] == "interior":
        check("skupper --platform kubernetes -n west token create" in notes, "NOTES: skupper token create")
        check("skupper.io/type=connection-token-request" in notes, "NOTES: kubectl-only token")
    else:
        check("edge site" in notes, "NOTES: edge")
    check("link create" in notes, "NOTES: link create")
    console = values["console"]
    if console["enabled"]:
        check("port-forward service/skupper 8010" in notes and "https://127.0.0.1:8010" in notes,
              "NOTES: console port-forward")
        if console["ingress"]["enabled"]:
            check(f"https://{console['ingress']['host']}" in notes, "NOTES: console Ingress host")
    else:
        check("Console" not in notes, "NOTES: console though disabled")


def check_all(objects: list[dict[str, Any]], notes: str, values: dict[str, Any]) -> None:
    check_scope(objects)
    validate_objects(objects)
    check_deployments(objects, values)
    check_configmaps(objects, values)
    check_services(objects, values)
    check_ingress_objects(objects, values)
    check_rbac(objects, values)
    check_console(objects, values)
    check_network_policy(objects, values)
    check_notes(notes, values)


# --- the cases ----------------------------------------------------------------------------

MATRIX: list[tuple[str, dict[str, Any]]] = [
    ("defaults", {}),
    ("router.mode=edge", {"router": {"mode": "edge"}}),
    ("router.replicas=3", {"router": {"replicas": 3}}),
    ("ingress=loadbalancer", {"ingress": "loadbalancer"}),
    ("ingress=nodeport", {"ingress": "nodeport"}),
    ("ingress=route", {"ingress": "route"}),
    ("ingress=route with host", {"ingress": "route", "ingressHost": "west.apps.example.com"}),
    ("ingress=ingress", {"ingress": "ingress", "ingressHost": "west.example.com",
                         "ingressClassName": "nginx"}),
    ("ingress=none", {"ingress": "none"}),
    ("console enabled (internal auth)", {"console": {"enabled": True}}),
    ("console.auth=unsecured", {"console": {"enabled": True, "auth": "unsecured"}}),
    ("console.auth=unsecured, console disabled", {"console": {"auth": "unsecured"}}),
    ("console with its own TLS Secret, retention, image, resources", {"console": {
        "enabled": True, "tls": {"secretName": "console-cert"}, "retention": "2h",
        "image": {"repository": "mirror/van-console"},
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"},
                      "limits": {"memory": "256Mi"}}}}),
    ("console unsecured with its own TLS Secret", {"console": {
        "enabled": True, "auth": "unsecured", "tls": {"secretName": "console.example.com"}}}),
    ("console Ingress", {"console": {"enabled": True, "ingress": {
        "enabled": True, "host": "console.west.example.com", "className": "nginx"}}}),
    ("console Ingress, other annotations", {"console": {"enabled": True, "ingress": {
        "enabled": True, "host": "console.west.example.com", "annotations": {
            "nginx.ingress.kubernetes.io/backend-protocol": None,
            "traefik.ingress.kubernetes.io/service.serversscheme": "https"}}}}),
    ("console Route", {"console": {"enabled": True, "auth": "unsecured",
                                   "route": {"enabled": True}}}),
    ("console Route with host, and the router's Routes", {
        "ingress": "route", "ingressHost": "west.apps.example.com",
        "console": {"enabled": True, "route": {"enabled": True,
                                               "host": "console.apps.example.com"}}}),
    ("console Ingress and Route without console.enabled", {"console": {
        "ingress": {"enabled": True, "host": "console.west.example.com"},
        "route": {"enabled": True}, "tls": {"secretName": "console-cert"}}}),
    ("networkPolicy.enabled", {"networkPolicy": {"enabled": True}, "console": {"enabled": True}}),
    ("custom image registry/tag", {"image": {"registry": "registry.example.com:5000/van/",
                                             "tag": "1.2.3-rc.1", "pullPolicy": "Always",
                                             "pullSecrets": ["regcred"]}}),
    ("image without registry", {"image": {"registry": "", "tag": "dev"}}),
    ("custom resources/limits", {
        "router": {"resources": {"requests": {"cpu": "500m", "memory": "256Mi"},
                                 "limits": {"cpu": 2, "memory": "1Gi"}}},
        "configSync": {"resources": {"requests": {"cpu": "50m", "memory": "64Mi"},
                                     "limits": {"memory": "128Mi"}}},
        "controller": {"resources": {"requests": {"cpu": "0.2", "memory": "128Mi"},
                                     "limits": {"cpu": "1", "memory": "512Mi"}}},
    }),
    ("scheduling, annotations, site name, uid", {
        "site": {"name": "west-prod"},
        "securityContext": {"runAsUser": 2000, "runAsGroup": 3000, "fsGroup": 3000},
        "router": {
            "logLevel": "van_router=debug,info",
            "podAnnotations": {"example.com/team": "net", "prometheus.io/scrape": "false"},
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "van",
                             "effect": "NoSchedule"}],
            "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
                "weight": 100, "podAffinityTerm": {
                    "topologyKey": "kubernetes.io/hostname",
                    "labelSelector": {"matchLabels": {"application": "skupper-router"}}}}]}},
        },
        "controller": {"podAnnotations": {"example.com/team": "net"},
                       "nodeSelector": {"kubernetes.io/os": "linux"}},
    }),
    ("everything on", {"router": {"mode": "edge", "replicas": 2}, "ingress": "ingress",
                       "ingressHost": "west.example.com",
                       "console": {"enabled": True, "tls": {"secretName": "console-cert"},
                                   "ingress": {"enabled": True, "host": "console.example.com"},
                                   "route": {"enabled": True}},
                       "networkPolicy": {"enabled": True}}),
]

# Values the schema must refuse: (what, values, text expected in the error).
REJECTED: list[tuple[str, dict[str, Any], str]] = [
    ("router.mode=core", {"router": {"mode": "core"}}, "/router/mode"),
    ("ingress=foo", {"ingress": "foo"}, "/ingress"),
    ("router.replicas=0", {"router": {"replicas": 0}}, "/router/replicas"),
    ("router.replicas=1.5", {"router": {"replicas": 1.5}}, "/router/replicas"),
    ("unknown top-level key", {"routerMode": "edge"}, "routerMode"),
    ("unknown nested key", {"router": {"replica": 2}}, "replica"),
    ("image.tag=1 (number)", {"image": {"tag": 1}}, "/image/tag"),
    ("image.tag=1.10 (number)", {"image": {"tag": 1.10}}, "/image/tag"),
    ("console.auth=openshift", {"console": {"auth": "openshift"}}, "/console/auth"),
    ("image.pullPolicy=Sometimes", {"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ("runAsUser=0", {"securityContext": {"runAsUser": 0}}, "/securityContext/runAsUser"),
    ("ingress=ingress without ingressHost", {"ingress": "ingress"}, "/ingressHost"),
    ("bad memory request", {"router": {"resources": {"requests": {"memory": "lots"}}}},
     "/router/resources/requests/memory"),
    ("networkPolicy.enabled=yes", {"networkPolicy": {"enabled": "yes"}}, "/networkPolicy/enabled"),
    ("unknown key under console", {"console": {"enable": True}}, "'enable' not allowed"),
    ("unknown key under console.ingress", {"console": {"ingress": {"tls": True}}},
     "'tls' not allowed"),
    ("unknown key under console.route", {"console": {"route": {"termination": "edge"}}},
     "'termination' not allowed"),
    ("console.retention=15 minutes", {"console": {"retention": "15 minutes"}}, "/console/retention"),
    ("console.retention=0s", {"console": {"retention": "0s"}}, "/console/retention"),
    ("console.retention=500ms (under 1s)", {"console": {"retention": "500ms"}},
     "/console/retention"),
    ("console.retention=15 (number)", {"console": {"retention": 15}}, "/console/retention"),
    ("console.ingress.enabled without host", {"console": {"enabled": True,
                                                         "ingress": {"enabled": True}}},
     "/console/ingress/host"),
    ("console.ingress.host not a DNS name", {"console": {"ingress": {
        "enabled": True, "host": "https://console.example.com"}}}, "/console/ingress/host"),
    ("console.ingress.annotations value not a string", {"console": {"ingress": {
        "annotations": {"example.com/weight": 1}}}}, "/console/ingress/annotations"),
    ("console.route.host not a DNS name", {"console": {"route": {"host": "Console_Host"}}},
     "/console/route/host"),
    ("console.tls.secretName not an object name", {"console": {"tls": {"secretName": "My_Cert"}}},
     "/console/tls/secretName"),
    ("console.image.repository empty", {"console": {"image": {"repository": ""}}},
     "/console/image/repository"),
    ("console.resources without requests", {"console": {"resources": {"requests": None}}},
     "/console/resources"),
]


def test_lint() -> None:
    for values in ({}, {"ingress": "ingress", "ingressHost": "west.example.com"},
                   {"ingress": "route", "console": {"enabled": True},
                    "networkPolicy": {"enabled": True}},
                   {"console": {"enabled": True, "auth": "unsecured",
                                "tls": {"secretName": "console-cert"},
                                "ingress": {"enabled": True, "host": "console.example.com"},
                                "route": {"enabled": True}}}):
        report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE,
                           kube_version=f"v{KUBE_VERSION}.0")
        check(report["total_charts_linted"] == 1, f"lint: {report}")
        problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        check(not problems, f"lint {values}: {problems}")


def test_chart_metadata() -> None:
    with load_chart() as chart:
        meta = chart.metadata
        check(meta["name"] == "skupper" and meta["apiVersion"] == "v2", f"Chart.yaml {meta}")
        check(meta["version"] == "0.1.0" and meta["appVersion"] == "0.1.0", "chart versions")
        schema = chart.schema
        check(schema is not None and schema["$schema"].startswith("http://json-schema.org/draft-07"),
              "values.schema.json is draft-07")
        check(schema.get("additionalProperties") is False, "schema: unknown top-level keys")
        chart.validate_schema(chart.values)
        check(not chart.crds, "the chart ships CRDs")


def test_values_documented() -> None:
    """Every leaf of values.yaml has a comment and a row in the chart README."""
    with open(os.path.join(CHART, "values.yaml")) as f:
        lines = f.read().splitlines()
    with open(os.path.join(CHART, "README.md")) as f:
        readme = f.read()
    with load_chart() as chart:
        defaults = chart.values

    def leaves(node: Any, prefix: str) -> list[str]:
        """Dotted paths of the values; a `resources` or `annotations` map counts as one value."""
        if not isinstance(node, dict) or not node or prefix.endswith(("resources", "annotations")):
            return [prefix]
        out = []
        for key, value in node.items():
            out.extend(leaves(value, f"{prefix}.{key}" if prefix else key))
        return out

    for path in leaves(defaults, ""):
        check(f"`{path}`" in readme, f"README.md does not list `{path}`")
    # Every leaf line (a key with its value on the line) has a comment right above it; the
    # requests/limits under a documented `resources` key are covered by that comment.
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("- "):
            continue
        key, _, rest = stripped.partition(":")
        if not rest.strip() or key in ("requests", "limits", "cpu", "memory"):
            continue
        check(i > 0 and lines[i - 1].strip().startswith("#"),
              f"values.yaml line {i + 1} ({stripped!r}) has no comment above it")


def make_case(values: dict[str, Any]) -> Callable[[], None]:
    def run() -> None:
        with load_chart() as chart:
            merged = chart.merge_values(values)
        objects, notes = render(values)
        check_all(objects, notes, merged)
    return run


def make_rejected(values: dict[str, Any], expected: str) -> Callable[[], None]:
    def run() -> None:
        try:
            render(values)
        except helm.HelmValuesError as e:
            check(expected in str(e), f"error does not name {expected!r}: {e}")
            return
        raise Failed(f"rendered although the values are invalid: {values}")
    return run


class FakeApiServer:
    """Answers only what Helm's `lookup` asks: discovery of v1 and one Secret (or a 404)."""

    def __init__(self, secret: dict[str, Any] | None) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def reply(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                outer.requests.append(self.path)
                path = self.path.split("?")[0]
                if path == "/api/v1":
                    self.reply(200, {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                        {"name": "secrets", "singularName": "secret", "namespaced": True,
                         "kind": "Secret", "verbs": ["get", "list"]}]})
                elif secret is not None and path == \
                        f"/api/v1/namespaces/{NAMESPACE}/secrets/{secret['metadata']['name']}":
                    self.reply(200, secret)
                else:
                    self.reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                     "reason": "NotFound", "code": 404})

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def render_against(secret: dict[str, Any] | None,
                   name: str = "skupper-console-users") -> tuple[dict[str, Any], list[str]]:
    fake = FakeApiServer(secret)
    with fake as url:
        # A kubeconfig of its own, so that the user's (or CI's) KUBECONFIG plays no part.
        kubeconfig = yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": url}}],
            "users": [{"name": "fake", "user": {"token": "fake"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake",
                                                      "namespace": NAMESPACE}}],
        })
        with helm.Config(kubeconfig_content=kubeconfig, namespace=NAMESPACE,
                         storage_driver="memory") as cfg, load_chart() as chart:
            manifests = cfg.render(chart, {"console": {"enabled": True}}, name=RELEASE,
                                   namespace=NAMESPACE, is_upgrade=True)
    objects, _ = parse(manifests)
    return one(objects, "Secret", name), fake.requests


def test_console_values_inert_when_disabled() -> None:
    """Without console.enabled the console's other values change nothing (`skupper init`'s
    manifests are the default render: cli/manifests/). console.auth is left out: the site
    ConfigMap carries it (`console-authentication`) in any case."""
    def comparable(values: dict[str, Any]) -> list[dict[str, Any]]:
        objects, _ = render(values)
        for obj in objects:
            if obj["kind"] == "Secret":
                obj["data"] = sorted(obj["data"])  # random values: compare the keys only
        return objects

    defaults = comparable({})
    check(defaults == comparable({"console": {
        "retention": "1h", "image": {"repository": "other"},
        "resources": {"requests": {"cpu": "1"}}, "tls": {"secretName": "console-cert"},
        "ingress": {"enabled": True, "host": "console.example.com", "className": "nginx"},
        "route": {"enabled": True, "host": "console.apps.example.com"}}}),
        "console values change the render though console.enabled is false")


def test_password_kept_on_upgrade() -> None:
    existing = base64.b64encode(b"Kept0nUpgradeKept0nUpgrd").decode()
    secret, requests = render_against({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "skupper-console-users", "namespace": NAMESPACE},
        "data": {"admin": existing}})
    check(any("/secrets/skupper-console-users" in r for r in requests),
          f"lookup did not ask for the Secret: {requests}")
    check(secret["data"]["admin"] == existing, "upgrade replaced the console password")


def test_password_generated_when_absent() -> None:
    first, _ = render_against(None)
    second, _ = render_against(None)
    for secret in (first, second):
        password = base64.b64decode(secret["data"]["admin"]).decode()
        check(re.fullmatch(r"[A-Za-z0-9]{24}", password) is not None, f"password {password!r}")
    check(first["data"]["admin"] != second["data"]["admin"], "the same password twice")


def test_api_token_kept_on_upgrade() -> None:
    existing = base64.b64encode(b"KeptOnUpgradeKeptOnUpgradeKeptOnUpgrade0").decode()
    secret, requests = render_against({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "skupper-api-token", "namespace": NAMESPACE},
        "data": {"token": existing}}, name="skupper-api-token")
    check(any("/secrets/skupper-api-token" in r for r in requests),
          f"lookup did not ask for the Secret: {requests}")
    check(secret["data"]["token"] == existing, "upgrade replaced the API token")


def main() -> int:
    tests: list[tuple[str, Callable[[], None]]] = [
        ("chart metadata and schema", test_chart_metadata),
        ("helm lint (strict)", test_lint),
        ("values documented", test_values_documented),
        ("console values inert without console.enabled", test_console_values_inert_when_disabled),
    ]
    tests += [(f"render: {name}", make_case(values)) for name, values in MATRIX]
    tests += [(f"schema rejects: {name}", make_rejected(values, expected))
              for name, values, expected in REJECTED]
    tests += [
        ("console password kept on upgrade (lookup)", test_password_kept_on_upgrade),
        ("console password generated when absent", test_password_generated_when_absent),
        ("API token kept on upgrade (lookup)", test_api_token_kept_on_upgrade),
    ]
    print(f"helm SDK {helm.helm_sdk_version()}, kubernetes-validate "
          f"{kubernetes_validate.__version__ if hasattr(kubernetes_validate, '__version__') else '?'}"
          f", Kubernetes schemas {KUBE_VERSION}, chart {CHART}")
    started = time.monotonic()
    passed = failed = 0
    for name, test in tests:
        try:
            test()
        except Failed as e:
            failed += 1
            print(f"FAIL {name}: {e}")
        except Exception:  # noqa: BLE001 - report anything else as a failure too
            failed += 1
            print(f"FAIL {name}: unexpected error")
            traceback.print_exc(file=sys.stdout)
        else:
            passed += 1
            print(f"ok   {name}")
    print(f"chart tests: {time.monotonic() - started:.1f} s")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
