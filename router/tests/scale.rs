//! Many interior routers in one network (Skupper's limit is 128).

use std::time::{Duration, Instant};

use van_testkit::router::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_of_128_interior_routers_converges_and_carries_flows() {
    // VAN_SCALE_ROUTERS raises the count for a one-off measurement (release build advised).
    let routers_wanted = std::env::var("VAN_SCALE_ROUTERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128usize);
    let n = routers_wanted;
    let chord = (n / 16).max(8);
    let pki = Pki::new("ca");
    // A ring with chords: router i links to i-1 and to i-chord, so paths are several hops long.
    let mut routers: Vec<TestRouter> = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let id = format!("r{i:03}");
        let mut f = base_config(&id, pki.profile(&id));
        f.timers.hello_interval_ms = 500;
        f.timers.hello_max_age_ms = 5000;
        link_listener(&mut f);
        if i >= 1 {
            link_to(&mut f, "prev", routers[i - 1].link_addr(), 1);
        }
        if i >= chord {
            link_to(&mut f, "chord", routers[i - chord].link_addr(), 3);
        }
        if i == n - 1 {
            link_to(&mut f, "ring", routers[0].link_addr(), 1);
        }
        routers.push(start(f).await);
    }
    let echo = echo_server().await;
    routers[n / 2]
        .apply(vec![connector_op("svc", "svc", echo)])
        .await;
    routers[0].apply(vec![listener_op("svc", "svc")]).await;
    for r in &routers {
        let mut rx = r.router().table_rx();
        tokio::time::timeout(
            Duration::from_secs(60.max(n as u64 / 4)),
            rx.wait_for(|t| t.nodes.len() == n && t.reachable("svc")),
        )
        .await
        .unwrap_or_else(|_| panic!("{} did not converge", r.router().id()))
        .unwrap();
    }
    eprintln!(
        "{n} routers converged {:?} after the first started",
        started.elapsed()
    );
    routers[0].wait_reachable("svc").await;
    let far = &routers[0].router().table().nodes[&format!("r{:03}", n / 2)];
    assert!(far.hops >= 5, "the flow crosses several routers: {far:?}");
    let data = payload(1 << 20);
    assert!(echo_roundtrip(routers[0].listener_addr("svc"), &data).await == data);

    // Cut the destination off: its key is withdrawn everywhere within a second.
    let cut = Instant::now();
    let victim = &routers[n / 2];
    victim
        .apply(vec![
            van_router::config::EntityOp::Delete(
                van_router::config::EntityKind::Link,
                "prev".into(),
            ),
            van_router::config::EntityOp::Delete(
                van_router::config::EntityKind::Link,
                "chord".into(),
            ),
            van_router::config::EntityOp::Delete(
                van_router::config::EntityKind::LinkListener,
                "inter-router".into(),
            ),
        ])
        .await;
    routers[0].wait_unreachable("svc").await;
    let took = cut.elapsed();
    eprintln!("withdrawn at r000 after {took:?}");
    assert!(took < Duration::from_secs(1), "withdrawal took {took:?}");
}
