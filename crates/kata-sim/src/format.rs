//! Number and date formatting exactly as the real producers print them.
//!
//! Consumers of shim output (kata-monitor, kata-pulse) must cope with both styles, so the
//! simulator reproduces them byte for byte rather than using one Rust formatting everywhere.

use std::time::{SystemTime, UNIX_EPOCH};

/// Formats like Go's `strconv.FormatFloat(v, 'g', -1, 64)`, which Prometheus' Go `expfmt`
/// text encoder uses: shortest round-trip digits, exponent form when the decimal exponent is
/// `< -4` or `>= 6` (e.g. `438272`, `1.24928e+06`, `6.8986e-05`).
pub fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    // Rust's `{:e}` yields the same shortest round-trip digits as Go, e.g. `1.24928e6`.
    let sci = format!("{:e}", v.abs());
    let (mantissa, exp) = match sci.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (sci.as_str(), 0),
    };
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let mut out = String::with_capacity(digits.len() + 8);
    if v < 0.0 {
        out.push('-');
    }
    if !(-4..6).contains(&exp) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        let e = exp.unsigned_abs();
        if e < 10 {
            out.push('0');
        }
        out.push_str(&e.to_string());
    } else if exp >= 0 {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', int_len - digits.len()));
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
        out.push_str(&digits);
    }
    out
}

/// Formats like the rust-prometheus text encoder used by the kata-agent and the runtime-rs
/// shim: Rust's `Display` for `f64` (integers printed plainly, never an exponent).
pub fn rust_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        format!("{v}")
    }
}

/// An RFC 9110 IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) for hand-written responses,
/// which must carry a `Date` header like the servers they imitate.
pub fn http_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    let (y, mo, d) = civil_from_days(days);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MO: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        WD[(days.rem_euclid(7)) as usize],
        d,
        MO[(mo - 1) as usize],
        y,
        h,
        m,
        s
    )
}

/// Gregorian date from days since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn go_format_matches_strconv() {
        let cases: &[(f64, &str)] = &[
            (438272.0, "438272"),
            (1249280.0, "1.24928e+06"),
            (6.8986e-05, "6.8986e-05"),
            (9.223372036854776e18, "9.223372036854776e+18"),
            (0.0, "0"),
            (1.0, "1"),
            (100.0, "100"),
            (999999.0, "999999"),
            (1e6, "1e+06"),
            (3.71, "3.71"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (0.019999999552965164, "0.019999999552965164"),
            (0.7711305188284795, "0.7711305188284795"),
            (1.7873688116549423e9, "1.7873688116549423e+09"),
            (35184372087808.0, "3.5184372087808e+13"),
            (1.8446744073709552e19, "1.8446744073709552e+19"),
            (1e100, "1e+100"),
            (-2.5, "-2.5"),
            (-1234567.0, "-1.234567e+06"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ];
        for (v, want) in cases {
            assert_eq!(go_float(*v), *want, "value {v:?}");
        }
    }

    #[test]
    fn go_format_parses_back() {
        for v in [1.5e-7, 123.456, 65536.0, 7.0e22, 0.1, 2.0f64.powi(60)] {
            assert_eq!(go_float(v).parse::<f64>().unwrap(), v);
        }
    }

    #[test]
    fn rust_format_is_plain() {
        assert_eq!(rust_float(35184372087808.0), "35184372087808");
        assert_eq!(rust_float(1249280.0), "1249280");
        assert_eq!(rust_float(1.54), "1.54");
        assert_eq!(rust_float(0.019999999552965164), "0.019999999552965164");
        assert_eq!(rust_float(f64::INFINITY), "+Inf");
    }

    #[test]
    fn http_date_format() {
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
    }
}
