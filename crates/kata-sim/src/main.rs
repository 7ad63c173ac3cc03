//! `kata-sim`: command line over the kata-sim library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use kata_sim::cri::CriOptions;
use kata_sim::demo::DemoOptions;
use kata_sim::fault::{parse_duration, FAULT_SYNTAX};
use kata_sim::{
    Event, Fault, FaultSpec, Flavour, MetricsModel, Node, NodeOptions, SandboxSelector,
};
use tokio::io::AsyncBufReadExt;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::broadcast::error::RecvError;

const ABOUT: &str = "Simulated Kata Containers node: shim monitor sockets with live metrics, \
faults, churn and optionally real CRI pods";

const LONG_ABOUT: &str = "Simulated Kata Containers node for testing node agents without VMs.

Every simulated sandbox is a directory <root>/<id>/ holding shim-monitor.sock, served like the \
Go shim (containerd-shim-kata-v2, root /run/vc/sbs) or the runtime-rs shim (root /run/kata): \
same endpoints, status codes, headers, framing and error bodies, and a /metrics body built from \
real shim output whose values evolve like a running VM's.

Modes:
  run     simulate a node until SIGINT/SIGTERM (events on stdout)
  demo    run the kata-pulse agent against a small simulated node
  render  print one simulated /metrics body";

const FAULT_HELP: &str = "Fault of an initial sandbox, by index (Go ones first) or ID; repeatable.

Fault modes (all endpoints unless noted):
  none                 healthy
  slow[=DURATION]      answer after a delay (default 5s; e.g. slow=8s, slow=500ms)
  hang                 read the request, never answer
  garbage              /metrics: 200 with bytes that are not Prometheus text
  truncated[=length|chunked]
                       /metrics: body cut short, then the connection closes (default: chunked
                       cut mid-chunk for Go, short Content-Length for runtime-rs)
  endless              /metrics: chunked body that never ends
  huge[=SIZE]          /metrics: valid but huge body (default 64MiB; e.g. huge=16MiB)
  http500              /metrics: 500 with a text body
  missing-socket       sandbox directory exists, no socket
  stale-socket         socket file left behind, connections refused
  accept-close         accept connections and close them at once";

#[derive(Parser)]
#[command(name = "kata-sim", version, about = ABOUT, long_about = LONG_ABOUT)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Simulate a Kata node until SIGINT/SIGTERM, printing one event per line on stdout.
    #[command(after_long_help = RUN_AFTER_HELP)]
    Run(RunArgs),
    /// Start the kata-pulse agent (found next to this executable) against a simulated node
    /// (3 Go, 2 runtime-rs, 1 slow and 1 failing sandbox, each a pod of a simulated CRI
    /// runtime), and print what to look at.
    Demo(DemoArgs),
    /// Print the /metrics body a simulated shim would serve after some time.
    Render(RenderArgs),
}

