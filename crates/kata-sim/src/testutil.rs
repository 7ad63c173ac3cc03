//! Test helpers: a tiny HTTP client over a unix socket and a Prometheus text checker.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::template::{parse_sample, parse_value};

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request with hyper's client, `Host: shim` as kata-monitor sends it.
pub async fn request(sock: &Path, method: &str, path: &str) -> Result<Reply> {
    let stream = UnixStream::connect(sock)
        .await
        .with_context(|| format!("connect {}", sock.display()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("Host", "shim")
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

pub async fn get(sock: &Path, path: &str) -> Result<Reply> {
    request(sock, "GET", path).await
}

/// Sends raw bytes and returns everything read until EOF or `limit` elapsed, plus whether
/// EOF was reached.
pub async fn raw(sock: &Path, req: &str, limit: Duration) -> Result<(Vec<u8>, bool)> {
    let mut s = UnixStream::connect(sock).await?;
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let mut buf = [0u8; 65536];
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return Ok((out, false)),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok((out, true)),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

pub fn get_req(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: shim\r\n\r\n")
}

/// A parsed and validated exposition.
#[derive(Debug, Default)]
pub struct Prom {
    /// Family name -> type.
    pub types: HashMap<String, String>,
    /// `name{labels}` -> value (label text as printed).
    pub values: BTreeMap<String, f64>,
    /// Sample key -> family name.
    pub family_of: HashMap<String, String>,
}

/// Validates Prometheus text format 0.0.4 strictly enough for our output: every sample
/// belongs to the family of the preceding `# TYPE`, names and values parse, no family is
/// declared twice, no sample repeats, histogram buckets are cumulative with `+Inf` = count.
pub fn check_prom(text: &str) -> Result<Prom> {
    if !text.ends_with('\n') {
        bail!("body does not end with a newline");
    }
    let mut p = Prom::default();
    let mut fam: Option<(String, String)> = None;
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let name = it.next().unwrap_or_default().to_string();
            let kind = it.next().unwrap_or_default().to_string();
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind.as_str()) {
                bail!("line {n}: bad type {kind}");
            }
            if p.types.insert(name.clone(), kind.clone()).is_some() {
                bail!("line {n}: family {name} declared twice");
            }
            fam = Some((name, kind));
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (name, label_text, _labels, _value) =
            parse_sample(line).with_context(|| format!("line {n}: unparsable `{line}`"))?;
        let value_text = line.rsplit(' ').next().unwrap_or_default();
        parse_value(value_text).with_context(|| format!("line {n}: bad value"))?;
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            bail!("line {n}: bad metric name {name}");
        }
        let Some((fname, kind)) = &fam else {
            bail!("line {n}: sample before any TYPE");
        };
        let ok = match kind.as_str() {
            "histogram" => [
                format!("{fname}_bucket"),
                format!("{fname}_sum"),
                format!("{fname}_count"),
            ]
            .contains(&name),
            "summary" => {
                name == *fname || name == format!("{fname}_sum") || name == format!("{fname}_count")
            }
            _ => name == *fname,
        };
        if !ok {
            bail!("line {n}: sample {name} outside its family {fname}");
        }
        let key = format!("{name}{label_text}");
        let v = parse_value(value_text).unwrap_or(f64::NAN);
        if p.values.insert(key.clone(), v).is_some() {
            bail!("line {n}: duplicate sample {key}");
        }
        p.family_of.insert(key, fname.clone());
    }
    check_histograms(text, &p)?;
    Ok(p)
}

fn check_histograms(text: &str, p: &Prom) -> Result<()> {
    let mut series: HashMap<String, Vec<(f64, f64)>> = HashMap::new();
    for line in text.lines() {
        let Some((name, _, labels, v)) = parse_sample(line) else {
            continue;
        };
        let Some(base) = name.strip_suffix("_bucket") else {
            continue;
        };
        if p.types.get(base).map(String::as_str) != Some("histogram") {
            continue;
        }
        let le = labels
            .iter()
            .find(|(k, _)| k == "le")
            .and_then(|(_, v)| parse_value(v))
            .context("bucket without le")?;
        let rest: Vec<String> = labels
            .iter()
            .filter(|(k, _)| k != "le")
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        let key = format!("{base}{{{}}}", rest.join(","));
        series.entry(key).or_default().push((le, v));
    }
    for (key, mut b) in series {
        b.sort_by(|x, y| x.0.total_cmp(&y.0));
        for w in b.windows(2) {
            if w[1].1 < w[0].1 {
                bail!("{key}: buckets not cumulative");
            }
        }
        let inf = b.last().context("no buckets")?;
        if inf.0 != f64::INFINITY {
            bail!("{key}: no +Inf bucket");
        }
        let count_key = key.replacen('{', "_count{", 1);
        let count_key = count_key.replace("{}", "");
        let count = p
            .values
            .get(&count_key)
            .with_context(|| format!("no {count_key}"))?;
        if *count != inf.1 {
            bail!("{key}: +Inf {} != count {count}", inf.1);
        }
    }
    Ok(())
}
