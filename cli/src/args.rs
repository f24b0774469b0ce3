//! The command line, as clap parses it.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::duration::parse_duration;
use crate::output::Format;

#[derive(Debug, Parser)]
#[command(
    name = "skupper",
    version,
    about = "Connect services across sites: a Virtual Application Network",
    long_about = "Connect services across sites: a Virtual Application Network.\n\n\
                  On the local platform a site is a directory under $SKUPPER_HOME and three \
                  processes on this host: a router, a controller and config-sync."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The namespace: one site per namespace [default: on kubernetes the context's namespace,
    /// else "default"].
    #[arg(
        short = 'n',
        long,
        env = "SKUPPER_NAMESPACE",
        global = true,
        help_heading = "Global options"
    )]
    pub namespace: Option<String>,
    /// Where sites live [default: $XDG_DATA_HOME/skupper or ~/.local/share/skupper].
    #[arg(
        long,
        env = "SKUPPER_HOME",
        global = true,
        help_heading = "Global options"
    )]
    pub home: Option<PathBuf>,
    /// Where sites run [default: kubernetes if --kubeconfig or --context is given or a
    /// kubeconfig with a current context is found, else local].
    #[arg(
        long,
        value_enum,
        env = "SKUPPER_PLATFORM",
        global = true,
        help_heading = "Global options"
    )]
    pub platform: Option<Platform>,
    /// Path to the kubeconfig file [default: $KUBECONFIG, else ~/.kube/config].
    #[arg(long, global = true, help_heading = "Global options")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use [default: its current context].
    #[arg(short = 'c', long, global = true, help_heading = "Global options")]
    pub context: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Platform {
    /// Processes on this host.
    Local,
    /// A namespace of a Kubernetes cluster (the objects of the Helm chart charts/skupper).
    Kubernetes,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a site in the namespace and start it.
    Init(InitArgs),
    /// Report the status of the site.
    Status(OutputArgs),
    /// Stop the site and remove it.
    Delete,
    /// Report the client's version and the site controller's.
    Version(OutputArgs),
    /// Create tokens other sites use to link to this one.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Link this site to others, or remove and inspect links.
    #[command(subcommand)]
    Link(LinkCommand),
    /// Make a host's ports a service of the network.
    Expose(ExposeArgs),
    /// Stop delivering a service to a host.
    Unexpose(UnexposeArgs),
    /// Create, bind and inspect services.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// The network of linked sites.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Where the site's web console is and how to log in.
    Console(ConsoleArgs),
    /// Collect information to debug a site.
    #[command(subcommand)]
    Debug(DebugCommand),
    /// Run the two-site walkthrough on this machine with temporary sites.
    Demo(DemoArgs),
    /// Start, stop and repair the local site's processes.
    #[command(subcommand)]
    System(SystemCommand),
}

#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

#[derive(Debug, Clone, Args)]
pub struct ConsoleArgs {
    /// Also open the console in a web browser (xdg-open).
    #[arg(long)]
    pub open: bool,
}

