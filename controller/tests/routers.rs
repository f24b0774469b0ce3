//! A site with several routers (router pods): their reports are taken together, so status
//! neither flaps between them nor hides one that is failing.

use std::sync::Arc;

use van_controller::Controller;
use van_proto::admin as rpb;
use van_proto::controller as pb;
use van_testkit::site::{MemStore, kube_site};

fn report(router: &str, flows: u32, link_state: &str) -> pb::ObservedState {
    pb::ObservedState {
        router_id: router.into(),
        active_flows: flows,
        in_sync: true,
        links: Some(rpb::LinkList {
            links: vec![
                rpb::Link {
                    name: "to-east".into(),
                    direction: "outgoing".into(),
                    state: link_state.into(),
                    last_error: if link_state == "up" {
                        String::new()
                    } else {
                        "connection refused".into()
                    },
                    ..Default::default()
                },
                rpb::Link {
                    name: format!("accepted:10.0.0.{flows}"),
                    direction: "incoming".into(),
                    state: "up".into(),
                    ..Default::default()
                },
            ],
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn reports_of_several_routers_are_taken_together() {
    let east = Controller::open(
        kube_site("east", "fedcba9876543210fedcba9876543210"),
        Arc::new(MemStore::default()),
    )
    .await
    .unwrap();
    let (token, _) = east
        .create_token(pb::CreateTokenRequest {
            name: "to-east".into(),
            r#type: pb::TokenType::Cert as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    let west = Controller::open(
        kube_site("west", "0123456789abcdef0123456789abcdef"),
        Arc::new(MemStore::default()),
    )
    .await
    .unwrap();
    west.create_link_from(
        pb::CreateLinkRequest {
            token_yaml: token.yaml,
            name: "to-east".into(),
            cost: 0,
            ..Default::default()
        },
        "api".into(),
    )
    .await
    .unwrap();

    west.report(report("skupper-router-b", 3, "up"));
    let mut a = report("skupper-router-a", 4, "up");
    // The site's routers link to each other: that link is not one of the site's.
    a.links.as_mut().unwrap().links.push(rpb::Link {
        name: "accepted:10.0.0.99".into(),
        direction: "incoming".into(),
        state: "up".into(),
        peer_router: "skupper-router-b".into(),
        ..Default::default()
    });
    west.report(a);
    let site = west.site_status();
    assert_eq!(site.active_flows, 7, "flows of both routers");
    assert_eq!(
        site.router_id, "skupper-router-a",
        "a stable choice, not the last reporter"
    );
    let links = west.link_statuses();
    let out = links.iter().find(|l| l.name == "to-east").unwrap();
    assert_eq!(out.state, "active");
    let incoming = links.iter().filter(|l| l.direction == "incoming").count();
    assert_eq!(
        incoming, 2,
        "each router's incoming link, not the one between them"
    );

    // One router loses the link: the site's link is not reported active.
    west.report(report("skupper-router-b", 3, "failed"));
    let links = west.link_statuses();
    let out = links.iter().find(|l| l.name == "to-east").unwrap();
    assert_ne!(out.state, "active", "{out:?}");
    assert!(out.detail.contains("connection refused"), "{out:?}");
}
