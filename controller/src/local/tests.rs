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
    let mut state = SiteState::default();
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
