//! Numbers for people: one formatting of each unit, shared by every report.

/// `12.3 Mops/s`, `850 kops/s`, `120 ops/s`.
pub fn ops_per_sec(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2} Gops/s", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2} Mops/s", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} kops/s", v / 1e3)
    } else {
        format!("{v:.0} ops/s")
    }
}

/// Binary units: `512 B`, `1.5 KiB`, `12.0 MiB`, `3.25 GiB`.
pub fn bytes(v: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if v < 1024 {
        return format!("{v} B");
    }
    let mut value = v as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2} {}", UNITS[unit])
}

/// Nanoseconds with a unit that keeps three significant digits: `87 ns`, `1.25 µs`, `52.1 ms`.
pub fn nanos(v: f64) -> String {
    if v < 1e3 {
        format!("{v:.0} ns")
    } else if v < 1e6 {
        format!("{:.3} µs", v / 1e3)
    } else if v < 1e9 {
        format!("{:.3} ms", v / 1e6)
    } else {
        format!("{:.3} s", v / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(ops_per_sec(12_345_678.0), "12.35 Mops/s");
        assert_eq!(ops_per_sec(850.0), "850 ops/s");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.50 KiB");
        assert_eq!(bytes(3 << 30), "3.00 GiB");
        assert_eq!(nanos(87.0), "87 ns");
        assert_eq!(nanos(1250.0), "1.250 µs");
    }
}
