//! The status page in a real browser (Debian's headless Chromium, no driver):
//! the DOM Chromium builds from `/sandboxes` and `/` is asserted (a table row
//! per sandbox, failing rows marked, CRI text escaped so it never becomes
//! markup), and screenshots at phone and desktop width are checked
//! structurally: nothing runs off the right edge at 390 px, failing rows
//! are tinted.
//!
//! Needs `chromium` on PATH (scripts/test.sh installs it) or `CHROMIUM`.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{wait_until, Agent};
use kata_sim::cri::CriOptions;
use kata_sim::runtime::RuntimeServer;
use kata_sim::{Fault, FaultSpec, Node, NodeOptions, SandboxSelector};

/// A pod name no runtime should hand out, and the page must show as text.
const HOSTILE: &str = "<img src=x id=injected>";

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(p);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        for name in ["chromium", "chromium-browser"] {
            let p = Path::new(dir).join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!("chromium not found: `apt-get install chromium` (scripts/test.sh installs it) or set CHROMIUM");
}

/// Runs headless Chromium with `args` then `url`; returns stdout.
fn browse(profile: &Path, args: &[&str], url: &str) -> String {
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn chromium");
    let mut out = String::new();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "chromium {args:?} {url}: {status}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium {args:?} {url} did not finish");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().unwrap()
}

/// A decoded 8-bit RGB(A) PNG, as Chromium writes screenshots.
struct Image {
    width: usize,
    height: usize,
    /// RGB per pixel, row-major.
    rgb: Vec<[u8; 3]>,
}

impl Image {
    fn px(&self, x: usize, y: usize) -> [u8; 3] {
        self.rgb[y * self.width + x]
    }
}

fn decode_png(data: &[u8]) -> Image {
    assert_eq!(&data[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let (mut width, mut height, mut channels) = (0usize, 0usize, 0usize);
    let mut idat = Vec::new();
    let mut at = 8;
    while at + 8 <= data.len() {
        let len = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        let kind = &data[at + 4..at + 8];
        let body = &data[at + 8..at + 8 + len];
        match kind {
            b"IHDR" => {
                width = u32::from_be_bytes(body[0..4].try_into().unwrap()) as usize;
                height = u32::from_be_bytes(body[4..8].try_into().unwrap()) as usize;
                assert_eq!(body[8], 8, "bit depth");
                channels = match body[9] {
                    2 => 3,
                    6 => 4,
                    t => panic!("PNG colour type {t}"),
                };
                assert_eq!(body[12], 0, "interlaced PNG");
            }
            b"IDAT" => idat.extend_from_slice(body),
            b"IEND" => break,
            _ => {}
        }
        at += 12 + len;
    }
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..])
        .read_to_end(&mut raw)
        .expect("inflate PNG");
    let stride = width * channels;
    let mut prev = vec![0u8; stride];
    let mut rgb = Vec::with_capacity(width * height);
    for y in 0..height {
        let line = &raw[y * (stride + 1)..(y + 1) * (stride + 1)];
        let (filter, src) = (line[0], &line[1..]);
        let mut cur = vec![0u8; stride];
        for i in 0..stride {
            let a = if i >= channels { cur[i - channels] } else { 0 };
            let b = prev[i];
            let c = if i >= channels { prev[i - channels] } else { 0 };
            let predicted = match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => ((a as u16 + b as u16) / 2) as u8,
                4 => {
                    let p = a as i16 + b as i16 - c as i16;
                    let (pa, pb, pc) = (
                        (p - a as i16).abs(),
                        (p - b as i16).abs(),
                        (p - c as i16).abs(),
                    );
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                f => panic!("PNG filter {f}"),
            };
            cur[i] = src[i].wrapping_add(predicted);
        }
        for px in cur.chunks(channels) {
            rgb.push([px[0], px[1], px[2]]);
        }
        prev = cur;
    }
    Image { width, height, rgb }
}

fn near(p: [u8; 3], want: [u8; 3]) -> bool {
    p.iter().zip(want).all(|(a, b)| a.abs_diff(b) <= 6)
}

/// The page's failing-row tint (`tr.fail td`: #fdecea).
const FAIL_TINT: [u8; 3] = [0xfd, 0xec, 0xea];
const WHITE: [u8; 3] = [0xff, 0xff, 0xff];

