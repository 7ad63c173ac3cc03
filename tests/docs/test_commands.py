"""Every shell command the documentation shows, checked as a reader would run it.

Commands are extracted from every ```bash, ```sh, ```shell and ```console
block of README.md, charts/*/README.md and docs/*.md (console blocks: the
lines starting with "$ "), continuation lines joined, comments dropped, and
split at `&&` and `;`. Each command is checked by what it runs:

- helm install/upgrade/template/lint of a chart in this tree: the --set,
  --set-string and --set-json values go through Helm's own parser (strvals,
  via helm-python-sdk), then the chart's schema, `helm lint --strict` and a
  render whose objects are validated against the Kubernetes schemas. A chart
  path that is not in this tree (another branch's chart) is skipped, and
  checked once it exists. A pod with hostPath volumes needs its namespace
  labelled pod-security.kubernetes.io/enforce=privileged earlier in the same
  document.
- kubectl: namespaces and labels are validated as objects; rollout, logs,
  get and port-forward must name what the release installed earlier in the
  document renders (kind/name, label selector, container port); apply -f
  validates the file.
- workspace binaries (kata-pulse, kata-sim, any crate's bin): run from this
  build (`target/<profile>/x` and a bare name both mean the freshly built
  binary); they must keep running or exit 0, never with a usage error.
  Listen addresses become free local ports so runs never collide.
  `kata-sim demo` must print that it is up.
- curl against the agent: run, pipes included, against a live `kata-sim
  demo` (127.0.0.1:8090 is rewritten to its address); it must succeed and
  print something.
- promtool: run (skipped where promtool is missing).
- install: run into a scratch root.

Anything else fails, so a new command in the docs gets a checker or an
entry in ALLOWED below, with the reason it cannot run here.

Run: scripts/test.sh, or `pytest tests/docs` in the chart-test venv after
`cargo build --workspace --bins` (KATA_PULSE_BIN_DIR: where the binaries are,
default target/debug).
"""

from __future__ import annotations

import copy
import dataclasses
import glob
import os
import pathlib
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "chart"))
from crd_schemas import BY_KIND  # noqa: E402

DOCS = ["README.md", "charts/*/README.md", "docs/*.md"]
FENCE = re.compile(r"^```(bash|sh|shell|console)[^\n]*\n(.*?)^```", re.S | re.M)
BIN_DIR = pathlib.Path(os.environ.get("KATA_PULSE_BIN_DIR", ROOT / "target" / "debug"))
KUBE_VERSION = kubernetes_validate.latest_version()

# Commands that cannot be checked here, each with why. Matched (re.match)
# against the command as written, after joining continuation lines. Keep it
# short: everything not listed is checked.
ALLOWED = {
    # Builds in release mode take minutes; scripts/test.sh builds the same
    # workspace (debug) before this test and runs every binary from it.
    r"cargo build --release$": "the build itself: done by scripts/test.sh",
    # This test is one step of it.
    r"scripts/test\.sh$": "the test runner that runs this test",
    # scripts/test.sh runs it as a step of its own (the image test uses it);
    # the flags are checked against its usage text below.
    r"scripts/build-image\.sh( |$)": "run by scripts/test.sh as its own step",
    # Fuzzing runs for minutes per target: a command of its own, not a
    # test step (docs/fuzzing.md records its runs); the arguments are
    # checked against its usage below. The property tests it mentions are
    # part of `cargo test --workspace`, which scripts/test.sh runs.
    r"scripts/fuzz\.sh( |$)": "runs for minutes; its arguments are checked",
    # The soak runs for an hour (docs/operations.md records its runs); its
    # flags are checked against its usage below.
    r"scripts/soak\.sh( |$)": "runs for up to an hour; its flags are checked",
    r"cargo test -p prom-text( |$)": "part of cargo test --workspace in scripts/test.sh",
    # A release build and minutes of measurement; clippy --all-targets in
    # scripts/test.sh compiles the bench, docs/benchmarks.md records runs.
    r"cargo bench -p kata-pulse --bench pipeline$": "a benchmark of minutes; compiled by clippy",
    # The end-to-end benchmark builds release agents and runs for many
    # minutes (docs/benchmarks.md records its runs); the options are checked
    # against the script's usage and kata-bench --help below. A smoke test
    # of kata-bench (crates/bench/tests/smoke.rs) is part of cargo test.
    r"scripts/bench\.sh( |$)": "builds release agents and runs for minutes; its options are checked",
    r"(\./)?target/release/kata-bench( |$)": "runs for minutes against release agents; its flags are checked",
    # No Docker, systemd or remote Helm repository on a test machine; the
    # systemd unit is verified offline by scripts/test.sh (systemd-analyze).
    r"docker run ": "needs a Docker daemon",
    r"systemctl ": "needs a running systemd",
    r"journalctl ": "needs a running systemd",
    r"helm repo (add|update)": "needs network access to a chart repository",
    r"skopeo copy \S+ docker://": "pushes to a remote registry",
}


