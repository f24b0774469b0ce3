pub use tempfile::TempDir;

/// A new directory under the system's temporary directory, removed with all it holds when
/// the value is dropped. `tag` starts its name, so a leftover (a killed test) says whose it is.
pub fn temp_dir(tag: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("van-{tag}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temporary directory for {tag}: {e}"))
}