#[test]
fn status_page_in_a_real_browser() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("vc/sbs");
    let rs = dir.path().join("kata");
    let (server, node) = rt.block_on(async {
        let server = RuntimeServer::start(&dir.path().join("cri.sock"), 5)
            .await
            .unwrap();
        let mut cri = CriOptions::new(server.endpoint());
        cri.pod_names = vec![
            "shop/web-frontend".into(),
            format!("evil/{HOSTILE}"),
            "batch/broken-exporter".into(),
            "ml/inference".into(),
        ];
        cri.containers_per_pod = 1;
        cri.container_image = Some("docker.io/library/nginx:1.27".into());
        cri.call_timeout = Duration::from_secs(10);
        cri.log_root = Some(dir.path().join("logs"));
        let node = Node::start(NodeOptions {
            go_root: go.clone(),
            rs_root: rs.clone(),
            go: 3,
            rs: 1,
            faults: vec![FaultSpec {
                target: SandboxSelector::Index(2),
                fault: Fault::Http500,
            }],
            seed: Some(9),
            cri: Some(cri),
            ..Default::default()
        })
        .await
        .unwrap();
        (server, node)
    });
    let missing = dir.path().join("absent/kata");
    let agent = Agent::start(&[
        "--sandbox-dirs",
        &format!("{},{},rs={}", go.display(), rs.display(), missing.display()),
        "--runtime-endpoint",
        &server.endpoint(),
        "--shim-timeout",
        "1s",
    ]);
    assert!(wait_until(Duration::from_secs(10), || {
        agent
            .get_with("/sandboxes", &[("Accept", "application/json")])
            .text()
            .matches("\"cri_metadata\":true")
            .count()
            == 4
    }));
    assert_eq!(agent.get("/metrics").status, 200);

    let base = format!("http://{}", agent.addr);
    let profile = tempfile::tempdir().unwrap();
    let phone = ["--window-size=390,1800"];
    let dom = browse(
        profile.path(),
        &[&phone[..], &["--dump-dom"]].concat(),
        &format!("{base}/sandboxes"),
    );

    // One row per sandbox, in a table with the documented columns.
    for col in [
        "pod",
        "namespace",
        "runtime",
        "handler",
        "age",
        "last scrape",
        "links",
    ] {
        assert!(
            dom.contains(&format!("<th>{col}</th>")),
            "no column {col}:\n{dom}"
        );
    }
    assert_eq!(dom.matches("<tr class=\"ok\"").count(), 3, "{dom}");
    assert_eq!(dom.matches("<tr class=\"fail\"").count(), 1, "{dom}");
    for pod in ["web-frontend", "broken-exporter", "inference", "shop", "ml"] {
        assert!(dom.contains(pod), "no {pod}");
    }
    // The failing row says why.
    let fail_row = dom
        .split("<tr class=\"fail\"")
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .unwrap();
    assert!(
        fail_row.contains("broken-exporter") && fail_row.contains("HTTP 500"),
        "{fail_row}"
    );
    assert!(dom.contains("samples"));
    assert!(dom.contains("metrics</a>") && dom.contains("agent-url</a>"));
    // CRI text stayed text: the browser built no element from it.
    assert!(
        !dom.contains("id=\"injected\""),
        "pod name became markup:\n{dom}"
    );
    assert!(dom.contains("&lt;img src=x id=injected&gt;"), "{dom}");
    // The absent folder is on the page.
    assert!(dom.contains(&format!(
        "<code>{}</code> is not present yet",
        missing.display()
    )));

    // Phone width: a card per row, nothing beyond the right edge.
    let shot_dir = tempfile::tempdir().unwrap();
    let shot = shot_dir.path().join("phone.png");
    browse(
        profile.path(),
        &[&phone[..], &[&format!("--screenshot={}", shot.display())]].concat(),
        &format!("{base}/sandboxes"),
    );
    let img = decode_png(&std::fs::read(&shot).unwrap());
    assert_eq!(img.width, 390);
    let edge_ok =
        (0..img.height).all(|y| (img.width - 6..img.width).all(|x| near(img.px(x, y), WHITE)));
    assert!(
        edge_ok,
        "content reaches the right edge at 390 px (horizontal overflow)"
    );
    let tinted = img.rgb.iter().filter(|p| near(**p, FAIL_TINT)).count();
    assert!(
        tinted > 2000,
        "failing row not visibly tinted ({tinted} px)"
    );
    let text_px = img
        .rgb
        .iter()
        .filter(|p| p.iter().all(|c| *c < 100))
        .count();
    assert!(text_px > 1000, "page looks empty ({text_px} dark px)");

    // Desktop width: a table; the failing row is tinted there too.
    let wide = shot_dir.path().join("desktop.png");
    browse(
        profile.path(),
        &[
            "--window-size=1280,900",
            &format!("--screenshot={}", wide.display()),
        ],
        &format!("{base}/sandboxes"),
    );
    let img = decode_png(&std::fs::read(&wide).unwrap());
    assert_eq!(img.width, 1280);
    let tinted = img.rgb.iter().filter(|p| near(**p, FAIL_TINT)).count();
    assert!(
        tinted > 5000,
        "failing row not visibly tinted ({tinted} px)"
    );

    // `/`: every endpoint and its query parameters.
    let index = browse(profile.path(), &["--dump-dom"], &format!("{base}/"));
    for want in [
        "/metrics",
        "/sandboxes",
        "/agent-url",
        "/healthz",
        "/readyz",
        "filter_family=",
        "sandbox=&lt;id&gt;",
        "Accept: application/json",
        "--enable-debug-proxy",
    ] {
        assert!(index.contains(want), "/ lacks {want}:\n{index}");
    }

    drop(agent);
    rt.block_on(async {
        node.shutdown().await.unwrap();
        server.shutdown().await;
    });
}
