//! `-o text|json|yaml`, and the tree drawing of the status commands.

use std::io::Write;

use clap::ValueEnum;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
    Yaml,
}

/// Writes `value` as JSON or YAML and returns true; returns false for text, which the
/// caller renders itself.
pub fn structured<T: Serialize>(
    format: Format,
    value: &T,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<bool> {
    match format {
        Format::Text => Ok(false),
        Format::Json => {
            let s = serde_json::to_string_pretty(value)?;
            writeln!(out, "{s}")?;
            Ok(true)
        }
        Format::Yaml => {
            let s = serde_yaml_ng::to_string(value)?;
            write!(out, "{s}")?;
            Ok(true)
        }
    }
}

/// A node of a tree printed with box-drawing characters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    pub label: String,
    pub children: Vec<Tree>,
}

impl Tree {
    pub fn leaf(label: impl Into<String>) -> Tree {
        Tree {
            label: label.into(),
            children: Vec::new(),
        }
    }

    pub fn node(label: impl Into<String>, children: Vec<Tree>) -> Tree {
        Tree {
            label: label.into(),
            children,
        }
    }
}

/// Renders `nodes` as the children of an unprinted root:
/// ```text
/// ├─ a
/// │  ╰─ a1
/// ╰─ b
/// ```
pub fn render_tree(nodes: &[Tree]) -> String {
    let mut out = String::new();
    render_into(nodes, "", &mut out);
    out
}

fn render_into(nodes: &[Tree], prefix: &str, out: &mut String) {
    for (i, n) in nodes.iter().enumerate() {
        let last = i + 1 == nodes.len();
        out.push_str(prefix);
        out.push_str(if last { "╰─ " } else { "├─ " });
        out.push_str(&n.label);
        out.push('\n');
        let child_prefix = format!("{prefix}{}", if last { "   " } else { "│  " });
        render_into(&n.children, &child_prefix, out);
    }
}

/// "1 site", "2 sites".
pub fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_draws_branches_and_continuations() {
        let t = vec![
            Tree::node("a", vec![Tree::leaf("a1"), Tree::leaf("a2")]),
            Tree::node("b", vec![Tree::node("b1", vec![Tree::leaf("b11")])]),
        ];
        assert_eq!(
            render_tree(&t),
            "├─ a\n│  ├─ a1\n│  ╰─ a2\n╰─ b\n   ╰─ b1\n      ╰─ b11\n"
        );
    }

    #[test]
    fn plurals() {
        assert_eq!(plural(1, "site", "sites"), "1 site");
        assert_eq!(plural(0, "site", "sites"), "0 sites");
        assert_eq!(plural(3, "service", "services"), "3 services");
    }
}
