//! `skupper expose|unexpose` and `skupper service create|delete|bind|unbind|status`.

use std::io::Write;

use van_proto::controller as pb;

use crate::args::{ExposeArgs, ServiceCommand, UnexposeArgs};
use crate::client::{self, rpc_error};
use crate::output::{self, Format, Tree};
use crate::{Ctx, usage};

/// Kubernetes resource types Skupper exposes, which the local platform does not have.
const KUBERNETES_TYPES: &[&str] = &[
    "deployment",
    "statefulset",
    "pods",
    "pod",
    "service",
    "deploymentconfig",
    "daemonset",
];

/// The host of `host HOST` or `host/HOST`, or why the resource cannot be used here.
pub fn host_of(command: &str, resource: &str, name: Option<&str>) -> anyhow::Result<String> {
    let (kind, inline) = match resource.split_once('/') {
        Some((k, n)) => (k, Some(n)),
        None => (resource, None),
    };
    if kind != "host" {
        if KUBERNETES_TYPES.contains(&kind) {
            return Err(usage(format!(
                "{command} {kind} is only available on the kubernetes platform"
            )));
        }
        return Err(usage(format!(
            "{command}: unknown resource type {kind:?}; on the local platform the only type is host"
        )));
    }
    let host = match (inline, name) {
        (Some(_), Some(n)) => {
            return Err(usage(format!(
                "{command}: give the host once, as `host/{n}` or `host {n}`"
            )));
        }
        (Some(h), None) | (None, Some(h)) => h,
        (None, None) => {
            return Err(usage(format!(
                "{command}: which host? e.g. `{command} host 127.0.0.1 ...`"
            )));
        }
    };
    if let Some(p) = van_controller::site::host_problem(host) {
        return Err(usage(format!("{command}: host {p}")));
    }
    Ok(host.to_string())
}

fn check_target_ports(ports: usize, target_ports: &[u16]) -> anyhow::Result<()> {
    if !target_ports.is_empty() && target_ports.len() != ports {
        return Err(usage(format!(
            "--target-port: {} target ports for {} service ports; give one per service port, in order, or none",
            target_ports.len(),
            ports
        )));
    }
    Ok(())
}

fn u32s(v: &[u16]) -> Vec<u32> {
    v.iter().copied().map(u32::from).collect()
}

