//! The CRD shipped in the chart is the one the Rust types generate.

use std::path::Path;

#[test]
fn committed_crd_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../charts/karo/crds/alertreactions.karo.io.yaml");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = karo::api::crd_yaml().expect("CRD renders");
    assert!(
        committed == generated,
        "{} is stale: regenerate it with `cargo run -p karo -- crd > charts/karo/crds/alertreactions.karo.io.yaml`",
        path.display()
    );
}

#[test]
fn crd_keeps_karo_identity_and_working_columns() {
    let crd: serde_json::Value = serde_yaml::from_str(&karo::api::crd_yaml().unwrap()).unwrap();
    assert_eq!(crd["metadata"]["name"], "alertreactions.karo.io");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    let v = &crd["spec"]["versions"][0];
    assert_eq!(v["name"], "v1alpha1");
    assert_eq!(v["subresources"]["status"], serde_json::json!({}));
    let spec = &v["schema"]["openAPIV3Schema"]["properties"]["spec"];
    for field in [
        "alertName",
        "matchers",
        "actions",
        "volumes",
        "jobTemplate",
        "cooldown",
        "maxConcurrentJobs",
        "onResolved",
    ] {
        assert!(spec["properties"].get(field).is_some(), "spec.{field}");
    }
    assert_eq!(spec["required"], serde_json::json!(["alertName"]));
    let action = &spec["properties"]["actions"]["items"];
    for field in [
        "name",
        "image",
        "command",
        "args",
        "env",
        "resources",
        "volumeMounts",
        "serviceAccount",
    ] {
        assert!(
            action["properties"].get(field).is_some(),
            "actions[].{field}"
        );
    }
    assert_eq!(
        spec["properties"]["jobTemplate"]["x-kubernetes-preserve-unknown-fields"],
        true
    );
    // No `| length` (Karo's column that broke `kubectl get`): plain paths only.
    for col in v["additionalPrinterColumns"].as_array().unwrap() {
        let path = col["jsonPath"].as_str().unwrap();
        assert!(!path.contains('|'), "{path}");
    }
    let status = &v["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
    for field in [
        "lastTriggered",
        "triggerCount",
        "lastJobsCreated",
        "conditions",
    ] {
        assert!(status.get(field).is_some(), "status.{field}");
    }
}
