"""Tests of the Helm chart charts/kata-pulse, rendered by real Helm.

Helm runs in-process through helm-python-sdk (Helm's own Go library, no
`helm` binary), every rendered object is validated against the Kubernetes
OpenAPI schemas with kubernetes-validate in strict mode (the Prometheus
Operator kinds against crd_schemas.py), and the fields that matter are
asserted: mounts, probes, security context, agent arguments, scraping.

Run: scripts/test.sh, or `pytest tests/chart` in a venv with helm-python-sdk,
kubernetes-validate, pytest and pyyaml. The argument test also runs the real
agent binary (KATA_PULSE_BIN, else target/{debug,release}/kata-pulse).
`KATA_PULSE_UPDATE_GOLDEN=1` rewrites golden/default-pod-spec.json, which
crates/kata-pulse/tests/image.rs reads to run the image as the chart does.
"""

from __future__ import annotations

import copy
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from crd_schemas import BY_KIND

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kata-pulse"
GOLDEN = pathlib.Path(__file__).resolve().parent / "golden" / "default-pod-spec.json"
RELEASE = "kata-pulse"
NAMESPACE = "monitoring"
# The newest Kubernetes kubernetes-validate knows, and the oldest the chart
# supports (Chart.yaml kubeVersion).
KUBE_VERSIONS = [kubernetes_validate.latest_version(), "1.25.0"]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chart():
    c = helm.Chart.load(str(CHART))
    yield c
    c.close()


def render(chart, values=None, name=RELEASE, namespace=NAMESPACE):
    """Renders the chart; returns the list of objects (empty templates dropped)."""
    out = chart.render(values or {}, name=name, namespace=namespace)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("__template", path)
                docs.append(doc)
    return docs


def notes(chart, values=None):
    out = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE)
    return out["kata-pulse/templates/NOTES.txt"]


def strip(doc):
    return {k: v for k, v in doc.items() if not k.startswith("__")}


def only(docs, kind):
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def kinds(docs):
    return sorted(d["kind"] for d in docs)


def pod_spec(docs):
    return only(docs, "DaemonSet")["spec"]["template"]["spec"]


def container(docs):
    containers = pod_spec(docs)["containers"]
    assert len(containers) == 1
    return containers[0]


def args_of(docs):
    """The agent's flags as {flag: value} (value None for a bare flag)."""
    out = {}
    for a in container(docs)["args"]:
        assert a.startswith("--"), a
        flag, eq, value = a.partition("=")
        assert flag not in out, f"{flag} given twice"
        out[flag] = value if eq else None
    return out


def host_mounts(docs):
    """[(hostPath, hostPath type, mountPath, readOnly)] of the agent container."""
    spec = pod_spec(docs)
    volumes = {v["name"]: v for v in spec["volumes"]}
    out = []
    for m in container(docs)["volumeMounts"]:
        v = volumes[m["name"]]
        assert "hostPath" in v, f"volume {m['name']} is not a hostPath"
        out.append((v["hostPath"]["path"], v["hostPath"].get("type"), m["mountPath"], m.get("readOnly", False)))
    return out


def validate_all(docs):
    for doc in docs:
        body = strip(doc)
        key = (body["apiVersion"], body["kind"])
        if key in BY_KIND:
            jsonschema.validate(body, BY_KIND[key])
            continue
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(body, version, strict=True)


def lint(values=None):
    report = helm.lint(str(CHART), values or {}, namespace=NAMESPACE, strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], report


def merge(base, extra):
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


# Realistic value sets, each rendered, linted and validated.
SCENARIOS = {
    "default": {},
    "custom-sandbox-dirs": {
        "config": {
            "sandboxDirs": [
                {"path": "/var/run/vc/sbs", "runtime": "go"},
                {"path": "/run/kata-containers/rs", "runtime": "rs"},
                {"path": "/run/kata"},
            ],
            "sandboxDirsHostPathType": "Directory",
        }
    },
    "cri-o": {"config": {"runtimeEndpoint": "unix:///var/run/crio/crio.sock"}},
    "cri-tcp": {"config": {"runtimeEndpoint": "tcp://10.0.0.1:10010"}},
    "podmonitor-off": {"podMonitor": {"enabled": False}},
    "service-and-servicemonitor": {
        "podMonitor": {"enabled": False},
        "service": {"enabled": True, "annotations": {"a": "b"}},
        "serviceMonitor": {
            "enabled": True,
            "namespace": "prometheus",
            "interval": "15s",
            "scrapeTimeout": "5s",
            "labels": {"release": "kube-prometheus-stack"},
            "relabelings": [{"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"}],
            "metricRelabelings": [{"action": "drop", "regex": "kata_shim_go_.*", "sourceLabels": ["__name__"]}],
        },
    },
    "prometheusrule": {"prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}},
    "dashboard": {
        "dashboard": {
            "enabled": True,
            "namespace": "grafana",
            "sidecarLabel": "grafana_dashboard",
            "sidecarLabelValue": "kata",
            "annotations": {"grafana_folder": "Kata"},
        }
    },
    "host-network": {"hostNetwork": True, "config": {"listenAddress": "0.0.0.0:9464"}},
    "extra-args-and-everything": {
        "image": {"repository": "registry.example.com/kata-pulse", "digest": "sha256:" + "a" * 64, "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "regcred"}],
        "nameOverride": "kp",
        "fullnameOverride": "kata-pulse-agent",
        "podLabels": {"team": "platform"},
        "podAnnotations": {"example.com/scrape": "false"},
        "priorityClassName": "system-node-critical",
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}},
        "terminationGracePeriodSeconds": 30,
        "extraArgs": ["--log-format=json"],
        "extraEnv": [{"name": "TZ", "value": "UTC"}],
        "nodeSelector": {"katacontainers.io/kata-runtime": "true"},
        "tolerations": [{"key": "kata", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}
                    ]
                }
            }
        },
        # null removes a default (here the CPU limit), as with helm --set.
        "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"cpu": None, "memory": "128Mi"}},
        "serviceAccount": {"create": True, "name": "kp-sa", "annotations": {"x": "y"}},
        "podMonitor": {
            "namespace": "prometheus",
            "labels": {"release": "kube-prometheus-stack"},
            "relabelings": [{"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"}],
            "metricRelabelings": [{"action": "labeldrop", "regex": "cri_uid"}],
        },
        "prometheusRule": {"enabled": True},
        "dashboard": {"enabled": True},
        "config": {"enableDebugProxy": True, "logLevel": "info,kata_pulse::cri=debug"},
    },
    "no-service-account": {"serviceAccount": {"create": False}},
}


