"""Modules and a user's overlays for upgrading the filter on the mesh (tests/test_upgrades.py,
the soak's upgrade fault): a "new version" of the .wasm (the build with a custom section: other
bytes, another sha256), a module Envoy cannot start, OCI images pushed to the harness's
registry, and the overlays an operator applies for each delivery."""

import hashlib
import json
import os

import yaml

from meshlib.mesh import REGISTRY_HOST, REPO, WASM
from meshlib.procs import run

LIFETIME = {"token_lifetime_seconds": 60}   # sessions of a minute: open connections re-authenticate
MODULE_ENV = "KAFKA_IDENTITY_MODULE"        # the module's sha256, in the VM's environment (file, EnvoyFilter)
IMAGE = f"{REGISTRY_HOST}/kafka-identity/kafka-identity-wasm"


# ---- modules -------------------------------------------------------------------------------
def leb128(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def read_leb128(data, i):
    value = shift = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, i


def with_custom_section(module, name, payload):
    """The module with a custom section appended: the same code, other bytes."""
    body = leb128(len(name)) + name + payload
    return module + b"\x00" + leb128(len(body)) + body


def with_unresolvable_import(module):
    """The module with its first `env.proxy_*` function import renamed (same length, last letter
    changed): a valid module that links against a host function this Envoy lacks, as a build
    for a newer host would. Returns (module, the import's new name)."""
    assert module[:8] == b"\0asm\x01\0\0\0", "not a Wasm module (version 1)"
    i = 8
    while i < len(module):
        section, size_at = module[i], i + 1
        size, start = read_leb128(module, size_at)
        if section == 2:
            count, k = read_leb128(module, start)
            for _ in range(count):
                n, k = read_leb128(module, k)
                mod = module[k:k + n]
                k += n
                n, k = read_leb128(module, k)
                field, at = module[k:k + n], k
                k += n
                kind = module[k]
                k += 1
                if kind == 0 and mod == b"env" and field.startswith(b"proxy_"):
                    broken = bytearray(module)
                    broken[at + len(field) - 1] = ord("X")
                    return bytes(broken), f"env.{field[:-1].decode()}X"
                if kind != 0:
                    break
                _, k = read_leb128(module, k)
        i = start + size
    raise AssertionError("no env.proxy_* function import found in the module")


class Module:
    def __init__(self, mesh, label, data):
        self.label = label
        self.path = mesh.state / "upgrades" / f"{label}.wasm"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(data)
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.size = len(data)


def new_module(mesh, label):
    """The built filter with a custom section naming `label`: a "new version"."""
    return Module(mesh, label, with_custom_section(WASM.read_bytes(), b"kafka-identity-upgrade", label.encode()))


def push_image(mesh, module, tag):
    """`scripts/oci-image build` of `module`, pushed as `tag`; returns the manifest digest (the
    WasmPlugin's sha256 for oci://)."""
    out = mesh.state / "upgrades" / f"oci-{tag}"
    run([mesh.python, REPO / "scripts" / "oci-image", "build", "--wasm", module.path, "--out", out, "--tag", tag],
        f"OCI image of {module.label}")
    env = dict(ln.split("=", 1) for ln in (out / "kafka-identity-wasm.env").read_text().splitlines() if "=" in ln)
    mesh.exec("legacy", [REPO / "scripts" / "oci-image", "push", "--plain-http", "--layout",
                         out / "kafka-identity-wasm", "--to", f"{IMAGE}:{tag}"], timeout=300)
    return env["MANIFEST_DIGEST"].removeprefix("sha256:")


# ---- a user's overlays ---------------------------------------------------------------------
def overlay(mesh, name, base, kind, ops):
    """A user's own overlay of deploy/istio/overlays/<base>: JSON patches on its `kind`."""
    d = mesh.state / "overlays" / f"upgrade-{name}"
    d.mkdir(parents=True, exist_ok=True)
    target = {"kind": kind} if kind == "WasmPlugin" else {"kind": kind, "name": "kafka-identity"}
    (d / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(REPO / "deploy" / "istio" / "overlays" / base, d)],
        "patches": [{"target": target, "patch": yaml.safe_dump(ops)}]}, sort_keys=False))
    return d


def apply(mesh, d):
    mesh.kube.kubectl("apply", "-k", d, what=f"kubectl apply -k {d}")


def oci_overlay(mesh, name, tag, sha256, plugin_config=LIFETIME):
    ops = [{"op": "replace", "path": "/spec/url", "value": f"oci://{IMAGE}:{tag}"},
           {"op": "replace", "path": "/spec/sha256", "value": sha256}]
    ops += [{"op": "add", "path": f"/spec/pluginConfig/{k}", "value": v} for k, v in sorted(plugin_config.items())]
    return overlay(mesh, name, "wasmplugin-oci", "WasmPlugin", ops)


def file_overlay(mesh, name, module):
    return overlay(mesh, name, "wasmplugin-file", "WasmPlugin", [
        {"op": "add", "path": f"/spec/pluginConfig/{k}", "value": v} for k, v in sorted(LIFETIME.items())] + [
        {"op": "add", "path": "/spec/vmConfig", "value": {"env": [{"name": MODULE_ENV, "value": module.sha256}]}}])


def envoyfilter_overlay(mesh, name, module):
    shipped = yaml.safe_load((REPO / "deploy" / "istio" / "overlays" / "envoyfilter" / "envoyfilter.yaml").read_text())
    config = json.loads(shipped["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["config"]
                        ["configuration"]["value"])
    base = "/spec/configPatches/0/patch/value/typed_config/config"
    return overlay(mesh, name, "envoyfilter", "EnvoyFilter", [
        {"op": "replace", "path": f"{base}/configuration/value", "value": json.dumps(dict(config, **LIFETIME))},
        {"op": "add", "path": f"{base}/vm_config/environment_variables",
         "value": {"key_values": {MODULE_ENV: module.sha256}}}])
