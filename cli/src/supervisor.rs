//! Keeps a site's processes running after the CLI exits.
//!
//! `skupper init` starts `skupper system supervise --site-dir DIR` detached (own process
//! group, output to `logs/supervisor.log`). The supervisor starts each child with its
//! output piped into `logs/<name>.log`, which it rotates by size (`<name>.log.1` is the
//! previous file, up to [`LogLimit::keep`] of them), and its standard input piped: children end when
//! their standard input closes, so whenever the supervisor goes away, for whatever reason,
//! they follow and nothing is orphaned. A child that exits unexpectedly is restarted after a
//! backoff (200 ms doubling to 5 s, back to 200 ms once a child has run 30 s).
//!
//! Control is a line protocol on `run/supervisor.sock`:
//! - `status` → one line per child: `router running pid=123 restarts=0`;
//! - `stop` → closes every child's standard input, waits up to 5 s for each (then kills
//!   it), removes the socket and pid file, replies `stopped` and exits.

use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};
use van_controller::local::SiteDir;

use crate::args::Component;

/// One process to keep running.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Added to the supervisor's environment.
    pub env: Vec<(OsString, OsString)>,
    /// Standard output and error are appended here.
    pub log: PathBuf,
}

/// How big logs may grow: a log reaching `max_bytes` is renamed `.1` (the older ones shift
/// to `.2` ... `.keep`, the oldest is dropped) and a new one is started. Whoever can reach a
/// site's ports can make its processes log; the disk they fill is bounded all the same.
#[derive(Debug, Clone, Copy)]
pub struct LogLimit {
    pub max_bytes: u64,
    pub keep: u32,
}

impl Default for LogLimit {
    fn default() -> Self {
        LogLimit {
            max_bytes: 10 << 20,
            keep: 3,
        }
    }
}

/// An append-only log file rotated by size. Lines are written whole.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    limit: LogLimit,
    file: std::fs::File,
    size: u64,
}

impl LogFile {
    pub fn open(path: &Path, limit: LogLimit) -> std::io::Result<LogFile> {
        let file = open_log(path)?;
        let size = file.metadata()?.len();
        Ok(LogFile {
            path: path.to_path_buf(),
            limit,
            file,
            size,
        })
    }

    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        if self.size > 0 && self.size + bytes.len() as u64 > self.limit.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(bytes)?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let nth = |i: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{i}"));
            PathBuf::from(p)
        };
        if self.limit.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for i in (1..self.limit.keep).rev() {
                match std::fs::rename(nth(i), nth(i + 1)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            std::fs::rename(&self.path, nth(1))?;
        }
        self.file = open_log(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// Logs name peers, services and addresses: the owner's alone.
fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// Delay before restarting a child that exited.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// A child that ran this long before exiting is restarted after `initial` again.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(5),
            reset_after: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub socket: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub children: Vec<ChildSpec>,
    pub backoff: Backoff,
    /// How long a stopping child may take after its standard input closed.
    pub stop_grace: Duration,
    pub log_limit: LogLimit,
    /// Where the supervisor's own lines go (rotated like the children's); else standard
    /// error.
    pub own_log: Option<PathBuf>,
}

impl Options {
    /// The supervisor of a site: router, controller, config-sync and, when the site
    /// enables it, the console, each run as `<exe> system run <name> --site-dir <dir>`.
    pub fn for_site(dir: &SiteDir, exe: &Path) -> Options {
        let console = dir.read_config().is_ok_and(|c| c.console.is_some());
        let children = Component::ALL
            .iter()
            .chain(console.then_some(&Component::Console))
            .map(|c| ChildSpec {
                name: c.as_str().to_string(),
                program: exe.to_path_buf(),
                args: vec![
                    "system".into(),
                    "run".into(),
                    c.as_str().into(),
                    "--site-dir".into(),
                    dir.root.clone().into_os_string(),
                ],
                // The logs are files: no terminal colour codes in them.
                env: vec![("NO_COLOR".into(), "1".into())],
                log: dir.logs_dir().join(format!("{}.log", c.as_str())),
            })
            .collect();
        Options {
            socket: dir.supervisor_socket(),
            pid_file: Some(dir.pid_file()),
            children,
            backoff: Backoff::default(),
            stop_grace: Duration::from_secs(5),
            log_limit: LogLimit::default(),
            own_log: Some(dir.logs_dir().join("supervisor.log")),
        }
    }
}

/// The process id of the site's running child `name` (router, controller, …), from the
/// supervisor's status.
pub async fn child_pid(socket: &Path, name: &str) -> Option<u32> {
    let status = request(socket, "status", Duration::from_secs(5))
        .await
        .ok()?;
    status
        .lines()
        .find(|l| l.starts_with(&format!("{name} running")))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("pid=")))
        .and_then(|p| p.parse().ok())
}

