//! `skupper link create|status|delete`.

use std::io::Write;
use std::time::{Duration, Instant};

use van_proto::controller as pb;

use crate::args::{LinkCreateArgs, LinkStatusArgs};
use crate::client::{self, rpc_error};
use crate::output::{self, Format};
use crate::{Ctx, usage};

/// Reads the token and asks the controller to link to its site.
pub async fn create(
    ctx: &Ctx,
    a: &LinkCreateArgs,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<pb::LinkStatus> {
    let token_yaml = read_token_file(&a.file)?;
    let proxy = proxy_for(a, &token_yaml)?;
    let mut c = client::site_client(ctx).await?;
    let link = c
        .create_link(pb::CreateLinkRequest {
            token_yaml,
            name: a.name.clone().unwrap_or_default(),
            cost: a.cost.unwrap_or(0),
            proxy: proxy.clone().unwrap_or_default(),
        })
        .await
        .map_err(|e| rpc_error("cannot create the link", e))?
        .into_inner();
    let peer = if link.peer_site_name.is_empty() {
        format!("{}:{}", link.host, link.port)
    } else {
        link.peer_site_name.clone()
    };
    writeln!(
        out,
        "Site configured to link to {peer} (name={})",
        link.name
    )?;
    if let Some(p) = proxy
        .as_deref()
        .and_then(|p| van_proto::tunnel::Proxy::parse(p).ok())
    {
        writeln!(out, "It goes through proxy {p}.")?;
    }
    writeln!(
        out,
        "Check the status of the link using 'skupper link status'."
    )?;
    Ok(link)
}

/// The proxy the link goes through: `--proxy`, else the environment's for the token's host
/// (as curl reads HTTPS_PROXY and NO_PROXY), unless `--no-proxy`.
fn proxy_for(a: &LinkCreateArgs, token_yaml: &str) -> anyhow::Result<Option<String>> {
    if let Some(p) = &a.proxy {
        van_proto::tunnel::Proxy::parse(p).map_err(|e| usage(format!("--proxy: {e}")))?;
        return Ok(Some(p.clone()));
    }
    if a.no_proxy {
        return Ok(None);
    }
    // The controller reports a bad token; without a host there is nothing to exempt.
    let host = match van_controller::token::parse(token_yaml) {
        Ok(van_controller::token::Token::Cert(c)) => c.inter_router_host,
        Ok(van_controller::token::Token::Claim(c)) => c
            .url
            .parse::<hyper::Uri>()
            .ok()
            .and_then(|u| u.host().map(str::to_string))
            .unwrap_or_default(),
        Err(_) => return Ok(None),
    };
    match van_proto::tunnel::Proxy::from_env(&host) {
        Some(p) => {
            van_proto::tunnel::Proxy::parse(&p)
                .map_err(|e| usage(format!("HTTPS_PROXY: {e} (or use --no-proxy)")))?;
            Ok(Some(p))
        }
        None => Ok(None),
    }
}

/// A token is a few KiB of YAML; anything much bigger is not one.
const MAX_TOKEN: u64 = 1 << 20;

/// The token file's text ("-": standard input); unreadable, too big, not text or empty is a
/// usage error.
pub fn read_token_file(file: &std::path::Path) -> anyhow::Result<String> {
    use van_controller::local::{read_bounded, read_limited};
    let (what, bytes) = if file.as_os_str() == "-" {
        (
            "the token on standard input".to_string(),
            read_limited(std::io::stdin().lock(), MAX_TOKEN),
        )
    } else {
        (
            format!("token file {}", file.display()),
            read_bounded(file, MAX_TOKEN),
        )
    };
    let bytes = bytes.map_err(|e| match e.kind() {
        std::io::ErrorKind::FileTooLarge => usage(format!("{what} is {e}: not a token")),
        _ => usage(format!("cannot read {what}: {e}")),
    })?;
    let token_yaml =
        String::from_utf8(bytes).map_err(|_| usage(format!("{what} is not text: not a token")))?;
    if token_yaml.trim().is_empty() {
        return Err(usage(format!("{what} is empty")));
    }
    Ok(token_yaml)
}

/// `link status [NAME] [--wait D]`. With `--wait`, polls until the link (or every outgoing
/// link) is active and fails when the wait ends first.
pub async fn status(
    ctx: &Ctx,
    a: &LinkStatusArgs,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let name = a.name.as_deref().filter(|n| *n != "all");
    let mut c = client::site_client(ctx).await?;
    let deadline = a.wait.map(|w| Instant::now() + w);
    let links = loop {
        let links = c
            .list_links(pb::ListLinksRequest {})
            .await
            .map_err(|e| rpc_error("cannot list links", e))?
            .into_inner();
        let Some(deadline) = deadline else {
            break links;
        };
        let problem = not_active(&links, name);
        if problem.is_none() {
            break links;
        }
        if Instant::now() >= deadline {
            let wait = crate::duration::format_duration(a.wait.unwrap_or_default());
            render(&links, name, a.output.output, out)?;
            anyhow::bail!("{} (waited {wait})", problem.unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if let Some(n) = name
        && !links.links.iter().any(|l| l.name == n)
    {
        anyhow::bail!("there is no link named {n:?}");
    }
    render(&links, name, a.output.output, out)
}

/// Why the wait is not over: the named link (or some outgoing link) is not active.
pub fn not_active(links: &pb::LinkList, name: Option<&str>) -> Option<String> {
    let outgoing = links.links.iter().filter(|l| l.direction != "incoming");
    match name {
        Some(n) => match outgoing.clone().find(|l| l.name == n) {
            None => Some(format!("there is no link named {n:?}")),
            Some(l) if l.state == "active" => None,
            Some(l) => Some(format!("link {n} did not become active ({})", why(l))),
        },
        None => outgoing
            .filter(|l| l.state != "active")
            .map(|l| format!("link {} did not become active ({})", l.name, why(l)))
            .reduce(|a, b| format!("{a}; {b}")),
    }
}

/// `state` or `reason: detail`.
fn why(l: &pb::LinkStatus) -> String {
    match (l.reason.is_empty(), l.detail.is_empty()) {
        (true, true) => l.state.clone(),
        (false, true) => l.reason.clone(),
        (true, false) => format!("{}: {}", l.state, l.detail),
        (false, false) => format!("{}: {}", l.reason, l.detail),
    }
}

pub fn render(
    links: &pb::LinkList,
    name: Option<&str>,
    format: Format,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let selected = pb::LinkList {
        links: links
            .links
            .iter()
            .filter(|l| name.is_none_or(|n| l.name == n))
            .cloned()
            .collect(),
    };
    if output::structured(format, &selected, out)? {
        return Ok(());
    }
    write!(out, "{}", text(&selected))?;
    Ok(())
}

/// Skupper's link status lines.
pub fn text(links: &pb::LinkList) -> String {
    if links.links.is_empty() {
        return "There are no links configured or active\n".into();
    }
    let mut s = String::new();
    for l in links.links.iter().filter(|l| l.direction != "incoming") {
        if l.state == "active" {
            s.push_str(&format!("Link {} is active\n", l.name));
        } else {
            s.push_str(&format!("Link {} not active ({})\n", l.name, why(l)));
        }
    }
    for l in links.links.iter().filter(|l| l.direction == "incoming") {
        let peer = if l.peer_site_name.is_empty() {
            l.peer_site_id.as_str()
        } else {
            l.peer_site_name.as_str()
        };
        s.push_str(&format!("Incoming link from site {peer}\n"));
    }
    s
}

/// `link delete NAME`.
pub async fn delete(ctx: &Ctx, name: &str, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let mut c = client::site_client(ctx).await?;
    c.delete_link(pb::DeleteLinkRequest { name: name.into() })
        .await
        .map_err(|e| rpc_error(&format!("cannot delete link {name:?}"), e))?;
    writeln!(out, "Link '{name}' has been deleted")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, state: &str, reason: &str, detail: &str, dir: &str) -> pb::LinkStatus {
        pb::LinkStatus {
            name: name.into(),
            state: state.into(),
            reason: reason.into(),
            detail: detail.into(),
            direction: dir.into(),
            peer_site_name: "east".into(),
            ..Default::default()
        }
    }

    #[test]
    fn text_lines() {
        let l = pb::LinkList {
            links: vec![
                link("a", "active", "", "", "outgoing"),
                link(
                    "b",
                    "connecting",
                    "refused",
                    "connection refused",
                    "outgoing",
                ),
                link("c", "connecting", "", "", "outgoing"),
                link("x", "active", "", "", "incoming"),
            ],
        };
        assert_eq!(
            text(&l),
            "Link a is active\n\
             Link b not active (refused: connection refused)\n\
             Link c not active (connecting)\n\
             Incoming link from site east\n"
        );
        assert_eq!(
            text(&pb::LinkList::default()),
            "There are no links configured or active\n"
        );
    }

    #[test]
    fn waiting_looks_at_outgoing_links() {
        let l = pb::LinkList {
            links: vec![
                link("a", "active", "", "", "outgoing"),
                link("b", "failed", "tls", "bad certificate", "outgoing"),
                link("x", "connecting", "", "", "incoming"),
            ],
        };
        assert_eq!(not_active(&l, Some("a")), None);
        assert_eq!(
            not_active(&l, Some("b")).as_deref(),
            Some("link b did not become active (tls: bad certificate)")
        );
        assert!(
            not_active(&l, Some("zz"))
                .unwrap()
                .contains("no link named")
        );
        assert!(not_active(&l, None).unwrap().contains("link b"));
    }
}
