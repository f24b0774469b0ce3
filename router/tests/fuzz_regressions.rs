//! Inputs the fuzzers (fuzz/) found to crash a parser, kept so the crashes stay fixed.

use van_router::Config;

/// fuzz/router_config: a `log.level` with a multibyte character inside `{...}` made
/// tracing-subscriber's directive parser slice inside the character and panic. The router
/// must refuse the file and name the field instead.
#[test]
fn router_config_non_ascii_log_level_is_refused_not_a_panic() {
    let input: &[u8] = b"log:\n level: I, [{\xea\x92\x8b}";
    let text = std::str::from_utf8(input).unwrap();
    let err = Config::from_yaml(text).unwrap_err();
    assert!(err.errors.iter().any(|e| e.path == "log.level"), "{err}");
}

/// fuzz/router_config (a timeout): a span field filter's value is a regular expression that
/// tracing-subscriber compiles to a DFA; 16 dots took 9 s and 32 dots 3 minutes, holding up
/// the router's start. Refused at once instead.
#[test]
fn router_config_regex_field_filter_in_log_level_is_refused_quickly() {
    let input = "log:\n  level: \"[{x=a................}]\"\n";
    let started = std::time::Instant::now();
    let err = Config::from_yaml(input).unwrap_err();
    assert!(err.errors.iter().any(|e| e.path == "log.level"), "{err}");
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(2), "took {took:?}");
}