/// `expose host HOST --port P... --address NAME`.
pub async fn expose(
    ctx: &Ctx,
    a: &ExposeArgs,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<pb::Service> {
    let host = host_of("expose", &a.resource, a.name.as_deref())?;
    let Some(address) = a.address.clone() else {
        return Err(usage(
            "expose: --address is required: the name of the service in the network",
        ));
    };
    if a.port.is_empty() {
        return Err(usage(
            "expose: --port is required (at least one service port)",
        ));
    }
    check_target_ports(a.port.len(), &a.target_port)?;
    let mut c = client::site_client(ctx).await?;
    let svc = c
        .expose(pb::ExposeRequest {
            address: address.clone(),
            ports: u32s(&a.port),
            protocol: a.protocol.clone(),
            host: host.clone(),
            target_ports: u32s(&a.target_port),
        })
        .await
        .map_err(|e| rpc_error(&format!("cannot expose host {host}"), e))?
        .into_inner();
    writeln!(out, "host {host} exposed as {address}")?;
    Ok(svc)
}

/// `unexpose host HOST --address NAME`.
pub async fn unexpose(
    ctx: &Ctx,
    a: &UnexposeArgs,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let host = host_of("unexpose", &a.resource, a.name.as_deref())?;
    let Some(address) = a.address.clone() else {
        return Err(usage(
            "unexpose: --address is required: the service to stop delivering to the host",
        ));
    };
    let mut c = client::site_client(ctx).await?;
    c.unbind(pb::UnbindRequest {
        address,
        host: host.clone(),
        // Like Skupper: the service goes with its last target.
        delete_if_unbound: true,
    })
    .await
    .map_err(|e| rpc_error(&format!("cannot unexpose host {host}"), e))?;
    writeln!(out, "host {host} unexposed")?;
    Ok(())
}

/// `service ...`.
pub async fn run(
    ctx: &Ctx,
    cmd: &ServiceCommand,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    match cmd {
        ServiceCommand::Create(a) => {
            let mut c = client::site_client(ctx).await?;
            let s = c
                .create_service(pb::CreateServiceRequest {
                    address: a.name.clone(),
                    ports: u32s(&a.ports),
                    protocol: a.protocol.clone(),
                })
                .await
                .map_err(|e| rpc_error(&format!("cannot create service {:?}", a.name), e))?
                .into_inner();
            writeln!(out, "Service {} created ({})", s.address, shape(&s))?;
        }
        ServiceCommand::Delete(a) => {
            let mut c = client::site_client(ctx).await?;
            c.delete_service(pb::DeleteServiceRequest {
                address: a.name.clone(),
            })
            .await
            .map_err(|e| rpc_error(&format!("cannot delete service {:?}", a.name), e))?;
            writeln!(out, "Service {} deleted", a.name)?;
        }
        ServiceCommand::Bind(a) => {
            let host = host_of("service bind", &a.resource, a.host.as_deref())?;
            let mut c = client::site_client(ctx).await?;
            c.bind(pb::BindRequest {
                address: a.name.clone(),
                host: host.clone(),
                target_ports: u32s(&a.target_port),
            })
            .await
            .map_err(|e| rpc_error(&format!("cannot bind service {:?}", a.name), e))?;
            writeln!(out, "Service {} bound to host {host}", a.name)?;
        }
        ServiceCommand::Unbind(a) => {
            let host = host_of("service unbind", &a.resource, a.host.as_deref())?;
            let mut c = client::site_client(ctx).await?;
            c.unbind(pb::UnbindRequest {
                address: a.name.clone(),
                host: host.clone(),
                delete_if_unbound: false,
            })
            .await
            .map_err(|e| rpc_error(&format!("cannot unbind service {:?}", a.name), e))?;
            writeln!(out, "Service {} unbound from host {host}", a.name)?;
        }
        ServiceCommand::Status(a) => status(ctx, a.output, out).await?,
    }
    Ok(())
}

/// Every service this site knows.
pub async fn list(ctx: &Ctx) -> anyhow::Result<pb::ServiceList> {
    let mut c = client::site_client(ctx).await?;
    Ok(c.list_services(pb::ListServicesRequest {})
        .await
        .map_err(|e| rpc_error("cannot list services", e))?
        .into_inner())
}

/// `service status`.
pub async fn status(ctx: &Ctx, format: Format, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let list = list(ctx).await?;
    if output::structured(format, &list, out)? {
        return Ok(());
    }
    write!(out, "{}", status_text(&list))?;
    Ok(())
}

/// `tcp 8080,8081`.
fn shape(s: &pb::Service) -> String {
    let ports: Vec<String> = s.ports.iter().map(u32::to_string).collect();
    format!("{} {}", s.protocol, ports.join(","))
}

/// `backend:8080 (tcp)`.
pub fn label(s: &pb::Service) -> String {
    let ports: Vec<String> = s.ports.iter().map(u32::to_string).collect();
    format!("{}:{} ({})", s.address, ports.join(","), s.protocol)
}

/// `127.0.0.1:9090` or `127.0.0.1:9090,9091`.
pub fn target_label(t: &pb::Target) -> String {
    let ports: Vec<String> = t.ports.iter().map(u32::to_string).collect();
    format!("{}:{}", t.host, ports.join(","))
}

/// The sub-lines of one service: origin, targets, listeners, conflicts, listener errors.
pub fn service_tree(s: &pb::Service) -> Tree {
    let mut kids = Vec::new();
    let id = &s.origin_site_id[..s.origin_site_id.len().min(7)];
    kids.push(Tree::leaf(if s.local {
        format!("origin: this site ({})", s.origin_site_name)
    } else if s.origin_site_name.is_empty() {
        format!("origin: site {id}")
    } else {
        format!("origin: site {} ({id})", s.origin_site_name)
    }));
    if !s.targets.is_empty() {
        kids.push(Tree::node(
            "targets:",
            s.targets
                .iter()
                .map(|t| Tree::leaf(target_label(t)))
                .collect(),
        ));
    }
    if !s.target_sites.is_empty() {
        kids.push(Tree::leaf(format!(
            "served by sites: {}",
            s.target_sites.join(", ")
        )));
    }
    if !s.listeners.is_empty() {
        kids.push(Tree::leaf(format!("listeners: {}", s.listeners.join(", "))));
    }
    if !s.conflicts.is_empty() {
        kids.push(Tree::node(
            "conflicts:",
            s.conflicts.iter().map(Tree::leaf).collect(),
        ));
    }
    if !s.listener_error.is_empty() {
        kids.push(Tree::leaf(format!("listener error: {}", s.listener_error)));
    }
    Tree::node(label(s), kids)
}

/// Skupper's service tree.
pub fn status_text(list: &pb::ServiceList) -> String {
    if list.services.is_empty() {
        return "No services defined\n".into();
    }
    let nodes: Vec<Tree> = list.services.iter().map(service_tree).collect();
    format!(
        "Services exposed through Skupper:\n{}",
        output::render_tree(&nodes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_forms() {
        assert_eq!(
            host_of("expose", "host", Some("10.0.0.1")).unwrap(),
            "10.0.0.1"
        );
        assert_eq!(
            host_of("expose", "host/db.local", None).unwrap(),
            "db.local"
        );
        let e = host_of("expose", "deployment", Some("x")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "expose deployment is only available on the kubernetes platform"
        );
        let e = host_of("expose", "deployment/x", None).unwrap_err();
        assert!(e.to_string().contains("kubernetes platform"));
        assert!(
            host_of("expose", "frob", Some("x"))
                .unwrap_err()
                .to_string()
                .contains("unknown resource type")
        );
        assert!(host_of("expose", "host", None).is_err());
        assert!(host_of("expose", "host/a", Some("b")).is_err());
        assert!(host_of("expose", "host", Some("bad host!")).is_err());
    }

    #[test]
    fn tree_of_services() {
        let list = pb::ServiceList {
            services: vec![
                pb::Service {
                    address: "backend".into(),
                    protocol: "tcp".into(),
                    ports: vec![8080],
                    targets: vec![pb::Target {
                        host: "127.0.0.1".into(),
                        ports: vec![9090],
                    }],
                    origin_site_id: "0123456789abcdef".into(),
                    origin_site_name: "east".into(),
                    local: true,
                    listeners: vec!["127.0.0.3:8080".into()],
                    ..Default::default()
                },
                pb::Service {
                    address: "db".into(),
                    protocol: "tcp".into(),
                    ports: vec![5432, 5433],
                    origin_site_id: "fedcba9876543210".into(),
                    origin_site_name: "west".into(),
                    conflicts: vec!["west defines db as tcp 5432".into()],
                    listener_error: "address in use".into(),
                    ..Default::default()
                },
            ],
        };
        assert_eq!(
            status_text(&list),
            "Services exposed through Skupper:\n\
             ├─ backend:8080 (tcp)\n\
             │  ├─ origin: this site (east)\n\
             │  ├─ targets:\n\
             │  │  ╰─ 127.0.0.1:9090\n\
             │  ╰─ listeners: 127.0.0.3:8080\n\
             ╰─ db:5432,5433 (tcp)\n\
             \x20  ├─ origin: site west (fedcba9)\n\
             \x20  ├─ conflicts:\n\
             \x20  │  ╰─ west defines db as tcp 5432\n\
             \x20  ╰─ listener error: address in use\n"
        );
    }
}
