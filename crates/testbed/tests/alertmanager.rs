//! The Alertmanager harness against the real Alertmanager: webhook payload
//! and authentication, retries after 503, resolved notifications,
//! `max_alerts` and the TLS options. The webhook receiver is a small
//! `TcpListener` server in this file that records what it gets.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testbed::{wait_until, Alertmanager, ALERTMANAGER_RECEIVER};

const WAIT: Duration = Duration::from_secs(30);

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    authorization: Option<String>,
    body: Value,
    /// Status the receiver answered with.
    answered: u16,
    at: Instant,
}

/// A webhook receiver on 127.0.0.1 that records requests and answers 503 to
/// the first `fail_first` of them, then 200. Stops on drop.
struct Receiver {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    fn start(fail_first: usize) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind receiver");
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (reqs, stopping) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let n = reqs.lock().unwrap().len();
                let status = if n < fail_first { 503 } else { 200 };
                if let Some(req) = serve(conn, status) {
                    reqs.lock().unwrap().push(req);
                }
            }
        });
        Self {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/webhook", self.port)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits until a request matches `f` and returns all requests up to it.
    fn wait_for(
        &self,
        am: &Alertmanager,
        what: &str,
        f: impl Fn(&Request) -> bool,
    ) -> Vec<Request> {
        wait_until(WAIT, Duration::from_millis(50), || {
            let reqs = self.requests();
            Ok(reqs.iter().position(&f).map(|i| reqs[..=i].to_vec()))
        })
        .unwrap_or_else(|e| {
            panic!(
                "{what}: {e}; got {:#?}\nAlertmanager log:\n{}",
                self.requests(),
                am.log_tail(30)
            )
        })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one HTTP/1.1 request (with a Content-Length body), answers
/// `status` and closes the connection.
fn serve(conn: TcpStream, status: u16) -> Option<Request> {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let (mut authorization, mut length) = (None, 0);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 || h.trim_end().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "authorization" => authorization = Some(v.trim().to_string()),
                "content-length" => length = v.trim().parse().ok()?,
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let reason = if status == 200 {
        "OK"
    } else {
        "Service Unavailable"
    };
    let mut conn = conn;
    let _ = write!(
        conn,
        "HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    Some(Request {
        method,
        path,
        authorization,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        answered: status,
        at: Instant::now(),
    })
}

fn alert(name: &str, instance: &str) -> Value {
    json!({
        "labels": {"alertname": name, "severity": "critical", "instance": instance},
        "annotations": {"summary": format!("{name} on {instance}")},
        "generatorURL": "http://prometheus.test/graph?g0.expr=up",
    })
}

#[test]
fn delivers_a_firing_alert_with_basic_auth() {
    let rx = Receiver::start(0);
    let am = Alertmanager::builder(&rx.url())
        .basic_auth("karo", "s3cret")
        .start()
        .expect("start alertmanager");
    let alerts = json!([alert("KataPulseDown", "node-1")]);
    let posted = Instant::now();
    am.post_alerts(&alerts).expect("post alerts");

    let reqs = rx.wait_for(&am, "firing notification", |r| r.answered == 200);
    let r = &reqs[0];
    eprintln!("delivered {:?} after the post", r.at - posted);
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/webhook"));
    // base64("karo:s3cret")
    assert_eq!(r.authorization.as_deref(), Some("Basic a2FybzpzM2NyZXQ="));
    let b = &r.body;
    assert_eq!(b["version"], "4", "{b:#}");
    assert_eq!(b["status"], "firing", "{b:#}");
    assert_eq!(b["receiver"], ALERTMANAGER_RECEIVER);
    assert_eq!(b["externalURL"], am.url());
    assert_eq!(b["groupLabels"], json!({"alertname": "KataPulseDown"}));
    assert_eq!(b["truncatedAlerts"], 0);
    let a = &b["alerts"][0];
    assert_eq!(b["alerts"].as_array().map(Vec::len), Some(1), "{b:#}");
    assert_eq!(a["status"], "firing");
    assert_eq!(a["labels"]["alertname"], "KataPulseDown");
    assert_eq!(a["labels"]["instance"], "node-1");
    assert_eq!(a["annotations"]["summary"], "KataPulseDown on node-1");
    assert_eq!(a["generatorURL"], "http://prometheus.test/graph?g0.expr=up");
    assert!(
        a["fingerprint"].as_str().is_some_and(|f| !f.is_empty()),
        "{a:#}"
    );

    let stats = am
        .wait_for_webhook_stats(|s| s.requests >= 1.0, WAIT)
        .unwrap();
    assert_eq!(stats.requests_failed, 0.0, "{stats:?}");
    assert_eq!(stats.notifications_failed, 0.0, "{stats:?}");
    let held = am.alerts("").unwrap();
    assert_eq!(held[0]["labels"]["alertname"], "KataPulseDown", "{held:#}");
}

#[test]
fn retries_after_503_until_delivered() {
    let rx = Receiver::start(3);
    let am = Alertmanager::builder(&rx.url())
        .bearer_token("tok-123")
        .start()
        .expect("start alertmanager");
    am.post_alerts(&json!([alert("KataPulseDown", "node-2")]))
        .expect("post alerts");

    let reqs = rx.wait_for(&am, "delivery after three 503s", |r| r.answered == 200);
    assert_eq!(reqs.len(), 4, "{reqs:#?}");
    let gaps: Vec<Duration> = reqs.windows(2).map(|w| w[1].at - w[0].at).collect();
    eprintln!("gaps between attempts: {gaps:?}");
    for r in &reqs {
        assert_eq!(r.authorization.as_deref(), Some("Bearer tok-123"));
        assert_eq!(r.body["status"], "firing");
        assert_eq!(r.body["alerts"][0]["labels"]["instance"], "node-2");
    }
    let fp = &reqs[0].body["alerts"][0]["fingerprint"];
    assert!(reqs
        .iter()
        .all(|r| &r.body["alerts"][0]["fingerprint"] == fp));
    let stats = am
        .wait_for_webhook_stats(|s| s.requests >= 4.0, WAIT)
        .unwrap();
    eprintln!("{stats:?}");
    assert_eq!(stats.requests_failed, 3.0, "{stats:?}");
    // Three retries fit in one flush, which therefore did not fail.
    assert_eq!(stats.notifications_failed, 0.0, "{stats:?}");
}

#[test]
fn send_resolved_delivers_a_resolved_notification() {
    let rx = Receiver::start(0);
    let am = Alertmanager::builder(&rx.url())
        .send_resolved(true)
        .start()
        .expect("start alertmanager");
    let alerts = json!([alert("KataPulseDown", "node-3")]);
    am.post_alerts(&alerts).expect("post alerts");
    rx.wait_for(&am, "firing notification", |r| r.body["status"] == "firing");

    let resolved_at = Instant::now();
    am.resolve(&alerts).expect("resolve");
    let reqs = rx.wait_for(&am, "resolved notification", |r| {
        r.body["status"] == "resolved"
    });
    let r = reqs.last().unwrap();
    eprintln!("resolved delivered {:?} after resolve", r.at - resolved_at);
    let a = &r.body["alerts"][0];
    assert_eq!(a["status"], "resolved", "{:#}", r.body);
    assert_eq!(a["labels"]["instance"], "node-3");
    assert_ne!(a["endsAt"], "0001-01-01T00:00:00Z", "{a:#}");
    assert_eq!(
        a["fingerprint"], reqs[0].body["alerts"][0]["fingerprint"],
        "same alert"
    );
}

#[test]
fn without_send_resolved_no_resolved_notification() {
    let rx = Receiver::start(0);
    let am = Alertmanager::builder(&rx.url())
        .send_resolved(false)
        .start()
        .expect("start alertmanager");
    let alerts = json!([alert("KataPulseDown", "node-4")]);
    am.post_alerts(&alerts).expect("post alerts");
    rx.wait_for(&am, "firing notification", |r| r.answered == 200);
    am.resolve(&alerts).expect("resolve");
    // group_interval is 1s: a resolved notification would come within ~1s.
    std::thread::sleep(Duration::from_secs(3));
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 1, "{reqs:#?}");
    assert!(am.alerts("").unwrap().as_array().unwrap().is_empty());
}

