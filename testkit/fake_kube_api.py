#!/usr/bin/env python3
"""A small, stateful stand-in for the Kubernetes API server, for the controller's and the
CLI's tests (through van_testkit::kube::FakeApi).

It keeps objects of one namespace in memory and speaks what kube-rs asks of it: get, list
(label selectors `k=v`, `k in (a,b)`; field selector `metadata.name=`), watch (JSON lines,
from a resourceVersion), create, delete, server-side apply (the object's top-level fields
and labels/annotations replaced by the applied ones; not the real field ownership) and
JSON merge patch. HTTP on 127.0.0.1, or HTTPS with `--tls CERT_FILE KEY_FILE`; the port is
printed on the first line of stdout.

Test hooks, outside the Kubernetes API:
  PUT  /fake/{plural}/{name}   create or replace an object (as a user's kubectl apply would)
  GET  /fake/log               the requests served so far, one "METHOD path" per line
"""

import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

KINDS = {
    # plural: (group/version prefix, kind)
    "services": ("/api/v1", "Service"),
    "secrets": ("/api/v1", "Secret"),
    "configmaps": ("/api/v1", "ConfigMap"),
    "pods": ("/api/v1", "Pod"),
    "events": ("/apis/events.k8s.io/v1", "Event"),
    "serviceaccounts": ("/api/v1", "ServiceAccount"),
    "roles": ("/apis/rbac.authorization.k8s.io/v1", "Role"),
    "rolebindings": ("/apis/rbac.authorization.k8s.io/v1", "RoleBinding"),
    "deployments": ("/apis/apps/v1", "Deployment"),
    "statefulsets": ("/apis/apps/v1", "StatefulSet"),
    "networkpolicies": ("/apis/networking.k8s.io/v1", "NetworkPolicy"),
    "ingresses": ("/apis/networking.k8s.io/v1", "Ingress"),
}
WATCH_SECONDS = 20

lock = threading.Condition()
objects: dict[tuple[str, str], dict] = {}  # (plural, name) -> object
history: list[tuple[int, str, str, dict]] = []  # (rv, plural, type, object)
version = 1
log: list[str] = []


def bump() -> str:
    global version
    version += 1
    return str(version)


def record(plural: str, kind: str, obj: dict) -> None:
    rv = int(obj["metadata"]["resourceVersion"])
    history.append((rv, plural, kind, json.loads(json.dumps(obj))))
    lock.notify_all()


def store(plural: str, obj: dict, namespace: str) -> tuple[dict, bool]:
    """Creates or replaces; returns (object, created)."""
    name = obj["metadata"]["name"]
    prefix, kind = KINDS[plural]
    meta = obj.setdefault("metadata", {})
    old = objects.get((plural, name))
    meta["namespace"] = namespace
    meta["uid"] = old["metadata"]["uid"] if old else str(uuid.uuid4())
    meta.setdefault("creationTimestamp", "2026-11-26T00:00:00Z")
    meta["resourceVersion"] = bump()
    obj["apiVersion"] = prefix.removeprefix("/api/").removeprefix("/apis/")
    obj["kind"] = kind
    objects[(plural, name)] = obj
    record(plural, "MODIFIED" if old else "ADDED", obj)
    return obj, old is None