const RUN_AFTER_HELP: &str = "Events (--events-json), one JSON object per line:
  {\"event\":\"added\",\"sandbox_id\":ID,\"index\":N,\"layout\":\"go\"|\"runtime-rs\",\"dir\":DIR,
   \"socket\":PATH,\"fault\":MODE,\"pod_uid\":UID|null,\"pod_name\":NAME|null,\"pod_namespace\":NS|null}
  {\"event\":\"removed\", ...same fields}
  {\"event\":\"ready\",\"sandboxes\":N}          once all initial sandboxes serve
  {\"event\":\"fault\",\"sandbox_id\":ID,\"fault\":MODE}
  {\"event\":\"error\",\"message\":TEXT}

Control commands on stdin (--control-stdin), one per line:
  fault <index|id> <mode>      change a sandbox's fault
  add go|runtime-rs [<mode>]   add a sandbox
  remove <index|id>            remove a sandbox
  list                         print {\"event\":\"list\",\"sandboxes\":[...]}

Indexes count sandboxes in creation order from 0, Go ones first among the initial ones.

Fault modes (all endpoints unless noted):
  none | slow[=DURATION] | hang | garbage | truncated[=length|chunked] | endless |
  huge[=SIZE] | http500 | missing-socket | stale-socket | accept-close
  (see `kata-sim run --fault` help)";

#[derive(Args)]
struct RunArgs {
    /// Root of Go-runtime sandboxes.
    #[arg(long, value_name = "DIR", default_value = kata_sim::GO_ROOT)]
    go_root: PathBuf,
    /// Root of runtime-rs sandboxes.
    #[arg(long, value_name = "DIR", default_value = kata_sim::RS_ROOT)]
    rs_root: PathBuf,
    /// Number of Go-runtime sandboxes to start with.
    #[arg(long, value_name = "N", default_value_t = 0)]
    go: usize,
    /// Number of runtime-rs sandboxes to start with.
    #[arg(long, value_name = "N", default_value_t = 0)]
    rs: usize,
    /// Fault of an initial sandbox, by index (Go ones first) or ID; repeatable.
    #[arg(long, value_name = "INDEX|ID=MODE", long_help = FAULT_HELP)]
    fault: Vec<FaultSpec>,
    /// Replace this many (unfaulted) sandboxes per minute, keeping the count constant.
    #[arg(long, value_name = "R", default_value_t = 0.0)]
    churn_per_min: f64,
    /// Serve /debug/vars and /debug/pprof/* on Go shims (as with enable_pprof = true).
    #[arg(long)]
    pprof: bool,
    /// Create each sandbox as a real pod through this CRI endpoint first
    /// (e.g. unix:///run/containerd/containerd.sock); its pod ID names the sandbox.
    #[arg(long, value_name = "EP")]
    cri_endpoint: Option<String>,
    /// Namespace of the CRI pods.
    #[arg(long, value_name = "NS", default_value = "kata-sim")]
    pod_namespace: String,
    /// CRI pods are named <prefix>-<index>.
    #[arg(long, value_name = "PREFIX", default_value = "kata-sim")]
    pod_name_prefix: String,
    /// RuntimeClass handler of the CRI pods.
    #[arg(long, value_name = "HANDLER", default_value = "kata")]
    runtime_handler: String,
    /// Containers created and started in each CRI pod (needs --container-image).
    #[arg(long, value_name = "K", default_value_t = 0)]
    containers_per_pod: usize,
    /// Image of those containers, already present in the runtime (e.g. a pause image).
    #[arg(long, value_name = "IMG")]
    container_image: Option<String>,
    /// Deadline of each CRI call.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    cri_timeout: Duration,
    /// Seed for IDs and metric evolution (random by default; printed at start).
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// Print events as JSON lines instead of text.
    #[arg(long)]
    events_json: bool,
    /// Accept control commands on stdin (see below).
    #[arg(long)]
    control_stdin: bool,
}

#[derive(Args)]
struct DemoArgs {
    /// Address the agent listens on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8090")]
    listen: String,
    /// Agent binary (default: kata-pulse next to this executable).
    #[arg(long, value_name = "PATH")]
    agent: Option<PathBuf>,
    /// Healthy Go sandboxes.
    #[arg(long, value_name = "N", default_value_t = 3)]
    go: usize,
    /// Healthy runtime-rs sandboxes.
    #[arg(long, value_name = "N", default_value_t = 2)]
    rs: usize,
    /// Slow Go sandboxes (answering after 5 s, beyond the agent's 3 s shim timeout).
    #[arg(long, value_name = "N", default_value_t = 1)]
    slow: usize,
    /// Failing Go sandboxes (their shim answers /metrics with HTTP 500).
    #[arg(long, value_name = "N", default_value_t = 1)]
    failing: usize,
    /// Create the pods in this real CRI runtime (e.g. unix:///run/containerd/containerd.sock)
    /// instead of the simulated one; they get no containers.
    #[arg(long, value_name = "EP")]
    cri_endpoint: Option<String>,
    /// Seed for IDs and metric evolution.
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// Extra arguments passed to the agent, after `--`.
    #[arg(last = true, value_name = "AGENT_ARGS")]
    agent_args: Vec<String>,
}

#[derive(Args)]
struct RenderArgs {
    /// Shim flavour: go or runtime-rs.
    #[arg(long, value_name = "FLAVOUR", default_value = "go")]
    flavour: Flavour,
    /// Seed of the simulated sandbox.
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
    /// Time since the sandbox started.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    elapsed: Duration,
    /// Scrapes before this one, spread evenly over the elapsed time.
    #[arg(long, value_name = "N", default_value_t = 0)]
    scrapes: u32,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KATA_SIM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let result = match cli.cmd {
        Cmd::Render(a) => {
            render(a);
            Ok(())
        }
        cmd => match tokio::runtime::Runtime::new() {
            Ok(rt) => rt.block_on(async move {
                match cmd {
                    Cmd::Run(a) => run(a).await,
                    Cmd::Demo(a) => demo(a).await,
                    Cmd::Render(_) => Ok(()),
                }
            }),
            Err(e) => Err(anyhow::Error::new(e).context("starting the async runtime")),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kata-sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn render(a: RenderArgs) {
    let mut m = MetricsModel::new(a.flavour, a.seed, 1_787_359_032.0);
    let n = a.scrapes as f64;
    for k in 0..a.scrapes {
        m.render(a.elapsed.mul_f64(k as f64 / (n + 1.0)));
    }
    print!("{}", m.render(a.elapsed));
}

async fn demo(a: DemoArgs) -> Result<()> {
    kata_sim::demo::run(DemoOptions {
        listen: a.listen,
        agent: a.agent,
        go: a.go,
        rs: a.rs,
        slow: a.slow,
        failing: a.failing,
        cri_endpoint: a.cri_endpoint,
        seed: a.seed,
        agent_args: a.agent_args,
        ..Default::default()
    })
    .await
}

fn event_line(json: bool, e: &Event) -> String {
    if json {
        e.to_json_line()
    } else {
        e.human()
    }
}

async fn run(a: RunArgs) -> Result<()> {
    let cri = a.cri_endpoint.as_ref().map(|ep| {
        let mut c = CriOptions::new(ep.clone());
        c.namespace = a.pod_namespace.clone();
        c.name_prefix = a.pod_name_prefix.clone();
        c.runtime_handler = a.runtime_handler.clone();
        c.containers_per_pod = a.containers_per_pod;
        c.container_image = a.container_image.clone();
        c.call_timeout = a.cri_timeout;
        c
    });
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let opts = NodeOptions {
        go_root: a.go_root,
        rs_root: a.rs_root,
        go: a.go,
        rs: a.rs,
        faults: a.fault,
        churn_per_min: a.churn_per_min,
        pprof: a.pprof,
        seed: a.seed,
        cri,
    };
    let starting = Node::start(opts);
    let node = tokio::select! {
        n = starting => n?,
        _ = sigint.recv() => return Ok(()),
        _ = sigterm.recv() => return Ok(()),
    };
    eprintln!(
        "kata-sim: seed {}; Go root {}; runtime-rs root {}",
        node.seed(),
        node.go_root().display(),
        node.rs_root().display()
    );
    let json = a.events_json;
    let rx = node.subscribe();
    // Control replies go through the printer too, after the events their command caused.
    let (reply_tx, reply_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let printer = spawn_printer(rx, reply_rx, json);
    let control = async {
        if !a.control_stdin {
            return std::future::pending::<()>().await;
        }
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let reply = match control(&node, line.trim(), json).await {
                Ok(r) => r,
                Err(e) => Some(event_line(
                    json,
                    &Event::Error {
                        message: format!("{}: {e:#}", line.trim()),
                    },
                )),
            };
            if let Some(r) = reply {
                let _ = reply_tx.send(r);
            }
        }
        // stdin closed: keep running until a signal.
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = sigint.recv() => {}
        _ = sigterm.recv() => {}
        _ = control => {}
    }
    let result = node.shutdown().await;
    let _ = printer.await;
    result
}

/// Prints node events, and the control replies after the events their
/// command caused.
fn spawn_printer(
    mut rx: tokio::sync::broadcast::Receiver<Event>,
    mut reply_rx: tokio::sync::mpsc::UnboundedReceiver<String>,
    json: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                r = rx.recv() => match r {
                    Ok(e) => println!("{}", event_line(json, &e)),
                    Err(RecvError::Lagged(n)) => {
                        let e = Event::Error {
                            message: format!("{n} events dropped (output too slow)"),
                        };
                        println!("{}", event_line(json, &e));
                    }
                    Err(RecvError::Closed) => break,
                },
                Some(line) = reply_rx.recv() => println!("{line}"),
            }
        }
    })
}

/// Executes one control command; returns a reply line to print, if any.
async fn control(node: &Node, line: &str, json: bool) -> Result<Option<String>> {
    let mut words = line.split_whitespace();
    let sel = |w: Option<&str>| -> Result<SandboxSelector> {
        let w = w.context("missing <index|id>")?;
        Ok(match w.parse::<usize>() {
            Ok(i) => SandboxSelector::Index(i),
            Err(_) => SandboxSelector::Id(w.to_string()),
        })
    };
    match words.next() {
        None => Ok(None),
        Some("fault") => {
            let s = sel(words.next())?;
            let mode: Fault = words
                .next()
                .with_context(|| format!("missing mode ({FAULT_SYNTAX})"))?
                .parse()?;
            let id = node.resolve(&s).await.context("no such sandbox")?;
            node.set_fault(&id, mode).await.map(|_| None)
        }
        Some("add") => {
            let layout: Flavour = words
                .next()
                .context("missing layout (go | runtime-rs)")?
                .parse()
                .map_err(anyhow::Error::msg)?;
            let fault: Fault = match words.next() {
                Some(m) => m.parse()?,
                None => Fault::None,
            };
            node.add_sandbox(layout, fault).await.map(|_| None)
        }
        Some("remove") => {
            let s = sel(words.next())?;
            let id = node.resolve(&s).await.context("no such sandbox")?;
            node.remove_sandbox(&id).await.map(|_| None)
        }
        Some("list") => {
            let list = node.list().await;
            if json {
                let items: Vec<String> = list
                    .into_iter()
                    .map(|s| {
                        Event::Added(s)
                            .to_json_line()
                            .replacen("\"added\"", "\"sandbox\"", 1)
                    })
                    .collect();
                Ok(Some(format!(
                    "{{\"event\":\"list\",\"sandboxes\":[{}]}}",
                    items.join(",")
                )))
            } else {
                let lines: Vec<String> = list
                    .into_iter()
                    .map(|s| Event::Added(s).human().replacen("added  ", "sandbox", 1))
                    .collect();
                Ok(Some(lines.join("\n")))
            }
        }
        Some(other) => anyhow::bail!("unknown command `{other}` (fault, add, remove, list)"),
    }
}
