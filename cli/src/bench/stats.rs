//! Percentiles, medians and the units figures are printed in.

use std::time::Duration;

/// The `p`-th percentile (0 < p ≤ 100) of `sorted` by nearest rank: the smallest sample
/// that at least `p` % of the samples do not exceed. Nearest rank rather than
/// interpolation, so every figure printed is a latency that was actually observed.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Bytes per second as `1234 MiB/s`.
pub fn rate(bytes_per_sec: f64) -> String {
    format!("{:.0} MiB/s", bytes_per_sec / MIB)
}

/// A latency in microseconds, `12.3 µs`.
pub fn micros(us: f64) -> String {
    format!("{us:.1} µs")
}

/// A memory size in megabytes (10^6, as the targets are stated), `4.21 MB`.
pub fn megabytes(bytes: f64) -> String {
    format!("{:.2} MB", bytes / 1e6)
}

/// A memory size in KiB, `41.7 KiB`.
pub fn kib(bytes: f64) -> String {
    format!("{:.1} KiB", bytes / 1024.0)
}

/// A byte count as a human reads it: `1 GiB`, `256 MiB`, `1000 B`.
pub fn size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (unit, name) in UNITS {
        if bytes >= unit && bytes % unit == 0 {
            return format!("{} {name}", bytes / unit);
        }
    }
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / MIB),
        b => format!("{b} B"),
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// Parses a byte count with an optional binary suffix: `1048576`, `64K`, `256M`, `1G`
/// (also `KiB`, `MiB`, `GiB`).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, suffix) = t.split_at(digits);
    let number: u64 = number.parse().map_err(|_| format!("{s:?} is not a byte count (e.g. 1G, 256M, 65536)"))?;
    let shift = match suffix.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KIB" => 10,
        "M" | "MIB" => 20,
        "G" | "GIB" => 30,
        _ => return Err(format!("unknown size suffix {suffix:?} in {s:?}: use K, M or G")),
    };
    number.checked_mul(1 << shift).filter(|&n| n > 0).ok_or_else(|| format!("{s:?} is out of range"))
}

/// A list of positive counts, as one option value (argh reads a `Vec` option as a
/// repeated option instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts(pub Vec<usize>);

/// Parses a comma-separated list of positive counts: `1,8,64`.
pub fn parse_counts(s: &str) -> Result<Counts, String> {
    s.split(',')
        .map(|part| match part.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{part:?} in {s:?} is not a positive count (e.g. 1,8,64)")),
        })
        .collect::<Result<_, _>>()
        .map(Counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile(&samples, 50.0), Duration::from_micros(50));
        assert_eq!(percentile(&samples, 99.0), Duration::from_micros(99));
        assert_eq!(percentile(&samples, 100.0), Duration::from_micros(100));
        assert_eq!(percentile(&samples[..1], 99.0), Duration::from_micros(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn byte_counts_with_suffixes() {
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert_eq!(parse_bytes("256MiB"), Ok(256 << 20));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("1T").is_err());
        assert_eq!(size(1 << 30), "1 GiB");
        assert_eq!(parse_counts("1, 8,64"), Ok(Counts(vec![1, 8, 64])));
        assert!(parse_counts("1,0").is_err());
    }
}
