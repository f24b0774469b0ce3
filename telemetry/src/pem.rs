//! PEM problems in words. rustls' own messages print the marker lines they expected as
//! byte arrays (`[67, 69, 82, ...]`), which tells a user nothing.

use rustls_pki_types::pem::Error;

/// What is wrong with a PEM document, as a user reads it.
pub fn pem_problem(e: &Error) -> String {
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
    match e {
        Error::MissingSectionEnd { end_marker } => format!(
            "the \"-----END {}-----\" line is missing (the text is cut short or was edited)",
            text(end_marker)
        ),
        Error::IllegalSectionStart { line } => {
            format!("malformed BEGIN line {:?}", text(line))
        }
        Error::Base64Decode(e) => format!("the text between BEGIN and END is not base64 ({e})"),
        Error::NoItemsFound => "no PEM section of the expected kind".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    #[test]
    fn a_cut_certificate_names_the_missing_line_in_words() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIBuTCCAWCgAwIBAgIU\n";
        let e = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap_err();
        let m = pem_problem(&e);
        assert!(
            m.contains("\"-----END CERTIFICATE-----\" line is missing"),
            "{m}"
        );
        assert!(!m.contains("67, 69"), "{m}");
    }

    #[test]
    fn bad_base64_and_empty_input_are_told_apart() {
        let bad = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        let e = CertificateDer::from_pem_slice(bad.as_bytes()).unwrap_err();
        assert!(
            pem_problem(&e).contains("not base64"),
            "{}",
            pem_problem(&e)
        );
        let e = CertificateDer::from_pem_slice(b"").unwrap_err();
        assert!(
            pem_problem(&e).contains("no PEM section"),
            "{}",
            pem_problem(&e)
        );
    }
}
