//! Human formats for sizes, durations and ages.

use std::time::{Duration, SystemTime};

/// `612.3 MiB`, `4.0 KiB`, `17 B`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    #[allow(clippy::cast_precision_loss)]
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `1.24 s`, `85 ms`, `3m 12s`.
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 1.0 {
        format!("{} ms", d.as_millis())
    } else if secs < 60.0 {
        format!("{secs:.2} s")
    } else {
        let whole = d.as_secs();
        format!("{}m {:02}s", whole / 60, whole % 60)
    }
}

/// `3 minutes ago`, `2 days ago`.
pub fn age(t: SystemTime) -> String {
    let Ok(elapsed) = SystemTime::now().duration_since(t) else { return "just now".into() };
    let secs = elapsed.as_secs();
    let (n, unit) = match secs {
        0..60 => return "just now".into(),
        60..3600 => (secs / 60, "minute"),
        3600..86_400 => (secs / 3600, "hour"),
        _ => (secs / 86_400, "day"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// `MB/s` of `n` bytes over `d`.
pub fn rate(n: u64, d: Duration) -> String {
    let secs = d.as_secs_f64().max(1e-9);
    // A rate is shown to one decimal: precision loss and truncation are harmless here.
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let per_sec = (n as f64 / secs) as u64;
    format!("{}/s", bytes(per_sec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(bytes(17), "17 B");
        assert_eq!(bytes(4096), "4.0 KiB");
        assert_eq!(bytes(642_000_000), "612.3 MiB");
        assert_eq!(duration(Duration::from_millis(85)), "85 ms");
        assert_eq!(duration(Duration::from_secs(192)), "3m 12s");
    }
}