/// Flags of `init`, taken as text so every problem is reported at once.
#[derive(Debug, Clone, Default, Args)]
pub struct InitArgs {
    /// Name of the site [default: the namespace].
    #[arg(long)]
    pub site_name: Option<String>,
    /// interior (routes and accepts links) or edge (one uplink to an interior site).
    #[arg(long, value_name = "interior|edge")]
    pub router_mode: Option<String>,
    /// Host name or address other sites dial to link to this one
    /// [default: this host's name if it resolves, else 127.0.0.1].
    #[arg(long)]
    pub ingress_host: Option<String>,
    /// Address the link and claim endpoints listen on [default: 0.0.0.0].
    #[arg(long)]
    pub ingress_bind: Option<String>,
    /// Address services of the network are offered on [default: 127.0.0.1].
    #[arg(long)]
    pub listener_host: Option<String>,
    /// Port for links from interior sites [default: 55671 if free, else any free port].
    #[arg(long, value_name = "PORT")]
    pub inter_router_port: Option<String>,
    /// Port for links from edge sites [default: 45671 if free, else any free port].
    #[arg(long, value_name = "PORT")]
    pub edge_port: Option<String>,
    /// Port where claim tokens are redeemed [default: 8081 if free, else any free port].
    #[arg(long, value_name = "PORT")]
    pub claims_port: Option<String>,
    /// How long to wait for the site to start [default: 60s; kubernetes: 120s].
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Kubernetes: how other sites reach this one
    /// (loadbalancer, nodeport, route, ingress or none) [default: loadbalancer].
    #[arg(long, value_name = "TYPE")]
    pub ingress: Option<String>,
    /// Kubernetes: registry (and path) of the images [default: localhost].
    #[arg(long)]
    pub image_registry: Option<String>,
    /// Kubernetes: tag of the images [default: this CLI's version].
    #[arg(long)]
    pub image_tag: Option<String>,
    /// Kubernetes: wait until the router and controller Deployments are available (default).
    #[arg(long, overrides_with = "no_wait")]
    pub wait: bool,
    /// Kubernetes: return once the objects are applied.
    #[arg(long, overrides_with = "wait")]
    pub no_wait: bool,
    /// Run the site's web console (network observer): topology, services, connections and
    /// requests of the whole network.
    #[arg(long)]
    pub enable_console: bool,
    /// Who may use the console: internal (user admin with a generated password) or
    /// unsecured (anyone who reaches it) [default: internal].
    #[arg(long, value_name = "internal|unsecured")]
    pub console_auth: Option<String>,
    /// Port of the console [default: 8010 if free, else any free port].
    #[arg(long, value_name = "PORT")]
    pub console_port: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token file another site redeems with `skupper link create`.
    Create(TokenCreateArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenType {
    /// A one-time secret redeemed for a certificate at this site (expires, limited uses).
    Claim,
    /// A client certificate: no expiry, unlimited uses.
    Cert,
}

#[derive(Debug, Clone, Args)]
pub struct TokenCreateArgs {
    /// Where to write the token ("-" for standard output).
    pub file: PathBuf,
    /// How long a claim token can be redeemed, e.g. 90s, 15m, 2h, 1d [default: 15m].
    #[arg(long, value_parser = parse_duration)]
    pub expiry: Option<Duration>,
    /// How many times a claim token can be redeemed [default: 1].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub uses: Option<u32>,
    #[arg(short = 't', long, value_enum, default_value_t = TokenType::Claim)]
    pub token_type: TokenType,
    /// Name of the token and of the links made from it [default: generated].
    #[arg(long)]
    pub name: Option<String>,
    /// Cost of links made from this token unless `link create --cost` overrides it [default: 1].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub cost: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum LinkCommand {
    /// Link this site to the site that issued a token.
    Create(LinkCreateArgs),
    /// Report the links of this site.
    Status(LinkStatusArgs),
    /// Remove a link.
    Delete(LinkDeleteArgs),
}

#[derive(Debug, Clone, Args)]
pub struct LinkCreateArgs {
    /// The token file ("-" for standard input).
    pub file: PathBuf,
    /// Name of the link [default: the token's name].
    #[arg(long)]
    pub name: Option<String>,
    /// Cost of the link for routing [default: the token's cost, else 1].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub cost: Option<u32>,
    /// Reach the other site through this HTTP CONNECT proxy, http://[user:password@]host:port
    /// [default: HTTPS_PROXY (or ALL_PROXY) unless NO_PROXY names the other site's host].
    #[arg(long, conflicts_with = "no_proxy")]
    pub proxy: Option<String>,
    /// Dial directly even when HTTPS_PROXY is set.
    #[arg(long)]
    pub no_proxy: bool,
}

#[derive(Debug, Clone, Args)]
pub struct LinkStatusArgs {
    /// Only this link ("all" or nothing: every link).
    pub name: Option<String>,
    /// Wait until the link (or every outgoing link) is active, at most this long, e.g. 60s.
    #[arg(long, value_parser = parse_duration)]
    pub wait: Option<Duration>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Clone, Args)]
pub struct LinkDeleteArgs {
    pub name: String,
}

#[derive(Debug, Clone, Args)]
pub struct ExposeArgs {
    /// Resource type: `host` on the local platform; `deployment`, `statefulset` or `service`
    /// on kubernetes (also `TYPE/NAME`).
    pub resource: String,
    /// The host name or address (local), or the workload or Service name (kubernetes).
    pub name: Option<String>,
    /// Service port (repeat or comma-separate for several).
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Vec<u16>,
    /// Service address (name) in the network.
    #[arg(long)]
    pub address: Option<String>,
    /// Port on the host (or pods) for each service port, in order [default: the same ports].
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..))]
    pub target_port: Vec<u16>,
    /// tcp, http or http2.
    #[arg(long, default_value = "tcp")]
    pub protocol: String,
}

