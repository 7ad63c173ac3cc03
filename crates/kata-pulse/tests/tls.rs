//! `--web.config.file` as node_exporter users know it: TLS with a client
//! CA and basic auth, checked with a real `curl` and a real Prometheus
//! scraping over TLS with basic auth. Certificates are made here with
//! openssl.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{wait_until, Agent, Roots, Sims};
use kata_sim::{Fault, Flavour};
use testbed::{vector_samples, Prometheus};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate it
/// signed, plus a self-signed client certificate it did not.
fn certificates(dir: &Path) {
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &key,
            &[
                "-days",
                "1",
                "-subj",
                "/CN=test-ca",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
            ],
        ]
        .concat(),
    );
    for (name, ext) in [
        ("server", "subjectAltName=IP:127.0.0.1"),
        ("client", "extendedKeyUsage=clientAuth"),
    ] {
        let (k, csr, crt) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        openssl(
            dir,
            &[
                &["req"][..],
                &key,
                &["-subj", &format!("/CN={name}"), "-keyout", &k, "-out", &csr],
            ]
            .concat(),
        );
        std::fs::write(dir.join(format!("{name}.ext")), format!("{ext}\n")).unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &crt,
            ],
        );
    }
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &key,
            &[
                "-days",
                "1",
                "-subj",
                "/CN=stranger",
                "-keyout",
                "stranger.key",
                "-out",
                "stranger.crt",
            ],
        ]
        .concat(),
    );
}

fn web_config(dir: &Path, users: &[(&str, &str)], client_certs: bool) -> PathBuf {
    let mut text =
        String::from("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n");
    if client_certs {
        text.push_str("  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n");
    }
    text.push_str("basic_auth_users:\n");
    for (user, password) in users {
        text.push_str(&format!(
            "  {user}: {}\n",
            bcrypt::hash(password, 4).unwrap()
        ));
    }
    let path = dir.join("web-config.yml");
    // Written whole then renamed, as a mounted Secret is updated.
    let tmp = dir.join("web-config.yml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// curl's HTTP status for `url` (0 when no HTTP answer: TLS refused, ...).
fn curl(dir: &Path, url: &str, args: &[&str]) -> u16 {
    let out = Command::new("curl")
        .current_dir(dir)
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
            "--cacert",
            "ca.crt",
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

fn agent(roots: &Roots, config: &Path, extra: &[&str]) -> Agent {
    let mut args = vec![
        "--sandbox-dirs".to_string(),
        roots.arg(),
        "--runtime-endpoint".into(),
        format!("unix://{}/none.sock", roots.dir.path().display()),
        format!("--web.config.file={}", config.display()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Agent::start_probed(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn curl_needs_the_client_certificate_and_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certificates(d);
    let config = web_config(d, &[("prometheus", "secret")], true);
    let roots = Roots::new();
    let sims = Sims::new();
    let id = format!("7{}", "0".repeat(63));
    let _shim = sims.start(&roots.go, &id, Flavour::Go, Fault::None);
    let agent = agent(&roots, &config, &["--enable-debug-proxy"]);
    let url = format!("https://127.0.0.1:{}", agent.addr.port());
    let cert = ["--cert", "client.crt", "--key", "client.key"];
    let with =
        |path: &str, extra: &[&str]| curl(d, &format!("{url}{path}"), &[&cert[..], extra].concat());

    assert_eq!(
        with("/metrics", &["-u", "prometheus:secret"]),
        200,
        "{}",
        agent.log_text()
    );
    assert_eq!(with("/metrics", &["-u", "prometheus:wrong"]), 401);
    assert_eq!(with("/metrics", &["-u", "nobody:secret"]), 401);
    assert_eq!(with("/metrics", &[]), 401);
    // The debug proxy is behind the same TLS and auth.
    let vars = format!("/debug/vars?sandbox={id}");
    assert_eq!(with(&vars, &[]), 401);
    assert_eq!(with(&vars, &["-u", "prometheus:secret"]), 200);
    // Without a client certificate, or with one the CA did not sign, no
    // TLS session at all.
    assert_eq!(
        curl(d, &format!("{url}/metrics"), &["-u", "prometheus:secret"]),
        0
    );
    assert_eq!(
        curl(
            d,
            &format!("{url}/metrics"),
            &[
                "-u",
                "prometheus:secret",
                "--cert",
                "stranger.crt",
                "--key",
                "stranger.key"
            ]
        ),
        0
    );
    // Plain HTTP to the TLS port gets no answer.
    assert_eq!(
        curl(
            d,
            &format!("http://127.0.0.1:{}/metrics", agent.addr.port()),
            &[]
        ),
        0
    );
    // The probe port stays plain and open for the kubelet.
    let probe = agent.probe.unwrap();
    assert_eq!(curl(d, &format!("http://{probe}/healthz"), &[]), 200);

    // A changed file is in effect at once: the old password no longer
    // works, the new one does.
    web_config(d, &[("prometheus", "rotated")], true);
    assert_eq!(with("/metrics", &["-u", "prometheus:secret"]), 401);
    assert_eq!(
        with("/metrics", &["-u", "prometheus:rotated"]),
        200,
        "{}",
        agent.log_text()
    );
    // Client certificates no longer asked for: curl gets in without one.
    web_config(d, &[("prometheus", "rotated")], false);
    assert_eq!(
        curl(d, &format!("{url}/metrics"), &["-u", "prometheus:rotated"]),
        200
    );
    // The line is written by the log thread, a moment after the change.
    assert!(
        wait_until(Duration::from_secs(5), || agent
            .log_text()
            .contains("web config reloaded")),
        "{}",
        agent.log_text()
    );
}

/// A real Prometheus scrapes the agent over TLS with basic auth and a
/// client certificate: the target is up and the shim's series are stored.
#[test]
fn prometheus_scrapes_over_tls_with_basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certificates(d);
    let config = web_config(d, &[("prometheus", "secret")], true);
    let roots = Roots::new();
    let sims = Sims::new();
    let id = format!("8{}", "0".repeat(63));
    let _shim = sims.start(&roots.go, &id, Flavour::Go, Fault::None);
    let agent = agent(&roots, &config, &[]);
    let file = |name: &str| d.join(name).display().to_string();
    let scrape = |job: &str, password: &str| {
        format!(
            "- job_name: {job}\n  scheme: https\n  tls_config:\n    ca_file: {:?}\n    cert_file: {:?}\n    key_file: {:?}\n  basic_auth:\n    username: prometheus\n    password: {password}\n  static_configs:\n    - targets: [\"127.0.0.1:{}\"]\n",
            file("ca.crt"),
            file("client.crt"),
            file("client.key"),
            agent.addr.port()
        )
    };
    let prom = Prometheus::builder()
        .scrape_configs(&scrape("kata-pulse", "secret"))
        .scrape_configs(&scrape("wrong-password", "guess"))
        .start()
        .expect("prometheus");
    prom.wait_for(
        "up{job=\"kata-pulse\"} == 1",
        |v| !vector_samples(v).is_empty(),
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_text()));
    prom.wait_for(
        &format!("count(kata_shim_fds{{job=\"kata-pulse\", sandbox_id=\"{id}\"}})"),
        |v| !vector_samples(v).is_empty(),
        Duration::from_secs(30),
    )
    .expect("the shim's series were not stored");
    // The job with the wrong password is down, for the reason given.
    assert!(wait_until(Duration::from_secs(30), || {
        let targets = prom.targets().unwrap_or_default().to_string();
        targets.contains("401")
    }));
}
