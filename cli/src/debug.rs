//! `skupper debug dump FILE`: configuration, logs and status in one .tar.gz.
//!
//! Never includes `state.yaml`: it holds the site's private keys and claim secrets.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use van_proto::controller as pb;

use crate::client::{self, rpc_error};
use crate::{Ctx, supervisor};

/// How much of each log goes in: its end.
const LOG_TAIL: u64 = 1 << 20;

pub async fn dump(ctx: &Ctx, file: &Path, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let dir = ctx.site_dir();
    if !dir.root.exists() {
        return Err(client::not_enabled(ctx));
    }
    let now = van_controller::site::now_unix();
    let top = format!("skupper-dump-{}", ctx.namespace);
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    let mut errors: Vec<String> = Vec::new();

    for (name, path) in [
        ("site.yaml", dir.site_file()),
        ("router.yaml", dir.router_config()),
    ] {
        match van_controller::local::read_bounded(&path, van_controller::local::MAX_CONFIG) {
            Ok(b) => entries.push((name.to_string(), b)),
            Err(e) => errors.push(format!("{}: {e}", path.display())),
        }
    }
    match std::fs::read_dir(dir.logs_dir()) {
        Ok(rd) => {
            let mut logs: Vec<_> = rd
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .collect();
            logs.sort();
            for p in logs {
                let name = p
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                match tail(&p, LOG_TAIL) {
                    Ok(b) => entries.push((format!("logs/{name}"), b)),
                    Err(e) => errors.push(format!("{}: {e}", p.display())),
                }
            }
        }
        Err(e) => errors.push(format!("{}: {e}", dir.logs_dir().display())),
    }
    match supervisor::status(&dir).await {
        Ok(s) => entries.push(("status/supervisor.txt".into(), s.into_bytes())),
        Err(e) => errors.push(format!("supervisor: {e}")),
    }

    // Whatever the controller answers.
    match client::connect(&dir.controller_target()).await {
        Err(e) => errors.push(format!("controller: {e}")),
        Ok(mut c) => {
            let mut add = |name: &str, r: Result<serde_json::Value, anyhow::Error>| match r {
                Ok(v) => entries.push((
                    format!("status/{name}.json"),
                    serde_json::to_vec_pretty(&v).unwrap_or_default(),
                )),
                Err(e) => errors.push(format!("{name}: {}", crate::report(&e))),
            };
            let json =
                |v: Result<serde_json::Value, serde_json::Error>| v.map_err(anyhow::Error::from);
            let r = c.get_site(pb::GetSiteRequest {}).await;
            add(
                "site",
                r.map_err(|e| rpc_error("GetSite", e))
                    .and_then(|r| json(serde_json::to_value(r.into_inner()))),
            );
            let r = c.list_links(pb::ListLinksRequest {}).await;
            add(
                "links",
                r.map_err(|e| rpc_error("ListLinks", e))
                    .and_then(|r| json(serde_json::to_value(r.into_inner()))),
            );
            let r = c.list_services(pb::ListServicesRequest {}).await;
            add(
                "services",
                r.map_err(|e| rpc_error("ListServices", e))
                    .and_then(|r| json(serde_json::to_value(r.into_inner()))),
            );
            let r = c.get_network(pb::GetNetworkRequest {}).await;
            add(
                "network",
                r.map_err(|e| rpc_error("GetNetwork", e))
                    .and_then(|r| json(serde_json::to_value(r.into_inner()))),
            );
        }
    }
    let mut summary = format!(
        "skupper {} debug dump of namespace {:?} ({})\ncreated {}\n",
        env!("CARGO_PKG_VERSION"),
        ctx.namespace,
        dir.root.display(),
        van_controller::site::rfc3339(now)
    );
    if !errors.is_empty() {
        summary.push_str("\nnot collected:\n");
        for e in &errors {
            summary.push_str(&format!("  {e}\n"));
        }
    }
    entries.insert(0, ("README.txt".into(), summary.into_bytes()));

    write_archive(file, &top, &entries, now)?;
    writeln!(
        out,
        "Debug dump written to {} ({} files{})",
        file.display(),
        entries.len(),
        if errors.is_empty() {
            String::new()
        } else {
            format!("; {} could not be collected, see README.txt", errors.len())
        }
    )?;
    Ok(())
}

pub(crate) fn write_archive(
    file: &Path,
    top: &str,
    entries: &[(String, Vec<u8>)],
    mtime: u64,
) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |e: std::io::Error| anyhow::anyhow!("cannot write {}: {e}", file.display());
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(file)
        .map_err(err)?;
    let gz =
        flate2::write::GzEncoder::new(std::io::BufWriter::new(f), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (name, data) in entries {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(mtime);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, format!("{top}/{name}"), data.as_slice())
            .map_err(err)?;
    }
    let gz = tar.into_inner().map_err(err)?;
    let mut w = gz.finish().map_err(err)?;
    w.flush().map_err(err)?;
    Ok(())
}

/// The last `max` bytes of a file.
fn tail(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    if len > max {
        f.seek(SeekFrom::Start(len - max))?;
    }
    let mut b = Vec::new();
    f.take(max).read_to_end(&mut b)?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `write_archive` wrote, read back: (path, mode, mtime, data) of each entry.
    fn read_back(file: &Path) -> Vec<(String, u32, u64, Vec<u8>)> {
        let gz = flate2::read::GzDecoder::new(std::fs::File::open(file).unwrap());
        let mut archive = tar::Archive::new(gz);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().display().to_string();
                let (mode, mtime) = (e.header().mode().unwrap(), e.header().mtime().unwrap());
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (path, mode, mtime, data)
            })
            .collect()
    }

    #[test]
    fn the_archive_holds_every_entry_under_the_top_directory() {
        let dir = van_testkit::temp_dir("skupper-dump-test");
        let file = dir.path().join("dump.tar.gz");
        // Longer than ustar's 100-byte name field: split into prefix and name.
        let long = format!("{}/router.log", "logs".repeat(30));
        let entries = vec![
            ("README.txt".to_string(), b"summary\n".to_vec()),
            (long, vec![b'x'; 1500]),
            ("empty.json".to_string(), Vec::new()),
        ];
        write_archive(&file, "skupper-dump-west", &entries, 1_700_000_000).unwrap();
        let mode = std::fs::metadata(&file).unwrap().permissions();
        let got = read_back(&file);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            mode.mode() & 0o777,
            0o600,
            "the dump may hold logs: owner only"
        );
        let want: Vec<_> = entries
            .into_iter()
            .map(|(n, d)| (format!("skupper-dump-west/{n}"), 0o644, 1_700_000_000, d))
            .collect();
        assert_eq!(got, want);
    }
}