/// What `status` reports about one child.
#[derive(Debug, Clone, Default)]
struct ChildState {
    pid: Option<u32>,
    running: bool,
    restarts: u32,
    last_exit: Option<String>,
}

type States = Arc<Mutex<Vec<(String, ChildState)>>>;

/// The supervisor's own log, once [`run`] opened it.
static OWN_LOG: std::sync::OnceLock<Mutex<LogFile>> = std::sync::OnceLock::new();

/// One line of the supervisor's log (`logs/supervisor.log`, else standard error).
fn log(msg: &str) {
    let now = van_controller::site::rfc3339(van_controller::site::now_unix());
    let line = format!("{now} supervisor: {msg}\n");
    match OWN_LOG.get() {
        Some(f) => {
            let _ = f.lock().expect("supervisor log").write(line.as_bytes());
        }
        None => eprint!("{line}"),
    }
}

/// Runs the children until `stop` arrives on the socket or `shutdown` completes (which
/// stops them the same way).
pub async fn run(opts: Options, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let listener = bind(&opts.socket).await?;
    if let Some(p) = &opts.own_log {
        let f = LogFile::open(p, opts.log_limit)
            .map_err(|e| anyhow::anyhow!("cannot open the supervisor's log: {e}"))?;
        let _ = OWN_LOG.set(Mutex::new(f));
    }
    if let Some(p) = &opts.pid_file {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display()))?;
    }
    log(&format!(
        "started pid={} socket={}",
        std::process::id(),
        opts.socket.display()
    ));

    let states: States = Arc::new(Mutex::new(
        opts.children
            .iter()
            .map(|c| (c.name.clone(), ChildState::default()))
            .collect(),
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for (i, spec) in opts.children.iter().enumerate() {
        let log = LogFile::open(&spec.log, opts.log_limit)
            .map_err(|e| anyhow::anyhow!("cannot open the log of {}: {e}", spec.name))?;
        tasks.push(tokio::spawn(keep_running(
            spec.clone(),
            i,
            states.clone(),
            stop_rx.clone(),
            Run {
                backoff: opts.backoff,
                grace: opts.stop_grace,
                log: Arc::new(Mutex::new(log)),
            },
        )));
    }

    // Connections that asked to stop; each gets "stopped" once everything has.
    let (stop_req_tx, mut stop_req_rx) = mpsc::unbounded_channel::<UnixStream>();
    let mut stoppers = Vec::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => {
                log("signalled to stop");
                break;
            }
            Some(s) = stop_req_rx.recv() => {
                log("stop requested");
                stoppers.push(s);
                break;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve(stream, states.clone(), stop_req_tx.clone()));
                }
                Err(e) => {
                    log(&format!("accept on {}: {e}", opts.socket.display()));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }

    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    drop(listener);
    let _ = std::fs::remove_file(&opts.socket);
    if let Some(p) = &opts.pid_file {
        let _ = std::fs::remove_file(p);
    }
    while let Ok(s) = stop_req_rx.try_recv() {
        stoppers.push(s);
    }
    for mut s in stoppers {
        let _ = s.write_all(b"stopped\n").await;
        let _ = s.shutdown().await;
    }
    log("stopped");
    Ok(())
}

