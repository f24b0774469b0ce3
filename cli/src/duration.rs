//! Durations as users type them: `90s`, `15m`, `2h`, `1d` (and combinations like `1h30m`).

use std::time::Duration;

/// Parses a positive duration made of `<number><unit>` parts, units `s`, `m`, `h`, `d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration; use e.g. 90s, 15m, 2h or 1d".into());
    }
    if t.starts_with('-') {
        return Err(format!(
            "{s:?} is negative; a duration must be longer than zero"
        ));
    }
    let mut total: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "{s:?} is not a duration; use e.g. 90s, 15m, 2h or 1d"
            ));
        }
        let (num, tail) = rest.split_at(digits);
        let unit_len = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = tail.split_at(unit_len);
        let secs_per = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "" if !tail.is_empty() => {
                return Err(format!(
                    "{s:?} is not a duration; use e.g. 90s, 15m, 2h or 1d"
                ));
            }
            "" if num == t && num.bytes().all(|b| b == b'0') => {
                return Err(format!("{s:?}: a duration must be longer than zero"));
            }
            "" => {
                return Err(format!("{s:?} has no unit; use e.g. 90s, 15m, 2h or 1d"));
            }
            u => {
                return Err(format!(
                    "{s:?}: unknown unit {u:?}; the units are s, m, h and d"
                ));
            }
        };
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?}: {num} is too large"))?;
        total = n
            .checked_mul(secs_per)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("{s:?} is too long"))?;
        rest = tail;
    }
    if total == 0 {
        return Err(format!("{s:?}: a duration must be longer than zero"));
    }
    Ok(Duration::from_secs(total))
}

/// `90s`, `15m`, `2h30m`, `1d`: the shortest exact rendering.
pub fn format_duration(d: Duration) -> String {
    let mut s = d.as_secs();
    if s == 0 {
        return format!("{}ms", d.as_millis());
    }
    let mut out = String::new();
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if s >= len {
            out.push_str(&format!("{}{unit}", s / len));
            s %= len;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_units_and_combinations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration(" 5s "), Ok(Duration::from_secs(5)));
    }

    #[test]
    fn rejects_zero_negative_and_garbage() {
        for bad in [
            "", "0", "0s", "0m0s", "-5m", "5", "abc", "5x", "m", "1.5h", "5 m",
        ] {
            let e = parse_duration(bad).expect_err(bad);
            assert!(e.contains("duration") || e.contains("unit"), "{bad}: {e}");
        }
        assert!(parse_duration("99999999999999999999s").is_err());
        assert!(parse_duration("999999999999999999d").is_err());
    }

    #[test]
    fn formats_round_trip() {
        for s in ["90s", "15m", "2h30m", "1d", "1d1h1m1s"] {
            let d = parse_duration(s).unwrap();
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
    }
}