# ---------------------------------------------------------------------------
# chart metadata and docs
# ---------------------------------------------------------------------------


def crate_version():
    text = (ROOT / "Cargo.toml").read_text()
    section = text.split("[workspace.package]", 1)[1]
    return re.search(r'^version\s*=\s*"([^"]+)"', section, re.M).group(1)


def test_chart_metadata(chart):
    meta = chart.metadata
    assert meta["apiVersion"] == "v2"
    assert meta["name"] == "kata-pulse"
    assert meta["version"] == "0.1.0"
    assert meta["appVersion"] == crate_version()


def leaf_keys(values, prefix=""):
    """Dotted paths of the leaves of values.yaml (lists and empty maps are leaves)."""
    out = []
    for k, v in values.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out += leaf_keys(v, path + ".")
        else:
            out.append(path)
    return out


def test_readme_lists_every_value():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    # The tables of the "## Values" section, up to the next "## " heading.
    section = readme.split("\n## Values\n", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([^`]+)` \|", section, re.M))
    # Nested maps (securityContext.capabilities.drop...) are documented at
    # the level of the map; config.sandboxDirs as a list.
    missing = []
    for key in leaf_keys(values):
        parts = key.split(".")
        if not any(".".join(parts[:i]) in documented for i in range(1, len(parts) + 1)):
            missing.append(key)
    assert not missing, f"values not documented in charts/kata-pulse/README.md: {missing}"
    unknown = [k for k in documented if not _has_path(values, k)]
    assert not unknown, f"README documents values that do not exist: {unknown}"
    # The default column tells the truth for every plain value (the old
    # chart's README disagreed with its values.yaml in almost every row).
    defaults = dict(re.findall(r"^\| `([^`]+)` \| ([^|]*) \|", section, re.M))
    wrong = []
    for key, cell in defaults.items():
        value = _get_path(values, key)
        if isinstance(value, bool):
            expected = [f"`{str(value).lower()}`"]
        elif isinstance(value, (int, float)):
            expected = [f"`{value}`"]
        elif isinstance(value, str):
            expected = [f'`"{value}"`'] + ([f"`{value}`"] if value else [])
        elif value in ([], {}):
            expected = [f"`{json.dumps(value)}`"]
        else:
            continue
        if not any(e in cell for e in expected):
            wrong.append(f"{key}: README says {cell.strip()}, values.yaml has {value!r}")
    assert not wrong, "\n".join(wrong)


def _get_path(values, dotted):
    node = values
    for p in dotted.split("."):
        node = node[p]
    return node


def _has_path(values, dotted):
    node = values
    for p in dotted.split("."):
        if not isinstance(node, dict) or p not in node:
            return False
        node = node[p]
    return True


# Every key of the old chart README's tables must exist and work.
SEED_KEYS = [
    "image.repository", "image.tag", "image.pullPolicy",
    "config.logLevel", "config.metricsIntervalSecs", "config.listenAddress", "config.runtimeEndpoint",
    "resources.requests.cpu", "resources.requests.memory", "resources.limits.cpu", "resources.limits.memory",
    "podMonitor.enabled", "podMonitor.interval", "podMonitor.scrapeTimeout", "podMonitor.namespace",
    "podSecurityContext.runAsNonRoot", "podSecurityContext.runAsUser",
    "securityContext.readOnlyRootFilesystem", "securityContext.allowPrivilegeEscalation",
    "nodeSelector", "tolerations", "affinity",
]


def test_seed_keys_exist(chart):
    values = chart.values
    for key in SEED_KEYS:
        assert _has_path(values, key), key


def test_defaults(chart):
    v = chart.values
    assert v["image"] == {"repository": "ghcr.io/kata-containers/kata-pulse", "tag": "", "digest": "", "pullPolicy": "IfNotPresent"}
    assert v["config"]["listenAddress"] == "0.0.0.0:8090"
    assert v["config"]["metricsIntervalSecs"] == 5
    assert v["podMonitor"]["interval"] == "30s"
    assert v["podMonitor"]["scrapeTimeout"] == "10s"
    assert v["hostNetwork"] is False


# ---------------------------------------------------------------------------
# every scenario: lint, render, validate
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_scenario_lints_renders_and_validates(chart, scenario):
    values = SCENARIOS[scenario]
    lint(values)
    docs = render(chart, values)
    validate_all(docs)
    # Objects are unique by kind, namespace and name.
    ids = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert len(ids) == len(set(ids)), ids
    # The common mount and security invariants hold in every scenario.
    check_mounts(docs, values)
    check_security(docs)
    check_probes(docs)
    assert notes(chart, values).strip()


def test_kubernetes_validate_cli_strict(chart, tmp_path):
    """The kubernetes-validate command itself, --strict, on every scenario."""
    cli = shutil.which("kubernetes-validate") or str(pathlib.Path(sys.executable).parent / "kubernetes-validate")
    files = []
    for name, values in SCENARIOS.items():
        f = tmp_path / f"{name}.yaml"
        f.write_text(yaml.safe_dump_all([strip(d) for d in render(chart, values)]))
        files.append(str(f))
    r = subprocess.run([cli, "--strict", *files], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    # Only the Prometheus Operator kinds are left to crd_schemas.py.
    for line in (r.stdout + r.stderr).splitlines():
        if "Couldn't find schema" in line:
            assert re.search(r"kind (PodMonitor|ServiceMonitor|PrometheusRule) with api version monitoring.coreos.com/v1", line), line


def test_default_objects(chart):
    docs = render(chart)
    assert kinds(docs) == ["DaemonSet", "PodMonitor", "ServiceAccount"]


# ---------------------------------------------------------------------------
# mounts
# ---------------------------------------------------------------------------


def check_mounts(docs, values):
    cfg = merge(helm.Chart.load(str(CHART)).values["config"], values.get("config", {}))
    mounts = host_mounts(docs)
    for host, _type, mount, ro in mounts:
        assert ro is True, f"{host} is mounted writable"
        assert host == mount, f"{host} is mounted at {mount}; the agent's flags name host paths"
        assert _type != "DirectoryOrCreate", f"{host} would be created on nodes without Kata"
    sandbox = [(h, t) for h, t, _, _ in mounts if h in {d["path"] for d in cfg["sandboxDirs"]}]
    assert [h for h, _ in sandbox] == [d["path"] for d in cfg["sandboxDirs"]]
    assert all(t == cfg["sandboxDirsHostPathType"] for _, t in sandbox)
    endpoint = cfg["runtimeEndpoint"]
    socket_mounts = [(h, t) for h, t, _, _ in mounts if t == "Socket"]
    if endpoint.startswith("tcp://"):
        assert socket_mounts == []
        assert len(mounts) == len(sandbox)
    else:
        path = endpoint.removeprefix("unix://")
        # The socket file alone: no folder of it (/run/containerd) is mounted.
        assert socket_mounts == [(path, "Socket")]
        assert len(mounts) == len(sandbox) + 1
        for h, _, _, _ in mounts:
            assert not (path.startswith(h.rstrip("/") + "/")), f"{h} contains the CRI socket"
        assert "/run/containerd" not in {h for h, _, _, _ in mounts}


def test_default_mounts(chart):
    mounts = host_mounts(render(chart))
    assert mounts == [
        ("/run/vc/sbs", "", "/run/vc/sbs", True),
        ("/run/kata", "", "/run/kata", True),
        ("/run/containerd/containerd.sock", "Socket", "/run/containerd/containerd.sock", True),
    ]


def test_custom_sandbox_dirs_and_crio(chart):
    values = merge(SCENARIOS["custom-sandbox-dirs"], SCENARIOS["cri-o"])
    docs = render(chart, values)
    assert host_mounts(docs) == [
        ("/var/run/vc/sbs", "Directory", "/var/run/vc/sbs", True),
        ("/run/kata-containers/rs", "Directory", "/run/kata-containers/rs", True),
        ("/run/kata", "Directory", "/run/kata", True),
        ("/var/run/crio/crio.sock", "Socket", "/var/run/crio/crio.sock", True),
    ]
    a = args_of(docs)
    assert a["--sandbox-dirs"] == "go=/var/run/vc/sbs,rs=/run/kata-containers/rs,/run/kata"
    assert a["--runtime-endpoint"] == "unix:///var/run/crio/crio.sock"


# ---------------------------------------------------------------------------
# probes, ports, security
# ---------------------------------------------------------------------------


def check_probes(docs):
    c = container(docs)
    args = args_of(docs)
    port = int(args["--listen-address"].rsplit(":", 1)[1])
    ports = [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
    # With a probe listener the kubelet's probes go there, not to the
    # metrics port (where TLS, basic auth or a flood could fail them).
    target = "metrics"
    if "--probe-listen-address" in args:
        probe = int(args["--probe-listen-address"].rsplit(":", 1)[1])
        ports.append({"name": "probes", "containerPort": probe, "protocol": "TCP"})
        target = "probes"
    assert c["ports"] == ports
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": target}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": target}


def test_probe_timings_and_host_network(chart):
    docs = render(chart, SCENARIOS["host-network"])
    spec = pod_spec(docs)
    assert spec["hostNetwork"] is True
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    c = container(docs)
    assert c["ports"][0]["containerPort"] == 9464
    assert c["livenessProbe"]["periodSeconds"] == 10
    assert c["readinessProbe"]["periodSeconds"] == 5
    assert "hostNetwork" not in pod_spec(render(chart))


def check_security(docs):
    spec = pod_spec(docs)
    assert spec["automountServiceAccountToken"] is False
    psc = spec["securityContext"]
    assert psc["runAsUser"] == 0 and psc["runAsNonRoot"] is False
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(docs)["securityContext"]
    assert sc["runAsUser"] == 0
    assert sc["runAsNonRoot"] is False
    assert sc["privileged"] is False
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert "add" not in sc["capabilities"]
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not spec.get("hostPID") and not spec.get("hostIPC")


def test_service_account(chart):
    docs = render(chart)
    sa = only(docs, "ServiceAccount")
    assert sa["automountServiceAccountToken"] is False
    assert pod_spec(docs)["serviceAccountName"] == sa["metadata"]["name"] == "kata-pulse"
    docs = render(chart, SCENARIOS["no-service-account"])
    assert "ServiceAccount" not in kinds(docs)
    assert pod_spec(docs)["serviceAccountName"] == "default"
    assert pod_spec(docs)["automountServiceAccountToken"] is False


# ---------------------------------------------------------------------------
# agent arguments
# ---------------------------------------------------------------------------

FLAG_OF = {
    "listenAddress": "--listen-address",
    "runtimeEndpoint": "--runtime-endpoint",
    "metricsIntervalSecs": "--metrics-interval-secs",
    "logLevel": "--log-level",
    "logFormat": "--log-format",
    "sandboxDirs": "--sandbox-dirs",
    "shimTimeout": "--shim-timeout",
    "criTimeout": "--cri-timeout",
    "criUnhealthyAfter": "--cri-unhealthy-after",
    "maxShimBodyBytes": "--max-shim-body-bytes",
    "shimConcurrency": "--shim-concurrency",
    "kataMetrics": "--kata-metrics",
    "cadvisorMetrics": "--cadvisor-metrics",
    "containerStats": "--container-stats",
    "enableDebugProxy": "--enable-debug-proxy",
    "probeListenAddress": "--probe-listen-address",
    "shutdownGracePeriod": "--shutdown-grace-period",
}

NON_DEFAULT_CONFIG = {
    "listenAddress": "[::]:9100",
    "runtimeEndpoint": "/var/run/crio/crio.sock",
    "metricsIntervalSecs": 12,
    "logLevel": "debug",
    "logFormat": "json",
    "sandboxDirs": [{"path": "/run/vc/sbs", "runtime": "go"}],
    "sandboxDirsHostPathType": "Directory",
    "shimTimeout": "1500ms",
    "criTimeout": "4s",
    "criUnhealthyAfter": "0s",
    "maxShimBodyBytes": 16777216,
    "shimConcurrency": 8,
    "kataMetrics": False,
    "cadvisorMetrics": False,
    "containerStats": "cri",
    "enableDebugProxy": True,
    "probeListenAddress": "",
    "shutdownGracePeriod": "2s",
}


def test_every_config_value_maps_to_its_flag(chart):
    defaults = chart.values["config"]
    assert set(FLAG_OF) | {"sandboxDirsHostPathType"} == set(defaults), "a config value has no flag mapping here"
    a = args_of(render(chart))
    assert a == {
        "--listen-address": "0.0.0.0:8090",
        "--runtime-endpoint": "/run/containerd/containerd.sock",
        "--metrics-interval-secs": "5",
        "--log-level": "info",
        "--log-format": "text",
        "--sandbox-dirs": "go=/run/vc/sbs,rs=/run/kata",
        "--shim-timeout": "3s",
        "--cri-timeout": "2s",
        "--cri-unhealthy-after": "5m",
        "--max-shim-body-bytes": "8388608",
        "--shim-concurrency": "32",
        "--kata-metrics": "true",
        "--cadvisor-metrics": "true",
        "--shutdown-grace-period": "5s",
        "--probe-listen-address": "0.0.0.0:8091",
        "--container-stats": "auto",
    }
    a = args_of(render(chart, {"config": NON_DEFAULT_CONFIG}))
    assert a == {
        "--listen-address": "[::]:9100",
        "--runtime-endpoint": "/var/run/crio/crio.sock",
        "--metrics-interval-secs": "12",
        "--log-level": "debug",
        "--log-format": "json",
        "--sandbox-dirs": "go=/run/vc/sbs",
        "--shim-timeout": "1500ms",
        "--cri-timeout": "4s",
        "--cri-unhealthy-after": "0s",
        "--max-shim-body-bytes": "16777216",
        "--shim-concurrency": "8",
        "--kata-metrics": "false",
        "--cadvisor-metrics": "false",
        "--shutdown-grace-period": "2s",
        "--container-stats": "cri",
        "--enable-debug-proxy": None,
    }


def test_extra_args_env_and_pod_settings(chart):
    values = SCENARIOS["extra-args-and-everything"]
    docs = render(chart, values)
    c = container(docs)
    # An extra flag replaces the chart's own (the agent refuses a flag twice).
    assert c["args"][-1] == "--log-format=json"
    assert args_of(docs)["--log-format"] == "json"
    assert args_of(docs)["--enable-debug-proxy"] is None
    assert c["env"] == [{"name": "TZ", "value": "UTC"}]
    assert c["image"] == "registry.example.com/kata-pulse@sha256:" + "a" * 64
    assert c["imagePullPolicy"] == "Always"
    ds = only(docs, "DaemonSet")
    assert ds["metadata"]["name"] == "kata-pulse-agent"
    spec = ds["spec"]["template"]["spec"]
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["priorityClassName"] == "system-node-critical"
    assert spec["terminationGracePeriodSeconds"] == 30
    assert spec["nodeSelector"] == values["nodeSelector"]
    assert spec["tolerations"] == values["tolerations"]
    assert spec["affinity"] == values["affinity"]
    assert spec["serviceAccountName"] == "kp-sa"
    assert c["resources"] == {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}}
    labels = ds["spec"]["template"]["metadata"]["labels"]
    assert labels["team"] == "platform"
    assert labels["app.kubernetes.io/name"] == "kp"
    assert ds["spec"]["template"]["metadata"]["annotations"] == values["podAnnotations"]
    assert ds["spec"]["updateStrategy"] == values["updateStrategy"]
    # The selector only uses labels that never change.
    assert ds["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "kp", "app.kubernetes.io/instance": RELEASE}


def test_image_tag_defaults_to_app_version(chart):
    assert container(render(chart))["image"] == "ghcr.io/kata-containers/kata-pulse:" + crate_version()
    assert container(render(chart, {"image": {"tag": "1.2.3"}}))["image"] == "ghcr.io/kata-containers/kata-pulse:1.2.3"


def find_agent_binary():
    env = os.environ.get("KATA_PULSE_BIN")
    if env:
        return pathlib.Path(env)
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    for p in [target / "debug" / "kata-pulse", target / "release" / "kata-pulse"]:
        if p.is_file():
            return p
    return None


@pytest.mark.parametrize("values", [{}, {"config": NON_DEFAULT_CONFIG}, SCENARIOS["extra-args-and-everything"]],
                         ids=["default", "non-default", "everything"])
def test_the_agent_accepts_the_rendered_args(chart, values):
    """The real kata-pulse binary starts with the rendered arguments.

    Only the listen address is swapped for a free loopback port: the rest
    (CRI endpoint, sandbox folders that do not exist here) the agent accepts
    and waits for, as on a node.
    """
    binary = find_agent_binary()
    if binary is None:
        msg = "no kata-pulse binary: build it (cargo build) or set KATA_PULSE_BIN"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    def local(a):
        for flag in ("--listen-address=", "--probe-listen-address="):
            if a.startswith(flag):
                return flag + "127.0.0.1:0"
        return a
    args = [local(a) for a in container(render(chart, values))["args"]]
    with tempfile.TemporaryFile() as log:
        p = subprocess.Popen([str(binary), *args], stdout=log, stderr=log, env={"PATH": os.environ.get("PATH", "")})
        try:
            deadline = time.monotonic() + 10
            text = ""
            while time.monotonic() < deadline:
                log.seek(0)
                text = log.read().decode(errors="replace")
                if "kata-pulse serving" in text or p.poll() is not None:
                    break
                time.sleep(0.05)
            assert p.poll() is None, f"kata-pulse exited {p.returncode} with {args}:\n{text}"
            assert "kata-pulse serving" in text, f"kata-pulse did not start with {args}:\n{text}"
        finally:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


# ---------------------------------------------------------------------------
# scraping objects
# ---------------------------------------------------------------------------


def test_pod_monitor(chart):
    docs = render(chart)
    pm = only(docs, "PodMonitor")
    assert pm["metadata"]["namespace"] == NAMESPACE
    spec = pm["spec"]
    assert spec["jobLabel"] == "app.kubernetes.io/name"
    pod_labels = only(docs, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    # The job label Prometheus gets is the value of the pod label jobLabel names.
    assert pod_labels[spec["jobLabel"]] == "kata-pulse"
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert spec["podMetricsEndpoints"] == [{
        "port": "metrics", "path": "/metrics", "scheme": "http",
        "interval": "30s", "scrapeTimeout": "10s", "honorLabels": True,
        # The node's name as `node`, for the dashboard and the alerts.
        "relabelings": [{"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"}],
    }]
    # In another namespace it still selects the release namespace's pods.
    pm = only(render(chart, SCENARIOS["extra-args-and-everything"]), "PodMonitor")
    assert pm["metadata"]["namespace"] == "prometheus"
    assert pm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert pm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    ep = pm["spec"]["podMetricsEndpoints"][0]
    assert ep["relabelings"] == SCENARIOS["extra-args-and-everything"]["podMonitor"]["relabelings"]
    assert ep["metricRelabelings"] == [{"action": "labeldrop", "regex": "cri_uid"}]
    assert ep["honorLabels"] is True


WEB = {
    "webConfig": {"secretName": "kata-pulse-web"},
    "podMonitor": {
        "scheme": "https",
        "tlsConfig": {"ca": {"secret": {"name": "kata-pulse-web", "key": "ca.crt"}}, "serverName": "kata-pulse"},
        "basicAuth": {"username": {"name": "scrape", "key": "username"},
                      "password": {"name": "scrape", "key": "password"}},
    },
}


def test_web_config_secret_and_tls_scraping(chart):
    docs = render(chart, WEB)
    validate_all(docs)
    c = container(docs)
    assert "--web.config.file=/etc/kata-pulse/web/web-config.yml" in c["args"]
    mount = [m for m in c["volumeMounts"] if m["name"] == "web-config"]
    assert mount == [{"name": "web-config", "mountPath": "/etc/kata-pulse/web", "readOnly": True}]
    volume = [v for v in pod_spec(docs)["volumes"] if v["name"] == "web-config"]
    assert volume == [{"name": "web-config", "secret": {"secretName": "kata-pulse-web"}}]
    # The probes stay on the plain, unauthenticated probe port.
    check_probes(docs)
    assert c["livenessProbe"]["httpGet"]["port"] == "probes"
    ep = only(docs, "PodMonitor")["spec"]["podMetricsEndpoints"][0]
    assert ep["scheme"] == "https"
    assert ep["tlsConfig"] == WEB["podMonitor"]["tlsConfig"]
    assert ep["basicAuth"] == WEB["podMonitor"]["basicAuth"]
    # The same for a ServiceMonitor.
    sm_values = {**WEB, "podMonitor": {"enabled": False}, "service": {"enabled": True},
                 "serviceMonitor": {**WEB["podMonitor"], "enabled": True}}
    ep = only(render(chart, sm_values), "ServiceMonitor")["spec"]["endpoints"][0]
    assert ep["scheme"] == "https" and ep["basicAuth"] == WEB["podMonitor"]["basicAuth"]
    # Without webConfig nothing is mounted and the scrape is plain.
    docs = render(chart)
    assert not any(a.startswith("--web.config.file") for a in container(docs)["args"])
    assert "tlsConfig" not in only(docs, "PodMonitor")["spec"]["podMetricsEndpoints"][0]


def test_the_agent_serves_tls_from_the_mounted_secret(chart, tmp_path):
    """The rendered args with a web config as the Secret would hold it: the
    real agent starts, its probe port answers plain HTTP."""
    binary = find_agent_binary()
    if binary is None:
        if IN_CI:
            pytest.fail("no kata-pulse binary")
        pytest.skip("no kata-pulse binary")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=kata-pulse", "-keyout", "tls.key", "-out", "tls.crt"],
                   cwd=tmp_path, check=True, capture_output=True)
    (tmp_path / "web-config.yml").write_text("tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n")
    probe = free_local_port()
    args = []
    for a in container(render(chart, WEB))["args"]:
        if a.startswith("--listen-address="):
            a = "--listen-address=127.0.0.1:0"
        elif a.startswith("--probe-listen-address="):
            a = f"--probe-listen-address=127.0.0.1:{probe}"
        elif a.startswith("--web.config.file="):
            a = f"--web.config.file={tmp_path / 'web-config.yml'}"
        args.append(a)
    p = subprocess.Popen([str(binary), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env={"PATH": os.environ.get("PATH", "")})
    try:
        import urllib.request
        deadline = time.monotonic() + 10
        status = None
        while time.monotonic() < deadline and p.poll() is None:
            try:
                status = urllib.request.urlopen(f"http://127.0.0.1:{probe}/healthz", timeout=2).status
                break
            except OSError:
                time.sleep(0.05)
        assert status == 200, f"no plain /healthz on the probe port; exit {p.poll()}"
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            assert p.wait(5) == 0
        finally:
            if p.poll() is None:
                p.kill()


def free_local_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_pod_monitor_disabled(chart):
    assert "PodMonitor" not in kinds(render(chart, SCENARIOS["podmonitor-off"]))


def test_service_and_service_monitor(chart):
    values = SCENARIOS["service-and-servicemonitor"]
    docs = render(chart, values)
    assert kinds(docs) == ["DaemonSet", "Service", "ServiceAccount", "ServiceMonitor"]
    svc = only(docs, "Service")
    pod_labels = only(docs, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 8090, "targetPort": "metrics", "protocol": "TCP"}]
    sm = only(docs, "ServiceMonitor")
    assert sm["metadata"]["namespace"] == "prometheus"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert svc["metadata"]["labels"][sm["spec"]["jobLabel"]] == "kata-pulse"
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    ep = sm["spec"]["endpoints"][0]
    assert (ep["port"], ep["path"], ep["interval"], ep["scrapeTimeout"], ep["honorLabels"]) == ("metrics", "/metrics", "15s", "5s", True)
    assert ep["metricRelabelings"] == values["serviceMonitor"]["metricRelabelings"]


def test_prometheus_rule_is_the_alerts_file(chart, tmp_path):
    docs = render(chart, SCENARIOS["prometheusrule"])
    rule = only(docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    source = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    assert rule["spec"]["groups"] == source["groups"], "the rules changed on their way through Helm"
    # Prometheus' own templates ({{ $labels.x }}) reach Prometheus verbatim.
    promtool = shutil.which("promtool")
    if promtool:
        f = tmp_path / "rules.yaml"
        f.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
        r = subprocess.run([promtool, "check", "rules", str(f)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr


def test_dashboard_config_map(chart):
    values = SCENARIOS["dashboard"]
    cm = only(render(chart, values), "ConfigMap")
    assert cm["metadata"]["namespace"] == "grafana"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "kata"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Kata"}
    source = json.loads((CHART / "files" / "dashboard.json").read_text())
    assert json.loads(cm["data"]["kata-pulse.json"]) == source
    cm = only(render(chart, {"dashboard": {"enabled": True}}), "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == NAMESPACE


# ---------------------------------------------------------------------------
# bad values are rejected, with a message naming the problem
# ---------------------------------------------------------------------------

REJECTED = [
    ({"config": {"metricsIntervalSecs": "5"}}, "metricsIntervalSecs"),
    ({"config": {"metricsIntervalSecs": 0}}, "metricsIntervalSecs"),
    ({"config": {"metricsIntervalSecs": -5}}, "metricsIntervalSecs"),
    ({"config": {"metricsIntervalSecs": 2.5}}, "metricsIntervalSecs"),
    ({"podMonitor": {"interval": "-30s"}}, "interval"),
    ({"podMonitor": {"interval": 30}}, "interval"),
    ({"podMonitor": {"scrapeTimeout": "ten seconds"}}, "scrapeTimeout"),
    ({"podMonitor": {"enabled": "true"}}, "enabled"),
    ({"hostNetwork": "yes"}, "hostNetwork"),
    ({"extraArgs": "--log-level=debug"}, "extraArgs"),
    ({"extraArgs": [1]}, "extraArgs"),
    ({"resources": []}, "resources"),
    ({"tolerations": {}}, "tolerations"),
    ({"bogus": 1}, "bogus"),
    ({"podmonitor": {"enabled": False}}, "podmonitor"),
    ({"config": {"logleve": "debug"}}, "logleve"),
    ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
    ({"image": {"digest": "latest"}}, "digest"),
    ({"config": {"logFormat": "xml"}}, "logFormat"),
    ({"config": {"sandboxDirsHostPathType": "DirectoryOrCreate"}}, "sandboxDirsHostPathType"),
    ({"config": {"sandboxDirs": []}}, "sandboxDirs"),
    ({"config": {"sandboxDirs": [{"path": "run/kata"}]}}, "path"),
    ({"config": {"sandboxDirs": [{"path": "/a,/b"}]}}, "path"),
    ({"config": {"sandboxDirs": [{"path": "/run/kata", "runtime": "java"}]}}, "runtime"),
    ({"config": {"runtimeEndpoint": "run/containerd/containerd.sock"}}, "runtimeEndpoint"),
    ({"config": {"listenAddress": ":8090"}}, "listenAddress"),
    ({"config": {"listenAddress": "localhost:8090"}}, "listenAddress"),
    ({"config": {"shimTimeout": "3 seconds"}}, "shimTimeout"),
    ({"config": {"shimConcurrency": 0}}, "shimConcurrency"),
    ({"config": {"maxShimBodyBytes": 10}}, "maxShimBodyBytes"),
    ({"service": {"port": 70000}}, "port"),
    ({"terminationGracePeriodSeconds": -1}, "terminationGracePeriodSeconds"),
    ({"livenessProbe": {"httpGet": {"path": "/"}}}, "httpGet"),
    ({"livenessProbe": {"periodSeconds": 0}}, "periodSeconds"),
    ({"podLabels": {"a": 1}}, "podLabels"),
    ({"dashboard": {"sidecarLabel": ""}}, "sidecarLabel"),
]


@pytest.mark.parametrize("values,needle", REJECTED, ids=[n + "-" + str(i) for i, (_, n) in enumerate(REJECTED)])
def test_schema_rejects(chart, values, needle):
    with pytest.raises(helm.HelmValuesError) as e:
        chart.validate_schema(values)
    assert needle in str(e.value)
    with pytest.raises(helm.HelmError):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


TEMPLATE_REJECTED = [
    ({"config": {"listenAddress": "127.0.0.1:8090"}}, "loopback"),
    ({"config": {"listenAddress": "[::1]:8090"}}, "loopback"),
    ({"config": {"listenAddress": "0.0.0.0:0"}}, "port out of range"),
    ({"config": {"sandboxDirs": [{"path": "/run/kata"}, {"path": "/run/kata", "runtime": "rs"}]}}, "twice"),
    ({"service": {"enabled": True}, "serviceMonitor": {"enabled": True}}, "scraped twice"),
    ({"podMonitor": {"enabled": False}, "serviceMonitor": {"enabled": True}}, "service.enabled"),
    ({"extraArgs": ["-l", "0.0.0.0:9000"]}, "config.listenAddress"),
    ({"extraArgs": ["--listen-address=0.0.0.0:9000"]}, "config.listenAddress"),
    ({"extraArgs": ["-runtime-endpoint", "/run/crio/crio.sock"]}, "config.runtimeEndpoint"),
    ({"extraArgs": ["--sandbox-dirs=/run/x"]}, "config.sandboxDirs"),
]


@pytest.mark.parametrize("values,needle", TEMPLATE_REJECTED, ids=[f"{n}-{i}" for i, (_, n) in enumerate(TEMPLATE_REJECTED)])
def test_render_rejects(chart, values, needle):
    chart.validate_schema(values)
    with pytest.raises(helm.HelmRenderError) as e:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert needle in str(e.value)


# ---------------------------------------------------------------------------
# the pod spec the image test runs (crates/kata-pulse/tests/image.rs)
# ---------------------------------------------------------------------------


def test_golden_default_pod_spec(chart):
    spec = pod_spec(render(chart))
    text = json.dumps(spec, indent=2, sort_keys=True) + "\n"
    if os.environ.get("KATA_PULSE_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    assert GOLDEN.is_file(), f"{GOLDEN} is missing; run with KATA_PULSE_UPDATE_GOLDEN=1"
    assert GOLDEN.read_text() == text, (
        f"the chart's default pod spec changed; review and rerun with KATA_PULSE_UPDATE_GOLDEN=1 "
        f"(the image test runs the container from {GOLDEN.name})"
    )


def _snake(relabelings):
    """Prometheus Operator RelabelConfig keys as Prometheus' own."""
    names = {"sourceLabels": "source_labels", "targetLabel": "target_label"}
    return [{names.get(k, k): v for k, v in r.items()} for r in relabelings]


def _docs_kubelet_rule():
    """The kubelet-side rule of docs/cadvisor.md (kube-prometheus-stack values)."""
    text = (ROOT / "docs" / "cadvisor.md").read_text()
    block = text.split("## Beside the kubelet", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    values = yaml.safe_load(block)
    return values["kubelet"]["serviceMonitor"]["cAdvisorMetricRelabelings"]


_SYSTEMD_POD = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod%s.slice"
# The kubelet's cAdvisor rows (container, id, image, name, node, pod, value)
# on a node of each kind: "node-a" mixes runc pods and Kata pods of the Go
# runtime with the cgroupfs driver (sandbox cgroup kata_<id>); "kata-pool-1"
# runs only Kata pods under the systemd driver, where the sandbox cgroup is
# the scope containerd asked for, shaped as a runc pause container's.
KUBELET_ROWS = {
    "pod (cgroupfs)": ("", "/kubepods/burstable/podu1", "", "", "node-a", "web", "4e8"),
    "kata sandbox (Go, cgroupfs)": ("", "/kubepods/burstable/podu1/kata_" + "ab" * 32, "pause", "ab" * 32, "node-a", "web", "4e8"),
    "runc pause (cgroupfs)": ("", "/kubepods/burstable/podr1/" + "ef" * 32, "pause", "ef" * 32, "node-a", "other", "3e5"),
    "runc container (cgroupfs)": ("app", "/kubepods/burstable/podr1/" + "cd" * 32, "nginx", "cd" * 32, "node-a", "other", "1e8"),
    "runc pause (systemd, mixed node)": ("", _SYSTEMD_POD % "r2" + "/cri-containerd-" + "12" * 32 + ".scope", "pause", "12" * 32, "node-a", "third", "3e5"),
    "pod (systemd)": ("", _SYSTEMD_POD % "u2", "", "", "kata-pool-1", "db", "6e8"),
    "kata sandbox (systemd)": ("", _SYSTEMD_POD % "u2" + "/cri-containerd-" + "34" * 32 + ".scope", "pause", "34" * 32, "kata-pool-1", "db", "6e8"),
}
KUBELET_KEPT = {"pod (cgroupfs)", "runc pause (cgroupfs)", "runc container (cgroupfs)",
                "runc pause (systemd, mixed node)", "pod (systemd)"}


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="needs the prometheus binary")
def test_kubelet_compat_relabelling_in_a_real_prometheus(chart, tmp_path):
    """The PodMonitor's rendered metricRelabelings and the docs' kubelet-side
    rule, applied by a real Prometheus: kata-pulse's container_* series get
    the kubelet's job and metrics_path (the agent's own keep theirs, user
    rules still apply); the docs' kubelet rules drop the Kata sandbox rows of
    both cgroup drivers (kata_<id>; a systemd scope on a Kata-only node) and
    keep pod rows and runc pods' pause and container rows."""
    import http.server
    import threading
    import urllib.parse
    import urllib.request

    docs = render(chart, {"podMonitor": {"kubeletCompat": True,
                                         "metricRelabelings": [{"action": "labeldrop", "regex": "cri_uid"}]}})
    ep = only(docs, "PodMonitor")["spec"]["podMetricsEndpoints"][0]
    agent_rules = _snake(ep["metricRelabelings"])
    assert agent_rules[-1] == {"action": "labeldrop", "regex": "cri_uid"}, "user rules come after"
    kubelet_rules = _snake(_docs_kubelet_rule())
    sandbox = "ab" * 32
    bodies = {
        "/agent": (
            'container_memory_working_set_bytes{container="app",id="/kata/%s/c1",image="nginx",name="c1",namespace="shop",pod="web"} 5e6\n'
            'kata_pulse_cri_up 1\n'
            'kata_pulse_shim_up{sandbox_id="%s",cri_uid="u1",cri_name="web",cri_namespace="shop"} 1\n' % (sandbox, sandbox)
        ),
        "/metrics/cadvisor": "".join(
            'container_memory_working_set_bytes{container="%s",id="%s",image="%s",name="%s",namespace="shop",node="%s",pod="%s"} %s\n'
            % row for row in KUBELET_ROWS.values()
        ),
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = bodies.get(self.path.split("?")[0], "").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    target = f"127.0.0.1:{server.server_address[1]}"
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "kata-pulse", "honor_labels": True, "metrics_path": "/agent",
             "static_configs": [{"targets": [target]}], "metric_relabel_configs": agent_rules},
            {"job_name": "kubelet", "honor_labels": True, "metrics_path": "/metrics/cadvisor",
             "static_configs": [{"targets": [target]}],
             "relabel_configs": [{"source_labels": ["__metrics_path__"], "target_label": "metrics_path"}],
             "metric_relabel_configs": kubelet_rules},
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    prom = subprocess.Popen(
        ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "w"))

    def query(expr):
        url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=5) as r:
            return {tuple(sorted(s["metric"].items())): float(s["value"][1])
                    for s in json.load(r)["data"]["result"]}

    try:
        selected = {}
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                selected = query('container_memory_working_set_bytes{job="kubelet", metrics_path="/metrics/cadvisor"}')
                if len(selected) == 1 + len(KUBELET_KEPT) and query('kata_pulse_cri_up'):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        kept = {dict(k)["id"] for k in query('container_memory_working_set_bytes{job="kubelet", metrics_path="/metrics/cadvisor"}')}
        want = {f"/kata/{sandbox}/c1"} | {KUBELET_ROWS[k][1] for k in KUBELET_KEPT}
        assert kept == want, sorted(kept ^ want)
        # The agent's own series keep its job; the user's rule still applies.
        own = query('kata_pulse_shim_up')
        assert [dict(k)["job"] for k in own] == ["kata-pulse"]
        assert all("cri_uid" not in dict(k) for k in own)
    finally:
        prom.send_signal(signal.SIGTERM)
        prom.wait(timeout=10)
        server.shutdown()
