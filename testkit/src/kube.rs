//! The stateful fake Kubernetes API server (`fake_kube_api.py`, beside this crate's
//! Cargo.toml): real HTTP or HTTPS, real watches, simplified server-side apply. Needs python3.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The fake API server, stopped when dropped.
pub struct FakeApi {
    child: Child,
    pub port: u16,
    /// PEM of the CA of its server certificate when it speaks HTTPS.
    pub ca: Option<String>,
}

impl FakeApi {
    /// Over plain HTTP (the test hooks `put` and `log` need it).
    pub fn start() -> FakeApi {
        FakeApi::spawn(&[], None)
    }

    /// Over HTTPS, with a certificate for 127.0.0.1 from a fresh CA (files in `dir`).
    pub fn start_tls(dir: &Path) -> FakeApi {
        let certs = van_controller::certs::new_site_certs(
            "0123456789abcdef",
            van_controller::certs::server_hosts(["127.0.0.1"]),
        )
        .unwrap();
        let (cert, key) = (dir.join("api.crt"), dir.join("api.key"));
        std::fs::write(&cert, &certs.server_cert).unwrap();
        std::fs::write(&key, &certs.server_key).unwrap();
        FakeApi::spawn(
            &["--tls".as_ref(), cert.as_os_str(), key.as_os_str()],
            Some(certs.ca_cert),
        )
    }

    fn spawn(args: &[&std::ffi::OsStr], ca: Option<String>) -> FakeApi {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fake_kube_api.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .args(args)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 (CI installs it): {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        FakeApi {
            child,
            port: line.trim().parse().expect("the fake API server's port"),
            ca,
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// A kubeconfig whose current context is this server (and its CA) and namespace `west`.
    pub fn kubeconfig_text(&self) -> String {
        let ca = match &self.ca {
            // base64, as kubeconfig's `*-data` fields are (ByteString serialises so).
            Some(pem) => format!(
                ", certificate-authority-data: {}",
                serde_json::to_value(k8s_openapi::ByteString(pem.clone().into_bytes())).unwrap()
            ),
            None => String::new(),
        };
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
             clusters: [{{name: fake, cluster: {{server: '{}'{ca}}}}}]\n\
             users: [{{name: fake, user: {{token: fake}}}}]\n\
             contexts: [{{name: fake, context: {{cluster: fake, user: fake, namespace: west}}}}]\n",
            self.url()
        )
    }

    /// [`Self::kubeconfig_text`] written to `dir/kubeconfig`.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(&path, self.kubeconfig_text()).unwrap();
        path
    }

    /// A client from the kubeconfig, as the CLI and the pods make theirs.
    pub async fn client(&self) -> ::kube::Client {
        let kc = ::kube::config::Kubeconfig::from_yaml(&self.kubeconfig_text()).unwrap();
        let cfg = ::kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        ::kube::Client::try_from(cfg).unwrap()
    }

    /// One plain HTTP/1.0 exchange with the fake's test hooks; returns status line and body.
    async fn request(&self, method: &str, path: &str, body: &[u8]) -> (String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        assert!(self.ca.is_none(), "the test hooks speak plain HTTP");
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        let head = format!(
            "{method} {path} HTTP/1.0\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body).await.unwrap();
        let mut resp = String::new();
        stream.read_to_string(&mut resp).await.unwrap();
        let (head, body) = resp.split_once("\r\n\r\n").unwrap();
        (head.lines().next().unwrap().to_string(), body.to_string())
    }

    /// Creates or replaces an object, as `kubectl apply` would.
    pub async fn put(&self, plural: &str, name: &str, obj: serde_json::Value) {
        let body = serde_json::to_vec(&obj).unwrap();
        let (status, text) = self
            .request("PUT", &format!("/fake/{plural}/{name}"), &body)
            .await;
        assert!(status.contains(" 200 "), "{status}: {text}");
    }

    /// The requests served so far, one per line.
    pub async fn log(&self) -> String {
        self.request("GET", "/fake/log", b"").await.1
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