#[derive(Debug, Clone, Args)]
pub struct UnexposeArgs {
    /// Resource type: `host` (also `host/NAME`); on kubernetes `deployment`, `statefulset` or
    /// `service`.
    pub resource: String,
    pub name: Option<String>,
    /// Service address (name) in the network.
    #[arg(long)]
    pub address: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Define a service with no targets.
    Create(ServiceCreateArgs),
    /// Remove a service defined at this site.
    Delete(ServiceNameArgs),
    /// Deliver a service to a host.
    Bind(ServiceBindArgs),
    /// Stop delivering a service to a host.
    Unbind(ServiceUnbindArgs),
    /// Report the services this site knows.
    Status(OutputArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ServiceCreateArgs {
    pub name: String,
    #[arg(required = true, value_parser = clap::value_parser!(u16).range(1..))]
    pub ports: Vec<u16>,
    #[arg(long, default_value = "tcp")]
    pub protocol: String,
}

#[derive(Debug, Clone, Args)]
pub struct ServiceNameArgs {
    pub name: String,
}

#[derive(Debug, Clone, Args)]
pub struct ServiceBindArgs {
    pub name: String,
    /// Resource type: `host` (also `host/NAME`).
    pub resource: String,
    pub host: Option<String>,
    /// Port on the host for each service port, in order [default: the same ports].
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..))]
    pub target_port: Vec<u16>,
}

#[derive(Debug, Clone, Args)]
pub struct ServiceUnbindArgs {
    pub name: String,
    /// Resource type: `host` (also `host/NAME`).
    pub resource: String,
    pub host: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Every site of the network, with its links and services.
    Status(OutputArgs),
}

#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Write a .tar.gz of the site's configuration, logs and status (no private keys).
    Dump(DumpArgs),
    /// Follow a link step by step (name, TCP, TLS, claim, router) and say which step fails,
    /// why, and what to do.
    Link(DebugLinkArgs),
}

#[derive(Debug, Clone, Args)]
pub struct DebugLinkArgs {
    /// The link ("all" or nothing: every link this site dials).
    pub name: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct DumpArgs {
    pub file: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Leave the sites running (and print where they are).
    #[arg(long)]
    pub keep: bool,
    /// Bookinfo over three sites with `--protocol http`: every request balanced on its own.
    #[arg(long)]
    pub http: bool,
}

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Start the site's processes again (after `system stop`, a reboot or a killed
    /// supervisor).
    Start(SystemStartArgs),
    /// Stop the site's processes; its files stay and `system start` resumes it.
    Stop,
    /// Put the site's state back from its backup when state.yaml is damaged or lost.
    Repair,
    /// Print a systemd user unit that runs the site, to start it at login or boot.
    Unit,
    /// Run and restart a site's processes; stopped through run/supervisor.sock.
    #[command(hide = true)]
    Supervise(SiteDirArgs),
    /// Run one process of a site until standard input closes or SIGTERM.
    #[command(hide = true)]
    Run(SystemRunArgs),
}

#[derive(Debug, Clone, Args)]
pub struct SystemStartArgs {
    /// How long to wait for the site to answer [default: 60s].
    #[arg(long)]
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct SiteDirArgs {
    #[arg(long)]
    pub site_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Component {
    Router,
    Controller,
    ConfigSync,
    Console,
}

impl Component {
    /// What every site runs; the console runs too when the site enables it.
    pub const ALL: [Component; 3] = [
        Component::Router,
        Component::Controller,
        Component::ConfigSync,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Component::Router => "router",
            Component::Controller => "controller",
            Component::ConfigSync => "config-sync",
            Component::Console => "console",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct SystemRunArgs {
    pub component: Component,
    #[arg(long)]
    pub site_dir: PathBuf,
}