/// Binds the control socket, refusing if another supervisor answers on it.
async fn bind(socket: &Path) -> anyhow::Result<UnixListener> {
    if socket.exists() {
        if UnixStream::connect(socket).await.is_ok() {
            anyhow::bail!(
                "a supervisor is already running for this site (it answers on {})",
                socket.display()
            );
        }
        // Left behind by a supervisor that died.
        let _ = std::fs::remove_file(socket);
    }
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", parent.display()))?;
    }
    UnixListener::bind(socket)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", socket.display()))
}

/// Answers one control connection.
async fn serve(stream: UnixStream, states: States, stop: mpsc::UnboundedSender<UnixStream>) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let read = tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await;
    let mut stream = reader.into_inner();
    if !matches!(read, Ok(Ok(_))) {
        return;
    }
    match line.trim() {
        "status" => {
            let text = status_text(&states);
            let _ = stream.write_all(text.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
        "stop" => {
            // The main loop replies once every child is gone.
            let _ = stop.send(stream);
        }
        other => {
            let msg =
                format!("error: unknown command {other:?}; the commands are status and stop\n");
            let _ = stream.write_all(msg.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    }
}

fn status_text(states: &States) -> String {
    let states = states.lock().expect("supervisor states");
    let mut out = String::new();
    for (name, s) in states.iter() {
        let line = match (s.running, s.pid) {
            (true, Some(pid)) => format!("{name} running pid={pid} restarts={}", s.restarts),
            _ => {
                let last = s
                    .last_exit
                    .as_deref()
                    .map(|e| format!(" last-exit={e:?}"))
                    .unwrap_or_default();
                format!("{name} restarting restarts={}{last}", s.restarts)
            }
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// How one child is run.
struct Run {
    backoff: Backoff,
    grace: Duration,
    log: Arc<Mutex<LogFile>>,
}

/// Starts `spec` and restarts it whenever it exits, until `stop` turns true.
async fn keep_running(
    spec: ChildSpec,
    index: usize,
    states: States,
    mut stop: watch::Receiver<bool>,
    run: Run,
) {
    let Run {
        backoff,
        grace,
        log: out,
    } = run;
    let set = |f: &dyn Fn(&mut ChildState)| {
        let mut s = states.lock().expect("supervisor states");
        f(&mut s[index].1);
    };
    let mut delay = backoff.initial;
    loop {
        if *stop.borrow() {
            return;
        }
        let started = Instant::now();
        match spawn(&spec, &out) {
            Err(e) => {
                log(&format!("cannot start {}: {e}", spec.name));
                let msg = e.to_string();
                set(&|s| s.last_exit = Some(msg.clone()));
            }
            Ok(mut child) => {
                let pid = child.id();
                log(&format!("{} started pid={}", spec.name, pid.unwrap_or(0)));
                set(&|s| {
                    s.pid = pid;
                    s.running = true;
                });
                // Held until stop: closing it is how the child is asked to end.
                let stdin = child.stdin.take();
                tokio::select! {
                    status = child.wait() => {
                        let what = match status {
                            Ok(s) => s.to_string(),
                            Err(e) => format!("wait failed: {e}"),
                        };
                        log(&format!(
                            "{} pid={} exited unexpectedly ({what}) after {:.1}s",
                            spec.name,
                            pid.unwrap_or(0),
                            started.elapsed().as_secs_f64()
                        ));
                        set(&|s| {
                            s.running = false;
                            s.last_exit = Some(what.clone());
                        });
                        drop(stdin);
                    }
                    () = stopped(&mut stop) => {
                        drop(stdin);
                        match tokio::time::timeout(grace, child.wait()).await {
                            Ok(status) => log(&format!(
                                "{} pid={} stopped ({})",
                                spec.name,
                                pid.unwrap_or(0),
                                status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string())
                            )),
                            Err(_) => {
                                log(&format!(
                                    "{} pid={} did not stop within {grace:?}; killing it",
                                    spec.name,
                                    pid.unwrap_or(0)
                                ));
                                let _ = child.kill().await;
                            }
                        }
                        set(&|s| s.running = false);
                        return;
                    }
                }
                if started.elapsed() >= backoff.reset_after {
                    delay = backoff.initial;
                }
            }
        }
        log(&format!("restarting {} in {delay:?}", spec.name));
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stopped(&mut stop) => return,
        }
        set(&|s| s.restarts += 1);
        delay = (delay * 2).min(backoff.max);
    }
}

/// Completes once stopping was asked for (or the supervisor is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn spawn(spec: &ChildSpec, log: &Arc<Mutex<LogFile>>) -> std::io::Result<tokio::process::Child> {
    let mut child = tokio::process::Command::new(&spec.program)
        .args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", spec.program.display())))?;
    if let Some(o) = child.stdout.take() {
        tokio::spawn(copy_lines(o, log.clone()));
    }
    if let Some(e) = child.stderr.take() {
        tokio::spawn(copy_lines(e, log.clone()));
    }
    Ok(child)
}

/// Longer lines are cut into pieces of this size, so a line without end cannot hold memory.
const MAX_LINE: usize = 64 << 10;

/// Copies a child's output into its log, line by line, until the child closes it.
async fn copy_lines(from: impl tokio::io::AsyncRead + Unpin, log: Arc<Mutex<LogFile>>) {
    let mut from = BufReader::new(from);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = match (&mut from)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if n == MAX_LINE && line.last() != Some(&b'\n') {
            line.push(b'\n');
        }
        let _ = log.lock().expect("child log").write(&line);
    }
}

/// Sends one command to a supervisor and returns its whole answer.
pub async fn request(socket: &Path, command: &str, timeout: Duration) -> std::io::Result<String> {
    let work = async {
        let mut s = UnixStream::connect(socket).await?;
        s.write_all(format!("{command}\n").as_bytes()).await?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).await?;
        Ok(answer)
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "the supervisor at {} did not answer within {timeout:?}",
                socket.display()
            ),
        )
    })?
}