#[test]
fn max_alerts_truncates_a_group() {
    let rx = Receiver::start(0);
    let am = Alertmanager::builder(&rx.url())
        .max_alerts(2)
        // Collect all three into the first notification.
        .group_wait(Duration::from_secs(1))
        .start()
        .expect("start alertmanager");
    let alerts = json!([
        alert("KataPulseDown", "a"),
        alert("KataPulseDown", "b"),
        alert("KataPulseDown", "c"),
    ]);
    am.post_alerts(&alerts).expect("post alerts");
    let reqs = rx.wait_for(&am, "notification", |r| r.answered == 200);
    let b = &reqs[0].body;
    assert_eq!(b["alerts"].as_array().map(Vec::len), Some(2), "{b:#}");
    assert_eq!(b["truncatedAlerts"], 1, "{b:#}");
}

#[test]
fn tls_options_make_it_speak_https() {
    // An https receiver needs a certificate; a plain HTTP listener is
    // enough to see that the TLS options load and that Alertmanager then
    // speaks TLS (Go reports the plain answer to its ClientHello).
    let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let ca = ["/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/cert.pem"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
        .expect("a CA bundle (ca-certificates)");
    let am = Alertmanager::builder(&format!("https://127.0.0.1:{port}/webhook"))
        .tls_ca_file(ca)
        .tls_server_name("receiver.test")
        .tls_insecure_skip_verify(true)
        .basic_auth("u", "p")
        .start()
        .expect("start alertmanager with TLS options");
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            // Read the ClientHello first: closing with unread input would
            // reset the connection before the answer is read.
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            let mut hello = [0; 4096];
            let _ = conn.read(&mut hello);
            let _ = conn.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\n");
            let _ = conn.shutdown(std::net::Shutdown::Write);
            let _ = conn.read_to_end(&mut Vec::new());
        }
    });
    am.post_alerts(&json!([alert("KataPulseDown", "tls")]))
        .expect("post alerts");
    let stats = am
        .wait_for_webhook_stats(|s| s.requests_failed >= 1.0, WAIT)
        .unwrap();
    eprintln!("{stats:?}");
    wait_until(WAIT, Duration::from_millis(100), || {
        Ok(am
            .log_tail(50)
            .contains("server gave HTTP response to HTTPS client")
            .then_some(()))
    })
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", am.log_tail(30)));
}
