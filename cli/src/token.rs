//! `skupper token create`.

use std::io::Write;
use std::path::Path;

use van_proto::controller as pb;

use crate::args::{TokenCreateArgs, TokenType};
use crate::client::{self, rpc_error};
use crate::{Ctx, usage};

/// Issues a token and writes it to the file (mode 0600: it is a credential).
pub async fn create(
    ctx: &Ctx,
    a: &TokenCreateArgs,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let to_stdout = a.file.as_os_str() == "-";
    if a.token_type == TokenType::Cert && (a.expiry.is_some() || a.uses.is_some()) {
        return Err(usage(
            "--expiry and --uses apply to claim tokens only; cert tokens do not expire and can be used any number of times",
        ));
    }
    if !to_stdout {
        check_writable_target(&a.file)?;
    }
    let mut c = client::site_client(ctx).await?;
    let token = c
        .create_token(pb::CreateTokenRequest {
            name: a.name.clone().unwrap_or_default(),
            r#type: match a.token_type {
                TokenType::Claim => pb::TokenType::Claim,
                TokenType::Cert => pb::TokenType::Cert,
            } as i32,
            expiry_seconds: a.expiry.map(|d| d.as_secs()).unwrap_or(0),
            uses: a.uses.unwrap_or(0),
            cost: a.cost.unwrap_or(0),
        })
        .await
        .map_err(|e| rpc_error("cannot create the token", e))?
        .into_inner();
    let shown = if to_stdout {
        "standard output".to_string()
    } else {
        a.file.display().to_string()
    };
    let message = match a.token_type {
        TokenType::Claim => {
            let uses = a.uses.unwrap_or(1);
            format!(
                "Token written to {shown} (claim expires at {}, {})",
                if token.expires.is_empty() {
                    "an unknown time"
                } else {
                    &token.expires
                },
                crate::output::plural(u64::from(uses), "use", "uses")
            )
        }
        TokenType::Cert => format!("Connection token written to {shown}"),
    };
    if to_stdout {
        write!(out, "{}", token.yaml)?;
        if !token.yaml.ends_with('\n') {
            writeln!(out)?;
        }
        // Standard output holds the token; the note goes where it will not corrupt it.
        eprintln!("{message}");
    } else {
        write_secret(&a.file, token.yaml.as_bytes())?;
        writeln!(out, "{message}")?;
    }
    Ok(())
}

/// Fails early (before a claim is spent) if the file cannot be written where it is meant to.
pub fn check_writable_target(path: &Path) -> anyhow::Result<()> {
    if path.is_dir() {
        return Err(usage(format!("{} is a directory", path.display())));
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(usage(format!(
            "cannot write the token to {}: directory {} does not exist",
            path.display(),
            parent.display()
        )));
    }
    Ok(())
}

/// Writes a file only its owner can read, also when it existed with a wider mode.
pub fn write_secret(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let err = |e: std::io::Error| anyhow::anyhow!("cannot write {}: {e}", path.display());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    Ok(())
}
