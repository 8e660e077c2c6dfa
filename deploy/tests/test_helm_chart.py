"""The Helm chart deploy/helm/kafka-identity, offline (make deploy-check):

- `helm lint --strict`, with the defaults and with every example values file;
- each example rendered with `helm template` passes kubeconform -strict (the schemas
  scripts/install-deploy-tools generates: Kubernetes, Istio's CRDs incl. TrafficExtension, Gateway
  API) and `istioctl validate`, and its pluginConfig passes `kafka-identity config check` (the
  filter's own parser; signed configurations with keys in both slots' variables);
- each example renders exactly what its `deploy/istio` overlay and deploy/kafka's
  AuthorizationPolicy render (the `# compare:` line of the example), normalized: Helm's own
  labels left out, the EnvoyFilter's JSON string compared as JSON; "as TrafficExtension" compares
  with what Istio makes of the overlay's WasmPlugin (pilot/pkg/config/kube/extensions/translate.go);
- values.schema.json refuses bad values with a message naming the field.

Needs .tools/deploy (scripts/install-deploy-tools), kubectl or .tools/deploy/bin/kustomize, and
target/release/kafka-identity (make cli).
"""

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHART = os.path.join(ROOT, "deploy", "helm", "kafka-identity")
EXAMPLES = os.path.join(CHART, "examples")
TOOLS = os.path.join(ROOT, ".tools", "deploy")
HELM = os.path.join(TOOLS, "bin", "helm")
KUBECONFORM = os.path.join(TOOLS, "bin", "kubeconform")
ISTIOCTL = os.path.join(TOOLS, "bin", "istioctl")
# make cli (release); make test points KAFKA_IDENTITY_CLI at the dev build it has compiled.
CLI = os.environ.get("KAFKA_IDENTITY_CLI", os.path.join(ROOT, "target", "release", "kafka-identity"))
RELEASE, NAMESPACE = "kafka-identity", "kafka"
# The labels the chart adds for Helm's bookkeeping; the overlays have none of them.
HELM_LABELS = ("helm.sh/chart", "app.kubernetes.io/name", "app.kubernetes.io/instance",
               "app.kubernetes.io/version", "app.kubernetes.io/managed-by")
COMPARE_RE = re.compile(r"^# compare: (?P<what>.+)$", re.M)


def examples():
    return sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".yaml"))


def need(path, how):
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} missing: {how}")


def run(argv, **kw):
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=300, **kw)


def helm_template(*args):
    need(HELM, "run scripts/install-deploy-tools")
    r = run([HELM, "template", RELEASE, CHART, "--namespace", NAMESPACE, *args])
    return r


def render(values_file=None, *args):
    r = helm_template(*(["-f", values_file] if values_file else []), *args)
    assert r.returncode == 0, f"helm template {values_file or ''} {args}: {r.stderr}"
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def kustomize(path):
    if shutil.which("kubectl"):
        argv = ["kubectl", "kustomize", path]
    else:
        argv = [os.path.join(TOOLS, "bin", "kustomize"), "build", path]
    r = run(argv)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def key(d):
    m = d.get("metadata", {})
    return (d["apiVersion"], d["kind"], m.get("namespace"), m["name"])


def normalize(d, chart):
    d = json.loads(json.dumps(d))
    labels = d.get("metadata", {}).get("labels")
    if chart and labels is not None:
        for k in HELM_LABELS:
            labels.pop(k, None)
        if not labels:
            del d["metadata"]["labels"]
    if d["kind"] == "EnvoyFilter":  # the filter's JSON configuration, compared as JSON
        for p in d["spec"]["configPatches"]:
            cfg = filter_configuration(p)
            if cfg and cfg.get("@type", "").endswith("StringValue"):
                cfg["value"] = json.loads(cfg["value"])
    return d


def filter_configuration(patch):
    """The StringValue with the filter's JSON in an EnvoyFilter patch: the Wasm filter's
    config.configuration, or the dynamic module's filter_config (the native build)."""
    typed = patch["patch"]["value"].get("typed_config", {})
    return typed.get("config", {}).get("configuration") or typed.get("filter_config")


# WasmPlugin.phase (PluginPhase) -> TrafficExtension.phase (ExecutionPhase): same numbers.
PHASES = {"UNSPECIFIED_PHASE": "UNSPECIFIED", "AUTHN": "AUTHN", "AUTHZ": "AUTHZ", "STATS": "STATS"}
WASM_FIELDS = ("url", "sha256", "imagePullPolicy", "imagePullSecret", "pluginConfig", "pluginName",
               "failStrategy", "vmConfig", "type")


