//! How a change meets the store: saved before it is in force, never interleaved with
//! another, finished even when its caller goes away, and undone by a failed save.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Semaphore, mpsc};

use super::*;
use crate::site::StoreFuture;

/// A store whose saves wait for a permit each, telling the test what they were asked first.
#[derive(Debug)]
struct GatedStore {
    asked: mpsc::UnboundedSender<SiteState>,
    permits: Semaphore,
    fail: AtomicBool,
    saved: Mutex<SiteState>,
}

impl SiteStore for GatedStore {
    fn load(&self) -> StoreFuture<'_, SiteState> {
        Box::pin(std::future::ready(Ok(self.saved())))
    }

    fn save<'a>(&'a self, state: &'a SiteState) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let _ = self.asked.send(state.clone());
            self.permits.acquire().await.expect("open").forget();
            if self.fail.load(Ordering::SeqCst) {
                return Err(StoreError {
                    what: "test".into(),
                    message: "disk full".into(),
                });
            }
            *self.saved.lock().expect("saved") = state.clone();
            Ok(())
        })
    }
}

impl GatedStore {
    fn saved(&self) -> SiteState {
        self.saved.lock().expect("saved").clone()
    }

    fn services(&self) -> Vec<String> {
        self.saved().services.into_keys().collect()
    }
}

/// An opened controller on a gated store (its first save, of the new CA, let through).
async fn open() -> (
    Arc<Controller>,
    Arc<GatedStore>,
    mpsc::UnboundedReceiver<SiteState>,
) {
    let (tx, mut asked) = mpsc::unbounded_channel();
    let store = Arc::new(GatedStore {
        asked: tx,
        permits: Semaphore::new(1),
        fail: AtomicBool::new(false),
        saved: Mutex::default(),
    });
    let cfg = SiteConfig::for_test(RouterMode::Interior);
    let c = Controller::open(cfg, store.clone()).await.unwrap();
    asked.recv().await.unwrap();
    (c, store, asked)
}

/// Defines `address` on port 8080 (db), 8081 (web) or 8082: each service its own port.
fn define(c: &Arc<Controller>, address: &str) -> tokio::task::JoinHandle<Result<(), String>> {
    let port = match address {
        "db" => 8080,
        "web" => 8081,
        _ => 8082,
    };
    define_on(c, address, port)
}

