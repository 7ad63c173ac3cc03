//! The chart's Grafana dashboard and alert rules
//! (`charts/kata-pulse/files/`) against what the agent really serves: a
//! real containerd with a Kata pod and containers, simulated shims, the
//! agent, and a real Prometheus scraping it and loading the alerts. Every
//! query of every panel and every template variable must parse and return
//! data; every rule must load and evaluate; the alerts the test node
//! provokes must go pending. The end-to-end test needs root, containerd,
//! runc and prometheus (scripts/test.sh installs them); the other tests
//! need only promtool.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{serve_static_shim, Agent, Roots, Sims};
use kata_sim::{Fault, Flavour};
use serde_json::Value;
use testbed::{host_network_pod, http_get, url_encode, vector_samples, Containerd, Prometheus};

const DASHBOARD: &str = "charts/kata-pulse/files/dashboard.json";
const ALERTS: &str = "charts/kata-pulse/files/alerts.yaml";
const RULE_TESTS: &str = "tests/rules";

/// Node name the test's scrape config gives the agent, as the chart's
/// PodMonitor does from the pod's node.
const NODE: &str = "kata-node-1";
/// What Grafana substitutes for its interval macros in the test.
const BUILTINS: [(&str, &str); 4] = [
    ("__rate_interval", "30s"),
    ("__interval", "2s"),
    ("__interval_ms", "2000"),
    ("__range", "5m"),
];

/// A Go sandbox CRI does not know, served by a healthy simulated shim.
const ORPHAN_GO: &str = "0a0a000000000000000000000000000000000000000000000000000000000000";
/// A runtime-rs sandbox CRI does not know.
const ORPHAN_RS: &str = "0b0b000000000000000000000000000000000000000000000000000000000000";
/// A sandbox whose shim answers 500.
const BROKEN: &str = "0c0c000000000000000000000000000000000000000000000000000000000000";
/// A sandbox whose shim writes a family with another type than the other
/// shims (it sorts last, so its type is the one dropped), a malformed line
/// and a reserved family.
const ODD: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";
const ODD_BODY: &str = "# HELP kata_guest_load Guest system load.
# TYPE kata_guest_load counter
kata_guest_load{item=\"load1\"} 5
# HELP kata_agent_threads Kata agent threads.
# TYPE kata_agent_threads gauge
kata_agent_threads 3
kata_agent_total_rss{item=\"oops\" 1
# HELP kata_pulse_impostor Not the agent's.
# TYPE kata_pulse_impostor gauge
kata_pulse_impostor 1
";

fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(repo_path(DASHBOARD)).expect("read dashboard");
    serde_json::from_str(&text).expect("dashboard is JSON")
}

/// Every panel, those nested in (collapsed) rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// (panel title, refId, expr) of every query in the dashboard.
fn queries(dashboard: &Value) -> Vec<(String, String, String)> {
    panels(dashboard)
        .into_iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_string();
            p["targets"].as_array().into_iter().flatten().map(move |t| {
                (
                    title.clone(),
                    t["refId"].as_str().unwrap_or_default().to_string(),
                    t["expr"].as_str().unwrap_or_default().to_string(),
                )
            })
        })
        .collect()
}

/// Template variables of type `query`: (name, selector, label) from
/// `label_values(<selector>, <label>)`, in dashboard order.
fn query_variables(dashboard: &Value) -> Vec<(String, String, String)> {
    dashboard["templating"]["list"]
        .as_array()
        .expect("templating list")
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let name = v["name"].as_str().unwrap().to_string();
            let q = v["query"]["query"]
                .as_str()
                .or_else(|| v["query"].as_str())
                .unwrap_or_else(|| panic!("variable {name} has no query"));
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|s| s.strip_suffix(')'))
                .unwrap_or_else(|| panic!("variable {name}: not label_values(...): {q}"));
            let (selector, label) = inner
                .rsplit_once(',')
                .unwrap_or_else(|| panic!("variable {name}: no label in {q}"));
            (name, selector.trim().to_string(), label.trim().to_string())
        })
        .collect()
}