@dataclasses.dataclass
class Command:
    doc: str
    line: int
    text: str

    def __str__(self):
        return f"{self.doc}:{self.line}: {self.text}"


def logical_lines(block: str, console: bool):
    """(offset, line) of each command line, continuation lines joined."""
    pending, start = "", 0
    for i, raw in enumerate(block.split("\n")):
        line = raw.rstrip()
        if console and not pending:
            if not line.startswith("$ "):
                continue
            line = line[2:]
        if not pending:
            start = i
        if line.endswith("\\") and not line.endswith("\\\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full and not full.startswith("#"):
            yield start, full


PLACEHOLDER = re.compile(r"<([a-z][^<>]*)>")


def split_commands(line: str):
    """Splits at top-level && and ; (quotes respected); comments dropped.
    Placeholders such as `<pod of that node>` become one word."""
    line = PLACEHOLDER.sub(lambda m: "<" + re.sub(r"\W+", "-", m.group(1)) + ">", line)
    lex = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lex.whitespace_split = True
    lex.commenters = "#"
    parts, current = [], []
    for tok in lex:
        if tok in ("&&", ";"):
            parts.append(current)
            current = []
        else:
            current.append(tok)
    parts.append(current)
    return [p for p in parts if p]


def strip_comment(line: str) -> str:
    """The line without a trailing `# comment` outside quotes."""
    out, quote = [], None
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1].isspace()):
            break
        out.append(c)
    return "".join(out).strip()


def extract():
    cmds = []
    for pattern in DOCS:
        for path in sorted(glob.glob(str(ROOT / pattern))):
            rel = str(pathlib.Path(path).relative_to(ROOT))
            text = pathlib.Path(path).read_text()
            for m in FENCE.finditer(text):
                first = text[: m.start(2)].count("\n") + 1
                for off, line in logical_lines(m.group(2), m.group(1) == "console"):
                    cmds.append(Command(rel, first + off, line))
    return cmds


COMMANDS = extract()


# ---------------------------------------------------------------------------
# context shared by the commands of one document
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Release:
    name: str
    namespace: str
    objects: list


class DocState:
    """What earlier commands of a document did: namespaces, labels, releases."""

    def __init__(self):
        self.namespaces: dict[str, dict] = {}
        self.release: Release | None = None


STATES: dict[str, DocState] = {}


def state(doc):
    return STATES.setdefault(doc, DocState())


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deep_merge(base, extra):
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            deep_merge(base[k], v)
        else:
            base[k] = v
    return base


def validate_objects(objects):
    for obj in objects:
        body = {k: v for k, v in obj.items() if not k.startswith("__")}
        key = (body["apiVersion"], body["kind"])
        if key in BY_KIND:
            import jsonschema

            jsonschema.validate(body, BY_KIND[key])
        else:
            kubernetes_validate.validate(body, KUBE_VERSION, strict=True)


LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")


def binary(name):
    """The freshly built binary for `name`, `./target/<x>/name` or None."""
    base = pathlib.PurePath(name).name
    if "/" in name and not re.match(r"^(\./)?target/", name):
        return None
    p = BIN_DIR / base
    return p if p.is_file() else None


def workspace_bins():
    names = set()
    for cargo in glob.glob(str(ROOT / "crates" / "*" / "Cargo.toml")):
        text = pathlib.Path(cargo).read_text()
        names.update(re.findall(r'\[\[bin\]\]\s*name\s*=\s*"([^"]+)"', text))
    return names


WORKSPACE_BINS = workspace_bins()


# ---------------------------------------------------------------------------
# checkers
# ---------------------------------------------------------------------------


