//! A Kubernetes site driven as a user would: the `skupper` binary with a kubeconfig, against a
//! stateful stand-in for the API server (van_testkit's fake_kube_api.py: real HTTPS checked
//! against the kubeconfig's CA, real watches), and the site controller's Kubernetes platform
//! running beside it as in its pod (in-process, listeners on port 0). Nothing here reaches a
//! real cluster.

use std::path::Path;
use std::process::Output;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::Api;
use van_testkit::kube::FakeApi;
use van_testkit::{eventually, temp_dir};

/// Runs `skupper` with the kubeconfig (the platform is chosen from it, not named).
async fn skupper(kubeconfig: &Path, home: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_skupper"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("SKUPPER_HOME", home)
        .env_remove("SKUPPER_PLATFORM")
        .env_remove("SKUPPER_NAMESPACE")
        .output()
        .await
        .unwrap()
}

async fn ok(kubeconfig: &Path, home: &Path, args: &[&str]) -> String {
    let out = skupper(kubeconfig, home, args).await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "skupper {args:?} failed ({})\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_token_expose_status_and_delete_through_the_api_server() {
    let tmp = temp_dir("k8s-site");
    let dir = tmp.path();
    let api = FakeApi::start_tls(dir);
    let kc = api.kubeconfig(dir);
    let client = api.client().await;

    // `init` installs the chart's objects (no -n: the context's namespace).
    ok(
        &kc,
        dir,
        &[
            "init",
            "--site-name",
            "west",
            "--ingress",
            "none",
            "--no-wait",
        ],
    )
    .await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "west");
    for name in ["skupper-router", "skupper-service-controller"] {
        assert!(deployments.get_opt(name).await.unwrap().is_some(), "{name}");
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "west");
    let token = secrets.get("skupper-api-token").await.unwrap();
    let token = String::from_utf8(token.data.unwrap()["token"].0.clone()).unwrap();
    assert_eq!(token.len(), 40, "a generated API token");

    // The controller starts in its pod, from what init installed.
    let (c, owner) = van_controller::k8s::platform::open_site(&client, "west")
        .await
        .unwrap();
    assert_eq!(c.cfg.name, "west");
    let sockets = van_controller::Sockets {
        api: van_controller::ApiBind::Tcp(
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        ),
        claims: Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
        api_token: Some(van_controller::api::ApiToken::new(&token).unwrap()),
    };
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let served = tokio::spawn(van_controller::k8s::platform::serve_site(
        client.clone(),
        "west".into(),
        c,
        owner,
        sockets,
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        },
    ));

    // A token, through a request Secret the controller fills in.
    let file = dir.join("west-token.yaml");
    ok(
        &kc,
        dir,
        &["token", "create", file.to_str().unwrap(), "--uses", "2"],
    )
    .await;
    let yaml = std::fs::read_to_string(&file).unwrap();
    let parsed = van_controller::token::parse(&yaml).unwrap();
    assert!(
        matches!(parsed, van_controller::token::Token::Claim(_)),
        "a claim token"
    );

    // A workload of the user's, exposed.
    let backend = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "backend", "namespace": "west"},
        "spec": {"selector": {"matchLabels": {"app": "backend"}},
                 "template": {"metadata": {"labels": {"app": "backend"}},
                              "spec": {"containers": [{"name": "b", "image": "b"}]}}},
    });
    deployments
        .create(
            &Default::default(),
            &serde_json::from_value(backend).unwrap(),
        )
        .await
        .unwrap();
    ok(
        &kc,
        dir,
        &["expose", "deployment", "backend", "--port", "8080"],
    )
    .await;
    let svc = Api::<Service>::namespaced(client.clone(), "west")
        .get("backend")
        .await
        .unwrap();
    assert_eq!(
        svc.spec.unwrap().selector.unwrap()["app"],
        "backend",
        "the Service selects the deployment's pods"
    );
    let status = eventually("backend in service status", async || {
        let out = skupper(&kc, dir, &["service", "status", "-o", "json"]).await;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (out.status.success() && text.contains("\"address\": \"backend\"")).then_some(text)
    })
    .await;
    assert!(status.contains("8080"), "{status}");
    let text = ok(&kc, dir, &["status"]).await;
    assert!(text.contains("west"), "{text}");

    // A service defined by name and ports, then delivered by the deployment.
    ok(&kc, dir, &["service", "create", "db", "5432"]).await;
    let twice = skupper(&kc, dir, &["service", "create", "db", "5432"]).await;
    assert_eq!(twice.status.code(), Some(2), "{twice:?}");
    // The name clients would call is taken by a Service that is not the controller's.
    let taken = skupper(&kc, dir, &["service", "create", "backend", "8080"]).await;
    assert_eq!(taken.status.code(), Some(2), "{taken:?}");
    assert!(
        String::from_utf8_lossy(&taken.stderr).contains("skupper expose service backend"),
        "{taken:?}"
    );
    ok(
        &kc,
        dir,
        &[
            "service",
            "bind",
            "db",
            "deployment",
            "backend",
            "--target-port",
            "15432",
        ],
    )
    .await;
    let bound = Api::<Service>::namespaced(client.clone(), "west")
        .get("db-backend")
        .await
        .unwrap();
    assert_eq!(bound.spec.unwrap().selector.unwrap()["app"], "backend");
    let db = eventually("db bound in service status", async || {
        let out = skupper(&kc, dir, &["service", "status", "-o", "json"]).await;
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let db = list["services"]
            .as_array()?
            .iter()
            .find(|s| {
                s["address"] == "db" && s["targets"].as_array().is_some_and(|t| !t.is_empty())
            })?
            .clone();
        Some(db)
    })
    .await;
    assert_eq!(db["targets"][0]["host"], "db-backend.west.svc");
    assert_eq!(db["targets"][0]["ports"][0], 15432);
    // The address clients call: a Service selecting the router pods.
    let called = eventually("the db Service", async || {
        Api::<Service>::namespaced(client.clone(), "west")
            .get_opt("db")
            .await
            .ok()?
    })
    .await;
    assert_eq!(
        called.spec.unwrap().selector.unwrap()["skupper.io/component"],
        "router"
    );
    let bad = skupper(
        &kc,
        dir,
        &["service", "unbind", "db", "deployment", "other"],
    )
    .await;
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    ok(
        &kc,
        dir,
        &["service", "unbind", "db", "deployment", "backend"],
    )
    .await;
    assert!(
        Api::<Service>::namespaced(client.clone(), "west")
            .get_opt("db-backend")
            .await
            .unwrap()
            .is_none(),
        "the Service made for the binding goes with it"
    );
    ok(&kc, dir, &["service", "delete", "db"]).await;
    eventually("db gone", async || {
        let out = skupper(&kc, dir, &["service", "status", "-o", "json"]).await;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (out.status.success() && !text.contains("\"db\"")).then_some(())
    })
    .await;

    ok(&kc, dir, &["unexpose", "deployment", "backend"]).await;
    eventually("backend withdrawn", async || {
        let out = skupper(&kc, dir, &["service", "status", "-o", "json"]).await;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (out.status.success() && !text.contains("\"backend\"")).then_some(())
    })
    .await;

    // A debug dump: the site's objects and Events, Secrets without their data.
    let dump = dir.join("dump.tar.gz");
    ok(&kc, dir, &["debug", "dump", dump.to_str().unwrap()]).await;
    let mut tar = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(&dump).unwrap()),
        &mut tar,
    )
    .unwrap();
    let text = String::from_utf8_lossy(&tar);
    for entry in [
        "skupper-dump-west/README.txt",
        "skupper-dump-west/configmaps/skupper-site.yaml",
        "skupper-dump-west/configmaps/skupper-network-status.yaml",
        "skupper-dump-west/deployments/skupper-router.yaml",
        "skupper-dump-west/secrets.yaml",
        "skupper-dump-west/events.yaml",
    ] {
        assert!(text.contains(entry), "{entry} missing from the dump");
    }
    assert!(text.contains("skupper-site-state"), "Secrets are listed");
    // Secret data is base64 in the API: neither form of any value may be in the dump.
    for secret in secrets.list(&Default::default()).await.unwrap().items {
        for (k, v) in secret.data.unwrap_or_default() {
            let b64 = serde_json::to_value(&v).unwrap();
            let b64 = b64.as_str().unwrap();
            let raw = String::from_utf8_lossy(&v.0);
            assert!(
                !text.contains(b64) && (raw.len() < 8 || !text.contains(raw.as_ref())),
                "{k} of Secret {:?} is in the dump",
                secret.metadata.name
            );
        }
    }
    assert!(!text.contains(&token), "no API token in the dump");

    let _ = stop.send(true);
    served.await.unwrap().unwrap();
    ok(&kc, dir, &["delete"]).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "west");
    assert!(cms.get_opt("skupper-site").await.unwrap().is_none());
    assert!(
        deployments
            .get_opt("skupper-router")
            .await
            .unwrap()
            .is_none()
    );
}