/// Grafana's interpolation of `$name` and `${name}` / `${name:format}` for
/// the given variables; anything else (`$1` in label_replace) is kept.
fn interpolate(expr: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(braced) = after.strip_prefix('{') {
            if let Some(end) = braced.find('}') {
                let name = braced[..end].split(':').next().unwrap_or_default();
                if let Some(v) = vars.get(name) {
                    out.push_str(v);
                    rest = &braced[end + 1..];
                    continue;
                }
            }
        } else {
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if let Some(v) = vars.get(&after[..len]) {
                out.push_str(v);
                rest = &after[len..];
                continue;
            }
        }
        out.push('$');
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Variable references (`$name`, `${name...}`) in `expr`; `$1` style
/// regex back-references are not variables.
fn references(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in expr.match_indices('$') {
        let after = &expr[i + 1..];
        let after = after.strip_prefix('{').unwrap_or(after);
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            out.insert(name);
        }
    }
    out
}

fn builtins() -> BTreeMap<String, String> {
    BUILTINS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Instant query with the HTTP status kept: (status, body as JSON).
fn instant(prom: &Prometheus, expr: &str) -> (u16, Value) {
    let url = format!("{}/api/v1/query?query={}", prom.url(), url_encode(expr));
    let resp = http_get(&url, Duration::from_secs(10)).expect("query Prometheus");
    let body = serde_json::from_slice(&resp.body).unwrap_or(Value::String(resp.text()));
    (resp.status, body)
}

/// Runs every query until each has returned at least one series, or the
/// deadline passes. A query Prometheus rejects fails at once: no amount of
/// waiting makes it valid.
fn assert_all_return_data(prom: &Prometheus, what: &str, queries: &[(String, String)]) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut pending: Vec<&(String, String)> = queries.iter().collect();
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    loop {
        pending.retain(|(name, expr)| {
            let (status, body) = instant(prom, expr);
            assert!(
                status == 200 && body["status"] == "success",
                "{what}: {name}: Prometheus rejected\n  {expr}\nHTTP {status}: {body}"
            );
            let n = body["data"]["result"].as_array().map_or(0, |r| r.len());
            if n == 0 {
                last.insert(name.clone(), body["data"].to_string());
            }
            n == 0
        });
        if pending.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            let list: Vec<String> = pending
                .iter()
                .map(|(name, expr)| format!("  {name}:\n    {expr}\n    last: {}", last[name]))
                .collect();
            panic!(
                "{what}: {} queries never returned data:\n{}",
                list.len(),
                list.join("\n")
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Creates and starts a container with CPU and memory limits in a pod.
fn run_limited_container(
    ctd: &Containerd,
    pod_id: &str,
    pod_config: Option<cri_api::runtime::v1::PodSandboxConfig>,
    name: &str,
    args: &[&str],
) -> String {
    use cri_api::runtime::v1::{LinuxContainerConfig, LinuxContainerResources};
    let linux = LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 256 << 20,
            ..Default::default()
        }),
        ..Default::default()
    };
    ctd.run_container_with(pod_id, pod_config, name, args, Some(linux))
        .unwrap_or_else(|e| panic!("container {name}: {e:#}\n{}", ctd.log_tail(20)))
}

/// Alerting rule names in the rule file, in order.
fn alert_names() -> Vec<String> {
    std::fs::read_to_string(repo_path(ALERTS))
        .expect("read alerts")
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- alert:"))
        .map(|n| n.trim().to_string())
        .collect()
}

