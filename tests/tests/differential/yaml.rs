//! The YAML text of a generated policy: one file, two files, or two
//! documents in one file, in varied styles (flow or block lists, quotes).

use std::fmt::Write as _;

use crate::policy::{GGroup, GPeer, GPolicy, GRule};
use crate::rng::Rng;

fn quote(st: &mut Rng, text: &str, must: bool) -> String {
    if must || st.chance(15) {
        if st.chance(70) {
            format!("\"{text}\"")
        } else {
            format!("'{text}'")
        }
    } else {
        text.to_string()
    }
}

fn cidr_token(st: &mut Rng, text: &str) -> String {
    quote(st, text, text.contains(':'))
}

fn port_token(st: &mut Rng, text: &str) -> String {
    if text.starts_with(['"', '\'']) {
        return text.to_string();
    }
    let must = text.contains(':') && st.chance(50);
    quote(st, text, must)
}

/// A YAML value for a list: flow, block (at `indent`), or a lone scalar.
fn list(st: &mut Rng, items: &[String], indent: usize) -> String {
    if items.len() == 1 && st.chance(35) {
        return format!(" {}", items[0]);
    }
    if items.is_empty() || st.chance(65) {
        return format!(" [{}]", items.join(", "));
    }
    let pad = " ".repeat(indent);
    items.iter().map(|i| format!("\n{pad}- {i}")).collect()
}

fn group_yaml(st: &mut Rng, g: &GGroup, out: &mut String) {
    let cidrs: Vec<String> = g
        .cidrs
        .iter()
        .map(|n| cidr_token(st, &n.to_string()))
        .collect();
    if !g.long_form {
        let _ = writeln!(out, "  {}:{}", g.name, list(st, &cidrs, 4));
        return;
    }
    let _ = writeln!(out, "  {}:", g.name);
    let _ = writeln!(out, "    cidrs:{}", list(st, &cidrs, 6));
    if !g.except.is_empty() {
        let except: Vec<String> = g
            .except
            .iter()
            .map(|n| cidr_token(st, &n.to_string()))
            .collect();
        let _ = writeln!(out, "    except:{}", list(st, &except, 6));
    }
}

fn rule_yaml(st: &mut Rng, r: &GRule, out: &mut String) {
    let peers = |st: &mut Rng, ps: &[GPeer]| -> Vec<String> {
        ps.iter().map(|p| cidr_token(st, &p.text)).collect()
    };
    let _ = writeln!(out, "  - name: {}", r.name());
    match r {
        GRule::Within { peers: ps, .. } => {
            let ps = peers(st, ps);
            let _ = writeln!(out, "    within:{}", list(st, &ps, 6));
        }
        GRule::Edge {
            from, to, ports, ..
        } => {
            let mut lines = Vec::new();
            let from = peers(st, from);
            lines.push(format!("    from:{}", list(st, &from, 6)));
            let to = peers(st, to);
            lines.push(format!("    to:{}", list(st, &to, 6)));
            if let Some(ports) = ports {
                let ports: Vec<String> = ports.iter().map(|p| port_token(st, &p.text)).collect();
                lines.push(format!("    ports:{}", list(st, &ports, 6)));
            }
            if st.chance(20) {
                lines.reverse();
            }
            for l in lines {
                let _ = writeln!(out, "{l}");
            }
        }
    }
}

fn part_yaml(st: &mut Rng, groups: &[GGroup], rules: &[GRule], settings: Option<bool>) -> String {
    let mut out = String::new();
    if let Some(b) = settings {
        let _ = writeln!(out, "settings:\n  enforce-host: {b}");
    }
    if !groups.is_empty() || st.chance(20) {
        out.push_str("groups:\n");
        for g in groups {
            group_yaml(st, g, &mut out);
        }
    }
    if !rules.is_empty() || st.chance(20) {
        out.push_str("rules:\n");
        for r in rules {
            rule_yaml(st, r, &mut out);
        }
    }
    out
}

/// The policy's files, in merge order: (name, text).
pub fn yaml_files(gp: &GPolicy) -> Vec<(String, String)> {
    let mut st = Rng::new(gp.style);
    let gk = gp.split_groups.min(gp.groups.len());
    let rk = gp.split_rules.min(gp.rules.len());
    if gp.split == 0 {
        let text = part_yaml(&mut st, &gp.groups, &gp.rules, gp.settings);
        return vec![("policy.yaml".into(), text)];
    }
    let first = st.chance(50);
    let a = part_yaml(
        &mut st,
        &gp.groups[..gk],
        &gp.rules[..rk],
        gp.settings.filter(|_| first),
    );
    let b = part_yaml(
        &mut st,
        &gp.groups[gk..],
        &gp.rules[rk..],
        gp.settings.filter(|_| !first),
    );
    if gp.split == 1 {
        vec![("10-a.yaml".into(), a), ("20-b.yml".into(), b)]
    } else {
        vec![("policy.yaml".into(), format!("{a}---\n{b}"))]
    }
}
