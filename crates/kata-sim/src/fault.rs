//! Ways a shim can misbehave, as seen from a client of its monitor socket.
//!
//! These are the failure shapes a node agent meets in production: a VM under memory
//! pressure answering late or never, a shim killed mid-response, a socket left behind by a
//! dead shim, and so on. They apply to every endpoint of the shim.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Default delay of [`Fault::Slow`]: longer than kata-monitor's 3 s per-shim timeout.
pub const DEFAULT_SLOW: Duration = Duration::from_secs(5);
/// Default size of [`Fault::Huge`].
pub const DEFAULT_HUGE_BYTES: u64 = 64 * 1024 * 1024;

/// How a [`Fault::Truncated`] response is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Truncation {
    /// The flavour's own framing: chunked for Go, Content-Length for runtime-rs.
    #[default]
    Auto,
    /// `Content-Length` announces more bytes than are sent, then the connection closes.
    Length,
    /// Chunked body whose last chunk is cut in the middle, then the connection closes.
    Chunked,
}

/// A per-sandbox fault mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Healthy shim.
    #[default]
    None,
    /// Answer every request after a delay.
    Slow(Duration),
    /// Accept, read the request, never answer.
    Hang,
    /// 200 with bytes that are not Prometheus text.
    Garbage,
    /// Response body shorter than its framing promises.
    Truncated(Truncation),
    /// Chunked body that never ends.
    Endless,
    /// Valid but very large `/metrics` body of about this many bytes.
    Huge(u64),
    /// 500 with a text body.
    Http500,
    /// The sandbox directory exists but holds no socket.
    MissingSocket,
    /// Accept connections and close them at once.
    AcceptClose,
    /// The socket file is left behind but nothing listens (connect is refused), as after a
    /// shim crash.
    StaleSocket,
}

impl Fault {
    /// Whether a listener must be bound for this fault.
    pub fn listens(&self) -> bool {
        !matches!(self, Fault::MissingSocket | Fault::StaleSocket)
    }
}

/// Error from parsing a [`Fault`] or [`FaultSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultParseError(pub String);

impl fmt::Display for FaultParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FaultParseError {}

/// Accepted spellings, for error messages and `--help`.
pub const FAULT_SYNTAX: &str = "none | slow[=DURATION] | hang | garbage | \
truncated[=length|chunked] | endless | huge[=SIZE] | http500 | missing-socket | \
accept-close | stale-socket";

impl FromStr for Fault {
    type Err = FaultParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (mode, arg) = match s.split_once('=') {
            Some((m, a)) => (m, Some(a)),
            None => (s, None),
        };
        let no_arg = |f: Fault| match arg {
            None => Ok(f),
            Some(_) => Err(FaultParseError(format!(
                "fault mode `{mode}` takes no argument"
            ))),
        };
        match mode.to_ascii_lowercase().as_str() {
            "none" | "healthy" | "ok" => no_arg(Fault::None),
            "slow" => match arg {
                None => Ok(Fault::Slow(DEFAULT_SLOW)),
                Some(a) => parse_duration(a).map(Fault::Slow),
            },
            "hang" => no_arg(Fault::Hang),
            "garbage" => no_arg(Fault::Garbage),
            "truncated" => match arg.map(str::to_ascii_lowercase).as_deref() {
                None | Some("auto") => Ok(Fault::Truncated(Truncation::Auto)),
                Some("length" | "content-length") => Ok(Fault::Truncated(Truncation::Length)),
                Some("chunked") => Ok(Fault::Truncated(Truncation::Chunked)),
                Some(o) => Err(FaultParseError(format!(
                    "truncated takes `length` or `chunked`, not `{o}`"
                ))),
            },
            "endless" => no_arg(Fault::Endless),
            "huge" => match arg {
                None => Ok(Fault::Huge(DEFAULT_HUGE_BYTES)),
                Some(a) => parse_size(a).map(Fault::Huge),
            },
            "http500" | "500" => no_arg(Fault::Http500),
            "missing-socket" | "missing" => no_arg(Fault::MissingSocket),
            "accept-close" => no_arg(Fault::AcceptClose),
            "stale-socket" | "stale" => no_arg(Fault::StaleSocket),
            _ => Err(FaultParseError(format!(
                "unknown fault `{s}`; expected {FAULT_SYNTAX}"
            ))),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::None => f.write_str("none"),
            Fault::Slow(d) if d.subsec_millis() == 0 => write!(f, "slow={}s", d.as_secs()),
            Fault::Slow(d) => write!(f, "slow={}ms", d.as_millis()),
            Fault::Hang => f.write_str("hang"),
            Fault::Garbage => f.write_str("garbage"),
            Fault::Truncated(Truncation::Auto) => f.write_str("truncated"),
            Fault::Truncated(Truncation::Length) => f.write_str("truncated=length"),
            Fault::Truncated(Truncation::Chunked) => f.write_str("truncated=chunked"),
            Fault::Endless => f.write_str("endless"),
            Fault::Huge(n) => write!(f, "huge={n}"),
            Fault::Http500 => f.write_str("http500"),
            Fault::MissingSocket => f.write_str("missing-socket"),
            Fault::AcceptClose => f.write_str("accept-close"),
            Fault::StaleSocket => f.write_str("stale-socket"),
        }
    }
}

