//! The run as Markdown: the machine and its noise, then one table per question.

use std::fmt::Write;
use std::time::Duration;

use crate::bench::Outcome;
use crate::machine::Machine;
use crate::stats::Summary;
use crate::sustained::Sustained;

pub struct Run<'a> {
    pub command: &'a str,
    pub machine: &'a Machine,
    pub rs_percent: u8,
    /// (load average, calibration) at the start and at the end.
    pub noise: [(f64, Summary); 2],
    pub outcomes: &'a [Outcome],
    /// (agent, N, result) of the sustained runs.
    pub sustained: &'a [(String, usize, Duration, Sustained)],
}

fn mb(bytes: f64) -> String {
    format!("{:.1}", bytes / (1024.0 * 1024.0))
}

fn range(s: &Summary, f: impl Fn(f64) -> String) -> String {
    format!("{}–{}", f(s.min), f(s.max))
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

pub fn render(run: &Run) -> String {
    let mut s = String::new();
    let m = run.machine;
    let _ = writeln!(s, "Command: `{}`\n", run.command);
    let _ = writeln!(
        s,
        "Machine: {} cores, {}, {:.0} GiB, kernel {}. Node: {} % runtime-rs shims, the rest \
         Go-runtime; every pod with 2 running containers in the simulated CRI runtime.\n",
        m.cores, m.model, m.memory_gib, m.kernel, run.rs_percent
    );
    let _ = writeln!(
        s,
        "Noise: a fixed single-threaded workload took {} ms (min–max {}) at the start, {} ms \
         ({}) at the end; load average {:.2} then {:.2}.\n",
        ms(run.noise[0].1.median),
        range(&run.noise[0].1, ms),
        ms(run.noise[1].1.median),
        range(&run.noise[1].1, ms),
        run.noise[0].0,
        run.noise[1].0
    );
    scrapes(&mut s, run.outcomes);
    memory(&mut s, run.outcomes);
    single_flight(&mut s, run.outcomes);
    compression(&mut s, run.outcomes);
    scaling(&mut s, run.outcomes);
    latency(&mut s, run.outcomes);
    sustained(&mut s, run.sustained);
    s
}

fn scrapes(s: &mut String, outcomes: &[Outcome]) {
    s.push_str(
        "### Scrapes\n\n\
         *cached*: results reused (inside the reuse window); *fresh*: every shim asked. \
         Wall time per scrape (all scrapes); agent CPU per scrape: mean, and the range over \
         rounds (a round's CPU over its scrapers), from the agent's threads' run time in /proc.\n\n\
         | agent | N | series | results | encoding | scrapers | wall median ms | wall p99 ms | wall min–max | CPU/scrape ms | CPU min–max | shim requests/scrape | response MB |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for o in outcomes {
        for r in &o.rows {
            let w = &r.series.wall;
            let c = &r.series.cpu;
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} |",
                o.agent,
                o.n,
                o.samples,
                if r.fresh { "fresh" } else { "cached" },
                match (r.gzip, r.series.encoding.as_str()) {
                    (true, "identity") => "identity (gzip asked)".to_string(),
                    (_, e) => e.to_string(),
                },
                r.width,
                ms(w.median),
                ms(w.p99),
                range(w, ms),
                ms(c.mean),
                range(c, ms),
                r.series.shim_requests,
                mb(r.series.bytes as f64),
            );
        }
    }
    s.push('\n');
}

fn memory(s: &mut String, outcomes: &[Outcome]) {
    s.push_str(
        "### Memory (RSS, MiB)\n\n\
         Idle: listed and labelled, before any scrape. Steady: VmRSS after each sequential \
         cached scrape (median, range). Cached-phase peak: VmRSS sampled every 2 ms over the \
         cached scrapes (1 and 8 scrapers). 3×4 and 3×8: VmHWM of a fresh agent (default \
         5 s window) after 3 rounds of 4 (8) concurrent gzip scrapes, median and range over \
         agents.\n\n\
         | agent | N | visible | startup s | idle | steady | steady min–max | cached-phase peak | peak 3×4 gzip | 3×4 min–max | peak 3×8 gzip | 3×8 min–max |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for o in outcomes {
        let peak = |w: usize| {
            o.peaks
                .iter()
                .find(|(width, _)| *width == w)
                .map(|(_, p)| (mb(p.median), range(p, mb)))
                .unwrap_or_default()
        };
        let (p4, r4) = peak(4);
        let (p8, r8) = peak(8);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} |",
            o.agent,
            o.n,
            o.visible,
            o.startup.as_secs_f64(),
            mb(o.idle_rss as f64),
            mb(o.steady_rss.median),
            range(&o.steady_rss, mb),
            mb(o.cached_peak as f64),
            p4,
            r4,
            p8,
            r8
        );
    }
    s.push('\n');
}

