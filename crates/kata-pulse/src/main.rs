//! `kata-pulse` binary: parse the command line, set up logging, run.

use std::io::Write;

use kata_pulse::config::{parse_args, Invocation};

/// Says `text` on stdout or stderr; a closed one is no reason to panic
/// (print! would, and exit 101 instead of the code meant).
fn say(to_stdout: bool, text: &str) {
    let _ = if to_stdout {
        std::io::stdout().write_all(text.as_bytes())
    } else {
        std::io::stderr().write_all(text.as_bytes())
    };
}

fn main() {
    let config = match parse_args(std::env::args().collect()) {
        Invocation::Run(config) => *config,
        Invocation::Exit { text, code } => {
            say(code == 0, &text);
            std::process::exit(code);
        }
    };
    kata_pulse::logging::init(&config.log_filter, config.log_format);
    kata_pulse::incidents::install_panic_hook();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say(
                false,
                &format!("error: cannot start the async runtime: {e}\n"),
            );
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(kata_pulse::run::run(config));
    // Whatever still runs (a blocking shim or CRI call) must not hold the
    // exit: a stopped agent exits within the grace period.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    // Queued log lines first, so they come before the last word.
    let flush = || kata_pulse::logging::flush(std::time::Duration::from_millis(500));
    if let Err(e) = result {
        // Said once: on stderr as the flag errors are (exit 2) when it could
        // not start, in the log format when it stopped while serving.
        if e.downcast_ref::<kata_pulse::run::StartupError>().is_some() {
            flush();
            say(false, &format!("error: {e:#}\n"));
            std::process::exit(2);
        }
        tracing::error!("{e:#}");
        flush();
        std::process::exit(1);
    }
    flush();
}