fn define_on(
    c: &Arc<Controller>,
    address: &str,
    port: u32,
) -> tokio::task::JoinHandle<Result<(), String>> {
    let c = c.clone();
    let req = pb::CreateServiceRequest {
        address: address.into(),
        ports: vec![port],
        protocol: String::new(),
    };
    tokio::spawn(async move {
        c.create_service(req)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
}

fn listeners(c: &Controller) -> Vec<String> {
    c.desired()
        .borrow()
        .tcp_listeners
        .iter()
        .map(|l| l.name.clone())
        .collect()
}

#[tokio::test]
async fn a_change_is_in_force_only_once_saved() {
    let (c, store, mut asked) = open().await;
    let change = define(&c, "db");
    let saving = asked.recv().await.unwrap();
    assert!(saving.services.contains_key("db"));
    assert!(c.state().services.is_empty(), "not in force while saving");
    assert!(listeners(&c).is_empty());
    store.permits.add_permits(1);
    change.await.unwrap().unwrap();
    assert_eq!(store.services(), ["db"]);
    assert!(c.state().services.contains_key("db"));
    assert_eq!(listeners(&c), ["svc-db-8080"]);
}

#[tokio::test]
async fn a_change_waits_for_the_one_being_saved() {
    let (c, store, mut asked) = open().await;
    let first = define(&c, "db");
    asked.recv().await.unwrap();
    let second = define(&c, "web");
    // The second change gets its turn, and waits.
    tokio::task::yield_now().await;
    assert!(
        asked.try_recv().is_err(),
        "no second save before the first ends"
    );
    store.permits.add_permits(2);
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
    let saving = asked.recv().await.unwrap();
    assert_eq!(
        saving.services.into_keys().collect::<Vec<_>>(),
        ["db", "web"],
        "the second change was made to the first one's result"
    );
    assert_eq!(store.services(), ["db", "web"]);
}

// Paused clock: if the change were dropped with its caller, the wait below fails at once
// instead of hanging.
#[tokio::test(start_paused = true)]
async fn a_change_whose_caller_goes_away_is_finished() {
    let (c, store, mut asked) = open().await;
    let mut desired = c.desired();
    desired.borrow_and_update();
    let change = define(&c, "db");
    asked.recv().await.unwrap();
    // A client that hangs up drops its request's future.
    change.abort();
    store.permits.add_permits(1);
    tokio::time::timeout(std::time::Duration::from_secs(10), desired.changed())
        .await
        .expect("the change is finished without its caller")
        .unwrap();
    assert_eq!(store.services(), ["db"]);
    assert!(c.state().services.contains_key("db"), "saved and in force");
    assert_eq!(listeners(&c), ["svc-db-8080"]);
}

#[tokio::test]
async fn a_change_that_cannot_be_saved_changes_nothing() {
    let (c, store, mut asked) = open().await;
    store.fail.store(true, Ordering::SeqCst);
    store.permits.add_permits(1);
    let err = define(&c, "db").await.unwrap().unwrap_err();
    assert_eq!(err, "site state test: disk full");
    asked.recv().await.unwrap();
    assert!(store.services().is_empty());
    assert!(c.state().services.is_empty());
    assert!(listeners(&c).is_empty());
}

// --- token expiry, on a clock the test moves ---

#[tokio::test]
async fn a_claim_is_honoured_until_it_expires_and_refused_from_then_on() {
    let (tx, _asked) = mpsc::unbounded_channel();
    let store = Arc::new(GatedStore {
        asked: tx,
        permits: Semaphore::new(Semaphore::MAX_PERMITS),
        fail: AtomicBool::new(false),
        saved: Mutex::default(),
    });
    let clock = crate::clock::ManualClock::starting_now();
    let cfg = SiteConfig::for_test(RouterMode::Interior);
    let c = Controller::open_with_clock(cfg, store.clone(), clock.clone())
        .await
        .unwrap();
    let (_, token) = c
        .create_token(pb::CreateTokenRequest {
            name: "t".into(),
            expiry_seconds: 60,
            uses: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    let Token::Claim(claim) = token else {
        panic!("a claim token")
    };
    assert_eq!(claim.expires, Some(clock.now_unix() + 60));
    let requester = "0123456789abcdef0123456789abcdef";

    clock.advance(Duration::from_secs(59));
    c.redeem("t", &claim.secret, requester)
        .await
        .expect("honoured a second before it expires");

    clock.advance(Duration::from_secs(1));
    let e = c
        .redeem("t", &claim.secret, requester)
        .await
        .expect_err("refused once expired");
    assert_eq!(e.reason, "expired", "{e}");
    assert!(!e.retry, "an expired token never becomes valid");
    // The refusal used nothing up.
    assert_eq!(store.saved().claims["t"].uses_remaining, 2);

    // The redeeming side refuses it too, without asking the issuer (the URL leads nowhere).
    let e = crate::claims::client::redeem(&claim, requester, "east", clock.now_unix())
        .await
        .expect_err("refused locally");
    assert_eq!(e.reason, "expired", "{e}");
}

#[tokio::test(start_paused = true)]
async fn a_router_that_stops_reporting_is_not_ready_after_the_freshness_window() {
    let (c, _store, _asked) = open().await;
    assert!(!c.router_ready(), "no report yet");
    c.report(pb::ObservedState {
        router_id: "r1".into(),
        in_sync: true,
        ..Default::default()
    });
    assert!(c.router_ready());
    tokio::time::advance(OBSERVED_FRESH - Duration::from_millis(1)).await;
    assert!(c.router_ready(), "still fresh");
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(!c.router_ready(), "stale once the window has passed");
    // A new report makes it ready at once.
    c.report(pb::ObservedState {
        router_id: "r1".into(),
        ..Default::default()
    });
    assert!(c.router_ready());
}

#[tokio::test]
async fn a_new_service_cannot_take_another_services_port() {
    let (c, store, _asked) = open().await;
    store.permits.add_permits(10);
    define_on(&c, "db", 5432).await.unwrap().unwrap();
    let err = define_on(&c, "cache", 5432).await.unwrap().unwrap_err();
    assert!(
        err.contains("port 5432 is already used by service \"db\" (defined at this site)"),
        "{err}"
    );
    let err = c
        .expose(pb::ExposeRequest {
            address: "cache".into(),
            host: "127.0.0.1".into(),
            ports: vec![6379, 5432],
            ..Default::default()
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("port 5432 is already used by service \"db\""),
        "{err}"
    );
    assert_eq!(store.services(), ["db"], "nothing half-made");
    // The same service again on its own port is no conflict.
    define_on(&c, "db", 5432).await.unwrap().unwrap();
}