def check_helm(cmd, argv):
    sub = argv[1] if len(argv) > 1 else ""
    if sub not in ("install", "upgrade", "template", "lint", "uninstall"):
        pytest.fail(f"helm {sub}: no checker (add one or allow it in ALLOWED): {cmd}")
    rest = argv[2:]
    positional, values, namespace = [], {}, "default"
    i = 0
    while i < len(rest):
        a = rest[i]
        flag, eq, inline = a.partition("=")
        takes = flag in ("--set", "--set-string", "--set-json", "-f", "--values", "-n", "--namespace", "--version", "--timeout")
        if takes:
            value = inline if eq else rest[i + 1]
            i += 1 if eq else 2
            if flag == "--set":
                deep_merge(values, helm.parse_set_string(value))
            elif flag == "--set-string":
                deep_merge(values, helm.parse_set_string_values(value))
            elif flag == "--set-json":
                deep_merge(values, helm.parse_set_json(value))
            elif flag in ("-f", "--values"):
                path = ROOT / value
                assert path.is_file(), f"values file {value} does not exist: {cmd}"
                deep_merge(values, yaml.safe_load(path.read_text()) or {})
            elif flag in ("-n", "--namespace"):
                namespace = value
            continue
        if a in ("--create-namespace", "--install", "--wait", "--atomic", "--dry-run", "--strict"):
            i += 1
            continue
        assert not a.startswith("-"), f"helm flag {a} has no checker: {cmd}"
        positional.append(a)
        i += 1
    if sub == "uninstall":
        assert len(positional) == 1, f"helm uninstall takes one release: {cmd}"
        helm.validate_release_name(positional[0])
        return
    if sub == "lint":
        release, chart_ref = "lint", positional[0]
    else:
        assert len(positional) == 2, f"expected NAME CHART: {cmd}"
        release, chart_ref = positional
        helm.validate_release_name(release)
    chart_dir = (ROOT / chart_ref).resolve()
    if not chart_ref.startswith((".", "/", "charts/")):
        pytest.fail(f"chart {chart_ref} is not a path in this repository: {cmd}")
    if not (chart_dir / "Chart.yaml").is_file():
        pytest.skip(f"{chart_ref} is not in this tree")
    chart = helm.Chart.load(str(chart_dir))
    try:
        chart.validate_schema(values)
        rendered = chart.render(values, name=release, namespace=namespace)
    finally:
        chart.close()
    report = helm.lint(str(chart_dir), values, namespace=namespace, strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report.get("errors"), f"helm lint: {problems or report['errors']}: {cmd}"
    objects = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(d for d in yaml.safe_load_all(text) if d)
    validate_objects(objects)
    # nodeSelector values must stay flat keys (a lost backslash nests them).
    for obj in objects:
        sel = obj.get("spec", {}).get("template", {}).get("spec", {}).get("nodeSelector") or {}
        for k, v in sel.items():
            assert isinstance(v, str), f"nodeSelector {k} is not a string ({v!r}): {cmd}"
    if sub in ("install", "upgrade"):
        uses_host = any(
            "hostPath" in v
            for obj in objects
            for v in obj.get("spec", {}).get("template", {}).get("spec", {}).get("volumes", [])
        )
        if uses_host:
            labels = state(cmd.doc).namespaces.get(namespace, {})
            assert labels.get("pod-security.kubernetes.io/enforce") == "privileged", (
                f"the chart's pods mount host paths: namespace {namespace} needs "
                f"`kubectl label namespace {namespace} pod-security.kubernetes.io/enforce=privileged` "
                f"before this command in {cmd.doc}: {cmd}"
            )
        state(cmd.doc).release = Release(release, namespace, objects)


def kubectl_namespace(argv):
    """(namespace flag value or None, the rest of argv)."""
    out, ns, i = [], None, 0
    while i < len(argv):
        a = argv[i]
        if a in ("-n", "--namespace"):
            ns, i = argv[i + 1], i + 2
            continue
        if a.startswith("--namespace="):
            ns, i = a.split("=", 1)[1], i + 1
            continue
        out.append(a)
        i += 1
    return ns, out


def released(cmd, ns):
    rel = state(cmd.doc).release
    assert rel, f"no helm install earlier in {cmd.doc} to check this against: {cmd}"
    assert ns == rel.namespace, f"namespace {ns} is not the release's ({rel.namespace}): {cmd}"
    return rel


def find_object(rel, kind, name):
    for obj in rel.objects:
        if obj["kind"].lower() == kind.lower() and obj["metadata"]["name"] == name:
            return obj
    return None


def crd_resource_names():
    """Plural, singular and short names of the CRDs the charts ship."""
    names = set()
    for f in ROOT.glob("charts/*/crds/*.yaml"):
        for d in yaml.safe_load_all(f.read_text()):
            if d and d.get("kind") == "CustomResourceDefinition":
                n = d["spec"]["names"]
                names.update([n["plural"], n.get("singular", "")] + n.get("shortNames", []))
    names.discard("")
    return names


def daemonset_pods(rel):
    return [o for o in rel.objects if o["kind"] in ("DaemonSet", "Deployment", "StatefulSet")]


def check_kubectl(cmd, argv):
    ns, args = kubectl_namespace(argv[1:])
    verb = args[0] if args else ""
    st = state(cmd.doc)
    if verb == "create" and args[1] in ("namespace", "ns"):
        name = args[2]
        validate_objects([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}])
        st.namespaces.setdefault(name, {})
        return
    if verb == "label" and args[1] in ("namespace", "ns"):
        name = args[2]
        assert name in st.namespaces, f"namespace {name} is not created earlier in {cmd.doc}: {cmd}"
        for pair in args[3:]:
            if pair == "--overwrite":
                continue
            key, eq, value = pair.partition("=")
            assert eq and LABEL_KEY.match(key) and LABEL_VALUE.match(value), f"bad label {pair}: {cmd}"
            if key.startswith("pod-security.kubernetes.io/") and not key.endswith("-version"):
                assert value in ("privileged", "baseline", "restricted"), f"bad level {value}: {cmd}"
            st.namespaces[name][key] = value
        return
    if verb == "apply":
        # `--server-side` changes how, not what, is applied.
        rest = [a for a in args[1:] if a != "--server-side"]
        assert rest[0] == "-f" and not rest[1].startswith(("http", "-")), f"apply needs a file of this repository: {cmd}"
        docs = [d for d in yaml.safe_load_all((ROOT / rest[1]).read_text()) if d]
        validate_objects(docs)
        return
    if verb == "get" and args[1] in crd_resource_names():
        # Listing custom resources: the type must be one our charts install.
        assert all(a in ("--all-namespaces", "-A") for a in args[2:]) or len(args) == 3, cmd
        return
    if verb == "get" and args[1] in ("secret", "secrets"):
        rel = released(cmd, ns)
        assert find_object(rel, "secret", args[2]), f"secret {args[2]} is not rendered by the release: {cmd}"
        return
    if verb in ("rollout", "logs", "port-forward", "get"):
        rel = released(cmd, ns)
        if verb == "rollout":
            assert args[1] in ("restart", "status"), cmd
            target = args[2]
        elif verb == "logs":
            target = args[1]
        elif verb == "port-forward":
            target, ports = args[1], args[2]
            remote = int(ports.split(":")[-1])
            container_ports = {
                p["containerPort"]
                for w in daemonset_pods(rel)
                for c in w["spec"]["template"]["spec"]["containers"]
                for p in c.get("ports", [])
            }
            assert remote in container_ports, f"port {remote} is not a container port ({container_ports}): {cmd}"
        else:
            assert args[1] in ("pods", "pod", "po"), cmd
            selector = args[args.index("-l") + 1]
            want = dict(kv.split("=", 1) for kv in selector.split(","))
            assert any(
                want.items() <= w["spec"]["template"]["metadata"]["labels"].items() for w in daemonset_pods(rel)
            ), f"selector {selector} matches no pod of the release: {cmd}"
            return
        kind, _, name = target.partition("/")
        if kind == "pod":
            assert name.startswith("<") or name, cmd  # a placeholder for one pod
            return
        assert find_object(rel, kind, name), f"{target} is not rendered by the release: {cmd}"
        return
    pytest.fail(f"kubectl {verb}: no checker (add one or allow it in ALLOWED): {cmd}")