fn single_flight(s: &mut String, outcomes: &[Outcome]) {
    let with: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.single_flight.is_some())
        .collect();
    if with.is_empty() {
        return;
    }
    s.push_str(
        "### Concurrent fresh scrapes\n\n\
         10 gzip scrapes sent at once after the reuse window passed, repeated: requests each \
         shim got per round (exactly 1 is the target while a round lasts less than the \
         window), and the slowest of the 10 against the median fresh sequential gzip scrape \
         (target: at most 1.3×).\n\n\
         | agent | N | scrapers | window s | requests per shim per round | slowest, median ms | range ms | one fresh gzip scrape ms | ratio |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for o in with {
        let Some(f) = &o.single_flight else { continue };
        let one = o
            .row(true, true, 1)
            .map(|r| r.wall.median)
            .unwrap_or(f64::NAN);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {}–{} | {} | {} | {} | {:.2} |",
            o.agent,
            o.n,
            f.width,
            f.window.as_secs(),
            f.per_shim_min,
            f.per_shim_max,
            ms(f.slowest.median),
            range(&f.slowest, ms),
            ms(one),
            f.slowest.median / one
        );
    }
    s.push('\n');
}

fn compression(s: &mut String, outcomes: &[Outcome]) {
    s.push_str(
        "### Compression against gzip -1\n\n\
         Agent CPU of a cached gzip scrape minus a cached identity scrape (sequential means), \
         against the CPU `gzip -1` takes on the same uncompressed body in the same run \
         (target ratio: at most 0.5).\n\n\
         | agent | N | body MB | gzip scrape ms | identity scrape ms | difference ms | gzip -1 ms (median, range) | ratio |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for o in outcomes {
        let (Some(g), Some(i), Some(one)) =
            (o.row(false, true, 1), o.row(false, false, 1), &o.gzip_one)
        else {
            continue;
        };
        let served_gzip = g.encoding == "gzip";
        let diff = g.cpu.mean - i.cpu.mean;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} ({}) | {} |",
            o.agent,
            o.n,
            mb(o.body_bytes as f64),
            ms(g.cpu.mean),
            ms(i.cpu.mean),
            ms(diff),
            ms(one.median),
            range(one, ms),
            if served_gzip {
                format!("{:.2}", diff / one.median)
            } else {
                "no gzip served".into()
            }
        );
    }
    s.push('\n');
}

fn scaling(s: &mut String, outcomes: &[Outcome]) {
    let pairs: Vec<(&Outcome, &Outcome)> = outcomes
        .iter()
        .filter(|o| o.n == 1000)
        .filter_map(|big| {
            outcomes
                .iter()
                .find(|o| o.n == 500 && o.agent == big.agent)
                .map(|small| (small, big))
        })
        .collect();
    if pairs.is_empty() {
        return;
    }
    s.push_str(
        "### N = 1000 against N = 500\n\n\
         | agent | fresh gzip CPU ×  | cached gzip CPU × | peak 3×4 ×  |\n|---|---|---|---|\n",
    );
    for (small, big) in pairs {
        let cpu = |o: &Outcome, fresh| {
            o.row(fresh, true, 1)
                .map(|r| r.cpu.mean)
                .unwrap_or(f64::NAN)
        };
        let peak = |o: &Outcome| {
            o.peaks
                .iter()
                .find(|(w, _)| *w == 4)
                .map(|(_, p)| p.median)
                .unwrap_or(f64::NAN)
        };
        let x = |a: f64, b: f64| {
            if a.is_finite() && b.is_finite() && a > 0.0 {
                format!("{:.2}", b / a)
            } else {
                "–".into()
            }
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            big.agent,
            x(cpu(small, true), cpu(big, true)),
            x(cpu(small, false), cpu(big, false)),
            x(peak(small), peak(big))
        );
    }
    s.push('\n');
}

fn latency(s: &mut String, outcomes: &[Outcome]) {
    s.push_str(
        "### Discovery and labels\n\n\
         From the sandbox existing (pod in CRI, folder and socket made) until `/sandboxes` \
         lists it, until its pod's UID is there (CRI labels), and from its removal until it \
         is gone; polled every 10 ms; median, p99 and max in ms.\n\n\
         | agent | N | repeats | listed median | listed p99 | labelled median | labelled p99 | labelled max | gone median | gone p99 |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for o in outcomes {
        let Some(l) = &o.latency else { continue };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            o.agent,
            o.n,
            l.listed.n,
            ms(l.listed.median),
            ms(l.listed.p99),
            ms(l.labelled.median),
            ms(l.labelled.p99),
            ms(l.labelled.max),
            ms(l.gone.median),
            ms(l.gone.p99)
        );
    }
    s.push('\n');
}

fn sustained(s: &mut String, runs: &[(String, usize, Duration, Sustained)]) {
    for (agent, n, length, r) in runs {
        let _ = writeln!(
            s,
            "### Sustained: {agent}, N = {n}, 2 gzip scrapes/s for {} s\n\n\
             {} scrapes ({} failed), {} ms of agent CPU per scrape, VmHWM {} MiB.\n\n\
             | seconds | RSS MiB |\n|---|---|",
            length.as_secs(),
            r.scrapes,
            r.failed,
            ms(r.cpu_per_scrape),
            mb(r.hwm as f64)
        );
        for (t, rss) in &r.rss {
            let _ = writeln!(s, "| {t} | {} |", mb(*rss as f64));
        }
        s.push('\n');
    }
}
