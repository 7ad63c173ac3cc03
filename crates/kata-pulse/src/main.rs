//! `kata-pulse` binary: parse the command line, set up logging, run.

use kata_pulse::config::{parse_args, Invocation};

fn main() {
    let config = match parse_args(std::env::args().collect()) {
        Invocation::Run(config) => *config,
        Invocation::Exit { text, code } => {
            if code == 0 {
                print!("{text}");
            } else {
                eprint!("{text}");
            }
            std::process::exit(code);
        }
    };
    kata_pulse::logging::init(&config.log_filter, config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(kata_pulse::run::run(config));
    // Whatever still runs (a blocking shim or CRI call) must not hold the
    // exit: a stopped agent exits within the grace period.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    if let Err(e) = result {
        // Said once: on stderr as the flag errors are (exit 2) when it could
        // not start, in the log format when it stopped while serving.
        if e.downcast_ref::<kata_pulse::run::StartupError>().is_some() {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
        tracing::error!("{e:#}");
        std::process::exit(1);
    }
}
