//! The HTML pages a person opens: `/sandboxes` as a status table and `/` as
//! the list of endpoints. Plain server-rendered HTML (no script), every
//! value escaped, readable from phone width up: below 720 px each row
//! becomes a card with labelled fields.

use std::fmt::Write as _;
use std::time::Duration;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:1rem;color:#1d232a;\
background:#fff;line-height:1.4}\
h1{font-size:1.35rem;margin:0 0 .4rem}\
p{margin:.3rem 0}\
code,.id{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.85em}\
.id{color:#5b6570;word-break:break-all}\
table{border-collapse:collapse;width:100%;margin-top:.8rem}\
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #d9dee3;vertical-align:top}\
th{background:#f2f4f6;font-weight:600}\
tr.fail td{background:#fdecea}\
tr.fail td:first-child{box-shadow:inset 4px 0 #c62828}\
tr.pending td{background:#fff8e1}\
.state{font-weight:600}\
tr.ok .state{color:#1b7a30}\
tr.fail .state{color:#b71c1c}\
tr.pending .state{color:#8a6d00}\
.err{color:#8e1b1b;word-break:break-word}\
.note{background:#eef4fb;border-left:4px solid #3b6ea8;padding:.4rem .6rem;margin:.6rem 0}\
.warn{background:#fdecea;border-left-color:#c62828}\
dl{margin:.4rem 0}dt{font-weight:600;margin-top:.6rem}dd{margin:.1rem 0 .1rem 1.2rem}\
a{color:#1f5fa8}\
@media (max-width:720px){\
table,thead,tbody,tr,td{display:block;width:auto}\
thead{display:none}\
tr{border:1px solid #d9dee3;border-radius:6px;margin:0 0 .7rem;overflow:hidden}\
td{border:none;padding:.2rem .6rem}\
td::before{content:attr(data-label);display:inline-block;min-width:6.5rem;color:#5b6570;\
font-size:.85em}\
tr.fail td:first-child{box-shadow:none}\
tr.fail{border-left:4px solid #c62828}\
}";

/// The page skeleton around `body`.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n",
        escape(title)
    )
}

/// The last scrape of a sandbox's shim, as the page shows it.
pub struct ScrapeView {
    pub ok: bool,
    pub ago: Duration,
    pub duration: Duration,
    pub samples: u64,
    pub error: Option<String>,
}

/// One row of the status table.
pub struct Row {
    pub id: String,
    /// Pod identity from CRI; `None` when CRI has not named the sandbox.
    pub pod: Option<PodView>,
    pub runtime: &'static str,
    pub age: Duration,
    pub scrape: Option<ScrapeView>,
}

pub struct PodView {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub handler: String,
}

/// What the page says about the node as a whole.
pub struct Summary {
    /// `None` until CRI was asked once; else whether the last call worked.
    pub cri_up: Option<bool>,
    pub cri_endpoint: String,
    pub missing_roots: Vec<String>,
    pub metrics_interval: Duration,
    pub debug_proxy: bool,
}

/// `90s` → `1m 30s`; short, for a table cell.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn seconds(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// The `/sandboxes` status page.
pub fn sandboxes_page(rows: &[Row], summary: &Summary) -> String {
    let failing = rows
        .iter()
        .filter(|r| r.scrape.as_ref().is_some_and(|s| !s.ok))
        .count();
    let ok = rows
        .iter()
        .filter(|r| r.scrape.as_ref().is_some_and(|s| s.ok))
        .count();
    let pending = rows.len() - ok - failing;
    let unnamed = rows.iter().filter(|r| r.pod.is_none()).count();
    let mut b = String::new();
    b.push_str("<h1>Kata sandboxes on this node</h1>\n");
    let _ = writeln!(
        b,
        "<p class=\"summary\"><b>{}</b> sandboxes: <b>{ok}</b> scraped ok, <b>{failing}</b> failing, \
<b>{pending}</b> not scraped yet; <b>{unnamed}</b> without pod metadata.</p>",
        rows.len()
    );
    let cri = match summary.cri_up {
        None => "not asked yet".to_string(),
        Some(true) => "answering".to_string(),
        Some(false) => "<b>unreachable</b> (pods are served with empty cri_* labels)".to_string(),
    };
    let _ = writeln!(
        b,
        "<p>CRI runtime <code>{}</code>: {cri}. A shim is scraped when <a href=\"/metrics\">/metrics</a> \
is requested, at most once per {}; this page shows the last result.</p>",
        escape(&summary.cri_endpoint),
        human(summary.metrics_interval)
    );
    for root in &summary.missing_roots {
        let _ = writeln!(
            b,
            "<p class=\"note\">Sandbox folder <code>{}</code> is not present yet (no sandbox of \
that runtime has run here); watching for it.</p>",
            escape(root)
        );
    }
    if rows.is_empty() {
        b.push_str("<p class=\"note\">No Kata sandbox is running on this node.</p>\n");
    } else {
        b.push_str(
            "<table>\n<thead><tr><th>pod</th><th>namespace</th><th>runtime</th><th>handler</th>\
<th>age</th><th>last scrape</th><th>links</th></tr></thead>\n<tbody>\n",
        );
        for r in rows {
            row(&mut b, r, summary.debug_proxy);
        }
        b.push_str("</tbody>\n</table>\n");
    }
    b.push_str(
        "<p>Also as plain text (<code>curl /sandboxes</code>: one id per line) and JSON \
(<code>curl -H 'Accept: application/json' /sandboxes</code>). <a href=\"/\">All endpoints</a>.</p>\n",
    );
    page("kata-pulse: sandboxes", &b)
}

fn row(b: &mut String, r: &Row, debug_proxy: bool) {
    // Ids are validated ([A-Za-z0-9._-]) but escaped anyway; pod fields come
    // from the container runtime and may hold anything.
    let id = escape(&r.id);
    let class = match &r.scrape {
        Some(s) if s.ok => "ok",
        Some(_) => "fail",
        None => "pending",
    };
    let short: String = r.id.chars().take(12).collect();
    let (pod, ns, handler) = match &r.pod {
        Some(p) => (
            format!(
                "<b>{}</b><div class=\"id\" title=\"pod uid {}\">{}</div>",
                escape(&p.name),
                escape(&p.uid),
                id
            ),
            escape(&p.namespace),
            escape(if p.handler.is_empty() {
                "-"
            } else {
                &p.handler
            }),
        ),
        None => (
            format!("<i>no pod metadata</i><div class=\"id\">{id}</div>"),
            "-".to_string(),
            "-".to_string(),
        ),
    };
    let scrape = match &r.scrape {
        None => "<span class=\"state\">not scraped yet</span>".to_string(),
        Some(s) if s.ok => format!(
            "<span class=\"state\">ok</span> in {}, {} samples, {} ago",
            seconds(s.duration),
            s.samples,
            human(s.ago)
        ),
        Some(s) => format!(
            "<span class=\"state\">failed</span> after {}, {} ago: <span class=\"err\">{}</span>",
            seconds(s.duration),
            human(s.ago),
            escape(s.error.as_deref().unwrap_or("unknown error"))
        ),
    };
    let pprof = if debug_proxy {
        format!(" · <a href=\"/debug/pprof/?sandbox={id}\">pprof</a>")
    } else {
        String::new()
    };
    let _ = writeln!(
        b,
        "<tr class=\"{class}\" id=\"sandbox-{id}\" data-sandbox=\"{id}\">\
<td data-label=\"pod\">{pod}</td>\
<td data-label=\"namespace\">{ns}</td>\
<td data-label=\"runtime\">{runtime}</td>\
<td data-label=\"handler\">{handler}</td>\
<td data-label=\"age\" title=\"since discovered\">{age}</td>\
<td data-label=\"last scrape\" class=\"scrape\">{scrape}</td>\
<td data-label=\"links\"><a href=\"/metrics?sandbox={id}\" title=\"raw shim metrics of {short}\">metrics</a> · \
<a href=\"/agent-url?sandbox={id}\">agent-url</a>{pprof}</td></tr>",
        runtime = r.runtime,
        age = human(r.age),
    );
}

/// One endpoint of `/`.
pub struct EndpointDoc {
    pub path: &'static str,
    pub desc: &'static str,
    /// Linked from the HTML page (a plain GET shows something useful).
    pub linked: bool,
    /// Query parameters and request headers it takes: (name, meaning).
    pub params: &'static [(&'static str, &'static str)],
}

/// The HTML form of `/`.
pub fn index_page(endpoints: &[&EndpointDoc], debug_proxy: bool) -> String {
    let mut b = String::from(
        "<h1>kata-pulse</h1>\n<p>Node agent for Kata Containers: discovers the sandboxes, \
labels them from CRI and serves their metrics. Start with the \
<a href=\"/sandboxes\">status page</a>.</p>\n<h2>Available HTTP endpoints:</h2>\n<dl>\n",
    );
    for e in endpoints {
        let name = if e.linked {
            format!("<a href=\"{0}\">{0}</a>", e.path)
        } else {
            e.path.to_string()
        };
        let _ = writeln!(
            b,
            "<dt id=\"ep-{}\"><code>{name}</code></dt><dd>{}</dd>",
            e.path.trim_matches('/').replace('/', "-"),
            escape(e.desc)
        );
        for (p, what) in e.params {
            let _ = writeln!(
                b,
                "<dd class=\"param\"><code>{}</code>: {}</dd>",
                escape(p),
                escape(what)
            );
        }
    }
    b.push_str("</dl>\n");
    if !debug_proxy {
        b.push_str(
            "<p>The <code>/debug/vars</code> and <code>/debug/pprof/</code> proxies to the shims \
are off (start the agent with <code>--enable-debug-proxy</code>).</p>\n",
        );
    }
    page("kata-pulse", &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> Summary {
        Summary {
            cri_up: Some(true),
            cri_endpoint: "unix:///run/containerd/containerd.sock".into(),
            missing_roots: vec![],
            metrics_interval: Duration::from_secs(5),
            debug_proxy: false,
        }
    }

    #[test]
    fn escapes_everything_from_cri_and_shims() {
        let rows = [Row {
            id: "a".repeat(64),
            pod: Some(PodView {
                name: "<script>alert(1)</script>".into(),
                namespace: "ns\"'&".into(),
                uid: "u".into(),
                handler: "kata".into(),
            }),
            runtime: "go",
            age: Duration::from_secs(75),
            scrape: Some(ScrapeView {
                ok: false,
                ago: Duration::from_secs(2),
                duration: Duration::from_millis(3000),
                samples: 0,
                error: Some("bad <b>body</b>".into()),
            }),
        }];
        let html = sandboxes_page(&rows, &summary());
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("ns&quot;&#39;&amp;"));
        assert!(html.contains("bad &lt;b&gt;body&lt;/b&gt;"));
        assert!(html.contains("<tr class=\"fail\""));
        assert!(html.contains("failed</span> after 3.0 s, 2s ago"));
        assert!(html.contains("1m 15s"));
    }

    #[test]
    fn empty_node_and_missing_roots_are_said() {
        let mut s = summary();
        s.missing_roots = vec!["/run/kata".into()];
        s.cri_up = Some(false);
        let html = sandboxes_page(&[], &s);
        assert!(html.contains("No Kata sandbox is running"));
        assert!(html.contains("<code>/run/kata</code> is not present yet"));
        assert!(html.contains("<b>unreachable</b>"));
        assert!(html.contains("name=\"viewport\""));
    }

    #[test]
    fn durations_read_short() {
        assert_eq!(human(Duration::from_secs(5)), "5s");
        assert_eq!(human(Duration::from_secs(3_700)), "1h 1m");
        assert_eq!(human(Duration::from_secs(90_000)), "1d 1h");
        assert_eq!(seconds(Duration::from_millis(12)), "12 ms");
    }
}