def as_traffic_extension(wp):
    """What Istio's translateWasmPlugin makes of a WasmPlugin, as a resource."""
    spec = wp["spec"]
    te = {k: spec[k] for k in ("selector", "targetRefs", "priority", "match") if k in spec}
    if "targetRef" in spec and "targetRefs" not in spec:
        te["targetRefs"] = [spec["targetRef"]]
    te["phase"] = PHASES[spec.get("phase", "UNSPECIFIED_PHASE")]
    te["wasm"] = {k: spec[k] for k in WASM_FIELDS if k in spec}
    return {"apiVersion": wp["apiVersion"], "kind": "TrafficExtension",
            "metadata": wp["metadata"], "spec": te}


def compare_line(example):
    with open(os.path.join(EXAMPLES, example), encoding="utf-8") as f:
        m = COMPARE_RE.search(f.read())
    assert m, f"{example}: no '# compare: ...' line saying which overlay it renders (or 'none')"
    return m.group("what").strip()


def expected_for(what):
    """'<overlay dir>[ as TrafficExtension][, plus Kind/name,...]' -> (objects, extra keys)."""
    m = re.fullmatch(r"(?P<dir>\S+)(?P<te> as TrafficExtension)?(?:, plus (?P<plus>.+))?", what)
    assert m, f"cannot read compare line {what!r}"
    objs = kustomize(os.path.join(ROOT, m.group("dir")))
    if m.group("te"):
        objs = [as_traffic_extension(d) if d["kind"] == "WasmPlugin" else d for d in objs]
    # deploy/kafka's AuthorizationPolicy (its ConfigMap of broker settings is not the chart's).
    objs += [d for d in kustomize(os.path.join(ROOT, "deploy", "kafka")) if d["kind"] == "AuthorizationPolicy"]
    plus = [tuple(p.strip().split("/", 1)) for p in (m.group("plus") or "").split(",") if p.strip()]
    return objs, plus


COMPARED = [e for e in examples() if compare_line(e) != "none"]


def test_every_overlay_of_deploy_istio_has_an_example():
    overlays = {f"deploy/istio/overlays/{o}" for o in os.listdir(os.path.join(ROOT, "deploy/istio/overlays"))}
    compared = {compare_line(e).split()[0] for e in COMPARED}
    assert overlays <= compared, f"overlays without a chart example: {sorted(overlays - compared)}"


@pytest.mark.parametrize("example", COMPARED)
def test_example_renders_what_the_overlay_renders(example):
    want, plus = expected_for(compare_line(example))
    got = render(os.path.join(EXAMPLES, example))
    got_by_key = {key(d): normalize(d, chart=True) for d in got}
    assert len(got_by_key) == len(got), f"{example}: two objects with one name"
    for kind, name in plus:  # objects only the chart renders, said so in the example
        extra = [k for k in got_by_key if k[1] == kind and k[3] == name]
        assert extra, f"{example}: no {kind}/{name}"
        del got_by_key[extra[0]]
    want_by_key = {key(d): normalize(d, chart=False) for d in want}
    assert sorted(got_by_key) == sorted(want_by_key), \
        f"{example}: objects differ:\n chart only: {sorted(set(got_by_key) - set(want_by_key))}\n" \
        f" overlay only: {sorted(set(want_by_key) - set(got_by_key))}"
    for k, w in want_by_key.items():
        assert got_by_key[k] == w, (f"{example}: {k[1]}/{k[3]} differs:\n"
                                    f" chart: {json.dumps(got_by_key[k], sort_keys=True)}\n"
                                    f" overlay: {json.dumps(w, sort_keys=True)}")


def test_lint():
    need(HELM, "run scripts/install-deploy-tools")
    for args in [[]] + [["-f", os.path.join(EXAMPLES, e)] for e in examples()]:
        r = run([HELM, "lint", "--strict", CHART, "--namespace", NAMESPACE, *args])
        assert r.returncode == 0, f"helm lint {args}: {r.stdout}{r.stderr}"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("chart")
    files = {}
    for e in examples():
        r = helm_template("-f", os.path.join(EXAMPLES, e))
        assert r.returncode == 0, f"{e}: {r.stderr}"
        files[e] = out / e
        files[e].write_text(r.stdout)
    return files