/// Active (pending or firing) alerts: alertname -> label sets.
fn active_alerts(prom: &Prometheus) -> BTreeMap<String, Vec<BTreeMap<String, String>>> {
    let data = prom.api("/api/v1/alerts").expect("alerts");
    let mut out: BTreeMap<String, Vec<BTreeMap<String, String>>> = BTreeMap::new();
    for a in data["alerts"].as_array().into_iter().flatten() {
        let labels: BTreeMap<String, String> = a["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        out.entry(labels["alertname"].clone())
            .or_default()
            .push(labels);
    }
    out
}

/// A Kata node with everything the dashboard shows: a real CRI pod with a
/// CPU-burning, limited container and an idle one (Go shim), a runtime-rs
/// and a Go sandbox CRI does not know, a shim that fails, one whose output
/// conflicts with the others. Every panel query and every template variable
/// returns data from a real Prometheus, with the variables at "All" and at
/// the test pod; the alert rules load, evaluate, and the alerts this node
/// deserves go pending while those it does not stay silent.
#[test]
fn every_dashboard_query_returns_data_and_alerts_evaluate() {
    let ctd = Containerd::start().expect("containerd");
    let req = host_network_pod("web", "dash", "kata");
    let pod_config = req.config.clone();
    let kata_id = ctd.run_pod(req).expect("kata pod");
    run_limited_container(&ctd, &kata_id, pod_config.clone(), "app", &["spin"]);
    ctd.run_container(&kata_id, pod_config, "sidecar", &[])
        .expect("sidecar");

    let roots = Roots::new();
    let sims = Sims::new();
    let _shims = [
        sims.start(&roots.go, &kata_id, Flavour::Go, Fault::None),
        sims.start(&roots.go, ORPHAN_GO, Flavour::Go, Fault::None),
        sims.start(&roots.rs, ORPHAN_RS, Flavour::RuntimeRs, Fault::None),
        sims.start(&roots.go, BROKEN, Flavour::Go, Fault::Http500),
    ];
    serve_static_shim(&roots.go, ODD, ODD_BODY);
    let dirs = roots.arg();
    let endpoint = ctd.endpoint();
    let agent = Agent::start(&[
        "--sandbox-dirs",
        &dirs,
        "--runtime-endpoint",
        &endpoint,
        "--metrics-interval-secs",
        "1",
    ]);
    let target = agent.addr.to_string();

    // As the chart's PodMonitor: job kata-pulse, honor_labels, and the
    // target labels of the agent's pod (which series without their own
    // namespace/pod/container get), plus the node.
    let prom = Prometheus::builder()
        .scrape_interval(Duration::from_secs(2))
        .scrape_configs(&format!(
            "- job_name: kata-pulse\n  honor_labels: true\n  static_configs:\n    - targets: [\"{target}\"]\n      labels:\n        node: {NODE}\n        namespace: kata-system\n        pod: kata-pulse-test\n        container: kata-pulse\n        endpoint: metrics\n"
        ))
        .rule_file(repo_path(ALERTS))
        .start()
        .expect("prometheus");
    prom.wait_for(
        "up{job=\"kata-pulse\"} == 1",
        |v| !vector_samples(v).is_empty(),
        Duration::from_secs(30),
    )
    .expect("agent never scraped");

    // The rules load: every group, every alert, and each evaluates.
    let names = alert_names();
    assert!(names.len() >= 10, "only {} alerts: {names:?}", names.len());
    let mut rules = Value::Null;
    let all_ok = common::wait_until(Duration::from_secs(30), || {
        rules = prom.rules().expect("rules");
        rules["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .all(|r| r["health"] == "ok")
    });
    let groups: BTreeSet<&str> = rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        groups,
        BTreeSet::from(["kata-pulse.agent", "kata-pulse.shims", "kata-pulse.pods"])
    );
    // (Prometheus lists groups by name, not in file order.)
    let mut loaded: Vec<String> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    loaded.sort();
    let mut names = names;
    names.sort();
    assert_eq!(loaded, names);
    assert!(all_ok, "rules not all healthy: {rules}");

    // Template variables: each has values, and the test pod's are among
    // them (computed with the earlier variables set to the test pod's).
    let dash = dashboard();
    let mut all = builtins();
    let mut selected = builtins();
    let wanted = BTreeMap::from([
        ("node", NODE.to_string()),
        ("instance", target.clone()),
        ("namespace", "dash".to_string()),
        ("pod", "web".to_string()),
    ]);
    for (name, selector, label) in query_variables(&dash) {
        let want = wanted
            .get(name.as_str())
            .unwrap_or_else(|| panic!("variable {name} unknown to the test"));
        let expr = format!("count by ({label}) ({})", interpolate(&selector, &selected));
        let data = prom
            .wait_for(
                &expr,
                |v| {
                    vector_samples(v)
                        .iter()
                        .any(|(l, _)| l.get(&label) == Some(want))
                },
                Duration::from_secs(30),
            )
            .unwrap_or_else(|e| panic!("variable {name} never offers {want:?}: {e:#}"));
        assert!(!vector_samples(&data).is_empty());
        all.insert(name.clone(), ".*".to_string());
        selected.insert(name, want.clone());
    }

    // Every panel query, with the variables at All and at the test pod.
    let qs = queries(&dash);
    assert!(qs.len() >= 40, "only {} queries", qs.len());
    for (what, vars) in [("variables at All", &all), ("test pod selected", &selected)] {
        let resolved: Vec<(String, String)> = qs
            .iter()
            .map(|(title, ref_id, expr)| {
                let e = interpolate(expr, vars);
                assert!(
                    references(&e).is_empty(),
                    "{title} {ref_id}: unresolved variable in {e}"
                );
                (format!("{title} [{ref_id}]"), e)
            })
            .collect();
        assert_all_return_data(&prom, what, &resolved);
    }

    // The alerts this node deserves go pending (their `for` keeps them
    // from firing within the test), the others stay silent.
    let sandbox_ids = |alerts: &BTreeMap<String, Vec<BTreeMap<String, String>>>, name: &str| {
        alerts
            .get(name)
            .into_iter()
            .flatten()
            .map(|l| l.get("sandbox_id").cloned().unwrap_or_default())
            .collect::<BTreeSet<String>>()
    };
    let expected = [
        ("KataPulseShimDown", vec![BROKEN]),
        (
            "KataPulseSandboxWithoutCriMetadata",
            vec![ORPHAN_GO, ORPHAN_RS, BROKEN, ODD],
        ),
        ("KataPulseShimMalformedLines", vec![ODD]),
        ("KataPulseTypeConflicts", vec![""]),
        ("KataPulseShimReservedFamilies", vec![""]),
    ];
    let mut alerts = BTreeMap::new();
    let arrived = common::wait_until(Duration::from_secs(60), || {
        alerts = active_alerts(&prom);
        expected.iter().all(|(name, ids)| {
            sandbox_ids(&alerts, name) == ids.iter().map(|s| s.to_string()).collect()
        })
    });
    assert!(arrived, "expected {expected:?}, active: {alerts:#?}");
    for name in [
        "KataPulseDown",
        "KataPulseAbsent",
        "KataPulseCriDown",
        "KataPulseFileDescriptorsNearLimit",
        "KataPulsePanicked",
        "KataPulseTaskRestarting",
        "KataPulseLogWriteErrors",
        "KataPulseSandboxEntriesRefused",
        "KataPulseShimScrapesFailing",
        "KataPodMemoryNearLimit",
        "KataGuestOOMKills",
    ] {
        assert!(!alerts.contains_key(name), "{name} active: {alerts:#?}");
    }
    for list in alerts.values().flatten() {
        assert_eq!(list["job"], "kata-pulse");
    }

    ctd.remove_pod(&kata_id).expect("remove pod");
}

/// Structure Grafana relies on: the datasource variable everywhere, unique
/// panel ids, a grid that fits, unique refIds, only known variables.
#[test]
fn dashboard_is_well_formed() {
    let d = dashboard();
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36);
    assert_eq!(d["uid"], "kata-pulse-node");
    assert!(d["id"].is_null(), "an exported id breaks imports");
    let vars = d["templating"]["list"].as_array().unwrap();
    let ds = vars.iter().find(|v| v["type"] == "datasource").unwrap();
    assert_eq!(ds["name"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let mut known: BTreeSet<String> = vars
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    known.extend(BUILTINS.iter().map(|(k, _)| k.to_string()));
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert_eq!(v["datasource"]["uid"], "${datasource}", "{v}");
        if v["includeAll"] == true {
            assert_eq!(v["allValue"], ".*", "{v}");
        }
    }

    let mut ids = BTreeSet::new();
    for p in panels(&d) {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "panel without title: {p}");
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate id {p}");
        let g = &p["gridPos"];
        assert!(
            g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24,
            "{title}"
        );
        if p["type"] == "row" {
            continue;
        }
        assert!(
            p["description"].as_str().is_some_and(|s| !s.is_empty()),
            "{title}: no description"
        );
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let mut refs = BTreeSet::new();
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            assert!(refs.insert(t["refId"].as_str().unwrap()), "{title}");
            let expr = t["expr"].as_str().unwrap();
            assert!(expr.contains("job=\"kata-pulse\""), "{title}: {expr}");
            for r in references(expr) {
                assert!(known.contains(&r), "{title}: unknown variable ${r}");
            }
        }
    }

    // No two panels of the same level overlap.
    let boxes = |list: &Value| -> Vec<(String, [u64; 4])> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let g = &p["gridPos"];
                let n = |k: &str| g[k].as_u64().unwrap();
                (
                    p["title"].as_str().unwrap().to_string(),
                    [n("x"), n("y"), n("w"), n("h")],
                )
            })
            .collect()
    };
    let mut levels = vec![boxes(&d["panels"])];
    for row in d["panels"].as_array().unwrap() {
        if row["collapsed"] == true {
            levels.push(boxes(&row["panels"]));
        }
    }
    for level in levels {
        for (i, (a, [ax, ay, aw, ah])) in level.iter().enumerate() {
            for (b, [bx, by, bw, bh]) in &level[i + 1..] {
                let apart = ax + aw <= *bx || bx + bw <= *ax || ay + ah <= *by || by + bh <= *ay;
                assert!(apart, "panels {a:?} and {b:?} overlap");
            }
        }
    }
}

