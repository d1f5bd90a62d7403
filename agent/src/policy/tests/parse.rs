use ipnet::IpNet;

use crate::policy::*;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// The errors of a file that must not parse, one per line.
fn errors(text: &str) -> String {
    match parse_str("p.yaml", text) {
        Ok(f) => panic!("parsed: {f:#?}"),
        Err(e) => e.to_string(),
    }
}

fn ok(text: &str) -> PolicyFile {
    parse_str("p.yaml", text).unwrap_or_else(|e| panic!("{e}"))
}

/// Rules without positions, to compare with hand-built ones.
fn bare_rules(f: &PolicyFile) -> Vec<Rule> {
    f.rules
        .iter()
        .map(|r| Rule {
            origin: None,
            ..r.clone()
        })
        .collect()
}

const DESIGN_EXAMPLE: &str = r#"
groups:
  svc-ledger: [10.0.1.0/24, "fd00:0:1::/64"]   # short form: a list of CIDRs
  aiven:                                       # long form
    cidrs: [10.1.0.0/16]
    except: [10.1.3.0/24]
rules:
  - name: ledger-to-wallet                     # required, unique
    from: [svc-ledger]                         # group names, built-ins, or CIDRs
    to: svc-wallet                             # a single item may stand alone
    ports: [50051/tcp]
  - name: services-to-postgres
    from: [svc-ledger, svc-wallet, svc-merchant]
    to: [10.1.0.0/24]
    ports: [5432/tcp, 5400-5499/udp]
  - name: intra-namespace
    within: [svc-ledger, svc-wallet, svc-merchant]
  - name: pmtu-and-ping
    from: any
    to: any
    ports: [icmp/3:4, icmp/8, icmpv6/128, icmpv6/2]
"#;

#[test]
fn design_example() {
    let f = ok(DESIGN_EXAMPLE);
    assert_eq!(f.groups.len(), 2);
    assert_eq!(f.groups[0].name, "svc-ledger");
    assert_eq!(
        f.groups[0].cidrs,
        vec![net("10.0.1.0/24"), net("fd00:0:1::/64")]
    );
    assert!(f.groups[0].except.is_empty());
    assert_eq!(f.groups[1].cidrs, vec![net("10.1.0.0/16")]);
    assert_eq!(f.groups[1].except, vec![net("10.1.3.0/24")]);
    let origin = f.groups[1].origin.as_ref().unwrap();
    assert_eq!(origin.to_string(), "p.yaml:4:3");
    assert_eq!(origin.field, "groups.aiven");

    let g = |n: &str| Peer::Group(n.to_string());
    let services = [g("svc-ledger"), g("svc-wallet"), g("svc-merchant")];
    let expected = vec![
        Rule::new(
            "ledger-to-wallet",
            &[g("svc-ledger")],
            &[g("svc-wallet")],
            &[PortSpec::port(6, 50051)],
        ),
        Rule::new(
            "services-to-postgres",
            &services,
            &[Peer::Cidr(net("10.1.0.0/24"))],
            &[PortSpec::port(6, 5432), PortSpec::range(17, 5400, 5499)],
        ),
        Rule::within("intra-namespace", &services),
        Rule::new(
            "pmtu-and-ping",
            &[Peer::Any],
            &[Peer::Any],
            &[
                PortSpec::port(1, 0x0304),
                PortSpec::range(1, 0x0800, 0x08ff),
                PortSpec::range(58, 0x8000, 0x80ff),
                PortSpec::range(58, 0x0200, 0x02ff),
            ],
        ),
    ];
    assert_eq!(bare_rules(&f), expected);
    let o = f.rules[2].origin.as_ref().unwrap();
    assert_eq!(o.rule.field, "rules[2]");
    assert_eq!(o.from[1].to_string(), "p.yaml:17:26");
    assert_eq!(o.from[1].field, "rules[2].within[1]");
    assert_eq!(o.to, o.from);
    assert!(!f.enforce_host);
}