def test_examples_pass_kubeconform_strict(rendered):
    need(KUBECONFORM, "run scripts/install-deploy-tools")
    r = run([KUBECONFORM, "-strict", "-summary", "-output", "text",
             "-schema-location", os.path.join(TOOLS, "schemas/k8s/{{ .ResourceKind }}{{ .KindSuffix }}.json"),
             "-schema-location",
             os.path.join(TOOLS, "schemas/crds/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"),
             *rendered.values()])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Invalid: 0, Errors: 0, Skipped: 0" in r.stdout, r.stdout
    kinds = {d["kind"] for f in rendered.values() for d in yaml.safe_load_all(f.read_text()) if d}
    assert {"TrafficExtension", "WasmPlugin", "EnvoyFilter", "Gateway"} <= kinds, kinds


def test_examples_pass_istioctl_validate(rendered):
    need(ISTIOCTL, "run scripts/install-deploy-tools")
    for e, f in rendered.items():
        r = run([ISTIOCTL, "validate", "-f", f])
        assert r.returncode == 0, f"{e}: {r.stdout}{r.stderr}"


def plugin_configs(path):
    """(name, pluginConfig) of every filter the rendered file installs."""
    out = []
    for d in yaml.safe_load_all(open(path, encoding="utf-8")):
        if not d:
            continue
        if d["kind"] == "WasmPlugin":
            out.append((d["metadata"]["name"], d["spec"].get("pluginConfig", {})))
        elif d["kind"] == "TrafficExtension":
            out.append((d["metadata"]["name"], d["spec"]["wasm"].get("pluginConfig", {})))
        elif d["kind"] == "EnvoyFilter":
            for p in d["spec"]["configPatches"]:
                cfg = filter_configuration(p)
                if cfg:
                    out.append((d["metadata"]["name"], json.loads(cfg["value"])))
    return out


@pytest.fixture(scope="module")
def signing_env(tmp_path_factory):
    """Both key slots filled, as the broker patch fills the sidecar's environment."""
    need(CLI, "run make cli")
    d = tmp_path_factory.mktemp("keys")
    env = dict(os.environ)
    for slot in "AB":
        r = run([CLI, "keygen", "--key-id", f"slot-{slot}", "--key-out", d / f"{slot}.pem",
                 "--jwks-out", d / f"{slot}.jwks.json"])
        assert r.returncode == 0, r.stderr
        env[f"KAFKA_IDENTITY_SIGNING_KEY_{slot}"] = (d / f"{slot}.pem").read_text()
    return env


def test_plugin_configs_pass_the_filters_own_parser(rendered, signing_env, tmp_path):
    checked = 0
    for e, f in rendered.items():
        configs = plugin_configs(f)
        assert configs, f"{e}: no filter configuration rendered"
        for name, cfg in configs:
            p = tmp_path / f"{e}-{name}.json"
            p.write_text(json.dumps(cfg))
            r = run([CLI, "config", "check", p], env=signing_env)
            assert r.returncode == 0, f"{e} ({name}): kafka-identity config check refused {cfg}: {r.stdout}{r.stderr}"
            checked += 1
    assert checked >= len(rendered)