/// `promtool check rules` on the alert file and `promtool test rules` on
/// its unit tests (every alert fires in one case, stays silent in another).
#[test]
fn alert_rules_pass_promtool() {
    let checked = testbed::promtool_check_rules(&repo_path(ALERTS)).expect("promtool check rules");
    assert!(checked.contains("SUCCESS"), "{checked}");

    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_path(RULE_TESTS))
        .expect("tests/rules")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let promtool = testbed::find_program("promtool").expect("promtool (apt install prometheus)");
    let out = std::process::Command::new(promtool)
        .args(["test", "rules"])
        .args(&files)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool test rules failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Every alert of the file is exercised by the unit tests.
    let tests: String = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    for name in alert_names() {
        assert!(
            tests.contains(&format!("alertname: {name}\n")),
            "{name} has no unit test"
        );
    }
}

#[test]
fn interpolation_follows_grafana() {
    let vars: BTreeMap<String, String> = [("pod", "web"), ("__rate_interval", "30s")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(
        interpolate(
            r#"label_replace(rate(x{pod=~"$pod"}[$__rate_interval]), "a", "$1", "b", "(.*)") ${pod:regex}"#,
            &vars
        ),
        r#"label_replace(rate(x{pod=~"web"}[30s]), "a", "$1", "b", "(.*)") web"#
    );
    assert_eq!(
        references(r#"x{a="$1", b=~"$pod", c="${node:regex}"}"#),
        BTreeSet::from(["pod".to_string(), "node".to_string()])
    );
}
