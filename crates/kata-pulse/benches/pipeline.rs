//! The exposition pipeline alone, on the fixture bodies: parse, relabel
//! (the raw view's compact digest), merge and encode (streamed, in the
//! response's chunk size), with and without gzip; beside the straightforward
//! path it replaced (each body rendered whole with its identity labels,
//! merged into one buffer).
//!
//! `cargo bench -p kata-pulse --bench pipeline` (release profile;
//! `PIPELINE_SIZES=100,500` picks the node sizes, `PIPELINE_DUMP=<dir>`
//! writes each merged text there). Prints Markdown: medians
//! of repeated runs with min and max, in CPU time of the one thread doing
//! the work, so the rates are per core and hold on a busy machine.

use std::hint::black_box;
use std::io::Write;
use std::time::Duration;

use kata_pulse::cri::PodMeta;
use kata_pulse::views::raw::{family_action, relabel};
use prom_text::{Compact, Merger, Rendered, Shapes};

const GO: &[u8] = include_bytes!("../../../fixtures/shim-metrics-go-qemu.prom");
const RS: &[u8] = include_bytes!("../../../fixtures/shim-metrics-runtime-rs-dragonball.prom");
/// The response's chunk size (`http::body::CHUNK`).
const CHUNK: usize = 64 * 1024;

struct Node {
    bodies: Vec<&'static [u8]>,
    ids: Vec<String>,
    metas: Vec<PodMeta>,
}

impl Node {
    /// `n` sandboxes, Go and runtime-rs shims alternating.
    fn new(n: usize) -> Node {
        let bodies = (0..n).map(|i| if i % 2 == 0 { GO } else { RS }).collect();
        let ids = (0..n).map(|i| format!("{i:064x}")).collect();
        let metas = (0..n)
            .map(|i| PodMeta {
                uid: format!("{i:08x}-5d41-4f6a-9e0b-2c7d1a3f4e5b"),
                name: format!("workload-6d4cf56db6-{i:05}"),
                namespace: "default".into(),
                runtime_handler: "kata".into(),
                ready: true,
            })
            .collect();
        Node { bodies, ids, metas }
    }

    fn input_bytes(&self) -> usize {
        self.bodies.iter().map(|b| b.len()).sum()
    }

    fn digest(&self, shapes: &Shapes) -> Vec<Compact> {
        self.bodies
            .iter()
            .zip(&self.ids)
            .zip(&self.metas)
            .map(|((b, id), m)| relabel(&prom_text::parse(b), id, Some(m), shapes))
            .collect()
    }

    fn rendered(&self) -> Vec<Rendered> {
        self.bodies
            .iter()
            .zip(&self.ids)
            .zip(&self.metas)
            .map(|((b, id), m)| {
                let exp = prom_text::parse(b);
                let identity = kata_pulse::views::identity(id, Some(m));
                Rendered::from_exposition(&exp, &identity, family_action)
            })
            .collect()
    }
}