/// `500ms`, `8s`, `1.5s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, FaultParseError> {
    let s = s.trim();
    let err = || FaultParseError(format!("invalid duration `{s}` (e.g. 500ms, 8s, 2m, 1h)"));
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.trim().parse().map_err(|_| err())?;
    if !v.is_finite() || v < 0.0 {
        return Err(err());
    }
    Duration::try_from_secs_f64(v * mult).map_err(|_| err())
}

/// `65536`, `512KiB`, `16MiB`, `1GiB` (also `K`, `M`, `G`, `KB`, `MB`, `GB`, all powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, FaultParseError> {
    let t = s.trim();
    let upper = t.to_ascii_uppercase();
    let err = || FaultParseError(format!("invalid size `{s}` (e.g. 65536, 512KiB, 64MiB)"));
    let split = upper
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(upper.len());
    let (num, unit) = upper.split_at(split);
    let mult: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "K" | "KB" | "KIB" => 1024.0,
        "M" | "MB" | "MIB" => 1024.0 * 1024.0,
        "G" | "GB" | "GIB" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(err()),
    };
    let v: f64 = num.parse().map_err(|_| err())?;
    Ok((v * mult) as u64)
}

/// Which sandbox a `--fault` applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxSelector {
    /// Position among the initial sandboxes: Go ones first, then runtime-rs ones.
    Index(usize),
    /// Sandbox ID.
    Id(String),
}

/// `<index|id>=<mode>` as given to `kata-sim run --fault`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultSpec {
    pub target: SandboxSelector,
    pub fault: Fault,
}

impl FromStr for FaultSpec {
    type Err = FaultParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (target, mode) = s
            .split_once('=')
            .ok_or_else(|| FaultParseError(format!("expected <index|id>=<mode>, got `{s}`")))?;
        let target = target.trim();
        if target.is_empty() {
            return Err(FaultParseError(format!("missing sandbox in `{s}`")));
        }
        let target = match target.parse::<usize>() {
            Ok(i) => SandboxSelector::Index(i),
            Err(_) => SandboxSelector::Id(target.to_string()),
        };
        Ok(FaultSpec {
            target,
            fault: mode.parse()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_modes() {
        let ok: &[(&str, Fault)] = &[
            ("none", Fault::None),
            ("slow", Fault::Slow(Duration::from_secs(5))),
            ("slow=8s", Fault::Slow(Duration::from_secs(8))),
            ("slow=250ms", Fault::Slow(Duration::from_millis(250))),
            ("slow=1.5", Fault::Slow(Duration::from_millis(1500))),
            ("slow=2m", Fault::Slow(Duration::from_secs(120))),
            ("hang", Fault::Hang),
            ("garbage", Fault::Garbage),
            ("truncated", Fault::Truncated(Truncation::Auto)),
            ("truncated=chunked", Fault::Truncated(Truncation::Chunked)),
            ("truncated=length", Fault::Truncated(Truncation::Length)),
            ("endless", Fault::Endless),
            ("huge", Fault::Huge(64 << 20)),
            ("huge=16MiB", Fault::Huge(16 << 20)),
            ("huge=1000", Fault::Huge(1000)),
            ("http500", Fault::Http500),
            ("missing-socket", Fault::MissingSocket),
            ("accept-close", Fault::AcceptClose),
            ("stale-socket", Fault::StaleSocket),
            ("HANG", Fault::Hang),
        ];
        for (s, f) in ok {
            assert_eq!(s.parse::<Fault>().as_ref(), Ok(f), "{s}");
            // Display round-trips.
            assert_eq!(f.to_string().parse::<Fault>().as_ref(), Ok(f), "{s}");
        }
        for bad in [
            "",
            "slow=abc",
            "slow=-1s",
            "hang=3",
            "truncated=mid",
            "huge=1XB",
            "nope",
        ] {
            assert!(bad.parse::<Fault>().is_err(), "{bad}");
        }
    }

    #[test]
    fn parse_specs() {
        let s: FaultSpec = "3=slow=8s".parse().unwrap();
        assert_eq!(s.target, SandboxSelector::Index(3));
        assert_eq!(s.fault, Fault::Slow(Duration::from_secs(8)));
        let id = "ab".repeat(32);
        let s: FaultSpec = format!("{id}=hang").parse().unwrap();
        assert_eq!(s.target, SandboxSelector::Id(id));
        assert!("hang".parse::<FaultSpec>().is_err());
        assert!("=hang".parse::<FaultSpec>().is_err());
        assert!("1=bogus".parse::<FaultSpec>().is_err());
    }
}