def listen_free(argv):
    """argv with listen addresses replaced by free local ports."""
    out, i = [], 0
    listen_flags = ("-l", "--listen-address", "-listen-address", "--listen")
    while i < len(argv):
        a = argv[i]
        flag, eq, _ = a.partition("=")
        if flag in listen_flags:
            out += [flag, f"127.0.0.1:{free_port()}"]
            i += 1 if eq else 2
            continue
        out.append(a)
        i += 1
    return out


def check_binary(cmd, argv):
    exe = binary(argv[0])
    if exe is None:
        pytest.skip(f"{argv[0]} is not built in {BIN_DIR}")
    args = listen_free(argv[1:])
    env = dict(os.environ, KATA_PULSE_LISTEN=f"127.0.0.1:{free_port()}")
    env.pop("RUST_LOG", None)
    if exe.name == "kata-sim" and args[:1] == ["demo"]:
        if not any(a.startswith("--listen") for a in args):
            args += ["--listen", f"127.0.0.1:{free_port()}"]
        proc = subprocess.Popen([str(exe), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            deadline, seen = time.time() + 90, ""
            while time.time() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                seen += line
                if "Press Ctrl-C" in line:
                    break
            assert "is up on http://" in seen, f"the demo did not come up: {seen}{proc.stderr.read() if proc.poll() is not None else ''}"
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=30)
        assert rc == 0, f"the demo exited {rc} on SIGTERM: {cmd}"
        return
    proc = subprocess.Popen([str(exe), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        out, err = proc.communicate(timeout=2)
        assert proc.returncode == 0, f"exit {proc.returncode}: {err.strip()}: {cmd}"
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)  # still running after 2 s: the flags were accepted


@pytest.fixture(scope="session")
def demo_addr():
    exe = BIN_DIR / "kata-sim"
    if not exe.is_file():
        pytest.skip(f"kata-sim is not built in {BIN_DIR}")
    addr = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [str(exe), "demo", "--listen", addr, "--seed", "1"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    seen = ""
    for line in proc.stdout:
        seen += line
        if "Press Ctrl-C" in line:
            break
    assert "is up on" in seen, seen
    yield addr
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def check_live(cmd, segment, addr):
    line = segment.replace("127.0.0.1:8090", addr).replace("localhost:8090", addr)
    r = subprocess.run(["bash", "-o", "pipefail", "-c", line], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr}: {cmd}"
    assert r.stdout.strip(), f"printed nothing: {cmd}"


def check_install(cmd, argv):
    root = pathlib.Path(tempfile.mkdtemp(prefix="docs-install-"))
    try:
        args, takes_value = [], False
        for a in argv[1:]:
            if takes_value:
                args.append(a)
                takes_value = False
            elif a in ("-m", "-o", "-g", "-t", "-S"):
                args.append(a)
                takes_value = True
            elif a.startswith("/"):
                dest = root / a.lstrip("/")
                dest.parent.mkdir(parents=True, exist_ok=True)
                args.append(str(dest))
            elif re.match(r"^target/[^/ ]+/", a):
                exe = BIN_DIR / pathlib.PurePath(a).name
                assert exe.is_file(), f"{a}: not built: {cmd}"
                args.append(str(exe))
            else:
                assert a.startswith("-") or (ROOT / a).exists(), f"{a} does not exist: {cmd}"
                args.append(a)
        r = subprocess.run(["install", *args], cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 0, f"{r.stderr}: {cmd}"
    finally:
        shutil.rmtree(root)


def check_build_image_flags(cmd, argv):
    usage = (ROOT / "scripts" / "build-image.sh").read_text()
    for a in argv[1:]:
        if a.startswith("-"):
            assert re.search(rf"^#\s+{re.escape(a)}\b", usage, re.M), f"build-image.sh has no {a}: {cmd}"


def check_soak_flags(cmd, argv):
    """Each --flag of `scripts/soak.sh` is in its usage, with a number."""
    usage = (ROOT / "scripts" / "soak.sh").read_text()
    args = argv[1:]
    for i, a in enumerate(args):
        if a.startswith("--"):
            assert re.search(rf"^#\s+{re.escape(a)} ", usage, re.M), f"soak.sh has no {a}: {cmd}"
            value = args[i + 1] if i + 1 < len(args) else ""
            assert a == "--out" or value.isdigit(), f"{a} needs a whole number: {cmd}"


def check_bench_script_args(cmd, argv):
    """`scripts/bench.sh` options must be the ones its usage lists; what
    follows `--` goes to kata-bench and is checked as its flags."""
    usage = (ROOT / "scripts" / "bench.sh").read_text()
    args = argv[1:]
    rest = args[args.index("--") + 1 :] if "--" in args else []
    for a in args[: len(args) - len(rest)]:
        if a.startswith("-") and a != "--":
            assert re.search(rf"^#\s+{re.escape(a)}\b", usage, re.M), f"scripts/bench.sh has no {a}: {cmd}"
    check_bench_flags(cmd, ["kata-bench", *rest])


def check_bench_flags(cmd, argv):
    """Every --flag given to kata-bench is one its --help lists."""
    exe = BIN_DIR / "kata-bench"
    if not exe.is_file():
        pytest.skip(f"kata-bench is not built in {BIN_DIR}")
    help_text = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    for a in argv[1:]:
        if a.startswith("--"):
            flag = a.split("=", 1)[0]
            assert re.search(rf"^\s+{re.escape(flag)}\b", help_text, re.M), f"kata-bench has no {flag}: {cmd}"


def check_fuzz_args(cmd, argv):
    """`scripts/fuzz.sh [TARGET] [SECONDS]` with a target it knows."""
    usage = (ROOT / "scripts" / "fuzz.sh").read_text()
    targets = ("parse", "roundtrip", "merge", "shim_response", "cri_mapping")
    known = re.search(r"^\s+" + r" \| ".join(targets) + r"\)", usage, re.M)
    assert known, "scripts/fuzz.sh no longer lists its targets as expected"
    args = argv[1:]
    assert len(args) <= 2, f"scripts/fuzz.sh takes [TARGET] [SECONDS]: {cmd}"
    if args:
        assert args[0] in ("all", *targets), f"unknown fuzz target: {cmd}"
    if len(args) == 2:
        assert args[1].isdigit() and int(args[1]) > 0, f"SECONDS must be a positive number: {cmd}"


# ---------------------------------------------------------------------------
# the test
# ---------------------------------------------------------------------------


def test_the_docs_have_commands():
    docs = {c.doc for c in COMMANDS}
    assert "README.md" in docs and len(COMMANDS) > 20, sorted(docs)


@pytest.mark.parametrize("cmd", COMMANDS, ids=[f"{c.doc}:{c.line}" for c in COMMANDS])
def test_command(cmd, request):
    for segment_argv, segment_text in zip(split_commands(cmd.text), split_text(cmd.text)):
        check_segment(cmd, segment_argv, segment_text, request)


def split_text(line):
    """The raw text of each && / ; part (for running pipelines as written)."""
    parts, cur, quote, i = [], "", None, 0
    while i < len(line):
        c = line[i]
        if quote:
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif line.startswith("&&", i) or c == ";":
            parts.append(cur)
            cur = ""
            i += 2 if c == "&" else 1
            continue
        cur += c
        i += 1
    parts.append(cur)
    return [strip_comment(p) for p in parts if strip_comment(p)]


def check_segment(cmd, argv, text, request):
    for pattern, _why in ALLOWED.items():
        if re.match(pattern, text):
            if pattern.startswith("scripts/build-image"):
                check_build_image_flags(cmd, argv)
            if pattern.startswith("scripts/fuzz"):
                check_fuzz_args(cmd, argv)
            if pattern.startswith("scripts/soak"):
                check_soak_flags(cmd, argv)
            if pattern.startswith("scripts/bench"):
                check_bench_script_args(cmd, argv)
            if "kata-bench" in pattern:
                check_bench_flags(cmd, argv)
            return
    prog = argv[0]
    if prog == "helm":
        check_helm(cmd, argv)
    elif prog == "kubectl":
        check_kubectl(cmd, argv)
    elif prog == "curl":
        check_live(cmd, text, request.getfixturevalue("demo_addr"))
    elif prog == "promtool":
        if not shutil.which("promtool"):
            pytest.skip("promtool not installed")
        r = subprocess.run(["bash", "-c", text], cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 0, f"{r.stdout}{r.stderr}: {cmd}"
    elif prog == "install":
        check_install(cmd, argv)
    elif pathlib.PurePath(prog).name in WORKSPACE_BINS:
        check_binary(cmd, argv)
    else:
        pytest.fail(f"no checker for `{prog}` (add one, or allow it in ALLOWED with a reason): {cmd}")