def test_a_refused_plugin_config_fails_the_check(signing_env, tmp_path):
    """The check above can fail: a configuration the schema lets through but the filter refuses
    (a waypoint with subject rules and no certificate hand-over)."""
    got = render(os.path.join(EXAMPLES, "ambient-waypoint-peer-cert.yaml"), "--set", "waypoint.peerCertificate=false")
    (_, cfg), = plugin_configs_from(got)
    p = tmp_path / "refused.json"
    p.write_text(json.dumps(cfg))
    r = run([CLI, "config", "check", p], env=signing_env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "identity.sources" in r.stderr + r.stdout


def plugin_configs_from(docs):
    out = []
    for d in docs:
        if d["kind"] in ("WasmPlugin", "TrafficExtension"):
            spec = d["spec"] if d["kind"] == "WasmPlugin" else d["spec"]["wasm"]
            out.append((d["metadata"]["name"], spec.get("pluginConfig", {})))
    return out


# (helm arguments, the field the refusal must name)
BAD_VALUES = [
    (["--set", "wasm.sha256=abc123"], "/wasm/sha256"),
    (["--set", "delivery=envoyfilter"], "/wasm/url"),
    (["--set", "mode=waypoint", "--set", "delivery=envoyfilter",
      "--set", "wasm.url=file:///var/local/lib/kafka-identity/kafka_identity_filter.wasm"], "/mode"),
    (["--set", "mode=waypoint", "--set", "wasm.url=file:///x.wasm"], "/wasm/url"),
    (["--set", "delivery=wasmplugins"], "/delivery"),
    (["--set", "wasm.url=registry.example.com/kafka-identity-wasm:1"], "/wasm/url"),
    (["--set", "config.stat_prefx=x"], "stat_prefx"),
    (["--set", "config.signing.key_id=x"], "signing"),
    (["--set", "config.token_lifetime_seconds=5"], "/config/token_lifetime_seconds"),
    (["--set", "config.on_no_identity=allow"], "/config/on_no_identity"),
    (["--set-json", 'config.identity.spiffe.trust_domains=["Cluster.Local"]'],
     "/config/identity/spiffe/trust_domains/0"),
    (["--set-json", "config.identity.sources=[]"], "/config/identity/sources"),
    (["--set", "signing.enabled=true"], "/signing/keyId"),
    (["--set", "signing.enabled=true", "--set", "signing.keyId=k1", "--set", "signing.activeSlot=C"],
     "/signing/activeSlot"),
    (["--set", "brokers.clientPort=0"], "/brokers/clientPort"),
    (["--set", "waypoint.peerCertificate=true"], "/waypoint/peerCertificate"),
    (["--set", "mesh.peerAuthentication=yes"], "/mesh/peerAuthentication"),
    (["--set", "delivery=native-envoyfilter", "--set", "mode=waypoint"], "/mode"),
    (["--set", "delivery=native-envoyfilter", "--set", "native.proxyImage="], "/native/proxyImage"),
    (["--set", "native.proxyImage=registry.example.com/kafka-identity/kafka-identity-proxyv2"], "/native/proxyImage"),
    (["--set", "native.proxyImage=kafka-identity-proxyv2:0.2.0-istio-1.31.0"], "/native/proxyImage"),
    (["--set", "native.module=kafka_identity_native"], "/native"),
]


@pytest.mark.parametrize("args,field", BAD_VALUES, ids=[f for _, f in BAD_VALUES])
def test_schema_refuses_bad_values_naming_the_field(args, field):
    r = helm_template(*args)
    assert r.returncode != 0, f"helm template {args} was accepted:\n{r.stdout[:2000]}"
    assert "values don't meet the specifications of the schema" in r.stderr, r.stderr
    assert field in r.stderr, f"the refusal of {args} does not name {field}:\n{r.stderr}"


def test_notes_print_the_broker_patches_of_deploy_istio_broker():
    """What the chart cannot own, it prints: for file:// and signing, the StatefulSet patch is
    deploy/istio/broker's two patches together (the ConfigMap volume, both key slots)."""
    r = run([HELM, "install", RELEASE, CHART, "--namespace", NAMESPACE, "--dry-run=client",
             "-f", os.path.join(EXAMPLES, "wasmplugin-file.yaml"),
             "--set", "signing.enabled=true", "--set", "signing.keyId=2026-11"])
    assert r.returncode == 0, r.stderr
    notes = r.stdout.split("NOTES:", 1)[1]
    block = re.search(r"^spec:\n(?:[ ].*\n)+", notes, re.M)
    assert block, notes
    got = yaml.safe_load(block.group(0))
    patches = [yaml.safe_load(open(os.path.join(ROOT, "deploy/istio/broker", f), encoding="utf-8"))
               for f in ("wasm-file-volume.patch.yaml", "signing-keys.patch.yaml")]
    want = {"template": {"metadata": patches[0]["spec"]["template"]["metadata"],
                         "spec": {**patches[0]["spec"]["template"]["spec"], **patches[1]["spec"]["template"]["spec"]}}}
    assert got == {"spec": want}, (got, want)


def test_notes_print_the_native_broker_patch_of_deploy_istio_broker():
    """native-envoyfilter: the patch is deploy/istio/broker/native-proxy-image.patch.yaml with
    the image of native.proxyImage; no ConfigMap volume, no companion (no filter state read)."""
    example = os.path.join(EXAMPLES, "native-envoyfilter.yaml")
    r = run([HELM, "install", RELEASE, CHART, "--namespace", NAMESPACE, "--dry-run=client", "-f", example])
    assert r.returncode == 0, r.stderr
    notes = r.stdout.split("NOTES:", 1)[1]
    block = re.search(r"^spec:\n(?:[ ].*\n)+", notes, re.M)
    assert block, notes
    want = yaml.safe_load(open(os.path.join(ROOT, "deploy/istio/broker/native-proxy-image.patch.yaml"),
                               encoding="utf-8"))
    assert yaml.safe_load(block.group(0)) == {"spec": want["spec"]}, notes
    image = yaml.safe_load(open(example, encoding="utf-8"))["native"]["proxyImage"]
    assert want["spec"]["template"]["metadata"]["annotations"]["sidecar.istio.io/proxyImage"] == image
    assert "kafka-identity-peer-cert" not in r.stdout
