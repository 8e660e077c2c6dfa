"""Checks the OCI image scripts/oci-image builds for Istio's WasmPlugin.

Run: .tools/venv/bin/python -m pytest -q deploy/tests
Needs the built .wasm (make wasm). Builds into a temporary folder, so target/oci is untouched.
"""

import gzip
import hashlib
import http.server
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import threading

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "oci-image")
WASM = os.environ.get(
    "KAFKA_IDENTITY_WASM",
    os.path.join(ROOT, "target/wasm32-unknown-unknown/release/kafka_identity_filter.wasm"),
)
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def sha(b):
    return hashlib.sha256(b).hexdigest()


@pytest.fixture(scope="module")
def wasm():
    if not os.path.isfile(WASM):
        pytest.fail(f"{WASM} missing: run `make wasm` first")
    with open(WASM, "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def built(tmp_path_factory, wasm):
    out = tmp_path_factory.mktemp("oci")
    res = subprocess.run([sys.executable, SCRIPT, "build", "--wasm", WASM, "--out", str(out), "--tag", "test"],
                         capture_output=True, text=True, check=True)
    layout = out / "kafka-identity-wasm"
    return {"out": out, "layout": layout, "tar": out / "kafka-identity-wasm.tar", "stdout": res.stdout}


def blob(layout, digest):
    assert DIGEST_RE.match(digest), digest
    with open(os.path.join(layout, "blobs", "sha256", digest.split(":")[1]), "rb") as f:
        return f.read()


def load(layout):
    with open(layout / "index.json", "rb") as f:
        index = json.load(f)
    mdesc = index["manifests"][0]
    manifest_bytes = blob(layout, mdesc["digest"])
    return index, mdesc, manifest_bytes, json.loads(manifest_bytes)


def test_layout_is_an_oci_image_layout(built):
    layout = built["layout"]
    with open(layout / "oci-layout") as f:
        assert json.load(f) == {"imageLayoutVersion": "1.0.0"}
    index, mdesc, manifest_bytes, manifest = load(layout)
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert len(index["manifests"]) == 1
    assert mdesc["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert mdesc["annotations"]["org.opencontainers.image.ref.name"] == "test"
    assert mdesc["size"] == len(manifest_bytes)
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    config = json.loads(blob(layout, manifest["config"]["digest"]))
    assert config["rootfs"]["type"] == "layers"


def test_every_blob_digest_and_size_match_its_content(built):
    layout = built["layout"]
    _, mdesc, manifest_bytes, manifest = load(layout)
    assert mdesc["digest"] == "sha256:" + sha(manifest_bytes)
    referenced = {mdesc["digest"]}
    for d in [manifest["config"]] + manifest["layers"]:
        b = blob(layout, d["digest"])
        assert d["digest"] == "sha256:" + sha(b)
        assert d["size"] == len(b)
        referenced.add(d["digest"])
    on_disk = {"sha256:" + n for n in os.listdir(layout / "blobs" / "sha256")}
    assert on_disk == referenced, "stray or missing blobs"
    for n in on_disk:  # file names are the digests of their bytes
        assert n == "sha256:" + sha(blob(layout, n))


def test_single_compat_layer_holds_exactly_the_built_wasm(built, wasm):
    """What Istio's extractOCIStandardImage does: last layer, OCI tar+gzip, file plugin.wasm."""
    layout = built["layout"]
    _, _, _, manifest = load(layout)
    assert len(manifest["layers"]) == 1
    layer = manifest["layers"][0]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    raw = gzip.decompress(blob(layout, layer["digest"]))
    config = json.loads(blob(layout, manifest["config"]["digest"]))
    assert config["rootfs"]["diff_ids"] == ["sha256:" + sha(raw)]
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["plugin.wasm"]
        assert members[0].isfile()
        assert tar.extractfile(members[0]).read() == wasm
    assert manifest["annotations"]["dev.kafka-identity.wasm.sha256"] == sha(wasm)


def test_tarball_holds_the_same_layout_and_a_docker_manifest(built):
    layout = built["layout"]
    with tarfile.open(built["tar"]) as tar:
        names = set(tar.getnames())
        for rel in ["oci-layout", "index.json"] + ["blobs/sha256/" + n for n in os.listdir(layout / "blobs/sha256")]:
            assert rel in names
            with open(layout / rel, "rb") as f:
                assert tar.extractfile(rel).read() == f.read(), rel
        docker = json.loads(tar.extractfile("manifest.json").read())
    _, _, _, manifest = load(layout)
    assert docker[0]["Layers"] == ["blobs/sha256/" + manifest["layers"][0]["digest"].split(":")[1]]
    assert docker[0]["Config"] == "blobs/sha256/" + manifest["config"]["digest"].split(":")[1]


def test_build_is_reproducible_and_prints_the_wasmplugin_digest(built, tmp_path):
    subprocess.run([sys.executable, SCRIPT, "build", "--wasm", WASM, "--out", str(tmp_path), "--tag", "test"],
                   capture_output=True, check=True)
    with open(built["tar"], "rb") as a, open(tmp_path / "kafka-identity-wasm.tar", "rb") as b:
        assert a.read() == b.read()
    _, mdesc, _, _ = load(built["layout"])
    assert f"WasmPlugin sha256 for oci:// : {mdesc['digest'].split(':')[1]}" in built["stdout"]
    env = dict(line.split("=", 1) for line in (built["out"] / "kafka-identity-wasm.env").read_text().splitlines())
    assert env["MANIFEST_DIGEST"] == mdesc["digest"]
    dg = subprocess.run([sys.executable, SCRIPT, "digest", "--layout", str(built["layout"])],
                        capture_output=True, text=True, check=True)
    assert dg.stdout.strip() == mdesc["digest"].split(":")[1]


def test_refuses_a_file_that_is_not_wasm(tmp_path):
    bad = tmp_path / "x.wasm"
    bad.write_bytes(b"not wasm")
    res = subprocess.run([sys.executable, SCRIPT, "build", "--wasm", str(bad), "--out", str(tmp_path)],
                         capture_output=True, text=True)
    assert res.returncode != 0
    assert "not a Wasm binary" in res.stderr


class _Registry(http.server.BaseHTTPRequestHandler):
    """Just enough of the OCI distribution API for `oci-image push` (loopback only)."""

    blobs: dict = {}
    manifests: dict = {}

    def log_message(self, *a):
        pass

    def _reply(self, code, headers=None):
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self):
        digest = self.path.rsplit("/", 1)[1]
        self._reply(200 if digest in self.blobs else 404)

    def do_POST(self):
        self._reply(202, {"Location": "/v2/wasm/blobs/uploads/u1?state=x"})

    def do_PUT(self):
        data = self.rfile.read(int(self.headers["Content-Length"]))
        if "/blobs/uploads/" in self.path:
            digest = self.path.split("digest=")[1].replace("%3A", ":")
            assert digest == "sha256:" + sha(data)
            self.blobs[digest] = data
            self._reply(201)
        else:
            tag = self.path.rsplit("/", 1)[1]
            self.manifests[tag] = (self.headers["Content-Type"], data)
            self._reply(201, {"Docker-Content-Digest": "sha256:" + sha(data)})


def test_push_sends_blobs_and_the_manifest_unchanged(built):
    srv = http.server.HTTPServer(("127.0.0.1", 0), _Registry)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        res = subprocess.run([sys.executable, SCRIPT, "push", "--layout", str(built["layout"]), "--plain-http",
                              "--to", f"127.0.0.1:{srv.server_port}/wasm:v1"], capture_output=True, text=True,
                             timeout=60)
        assert res.returncode == 0, res.stderr
    finally:
        srv.shutdown()
    _, mdesc, manifest_bytes, manifest = load(built["layout"])
    ctype, data = _Registry.manifests["v1"]
    assert ctype == "application/vnd.oci.image.manifest.v1+json"
    assert data == manifest_bytes  # the digest Istio checks is unchanged by the push
    assert set(_Registry.blobs) == {manifest["config"]["digest"], manifest["layers"][0]["digest"]}