/// Stops a site's supervisor (and with it the site's processes).
///
/// Returns `Ok(false)` if no supervisor was running. A supervisor that holds a pid file but
/// no socket is sent SIGTERM.
pub async fn stop(dir: &SiteDir) -> anyhow::Result<bool> {
    // Children may take 5 s each to end, in parallel; leave room for a slow machine.
    match request(&dir.supervisor_socket(), "stop", Duration::from_secs(20)).await {
        Ok(answer) if answer.trim() == "stopped" => return Ok(true),
        Ok(answer) => anyhow::bail!(
            "the supervisor at {} answered {:?} to stop",
            dir.supervisor_socket().display(),
            answer.trim()
        ),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) => {}
        Err(e) => anyhow::bail!("cannot stop the site's processes: {e}"),
    }
    // No socket: a supervisor may still live (e.g. its socket file was removed by hand).
    let Some(pid) = supervisor_pid(dir) else {
        return Ok(false);
    };
    log_kill(pid)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while process_alive(pid) {
        if Instant::now() > deadline {
            anyhow::bail!("the supervisor (pid {pid}) did not stop within 20s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(true)
}

/// The pid in the site's pid file, if that process is a running supervisor.
fn supervisor_pid(dir: &SiteDir) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(dir.pid_file())
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline);
    (cmdline.contains("supervise") && process_alive(pid)).then_some(pid)
}

fn process_alive(pid: u32) -> bool {
    // A zombie has exited; it only waits for its parent to reap it.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn log_kill(pid: u32) -> anyhow::Result<()> {
    let target = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| anyhow::anyhow!("{pid} is not a process id"))?;
    match rustix::process::kill_process(target, rustix::process::Signal::TERM) {
        Ok(()) => Ok(()),
        // It ended on its own meanwhile.
        Err(_) if !process_alive(pid) => Ok(()),
        Err(e) => anyhow::bail!("cannot signal the supervisor (pid {pid}): {e}"),
    }
}

/// The children's states as `status` reports them, one line each, or why there is none.
pub async fn status(dir: &SiteDir) -> Result<String, String> {
    request(&dir.supervisor_socket(), "status", Duration::from_secs(5))
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                "the supervisor is not running".to_string()
            }
            _ => format!("the supervisor did not answer: {e}"),
        })
}
