//! Network-wide topics over the admin API: a value published at one router reaches every
//! router (interior and edge) once, follows changes, and disappears when its publisher
//! clears it or leaves the network.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_stream::StreamExt;
use van_proto::admin::{self as pb, router_admin_client::RouterAdminClient};
use van_router::config::{EntityKind, EntityOp};
use van_testkit::router::*;

type Client = RouterAdminClient<tonic::transport::Channel>;

async fn client(r: &TestRouter) -> Client {
    van_router::admin::connect(&r.admin.to_string())
        .await
        .unwrap()
}

async fn publish(c: &mut Client, topic: &str, payload: &[u8]) {
    c.publish(pb::PublishRequest {
        topic: topic.into(),
        payload: payload.to_vec(),
    })
    .await
    .unwrap();
}

type Values = BTreeMap<String, Vec<u8>>;

/// Reads snapshots until one equals `want`; returns how many snapshots that took.
async fn wait_snapshot(
    s: &mut tonic::Streaming<pb::TopicSnapshot>,
    want: &[(&str, &[u8])],
) -> usize {
    let want: Values = want
        .iter()
        .map(|(o, p)| (o.to_string(), p.to_vec()))
        .collect();
    let mut seen = 0;
    let mut last = Values::new();
    let res = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(snap) = s.next().await {
            let snap = snap.unwrap();
            seen += 1;
            last = snap
                .values
                .into_iter()
                .map(|v| (v.origin, v.payload))
                .collect();
            if last == want {
                return;
            }
        }
        panic!("stream ended");
    })
    .await;
    assert!(res.is_ok(), "wanted {want:?}, last snapshot {last:?}");
    seen
}

async fn interior(pki: &Pki, id: &str, peers: &[(&str, &TestRouter)]) -> TestRouter {
    let mut f = base_config(id, pki.profile(id));
    link_listener(&mut f);
    edge_listener(&mut f);
    for (name, peer) in peers {
        link_to(&mut f, name, peer.link_addr(), 1);
    }
    start(f).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_reach_every_router_and_vanish_with_their_publisher() {
    let pki = Pki::new("ca");
    // A - B - C in a line, edge E attached to C.
    let a = interior(&pki, "A", &[]).await;
    let b = interior(&pki, "B", &[("B-A", &a)]).await;
    let c = interior(&pki, "C", &[("C-B", &b)]).await;
    let e = edge_router(&pki, "E", &[("up", &c, 1)]).await;
    let topic = "van.site.v1";
    let (mut ca, mut cc, mut ce) = (client(&a).await, client(&c).await, client(&e).await);
    let mut sub_a = ca
        .subscribe(pb::SubscribeRequest {
            topic: topic.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut sub_e = ce
        .subscribe(pb::SubscribeRequest {
            topic: topic.into(),
        })
        .await
        .unwrap()
        .into_inner();

    publish(&mut ca, topic, b"from A").await;
    publish(&mut ce, topic, b"from E").await;
    publish(&mut cc, "other.topic", b"not on this topic").await;
    let want: &[(&str, &[u8])] = &[("A", b"from A"), ("E", b"from E")];
    wait_snapshot(&mut sub_a, want).await;
    wait_snapshot(&mut sub_e, want).await;

    // A change replaces the old value everywhere.
    publish(&mut ca, topic, b"A again").await;
    let want: &[(&str, &[u8])] = &[("A", b"A again"), ("E", b"from E")];
    wait_snapshot(&mut sub_e, want).await;
    wait_snapshot(&mut sub_a, want).await;

    // Clearing (an empty payload) withdraws it.
    publish(&mut ce, topic, b"").await;
    wait_snapshot(&mut sub_a, &[("A", b"A again")]).await;
    publish(&mut ce, topic, b"E back").await;
    wait_snapshot(&mut sub_a, &[("A", b"A again"), ("E", b"E back")]).await;

    // Cut A off (delete B's only link to it): A's value leaves the rest of the network
    // and E's leaves A, without anyone clearing anything.
    b.apply(vec![EntityOp::Delete(EntityKind::Link, "B-A".into())])
        .await;
    wait_snapshot(&mut sub_e, &[("E", b"E back")]).await;
    wait_snapshot(&mut sub_a, &[("A", b"A again")]).await;

    // A rejoins: values flow again.
    b.apply(vec![EntityOp::PutLink(link_cfg("B-A", a.link_addr(), 1))])
        .await;
    wait_snapshot(&mut sub_e, &[("A", b"A again"), ("E", b"E back")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_topics_and_oversized_payloads_are_refused() {
    let pki = Pki::new("ca");
    let a = interior(&pki, "A", &[]).await;
    let mut c = client(&a).await;
    let err = c
        .publish(pb::PublishRequest {
            topic: "has space".into(),
            payload: b"x".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("topic"), "{}", err.message());
    let err = c
        .publish(pb::PublishRequest {
            topic: "big".into(),
            payload: vec![0; 256 * 1024 + 1],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("larger"), "{}", err.message());
    let err = c
        .subscribe(pb::SubscribeRequest { topic: "".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}