#[test]
fn peers_of_every_kind() {
    let f = ok("rules:
  - name: r
    from: [any, world, host, 10.0.0.5, \"fd00::/8\", web]
    to: fd00::1
");
    let r = &f.rules[0];
    assert_eq!(
        r.from,
        vec![
            Peer::Any,
            Peer::World,
            Peer::Host,
            Peer::Cidr(net("10.0.0.5/32")),
            Peer::Cidr(net("fd00::/8")),
            Peer::Group("web".into()),
        ]
    );
    assert_eq!(r.to, vec![Peer::Cidr(net("fd00::1/128"))]);
    assert!(r.ports.is_empty(), "no ports: everything");
}

#[test]
fn every_port_form_in_yaml() {
    let f = ok(r#"rules:
  - name: r
    from: any
    to: any
    ports: [8080/tcp, 30000-32767/tcp, udp, "47", sctp, 3868/sctp, icmp, icmp/8,
            icmp/3:4, icmpv6, icmpv6/128, icmpv6/1:4, any, 8080/tcp]
  - name: single
    from: any
    to: any
    ports: 53/udp
"#);
    assert_eq!(
        f.rules[0].ports,
        vec![
            PortSpec::port(6, 8080),
            PortSpec::range(6, 30000, 32767),
            PortSpec::proto(17),
            PortSpec::proto(47),
            PortSpec::proto(132),
            PortSpec::port(132, 3868),
            PortSpec::proto(1),
            PortSpec::range(1, 0x800, 0x8ff),
            PortSpec::port(1, 0x304),
            PortSpec::proto(58),
            PortSpec::range(58, 0x8000, 0x80ff),
            PortSpec::port(58, 0x104),
            PortSpec::ANY,
        ],
        "a repeated spec is kept once"
    );
    assert_eq!(f.rules[1].ports, vec![PortSpec::port(17, 53)]);
}

#[test]
fn port_errors_point_at_the_entry() {
    let text = "rules:
  - name: a
    from: any
    to: any
    ports: [443/tcp]
  - name: b
    from: any
    to: any
    ports: [443/tcp]
  - name: c
    from: any
    to: any
    ports: [53/udp, \"70000/tcp\", 8080, 0x50, 80/tpc, 9-1/udp, icmp/300, 80/icmp]
";
    let expected = [
        "p.yaml:13:21: rules[2].ports[1]: \"70000/tcp\": port must be 0-65535",
        "p.yaml:13:34: rules[2].ports[2]: 8080: a port needs its protocol: write 8080/tcp",
        "p.yaml:13:40: rules[2].ports[3]: 0x50: a port needs its protocol: write 0x50/tcp",
        "p.yaml:13:46: rules[2].ports[4]: \"80/tpc\": unknown protocol \"tpc\": expected tcp, udp, sctp, icmp, icmpv6, any or a protocol number",
        "p.yaml:13:54: rules[2].ports[5]: \"9-1/udp\": range start 9 is above its end 1",
        "p.yaml:13:63: rules[2].ports[6]: \"icmp/300\": icmp type must be 0-255 (write icmp/TYPE or icmp/TYPE:CODE)",
        "p.yaml:13:73: rules[2].ports[7]: \"80/icmp\": icmp has types, not ports: write icmp/TYPE or icmp/TYPE:CODE",
    ];
    assert_eq!(errors(text), expected.join("\n"));
}

#[test]
fn protocol_first_ports_and_colon_forms() {
    // `tcp/443` is how `explain` takes a port: the policy reads it too.
    let f = ok("rules:
  - name: r
    from: any
    to: any
    ports: [tcp/443, udp/53, 443/tcp]
");
    assert_eq!(
        f.rules[0].ports,
        vec![PortSpec::port(6, 443), PortSpec::port(17, 53)],
        "tcp/443 and 443/tcp are one port"
    );
    let text = "rules:
  - name: r
    from: any
    to: any
    ports: [tcp:53, 53:udp, tcp/70000]
";
    let expected = [
        "p.yaml:5:13: rules[0].ports[0]: \"tcp:53\": write 53/tcp",
        "p.yaml:5:21: rules[0].ports[1]: \"53:udp\": write 53/udp",
        "p.yaml:5:29: rules[0].ports[2]: \"tcp/70000\": port must be 0-65535",
    ];
    assert_eq!(errors(text), expected.join("\n"));
}

#[test]
fn the_documented_example_error() {
    // design: `policies/aiven.yaml:14:9: rules[2].ports[1]: "70000/tcp": port must be 0-65535`
    let text = "groups:
  aiven: [10.1.0.0/16]
rules:
  - name: a
    from: any
    to: aiven
  - name: b
    from: any
    to: aiven
  - name: c
    from: any
    to: aiven
    ports:
      - 5432/tcp
      - 70000/tcp
";
    let e = parse_str("policies/aiven.yaml", text).unwrap_err();
    assert_eq!(e.len(), 1);
    assert_eq!(
        e.to_string(),
        "policies/aiven.yaml:15:9: rules[2].ports[1]: \"70000/tcp\": port must be 0-65535"
    );
    let first = e.first();
    assert_eq!((first.line, first.column), (15, 9));
    assert_eq!(first.field, "rules[2].ports[1]");
}

#[test]
fn unknown_keys_everywhere() {
    let text = "grups:
  a: [10.0.0.0/8]
settings:
  enforce-hosts: true
groups:
  b:
    cidrs: [10.0.0.0/8]
    excpt: [10.1.0.0/16]
rules:
  - name: r
    from: any
    to: any
    prots: [80/tcp]
";
    let expected = [
        "p.yaml:1:1: grups: unknown key \"grups\"; did you mean \"groups\"? (expected groups, rules, settings)",
        "p.yaml:4:3: settings.enforce-hosts: unknown key \"enforce-hosts\"; did you mean \"enforce-host\"? (expected enforce-host)",
        "p.yaml:8:5: groups.b.excpt: unknown key \"excpt\"; did you mean \"except\"? (expected cidrs, except, audit, namespace, namespaces, pods)",
        "p.yaml:13:5: rules[0].prots: unknown key \"prots\"; did you mean \"ports\"? (expected name, from, to, ports, within, audit)",
    ];
    assert_eq!(errors(text), expected.join("\n"));
}

#[test]
fn repeated_keys_are_errors() {
    // A YAML map would keep only the last `ports`, silently widening the rule.
    let text = "groups:
  a: [10.0.0.0/8]
  a: [10.1.0.0/16]
rules:
  - name: r
    from: any
    to: any
    ports: [80/tcp]
    ports: [any]
";
    let expected = [
        "p.yaml:3:3: groups.a: \"a\" appears twice (first on line 2)",
        "p.yaml:9:5: rules[0].ports: \"ports\" appears twice (first on line 8)",
    ];
    assert_eq!(errors(text), expected.join("\n"));
}

#[test]
fn bad_cidrs_and_excepts() {
    let text = "groups:
  a: [10.0.1.5/24, 10.0.0.0/33, 300.0.0.0/8, fd00::1/64, 10.0.0.0/8]
  b:
    cidrs: [10.1.0.0/16, \"fd00:1::/48\"]
    except: [10.1.3.0/24, 10.2.0.0/24, \"fd00:1:0::/64\", 10.0.0.0/8]
  c: {except: [10.0.0.0/8]}
  d: 10.0.0.0
  e: [8080]
  f:
";
    let expected = [
        "p.yaml:2:7: groups.a[0]: \"10.0.1.5/24\": host bits set: the /24 containing 10.0.1.5 is 10.0.1.0/24; write that, or 10.0.1.5/32 for the one address",
        "p.yaml:2:20: groups.a[1]: \"10.0.0.0/33\": prefix length must be 0-32",
        "p.yaml:2:33: groups.a[2]: \"300.0.0.0/8\": \"300.0.0.0\" is not an IP address",
        "p.yaml:2:46: groups.a[3]: \"fd00::1/64\": host bits set: the /64 containing fd00::1 is fd00::/64; write that, or fd00::1/128 for the one address",
        "p.yaml:5:27: groups.b.except[1]: 10.2.0.0/24 is not inside any of the group's CIDRs",
        "p.yaml:5:57: groups.b.except[3]: 10.0.0.0/8 is not inside any of the group's CIDRs",
        "p.yaml:6:6: groups.c: missing \"cidrs\" (or \"namespace\"/\"namespaces\" for a selector group)",
        "p.yaml:8:7: groups.e[0]: \"8080\": \"8080\" is not an IP address or CIDR",
        "p.yaml:9:3: groups.f: expected a list of CIDRs, found nothing (null)",
    ];
    assert_eq!(errors(text), expected.join("\n"));
}

#[test]
fn group_names() {
    let text = "groups:
  any: [10.0.0.0/8]
  host: [10.0.0.0/8]
  10.0.0.0/8: [10.0.0.0/8]
  fd00::1: [fd00::1]
  ok-name: []
";
    let expected = [
        "p.yaml:2:3: groups.any: \"any\" is a built-in group and cannot be redefined",
        "p.yaml:3:3: groups.host: \"host\" is a built-in group and cannot be redefined",
        "p.yaml:4:3: groups.10.0.0.0/8: \"10.0.0.0/8\" cannot be a group name: rules would read it as a CIDR",
        "p.yaml:5:3: groups.fd00::1: \"fd00::1\" cannot be a group name: rules would read it as a CIDR",
    ];
    assert_eq!(errors(text), expected.join("\n"));
    // An empty group is allowed (a placeholder) and matches nothing.
    assert!(ok("groups:\n  empty: []\n").groups[0].cidrs.is_empty());
}

#[test]
fn rule_shape_errors() {
    let text = "rules:
  - from: any
    to: any
  - name: no-to
    from: any
  - name: both
    within: [a]
    from: any
    ports: [80/tcp]
  - name: builtin:mine
    from: any
    to: any
  - name: empty
    from: []
    to: any
    ports: []
  - name: nulls
    from:
    to: [~]
  - just-a-string
  - name: bad-peer
    from: 10.0.0.1/8
    to: [true]
";
    let expected = [
        "p.yaml:2:5: rules[0]: missing \"name\"",
        "p.yaml:4:5: rules[1]: missing \"to\" (or use \"within\")",
        "p.yaml:8:5: rules[2].from: a rule with \"within\" takes no from, to or ports",
        "p.yaml:9:5: rules[2].ports: a rule with \"within\" takes no from, to or ports",
        "p.yaml:10:11: rules[3].name: rule names starting with \"builtin:\" are reserved for the agent's own rules",
        "p.yaml:14:11: rules[4].from: an empty list matches nothing",
        "p.yaml:16:12: rules[4].ports: an empty list allows nothing; leave out \"ports\" or write [any] to allow every port",
        "p.yaml:18:5: rules[5].from: expected a group name, built-in or CIDR, or a list of them, found nothing (null)",
        "p.yaml:19:10: rules[5].to[0]: expected a group name, built-in or CIDR, found nothing (null)",
        "p.yaml:20:5: rules[6]: expected a rule (name, from, to, ports or name, within), found a string",
        "p.yaml:22:11: rules[7].from: \"10.0.0.1/8\": host bits set: the /8 containing 10.0.0.1 is 10.0.0.0/8; write that, or 10.0.0.1/32 for the one address",
        "p.yaml:23:10: rules[7].to[0]: expected a group name, built-in or CIDR, found a boolean",
    ];
    assert_eq!(errors(text), expected.join("\n"));
}

#[test]
fn top_level_shapes() {
    assert_eq!(
        ok(""),
        PolicyFile {
            name: "p.yaml".into(),
            ..PolicyFile::default()
        }
    );
    assert_eq!(ok("# only a comment\n").rules.len(), 0);
    assert_eq!(ok("groups:\nrules:\n").groups.len(), 0);
    assert_eq!(
        errors("- a\n- b\n"),
        "p.yaml:1:1: expected a mapping with groups, rules or settings, found a list"
    );
    assert_eq!(
        errors("rules: {name: x}\n"),
        "p.yaml:1:8: rules: expected a list of rules, found a mapping"
    );
    assert_eq!(
        errors("groups: [a]\n"),
        "p.yaml:1:9: groups: expected a mapping of group names to CIDR lists, found a list"
    );
}

#[test]
fn syntax_errors_have_a_position() {
    let e = errors("groups:\n  a: [10.0.0.0/8\nrules: []\n");
    assert!(e.starts_with("p.yaml:3:"), "{e}");
    assert!(e.contains("invalid YAML"), "{e}");
}

#[test]
fn settings() {
    assert!(ok("settings:\n  enforce-host: true\n").enforce_host);
    assert!(!ok("settings:\n  enforce-host: false\n").enforce_host);
    assert!(!ok("settings: {}\n").enforce_host);
    assert!(!ok("settings:\n").enforce_host);
    assert_eq!(
        errors("settings:\n  enforce-host: \"yes\"\n"),
        "p.yaml:2:17: settings.enforce-host: expected true or false, found a string"
    );
}

#[test]
fn anchors_and_several_documents() {
    let f = ok("groups:
  a: &nets [10.0.0.0/8]
  b: *nets
rules:
  - name: r
    from: &svc [a, b]
    to: *svc
---
rules:
  - name: s
    within: [a]
");
    assert_eq!(f.groups[1].cidrs, vec![net("10.0.0.0/8")]);
    assert_eq!(f.rules[0].to, f.rules[0].from);
    assert_eq!(f.rules[1].name, "s");
}

#[test]
fn audit_keys_on_groups_and_rules() {
    let f = ok("groups:
  canary:
    cidrs: [10.9.0.0/16]
    audit: true
  plain:
    cidrs: [10.8.0.0/16]
    audit: false
rules:
  - name: legacy
    from: any
    to: canary
    audit: true
  - name: intra
    within: [plain]
    audit: true
  - name: enforced
    from: any
    to: plain
");
    assert!(f.groups[0].audit && !f.groups[1].audit);
    assert!(f.rules[0].audit && f.rules[1].audit && !f.rules[2].audit);
    let e = errors(
        "groups:
  canary:
    cidrs: [10.9.0.0/16]
    audit: yes please
",
    );
    assert_eq!(
        e,
        "p.yaml:4:12: groups.canary.audit: expected true or false, found a string"
    );
}

/// Nine levels of nine aliases each: 9^9 copies of a string if expanded.
const ALIAS_BOMB: &str = r#"a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"#;

#[test]
fn alias_expansion_is_bounded_and_positioned() {
    // Line 5's sequence crosses the bound when its anchor keeps a copy: the
    // anchors and aliases of a to e copy 10 + 91 + 820 + 7381 + 66430 nodes
    // and 9 * (10 + 91 + 820 + 7381) nodes.
    assert_eq!(
        errors(ALIAS_BOMB),
        "p.yaml:5:4: invalid YAML: anchors and aliases expand to more than 100000 nodes \
         (each alias copies its anchored node, and nested aliases multiply)"
    );
    // Many small aliases: bounded by count.
    let many = format!("x: &x 1\ny: [{}]\n", vec!["*x"; 1001].join(","));
    let e = errors(&many);
    assert!(e.starts_with("p.yaml:2:"), "{e}");
    assert!(e.ends_with("invalid YAML: more than 1000 aliases"), "{e}");
    // Few aliases of a long string: bounded by text.
    let long = format!("x: &x \"{}\"\ny: [*x,*x,*x,*x,*x]\n", "a".repeat(300_000));
    let e = errors(&long);
    assert!(
        e.contains("expand to more than 1048576 bytes of text"),
        "{e}"
    );
}

#[test]
fn aliases_within_the_bounds_still_work() {
    let f = ok(
        "groups:\n  web: &web [10.0.0.0/8]\n  also-web: *web\nrules:\n  - name: r\n    from: web\n    to: also-web\n    ports: &p [443/tcp]\n  - name: s\n    from: also-web\n    to: web\n    ports: *p\n",
    );
    assert_eq!(f.groups.len(), 2);
    assert_eq!(f.groups[1].cidrs, vec![net("10.0.0.0/8")]);
    assert_eq!(f.rules[1].ports, f.rules[0].ports);
}

#[test]
fn nesting_is_bounded_before_the_stack_is() {
    // Block sequences nest as deep as the line is long; flow ones too.
    let block = format!("rules:\n{}x\n", "- ".repeat(300_000));
    assert_eq!(
        errors(&block),
        "p.yaml:2:255: invalid YAML: nested deeper than 128 levels"
    );
    let flow = format!("rules: {}{}\n", "[".repeat(200), "]".repeat(200));
    assert!(
        errors(&flow).contains("nested deeper than 128 levels"),
        "{}",
        errors(&flow)
    );
}
