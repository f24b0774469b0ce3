//! Durations as users type them: `90s`, `15m`, `2h`, `1d`, `1h30m`. The grammar is
//! humantime's (which also takes `2 hours`, `1.5h`, `1w`); the messages are ours.

use std::time::Duration;

const EXAMPLES: &str = "use e.g. 90s, 15m, 2h or 1d";

/// Parses a positive duration of whole seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err(format!("empty duration; {EXAMPLES}"));
    }
    if t.starts_with('-') {
        return Err(format!(
            "{s:?} is negative; a duration must be longer than zero"
        ));
    }
    let d = humantime::parse_duration(t).map_err(|e| match e {
        humantime::DurationError::UnknownUnit { unit, .. } if unit.is_empty() => {
            format!("{s:?} has no unit; {EXAMPLES}")
        }
        humantime::DurationError::UnknownUnit { unit, .. } => {
            format!("{s:?}: unknown unit {unit:?}; the units are s, m, h and d")
        }
        humantime::DurationError::NumberOverflow => {
            format!("{s:?} is too long (or finer than a nanosecond)")
        }
        _ => format!("{s:?} is not a duration; {EXAMPLES}"),
    })?;
    if d.is_zero() {
        return Err(format!("{s:?}: a duration must be longer than zero"));
    }
    // Expiries travel as whole seconds: `500ms` would become 0, which means "the default".
    if d.subsec_nanos() != 0 {
        return Err(format!("{s:?}: a duration is a whole number of seconds"));
    }
    Ok(d)
}

/// `90s`, `15m`, `2h30m`, `1d`: the shortest exact rendering in the units users type
/// (humantime's own renders `1day`, `2h 30m`).
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
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2 hours"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration(" 5s "), Ok(Duration::from_secs(5)));
    }

    #[test]
    fn rejects_zero_negative_and_garbage_with_a_reason() {
        for (bad, why) in [
            ("", "empty duration"),
            ("0", "longer than zero"),
            ("0s", "longer than zero"),
            ("0m0s", "longer than zero"),
            ("-5m", "is negative"),
            ("5", "has no unit"),
            ("5x", "unknown unit \"x\""),
            ("abc", "is not a duration"),
            ("m", "is not a duration"),
            ("5m!", "is not a duration"),
            ("500ms", "whole number of seconds"),
            ("99999999999999999999s", "too long"),
            ("999999999999999999d", "too long"),
        ] {
            let e = parse_duration(bad).expect_err(bad);
            assert!(e.contains(why), "{bad:?}: {e}");
            assert!(!e.contains("  "), "{bad:?}: {e}");
        }
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