/// Streams the merge of `parts` in chunks, as a response does; returns the
/// text bytes and the bytes sent.
fn stream(parts: &[Compact], gzip: bool) -> (usize, usize) {
    let mut merger = Merger::new(parts.iter().collect(), &|_| true);
    let mut enc =
        gzip.then(|| flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    let (mut text, mut sent) = (0, 0);
    let mut buf = Vec::with_capacity(CHUNK + CHUNK / 8);
    loop {
        buf.clear();
        let more = merger.fill(&mut buf, CHUNK);
        text += buf.len();
        match enc.as_mut() {
            Some(e) => {
                let _ = e.write_all(&buf);
                sent += std::mem::take(e.get_mut()).len();
            }
            None => sent += black_box(&buf).len(),
        }
        if !more {
            break;
        }
    }
    if let Some(e) = enc {
        sent += e.finish().map(|v| v.len()).unwrap_or(0);
    }
    (text, sent)
}

struct Stat {
    median: Duration,
    min: Duration,
    max: Duration,
}

/// CPU time of this thread: unlike wall time, it does not count what other
/// processes on a busy machine take.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn measure(rounds: usize, mut f: impl FnMut()) -> Stat {
    f(); // warm-up
    let mut times: Vec<Duration> = (0..rounds)
        .map(|_| {
            let t = thread_cpu();
            f();
            thread_cpu().saturating_sub(t)
        })
        .collect();
    times.sort();
    Stat {
        median: times[times.len() / 2],
        min: times[0],
        max: times[times.len() - 1],
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn row(what: &str, s: &Stat, input: usize) {
    println!(
        "| {what} | {:.2} | {:.2} – {:.2} | {:.0} |",
        ms(s.median),
        ms(s.min),
        ms(s.max),
        input as f64 / s.median.as_secs_f64() / 1e6
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a name filter is not supported.
    let sizes: Vec<usize> = std::env::var("PIPELINE_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 100, 500, 1000]);
    for n in sizes {
        let node = Node::new(n);
        let input = node.input_bytes();
        let rounds = if n >= 500 { 7 } else { 15 };
        let shapes = Shapes::new();
        let parts = node.digest(&shapes);
        let (text, zipped) = stream(&parts, true);
        if let Ok(dir) = std::env::var("PIPELINE_DUMP") {
            // The merged text, for comparisons with other tools (`gzip -1`).
            let mut out = Vec::new();
            Merger::new(parts.iter().collect(), &|_| true).fill(&mut out, usize::MAX);
            let _ = std::fs::write(format!("{dir}/merged-{n}.prom"), out);
        }
        println!(
            "\n### N = {n} ({:.1} MB of shim input, {:.1} MB out, {:.2} MB gzip; {} family shapes)\n",
            input as f64 / 1e6,
            text as f64 / 1e6,
            zipped as f64 / 1e6,
            shapes.len()
        );
        println!("| stage | median CPU ms | min – max | MB/s of shim input per core |");
        println!("|---|---|---|---|");
        row(
            "parse",
            &measure(rounds, || {
                for b in &node.bodies {
                    black_box(prom_text::parse(b));
                }
            }),
            input,
        );
        let digest = measure(rounds, || {
            black_box(node.digest(&shapes));
        });
        row("parse + relabel (compact digest)", &digest, input);
        let plain = measure(rounds, || {
            black_box(stream(&parts, false));
        });
        row("merge + encode (streamed)", &plain, input);
        let gz = measure(rounds, || {
            black_box(stream(&parts, true));
        });
        row("merge + encode + gzip (streamed)", &gz, input);
        let total = Stat {
            median: digest.median + plain.median,
            min: digest.min + plain.min,
            max: digest.max + plain.max,
        };
        row("whole pipeline, no gzip", &total, input);
        let reference = measure(rounds, || {
            let r = node.rendered();
            let refs: Vec<&Rendered> = r.iter().collect();
            let mut out = Vec::new();
            prom_text::merge(&refs, &|_| true, &mut out);
            black_box(out);
        });
        row(
            "before: render whole + merge whole, no gzip",
            &reference,
            input,
        );
        let gzip_cost = gz.median.saturating_sub(plain.median);
        println!(
            "\ngzip: {:.1} ms of CPU per MB of text ({:.0} MB/s)",
            ms(gzip_cost) / (text as f64 / 1e6),
            text as f64 / gzip_cost.as_secs_f64().max(1e-9) / 1e6
        );
        let bytes: usize = parts.iter().map(|c| c.heap_bytes() + c.shape_bytes()).sum();
        let before: usize = node.rendered().iter().map(|r| r.heap_bytes()).sum();
        println!(
            "cache: {:.1} KB per sandbox (before: {:.1} KB)",
            bytes as f64 / n as f64 / 1e3,
            before as f64 / n as f64 / 1e3
        );
    }
}
