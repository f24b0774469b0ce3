use super::*;

/// A site directory of its own under the system's temporary directory; removed on drop.
struct TempSite(SiteDir);

impl TempSite {
    fn new() -> TempSite {
        let root =
            std::env::temp_dir().join(format!("van-local-store-{}", crate::site::random_hex(6)));
        std::fs::create_dir_all(&root).unwrap();
        TempSite(SiteDir::new(root))
    }
}

impl Drop for TempSite {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0.root);
    }
}

/// The state of a site that has started: it has its CA.
fn started_state() -> SiteState {
    SiteState {
        certs: Some(crate::certs::new_site_certs("0123abcd", vec!["localhost".into()]).unwrap()),
        ..SiteState::default()
    }
}

fn with_service(mut s: SiteState, name: &str) -> SiteState {
    s.services.insert(
        name.into(),
        serde_yaml_ng::from_str(&format!(
            "address: {name}\nprotocol: tcp\nports: [8080]\ncreated: 1\n"
        ))
        .unwrap(),
    );
    s
}

#[tokio::test]
async fn a_site_without_a_state_file_starts_empty() {
    let site = TempSite::new();
    let state = LocalStore::new(&site.0).load().await.unwrap();
    assert_eq!(state, SiteState::default());
}

#[tokio::test]
async fn the_state_is_saved_for_the_owner_only_and_loaded_back() {
    use std::os::unix::fs::PermissionsExt;
    let site = TempSite::new();
    let store = LocalStore::new(&site.0);
    let mut state = started_state();
    state.claims.insert(
        "to-east".into(),
        crate::site::ClaimRecord {
            name: "to-east".into(),
            secret: "s3cret".into(),
            expires: 1,
            uses_remaining: 1,
            uses_made: 0,
            cost: 1,
        },
    );
    store.save(&state).await.unwrap();
    let mode = std::fs::metadata(site.0.state_file())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "it holds keys and claim secrets");
    assert_eq!(store.load().await.unwrap(), state);
}

#[tokio::test]
async fn an_unreadable_state_file_is_an_error_naming_it() {
    let site = TempSite::new();
    std::fs::write(site.0.state_file(), "certs: [").unwrap();
    let err = LocalStore::new(&site.0).load().await.unwrap_err();
    assert_eq!(err.what, site.0.state_file().display().to_string());
}

#[tokio::test]
async fn an_empty_state_file_is_refused_not_taken_for_a_new_site() {
    let site = TempSite::new();
    std::fs::write(site.0.state_file(), "\n").unwrap();
    let err = LocalStore::new(&site.0).load().await.unwrap_err();
    let m = err.to_string();
    assert!(m.contains("it is empty"), "{m}");
    assert!(
        m.contains("state.yaml.bak is missing"),
        "names the absent backup: {m}"
    );
    assert_eq!(err.what, site.0.state_file().display().to_string());
}

#[tokio::test]
async fn a_state_without_certificates_is_refused() {
    let site = TempSite::new();
    std::fs::write(site.0.state_file(), "services: {}\n").unwrap();
    let m = LocalStore::new(&site.0)
        .load()
        .await
        .unwrap_err()
        .to_string();
    assert!(m.contains("holds no certificates"), "{m}");
}

#[tokio::test]
async fn a_cut_certificate_is_named_in_words() {
    let site = TempSite::new();
    let store = LocalStore::new(&site.0);
    store.save(&started_state()).await.unwrap();
    let text = std::fs::read_to_string(site.0.state_file()).unwrap();
    let end = text.find("-----END CERTIFICATE-----").unwrap();
    std::fs::write(
        site.0.state_file(),
        format!("{}{}", &text[..end - 40], &text[end..]),
    )
    .unwrap();
    let m = store.load().await.unwrap_err().to_string();
    assert!(m.contains("certs.ca-cert:"), "names the field: {m}");
    assert!(!m.contains("[67, 69"), "no bytes as numbers: {m}");
}

#[tokio::test]
async fn each_save_keeps_the_previous_state_and_repair_puts_it_back() {
    use std::os::unix::fs::PermissionsExt;
    let site = TempSite::new();
    let store = LocalStore::new(&site.0);
    let first = with_service(started_state(), "first");
    store.save(&first).await.unwrap();
    assert!(
        !site.0.state_backup().exists(),
        "nothing to back up on the first save"
    );
    let second = with_service(first.clone(), "second");
    store.save(&second).await.unwrap();
    assert_eq!(check_state(&site.0.state_backup()).unwrap(), first);
    let mode = std::fs::metadata(site.0.state_backup())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(repair(&site.0).unwrap(), Repaired::Sound);

    // A crash or a hand edit leaves the file empty: refused, with the way out.
    std::fs::write(site.0.state_file(), "").unwrap();
    let m = store.load().await.unwrap_err().to_string();
    assert!(m.contains("skupper system repair"), "{m}");
    let Repaired::Restored { kept: Some(kept) } = repair(&site.0).unwrap() else {
        panic!("restored without keeping the broken file");
    };
    assert_eq!(
        std::fs::read(&kept).unwrap(),
        b"",
        "the broken file is kept as it was"
    );
    assert_eq!(store.load().await.unwrap(), first);
}

#[tokio::test]
async fn a_lost_state_file_with_a_backup_is_refused_and_repaired() {
    let site = TempSite::new();
    let store = LocalStore::new(&site.0);
    let first = started_state();
    store.save(&first).await.unwrap();
    store.save(&with_service(first.clone(), "x")).await.unwrap();
    std::fs::remove_file(site.0.state_file()).unwrap();
    let m = store.load().await.unwrap_err().to_string();
    assert!(
        m.contains("the file is missing but the site had a state"),
        "{m}"
    );
    assert_eq!(repair(&site.0).unwrap(), Repaired::Restored { kept: None });
    assert_eq!(store.load().await.unwrap(), first);
}

#[test]
fn repair_refuses_when_the_backup_is_unusable_too() {
    let site = TempSite::new();
    std::fs::write(site.0.state_file(), "certs: [").unwrap();
    std::fs::write(site.0.state_backup(), "").unwrap();
    let e = repair(&site.0).unwrap_err();
    assert!(
        e.to_string().contains("the backup cannot be used either"),
        "{e}"
    );
    assert_eq!(
        std::fs::read(site.0.state_file()).unwrap(),
        b"certs: [",
        "left alone"
    );
}

#[test]
fn reads_are_bounded_even_for_endless_files() {
    let e = read_bounded(Path::new("/dev/zero"), 1 << 20).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::FileTooLarge);
    assert_eq!(e.to_string(), "larger than 1 MiB");
    assert_eq!(read_limited(&b"12345"[..], 5).unwrap(), b"12345");
    assert!(read_limited(&b"123456"[..], 5).is_err());
}

#[test]
fn a_new_site_directory_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let home = TempSite::new();
    let dir = SiteDir::of(&home.0.root.join("home"), "west");
    let cfg: SiteConfig = serde_yaml_ng::from_str(
        "id: 0123456789abcdef0123456789abcdef\nname: west\nmode: interior\n\
         ingress-host: 127.0.0.1\ningress-bind: 127.0.0.1\nlistener-host: 127.0.0.1\n\
         inter-router-port: 1\nedge-port: 2\nclaims-port: 3\n",
    )
    .unwrap();
    dir.create(&cfg).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for d in [
        home.0.root.join("home"),
        dir.root.clone(),
        dir.logs_dir(),
        dir.run_dir(),
    ] {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
    }
    for f in [dir.site_file(), dir.router_config()] {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
}