def merge(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    if not isinstance(target, dict):
        target = {}
    out = dict(target)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge(out.get(k), v)
    return out


def apply(old: dict | None, patch: dict) -> dict:
    """Server-side apply, simplified: top-level fields replaced; labels, annotations and
    owner references replaced by the applied ones when given."""
    if old is None:
        return patch
    out = json.loads(json.dumps(old))
    for k, v in patch.items():
        if k == "metadata":
            for mk in ("labels", "annotations", "ownerReferences"):
                if mk in v:
                    out["metadata"][mk] = v[mk]
        elif k not in ("apiVersion", "kind"):
            out[k] = v
    return out


def selected(obj: dict, labels: str | None, fields: str | None) -> bool:
    meta = obj["metadata"]
    have = meta.get("labels") or {}
    if fields:
        for term in fields.split(","):
            k, _, v = term.partition("=")
            if k == "metadata.name" and meta["name"] != v:
                return False
    if labels:
        i = 0
        terms = []
        depth = 0
        start = 0
        for i, c in enumerate(labels):
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
            elif c == "," and depth == 0:
                terms.append(labels[start:i])
                start = i + 1
        terms.append(labels[start:])
        for term in terms:
            term = term.strip()
            if " in " in term:
                k, _, vs = term.partition(" in ")
                values = {v.strip() for v in vs.strip()[1:-1].split(",")}
                if have.get(k.strip()) not in values:
                    return False
            elif "=" in term:
                k, _, v = term.partition("=")
                if have.get(k.strip()) != v.strip():
                    return False
            elif have.get(term) is None:
                return False
    return True


def status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
            "reason": reason, "message": message}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args) -> None:
        pass

    def reply(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self) -> dict:
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"{}")

    def route(self):
        """(namespace, plural, name, query) of a namespaced API path, else None."""
        url = urlparse(self.path)
        parts = url.path.strip("/").split("/")
        # api/v1/namespaces/NS/PLURAL[/NAME] or apis/G/V/namespaces/NS/PLURAL[/NAME]
        if parts[0] == "api":
            parts = parts[2:]
        elif parts[0] == "apis":
            parts = parts[3:]
        else:
            return None
        if len(parts) < 3 or parts[0] != "namespaces" or parts[2] not in KINDS:
            return None
        name = parts[3] if len(parts) > 3 else None
        return parts[1], parts[2], name, parse_qs(url.query)

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/fake/log":
            with lock:
                data = "\n".join(log).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        with lock:
            log.append(f"GET {self.path}")
        r = self.route()
        if r is None:
            return self.reply(404, status(404, "NotFound", self.path))
        ns, plural, name, q = r
        if name is not None:
            with lock:
                obj = objects.get((plural, name))
            if obj is None:
                return self.reply(404, status(404, "NotFound", f'{plural} "{name}" not found'))
            return self.reply(200, obj)
        labels = q.get("labelSelector", [None])[0]
        fields = q.get("fieldSelector", [None])[0]
        if q.get("watch", ["false"])[0] in ("true", "1"):
            return self.watch(plural, int(q.get("resourceVersion", ["0"])[0] or 0), labels, fields)
        with lock:
            items = [o for (p, _), o in sorted(objects.items()) if p == plural
                     and selected(o, labels, fields)]
            rv = str(version)
        self.reply(200, {"kind": KINDS[plural][1] + "List", "apiVersion": "v1",
                         "metadata": {"resourceVersion": rv}, "items": items})

    def watch(self, plural: str, since: int, labels, fields) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        deadline = time.monotonic() + WATCH_SECONDS
        sent = since
        try:
            while time.monotonic() < deadline:
                with lock:
                    events = [(rv, t, o) for rv, p, t, o in history if p == plural and rv > sent]
                    if not events:
                        lock.wait(timeout=0.5)
                        continue
                for rv, t, o in events:
                    sent = rv
                    if selected(o, labels, fields):
                        self.wfile.write(json.dumps({"type": t, "object": o}).encode() + b"\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_POST(self) -> None:  # noqa: N802
        with lock:
            log.append(f"POST {self.path}")
        r = self.route()
        if r is None or r[2] is not None:
            return self.reply(404, status(404, "NotFound", self.path))
        ns, plural, _, _ = r
        obj = self.body()
        meta = obj.setdefault("metadata", {})
        if "name" not in meta:
            meta["name"] = meta.get("generateName", "obj-") + uuid.uuid4().hex[:5]
        with lock:
            if (plural, meta["name"]) in objects:
                return self.reply(409, status(409, "AlreadyExists", meta["name"]))
            obj, _ = store(plural, obj, ns)
        self.reply(201, obj)

    def do_PUT(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        parts = url.path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "fake" or parts[1] not in KINDS:
            return self.reply(404, status(404, "NotFound", self.path))
        obj = self.body()
        obj.setdefault("metadata", {})["name"] = parts[2]
        with lock:
            obj, _ = store(parts[1], obj, "west")
        self.reply(200, obj)

    def do_PATCH(self) -> None:  # noqa: N802
        with lock:
            log.append(f"PATCH {self.path} {self.headers.get('Content-Type')}")
        r = self.route()
        if r is None or r[2] is None:
            return self.reply(404, status(404, "NotFound", self.path))
        ns, plural, name, q = r
        patch = self.body()
        kind = self.headers.get("Content-Type", "")
        with lock:
            old = objects.get((plural, name))
            if kind.startswith("application/apply-patch"):
                if "fieldManager" not in q:
                    return self.reply(400, status(400, "BadRequest", "fieldManager is required"))
                new = apply(old, patch)
            elif kind.startswith("application/merge-patch"):
                if old is None:
                    return self.reply(404, status(404, "NotFound", f'{plural} "{name}" not found'))
                new = merge(old, patch)
            else:
                return self.reply(415, status(415, "UnsupportedMediaType", kind))
            new.setdefault("metadata", {})["name"] = name
            obj, _ = store(plural, new, ns)
        self.reply(200, obj)

    def do_DELETE(self) -> None:  # noqa: N802
        with lock:
            log.append(f"DELETE {self.path}")
        r = self.route()
        if r is None or r[2] is None:
            return self.reply(404, status(404, "NotFound", self.path))
        _, plural, name, _ = r
        with lock:
            obj = objects.pop((plural, name), None)
            if obj is None:
                return self.reply(404, status(404, "NotFound", f'{plural} "{name}" not found'))
            obj["metadata"]["resourceVersion"] = bump()
            record(plural, "DELETED", obj)
        self.reply(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if len(sys.argv) == 4 and sys.argv[1] == "--tls":
        # HTTPS, as a real API server: clients check this certificate against their CA.
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[2], sys.argv[3])
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(server.server_address[1], flush=True)
    # Ends with its parent: the test holds stdin open.
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()


if __name__ == "__main__":
    main()
