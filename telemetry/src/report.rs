//! Errors as people read them: the error and its causes on one line, each cause once.
//!
//! Our rule is that an error with a `#[source]` does not also write that source into its own
//! message, and printers walk the chain. Errors from elsewhere (the router's and controller's
//! `StartError::Bind`/`RunError::Bind`, kube's, hyper's) often do both, so a printer that walks
//! the chain would repeat their cause ("...: Address in use (os error 98): Address in use (os
//! error 98)"). [`Report`] walks the chain and leaves out a cause already shown.

use std::error::Error;
use std::fmt;

/// `error: cause: cause`, leaving out any cause whose text is already on the line.
#[derive(Debug, Clone, Copy)]
pub struct Report<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(c) = cause {
            let text = c.to_string();
            if !text.is_empty() && !line.contains(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            cause = c.source();
        }
        f.write_str(&line)
    }
}

/// The innermost cause's text: for transport errors the informative one ("Connection
/// refused" rather than "transport error").
pub fn innermost(e: &(dyn Error + 'static)) -> String {
    let mut cur = e;
    while let Some(s) = cur.source() {
        cur = s;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot bind {what}: {source}")]
    struct Embeds {
        what: &'static str,
        #[source]
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot start")]
    struct Wraps(#[source] Embeds);

    fn os_error() -> std::io::Error {
        std::io::Error::from_raw_os_error(98)
    }

    #[test]
    fn each_cause_once_whether_or_not_a_message_embeds_it() {
        let os = os_error().to_string();
        let e = Wraps(Embeds {
            what: "metrics",
            source: os_error(),
        });
        assert_eq!(
            Report(&e).to_string(),
            format!("cannot start: cannot bind metrics: {os}")
        );
        let e = Embeds {
            what: "metrics",
            source: os_error(),
        };
        assert_eq!(innermost(&e), os);
        assert_eq!(innermost(&os_error()), os);
    }

    #[test]
    fn a_message_that_leaves_its_source_out_gets_it_appended() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot bind metrics")]
        struct LeavesOut(#[source] std::io::Error);
        let e = LeavesOut(os_error());
        assert_eq!(
            Report(&e).to_string(),
            format!("cannot bind metrics: {}", os_error())
        );
    }
}
