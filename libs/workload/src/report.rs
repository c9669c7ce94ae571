//! Benchmark reports: the machine and date a figure was measured on, and the section of
//! `docs/benchmarks.md` a benchmark rewrites with its latest figures.

use std::{
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

/// "AMD EPYC 7B13, 2 cores, 24 GiB": the CPU model, the cores this process may use, the memory.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| (kib + (1 << 19)) >> 20);
    format!("{model}, {cores} cores, {gib} GiB")
}

/// Today's date (UTC), `YYYY-MM-DD`.
pub fn today() -> String {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Replaces the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` in the file at
/// `path` with `body` (appending both markers and the body when the section is not there yet).
pub fn write_section(path: &Path, name: &str, body: &str) -> std::io::Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    std::fs::write(path, replace_section(&text, name, body))
}

fn replace_section(text: &str, name: &str, body: &str) -> String {
    let start = format!("<!-- bench:{name} -->");
    let end = format!("<!-- /bench:{name} -->");
    let section = format!("{start}\n{}\n{end}", body.trim_end());
    match (text.find(&start), text.find(&end)) {
        (Some(s), Some(e)) if e > s => {
            format!("{}{section}{}", &text[..s], &text[e + end.len()..])
        }
        _ => format!("{}\n{section}\n", text.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_replaced_in_place_or_appended() {
        let doc = "# Benchmarks\n\nintro\n";
        let once = replace_section(doc, "execution", "figures 1");
        assert_eq!(
            once,
            "# Benchmarks\n\nintro\n<!-- bench:execution -->\nfigures 1\n<!-- /bench:execution -->\n"
        );
        let twice = replace_section(&(once.clone() + "\nafter\n"), "execution", "figures 2\n");
        assert!(
            twice.contains("figures 2") && !twice.contains("figures 1"),
            "{twice}"
        );
        assert!(twice.ends_with("\nafter\n"), "{twice}");
    }

    #[test]
    fn civil_dates_are_right() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_418), (2025, 11, 26));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
