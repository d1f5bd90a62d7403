use std::net::IpAddr;

use agent_common::{
    id_flag_dst, id_flag_src, PROTO_CLASS_ICMP, PROTO_CLASS_TCP, PROTO_CLASS_UDP, RULE_PREFIX_FULL,
    RULE_PREFIX_IDS, RULE_PREFIX_PROTO,
};
use ipnet::IpNet;

use crate::policy::*;

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| net(s)).collect()
}

fn group(name: &str, cidrs: &[&str], except: &[&str]) -> Group {
    Group::new(name, &nets(cidrs), &nets(except))
}

fn g(name: &str) -> Peer {
    Peer::Group(name.to_string())
}

fn policy(groups: Vec<Group>, rules: Vec<Rule>) -> Policy {
    Policy {
        groups,
        rules,
        enforce_host: false,
        ..Policy::default()
    }
}

fn compiled(p: &Policy) -> Compiled {
    compile(p, &CompileOptions::default()).unwrap()
}

/// The rule name allowing the packet, if any.
fn verdict<'c>(c: &'c Compiled, src: &str, dst: &str, proto: u8, port: u16) -> Option<&'c str> {
    evaluate(c, ip(src), ip(dst), proto, port).map(|id| c.rule_names[id as usize].as_str())
}

fn groups_of(c: &Compiled, addr: &str) -> Vec<String> {
    let id = identity_of(c, ip(addr)).unwrap().id;
    c.identity(id).unwrap().groups.to_vec()
}

#[test]
fn overlapping_groups_get_the_rules_of_both() {
    let p = policy(
        vec![
            group("a", &["10.0.0.0/8"], &[]),
            group("b", &["10.1.0.0/16"], &[]),
        ],
        vec![
            Rule::new("a-out", &[g("a")], &[Peer::Any], &[PortSpec::port(TCP, 80)]),
            Rule::new(
                "b-out",
                &[g("b")],
                &[Peer::Any],
                &[PortSpec::port(TCP, 443)],
            ),
            Rule::new(
                "literal",
                &[Peer::Cidr(net("10.1.2.0/24"))],
                &[Peer::Any],
                &[PortSpec::port(TCP, 22)],
            ),
        ],
    );
    let c = compiled(&p);
    let ids: Vec<(u32, Vec<&str>)> = c
        .identities
        .iter()
        .map(|i| (i.id, i.groups.iter().map(String::as_str).collect()))
        .collect();
    assert_eq!(
        ids,
        vec![
            (1, vec!["world"]),
            (2, vec!["10.1.2.0/24", "a", "b"]),
            (3, vec!["a"]),
            (4, vec!["a", "b"]),
        ]
    );
    let dst = "192.0.2.1";
    // In b, hence in a too: both rules.
    assert_eq!(verdict(&c, "10.1.9.9", dst, TCP, 80), Some("a-out"));
    assert_eq!(verdict(&c, "10.1.9.9", dst, TCP, 443), Some("b-out"));
    assert_eq!(verdict(&c, "10.1.9.9", dst, TCP, 22), None);
    // A more specific prefix inside both still gets their rules, and its own.
    assert_eq!(verdict(&c, "10.1.2.3", dst, TCP, 80), Some("a-out"));
    assert_eq!(verdict(&c, "10.1.2.3", dst, TCP, 443), Some("b-out"));
    assert_eq!(verdict(&c, "10.1.2.3", dst, TCP, 22), Some("literal"));
    // In a only.
    assert_eq!(verdict(&c, "10.2.0.1", dst, TCP, 80), Some("a-out"));
    assert_eq!(verdict(&c, "10.2.0.1", dst, TCP, 443), None);
    // In neither.
    assert_eq!(verdict(&c, "11.0.0.1", dst, TCP, 80), None);
}

#[test]
fn excepts_carve_a_hole() {
    let p = policy(
        vec![
            group("svc", &["10.0.1.0/24"], &[]),
            group("aiven", &["10.1.0.0/16"], &["10.1.3.0/24"]),
            group("inner", &["10.1.3.128/25"], &[]),
        ],
        vec![
            Rule::new(
                "to-aiven",
                &[g("svc")],
                &[g("aiven")],
                &[PortSpec::port(TCP, 5432)],
            ),
            Rule::new(
                "to-world",
                &[g("svc")],
                &[Peer::World],
                &[PortSpec::port(TCP, 443)],
            ),
        ],
    );
    let c = compiled(&p);
    assert_eq!(
        verdict(&c, "10.0.1.1", "10.1.4.5", TCP, 5432),
        Some("to-aiven")
    );
    assert_eq!(
        verdict(&c, "10.0.1.1", "10.1.3.5", TCP, 5432),
        None,
        "in the hole"
    );
    assert_eq!(
        verdict(&c, "10.0.1.1", "10.1.3.200", TCP, 5432),
        None,
        "in the hole, in another group"
    );
    // The hole is in no user group: it is world again; `inner` is not.
    assert_eq!(groups_of(&c, "10.1.3.5"), ["world"]);
    assert_eq!(groups_of(&c, "10.1.3.200"), ["inner"]);
    assert_eq!(
        verdict(&c, "10.0.1.1", "10.1.3.5", TCP, 443),
        Some("to-world")
    );
    assert_eq!(verdict(&c, "10.0.1.1", "10.1.3.200", TCP, 443), None);
    assert_eq!(verdict(&c, "10.0.1.1", "10.1.4.5", TCP, 443), None);
}

#[test]
fn world_is_not_any() {
    let p = policy(
        vec![
            group("svc", &["10.0.1.0/24", "fd00:0:1::/64"], &[]),
            group("other", &["10.0.2.0/24"], &[]),
        ],
        vec![
            Rule::new(
                "from-world",
                &[Peer::World],
                &[g("svc")],
                &[PortSpec::port(TCP, 80)],
            ),
            Rule::new(
                "from-any",
                &[Peer::Any],
                &[g("svc")],
                &[PortSpec::port(TCP, 443)],
            ),
            // A literal CIDR does not take its addresses out of `world`.
            Rule::new(
                "literal",
                &[Peer::Cidr(net("8.8.8.0/24"))],
                &[g("svc")],
                &[PortSpec::port(TCP, 22)],
            ),
        ],
    );
    let opts = CompileOptions {
        host_addrs: vec![ip("192.168.1.1")],
        enforce_host: true,
        node_cidrs: Vec::new(),
    };
    let c = compile(&p, &opts).unwrap();
    let svc = "10.0.1.5";
    assert_eq!(verdict(&c, "203.0.113.1", svc, TCP, 80), Some("from-world"));
    assert_eq!(verdict(&c, "8.8.8.8", svc, TCP, 80), Some("from-world"));
    assert_eq!(verdict(&c, "8.8.8.8", svc, TCP, 22), Some("literal"));
    assert_eq!(groups_of(&c, "8.8.8.8"), ["8.8.8.0/24", "world"]);
    assert_eq!(
        verdict(&c, "10.0.2.1", svc, TCP, 80),
        None,
        "in a user group"
    );
    assert_eq!(verdict(&c, svc, svc, TCP, 80), None);
    assert_eq!(
        verdict(&c, "192.168.1.1", svc, TCP, 80),
        None,
        "host is not world"
    );
    assert_eq!(groups_of(&c, "192.168.1.1"), ["host", "nodes"]);
    for src in ["203.0.113.1", "10.0.2.1", svc, "192.168.1.1"] {
        assert_eq!(verdict(&c, src, svc, TCP, 443), Some("from-any"), "{src}");
    }
    assert_eq!(
        verdict(&c, "2001:db8::1", "fd00:0:1::5", TCP, 80),
        Some("from-world")
    );
}

#[test]
fn host_rules_unless_enforced() {
    let p = policy(
        vec![
            group("workers", &["10.9.0.0/16"], &[]),
            group("svc", &["10.0.1.0/24"], &[]),
        ],
        vec![Rule::new(
            "workers-to-svc",
            &[g("workers")],
            &[g("svc")],
            &[PortSpec::port(TCP, 10250)],
        )],
    );
    let host_addrs = vec![ip("10.9.9.9"), ip("fd00::9")];
    let open = compile(
        &p,
        &CompileOptions {
            host_addrs: host_addrs.clone(),
            enforce_host: false,
            node_cidrs: Vec::new(),
        },
    )
    .unwrap();
    assert_eq!(
        open.rule_names,
        [
            "",
            "workers-to-svc",
            HOST_INGRESS_RULE,
            HOST_EGRESS_RULE,
            NODE_ENCAP_RULE
        ]
    );
    assert_eq!(groups_of(&open, "10.9.9.9"), ["host", "nodes", "workers"]);
    assert_eq!(groups_of(&open, "fd00::9"), ["host", "nodes"]);
    assert_eq!(
        verdict(&open, "203.0.113.1", "10.9.9.9", 50, 0),
        Some(HOST_INGRESS_RULE)
    );
    assert_eq!(
        verdict(&open, "203.0.113.1", "10.9.9.9", 47, 0),
        None,
        "GRE only from nodes"
    );
    assert_eq!(
        verdict(&open, "10.9.9.9", "203.0.113.1", UDP, 53),
        Some(HOST_EGRESS_RULE)
    );
    assert_eq!(
        verdict(&open, "2001:db8::1", "fd00::9", TCP, 22),
        Some(HOST_INGRESS_RULE)
    );
    assert_eq!(
        verdict(&open, "10.9.9.9", "10.0.1.1", TCP, 10250),
        Some("workers-to-svc"),
        "more specific entry"
    );
    assert_eq!(
        verdict(&open, "10.9.9.8", "10.0.1.1", TCP, 22),
        None,
        "other nodes are not host"
    );

    for (opt, setting) in [(true, false), (false, true)] {
        let p = Policy {
            enforce_host: setting,
            ..p.clone()
        };
        let c = compile(
            &p,
            &CompileOptions {
                host_addrs: host_addrs.clone(),
                enforce_host: opt,
                node_cidrs: Vec::new(),
            },
        )
        .unwrap();
        assert_eq!(c.rule_names, ["", "workers-to-svc"]);
        assert_eq!(verdict(&c, "203.0.113.1", "10.9.9.9", TCP, 22), None);
        assert_eq!(verdict(&c, "10.9.9.9", "203.0.113.1", UDP, 53), None);
        assert_eq!(
            verdict(&c, "10.9.9.9", "10.0.1.1", TCP, 10250),
            Some("workers-to-svc")
        );
    }
}

#[test]
fn host_peer() {
    let p = policy(
        vec![group("svc", &["10.0.1.0/24"], &[])],
        vec![Rule::new(
            "kubelet-probes",
            &[Peer::Host],
            &[g("svc")],
            &[PortSpec::port(TCP, 8080)],
        )],
    );
    let opts = CompileOptions {
        host_addrs: vec![ip("10.0.0.10")],
        enforce_host: true,
        node_cidrs: Vec::new(),
    };
    let c = compile(&p, &opts).unwrap();
    assert_eq!(
        verdict(&c, "10.0.0.10", "10.0.1.5", TCP, 8080),
        Some("kubelet-probes")
    );
    assert_eq!(verdict(&c, "10.0.0.11", "10.0.1.5", TCP, 8080), None);
}

fn entries_of(c: &Compiled) -> Vec<(u32, u8, u16)> {
    c.rules
        .iter()
        .map(|(len, k, _)| (*len, k.proto, u16::from_be_bytes(k.port)))
        .collect()
}

fn one_rule(ports: &[PortSpec]) -> Compiled {
    let p = policy(
        vec![
            group("a", &["10.0.0.0/8"], &[]),
            group("b", &["11.0.0.0/8"], &[]),
        ],
        vec![Rule::new("r", &[g("a")], &[g("b")], ports)],
    );
    compiled(&p)
}

#[test]
fn port_ranges_become_masked_ports() {
    let c = one_rule(&[PortSpec::range(TCP, 30000, 32767)]);
    assert_eq!(
        entries_of(&c),
        vec![
            (RULE_PREFIX_FULL - 4, TCP, 30000),
            (RULE_PREFIX_FULL - 6, TCP, 30016),
            (RULE_PREFIX_FULL - 7, TCP, 30080),
            (RULE_PREFIX_FULL - 9, TCP, 30208),
            (RULE_PREFIX_FULL - 11, TCP, 30720)
        ]
    );
    for (port, ok) in [
        (29999, false),
        (30000, true),
        (30015, true),
        (30016, true),
        (31000, true),
        (32767, true),
        (32768, false),
    ] {
        assert_eq!(
            verdict(&c, "10.0.0.1", "11.0.0.1", TCP, port).is_some(),
            ok,
            "{port}"
        );
    }
    assert_eq!(verdict(&c, "10.0.0.1", "11.0.0.1", UDP, 31000), None);
    assert_eq!(
        verdict(&c, "11.0.0.1", "10.0.0.1", TCP, 31000),
        None,
        "direction"
    );

    let c = one_rule(&[PortSpec::range(UDP, 0, 65535)]);
    assert_eq!(entries_of(&c), vec![(RULE_PREFIX_PROTO, UDP, 0)]);
    assert!(verdict(&c, "10.0.0.1", "11.0.0.1", UDP, 65535).is_some());

    let c = one_rule(&[PortSpec::port(TCP, 8080)]);
    assert_eq!(entries_of(&c), vec![(RULE_PREFIX_FULL, TCP, 8080)]);
    assert!(verdict(&c, "10.0.0.1", "11.0.0.1", TCP, 8081).is_none());

    let c = one_rule(&[PortSpec::proto(132)]);
    assert_eq!(entries_of(&c), vec![(RULE_PREFIX_PROTO, 132, 0)]);
    assert!(verdict(&c, "10.0.0.1", "11.0.0.1", 132, 3868).is_some());

    let c = one_rule(&[]);
    assert_eq!(entries_of(&c), vec![(RULE_PREFIX_IDS, 0, 0)]);
    assert!(verdict(&c, "10.0.0.1", "11.0.0.1", 47, 0).is_some());
}

#[test]
fn icmp_types_and_codes() {
    let c = one_rule(&[
        PortSpec::range(ICMP, 0x0800, 0x08ff),
        PortSpec::port(ICMP, 0x0304),
    ]);
    assert_eq!(
        entries_of(&c),
        vec![
            (RULE_PREFIX_FULL, ICMP, 0x0304),
            (RULE_PREFIX_FULL - 8, ICMP, 0x0800)
        ]
    );
    let icmp =
        |ty: u16, code: u16| verdict(&c, "10.0.0.1", "11.0.0.1", ICMP, ty << 8 | code).is_some();
    assert!(icmp(8, 0));
    assert!(icmp(8, 5));
    assert!(icmp(3, 4));
    assert!(!icmp(3, 3));
    assert!(!icmp(9, 0));
    assert!(!icmp(0, 0));
    assert!(
        verdict(&c, "10.0.0.1", "11.0.0.1", 58, 0x0800).is_none(),
        "not ICMPv6"
    );
}

#[test]
fn identity_flags_follow_the_entries() {
    let c = one_rule(&[PortSpec::port(TCP, 80), PortSpec::proto(UDP)]);
    let flags = |a: &str| identity_of(&c, ip(a)).unwrap().flags;
    let both = |f: fn(u32) -> u32| f(PROTO_CLASS_TCP) | f(PROTO_CLASS_UDP);
    assert_eq!(flags("10.0.0.1"), both(id_flag_src));
    assert_eq!(flags("11.0.0.1"), both(id_flag_dst));
    assert_eq!(flags("12.0.0.1"), 0);

    let c = one_rule(&[]);
    let flags = identity_of(&c, ip("10.0.0.1")).unwrap().flags;
    assert_eq!(flags, 0b11_1111, "any protocol: every class as a source");
    let flags = identity_of(&c, ip("11.0.0.1")).unwrap().flags;
    assert_eq!(flags, 0b11_1111 << 8);

    let c = one_rule(&[PortSpec::port(ICMP, 0x0304)]);
    assert_eq!(
        identity_of(&c, ip("10.0.0.1")).unwrap().flags,
        id_flag_src(PROTO_CLASS_ICMP)
    );
}

#[test]
fn within_is_each_group_to_itself() {
    let p = policy(
        vec![
            group("a", &["10.0.1.0/24"], &[]),
            group("b", &["10.0.2.0/24"], &[]),
        ],
        vec![Rule::within("intra", &[g("a"), g("b")])],
    );
    let c = compiled(&p);
    assert_eq!(verdict(&c, "10.0.1.1", "10.0.1.2", TCP, 1), Some("intra"));
    assert_eq!(verdict(&c, "10.0.2.1", "10.0.2.2", 47, 0), Some("intra"));
    assert_eq!(verdict(&c, "10.0.1.1", "10.0.2.2", TCP, 1), None);
    assert_eq!(verdict(&c, "10.0.2.1", "10.0.1.2", TCP, 1), None);
}

#[test]
fn ipv6_and_shared_identities() {
    let p = policy(
        vec![
            group("dual", &["10.0.1.0/24", "fd00:0:1::/64"], &[]),
            group("v6only", &["fd00:0:2::/64"], &["fd00:0:2::/120"]),
        ],
        vec![Rule::new(
            "r",
            &[g("dual")],
            &[g("v6only")],
            &[PortSpec::port(TCP, 443)],
        )],
    );
    let c = compiled(&p);
    assert_eq!(
        identity_of(&c, ip("10.0.1.1")),
        identity_of(&c, ip("fd00:0:1::1")),
        "one id per group set"
    );
    assert_eq!(
        verdict(&c, "fd00:0:1::1", "fd00:0:2::1:1", TCP, 443),
        Some("r")
    );
    assert_eq!(
        verdict(&c, "fd00:0:1::1", "fd00:0:2::ff", TCP, 443),
        None,
        "except"
    );
    assert_eq!(
        verdict(&c, "10.0.1.1", "fd00:0:2::1:1", TCP, 443),
        Some("r"),
        "identities, not families"
    );
    assert!(c
        .ids_v4
        .iter()
        .any(|(n, v)| n.to_string() == "0.0.0.0/0" && v.id == 1));
    assert!(c
        .ids_v6
        .iter()
        .any(|(n, v)| n.to_string() == "::/0" && v.id == 1));
}

#[test]
fn always_has_default_routes() {
    let c = compiled(&Policy::default());
    assert_eq!(c.ids_v4.len(), 1);
    assert_eq!(c.ids_v6.len(), 1);
    assert_eq!(
        c.identities,
        vec![IdentityInfo {
            id: 1,
            groups: ["world".to_string()].into()
        }]
    );
    assert!(
        c.rules.is_empty(),
        "no host addresses: the host rules have nothing to match"
    );
    assert_eq!(
        c.rule_names,
        ["", HOST_INGRESS_RULE, HOST_EGRESS_RULE, NODE_ENCAP_RULE]
    );
    assert_eq!(verdict(&c, "1.1.1.1", "2.2.2.2", TCP, 1), None);

    // A group covering everything leaves no plain `world` identity.
    let p = policy(vec![group("all", &["0.0.0.0/0"], &[])], vec![]);
    let c = compiled(&p);
    assert_eq!(c.ids_v4.len(), 1);
    assert_eq!(groups_of(&c, "1.1.1.1"), ["all"]);
    assert_eq!(groups_of(&c, "::1"), ["world"]);
}

#[test]
fn redundant_prefixes_stay_out_of_the_maps() {
    // 10.1.0.0/16 is in both a and b, like the rest of 10.0.0.0/8.
    let p = policy(
        vec![
            group("a", &["10.0.0.0/8"], &[]),
            group("b", &["10.0.0.0/8", "10.1.0.0/16"], &[]),
        ],
        vec![],
    );
    let c = compiled(&p);
    let v4: Vec<String> = c.ids_v4.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(v4, ["0.0.0.0/0", "10.0.0.0/8"]);
}

#[test]
fn duplicate_entries_keep_the_first_rule() {
    let p = policy(
        vec![group("a", &["10.0.0.0/8"], &[])],
        vec![
            Rule::new("first", &[g("a")], &[Peer::Any], &[PortSpec::port(TCP, 80)]),
            Rule::new(
                "second",
                &[g("a")],
                &[Peer::Any],
                &[PortSpec::port(TCP, 80), PortSpec::port(TCP, 81)],
            ),
        ],
    );
    let c = compiled(&p);
    // Two destination identities (a, world) times ports 80 and 81.
    assert_eq!(c.rules.len(), 4);
    assert_eq!(verdict(&c, "10.0.0.1", "1.1.1.1", TCP, 80), Some("first"));
    assert_eq!(verdict(&c, "10.0.0.1", "1.1.1.1", TCP, 81), Some("second"));
    assert!(c.rules.iter().all(|(_, _, v)| v.flags == 0));
}

#[test]
fn deterministic() {
    let groups = vec![
        group("c", &["10.0.0.0/8", "fd00::/16"], &["10.5.0.0/16"]),
        group("a", &["10.1.0.0/16"], &[]),
        group("b", &["10.1.2.0/24", "fd00:1::/32"], &[]),
    ];
    let rules = vec![
        Rule::new(
            "r1",
            &[g("a"), Peer::World],
            &[g("b"), Peer::Cidr(net("192.0.2.0/24"))],
            &[PortSpec::range(TCP, 1000, 2000)],
        ),
        Rule::within("r2", &[g("c"), g("b")]),
    ];
    let opts = CompileOptions {
        host_addrs: vec![ip("10.1.2.3"), ip("fd00::1")],
        enforce_host: false,
        node_cidrs: Vec::new(),
    };
    let one = compile(&policy(groups.clone(), rules.clone()), &opts).unwrap();
    assert_eq!(
        one,
        compile(&policy(groups.clone(), rules.clone()), &opts).unwrap()
    );
    // Group order does not matter; rule order decides rule ids only.
    let mut shuffled = groups;
    shuffled.reverse();
    let two = compile(&policy(shuffled, rules), &opts).unwrap();
    assert_eq!(one, two);
    let mut sorted = one.rules.clone();
    sorted.sort_by_key(|(len, k, _)| (*k, *len));
    assert_eq!(sorted, one.rules);
    let ids: Vec<u32> = one.identities.iter().map(|i| i.id).collect();
    assert_eq!(ids, (1..=one.identities.len() as u32).collect::<Vec<_>>());
}

#[test]
fn hand_built_policies_are_checked() {
    let p = policy(
        vec![],
        vec![Rule::new("r", &[g("nope")], &[Peer::Any], &[])],
    );
    assert_eq!(
        compile(&p, &CompileOptions::default()).unwrap_err(),
        CompileError::UnknownGroup {
            rule: "r".into(),
            group: "nope".into()
        }
    );
    let p = policy(vec![group("world", &[], &[])], vec![]);
    assert!(matches!(
        compile(&p, &CompileOptions::default()),
        Err(CompileError::BadGroup { .. })
    ));
    let bad = PortSpec {
        proto: Some(TCP),
        range: Some((9, 1)),
    };
    let p = policy(
        vec![],
        vec![Rule::new("r", &[Peer::Any], &[Peer::Any], &[bad])],
    );
    assert!(matches!(
        compile(&p, &CompileOptions::default()),
        Err(CompileError::BadRule { .. })
    ));
}

#[test]
fn audit_only_groups_flag_their_identities() {
    let mut canary = group("canary", &["10.9.0.0/16"], &[]);
    canary.audit = true;
    let p = policy(
        vec![group("a", &["10.0.1.0/24"], &[]), canary],
        vec![Rule::new(
            "r",
            &[g("a")],
            &[g("a")],
            &[PortSpec::port(TCP, 80)],
        )],
    );
    let c = compiled(&p);
    let flags = |addr: &str| {
        let id = identity_of(&c, ip(addr)).unwrap();
        id.flags
    };
    let audit = agent_common::ID_FLAG_AUDIT;
    let any = agent_common::ID_FLAG_ANY_AUDIT;
    assert_eq!(flags("10.9.1.1") & (audit | any), audit | any);
    // Every identity knows some group is audit-only; only canary's is one.
    assert_eq!(flags("10.0.1.1") & (audit | any), any);
    assert_eq!(flags("192.0.2.1") & (audit | any), any);
    // Without audit groups, neither flag.
    let plain = compiled(&policy(vec![group("a", &["10.0.1.0/24"], &[])], vec![]));
    let id = identity_of(&plain, ip("10.0.1.1")).unwrap();
    assert_eq!(id.flags & (audit | any), 0);
}

#[test]
fn an_enforcing_rule_takes_entries_from_an_audit_only_rule() {
    let mut legacy = Rule::new("legacy-any", &[Peer::Any], &[g("a")], &[]);
    legacy.audit = true;
    let p = policy(
        vec![
            group("a", &["10.0.1.0/24"], &[]),
            group("b", &["10.0.2.0/24"], &[]),
        ],
        vec![
            legacy,
            Rule::new("b-to-a", &[g("b")], &[g("a")], &[PortSpec::port(TCP, 80)]),
        ],
    );
    let c = compiled(&p);
    // Ids: 0 is never a rule, then the file's rules, then the built-in host rules.
    assert_eq!(c.rule_audit[..3], [false, true, false]);
    assert!(c.rule_audit[3..].iter().all(|a| !a));
    // What only the audit rule allows stays credited to it (and flagged)...
    assert_eq!(
        verdict(&c, "10.0.2.5", "10.0.1.5", TCP, 81),
        Some("legacy-any")
    );
    // ...what an enforcing rule also allows is credited to that rule.
    assert_eq!(verdict(&c, "10.0.2.5", "10.0.1.5", TCP, 80), Some("b-to-a"));
    let audit_entries = c
        .rules
        .iter()
        .filter(|(_, _, v)| v.flags & agent_common::RULE_FLAG_AUDIT != 0)
        .count();
    assert!(audit_entries > 0);
    assert!(c
        .rules
        .iter()
        .all(|(_, _, v)| (v.flags & agent_common::RULE_FLAG_AUDIT != 0) == (v.rule_id == 1)));
}

/// The policy files `texts` (name, text) merged and compiled with the node's
/// addresses `host`.
fn from_files(texts: &[(&str, &str)], host: &[&str]) -> Compiled {
    let files = texts
        .iter()
        .map(|(n, t)| parse_str(n, t).unwrap())
        .collect();
    let opts = CompileOptions {
        host_addrs: host.iter().map(|h| ip(h)).collect(),
        enforce_host: false,
        node_cidrs: Vec::new(),
    };
    compile(&merge(files).unwrap(), &opts).unwrap()
}

#[test]
fn the_content_hash_names_what_is_enforced_not_how_it_was_written() {
    let groups =
        "groups:\n  a: [10.0.1.0/24]\n  b: [10.0.2.0/24, \"fd00::/64\"]\n  c: [10.0.3.0/24]\n";
    let rules = "rules:\n  - name: a-to-b\n    from: a\n    to: b\n    ports: [443/tcp]\n  - name: c-to-a\n    from: c\n    to: a\n";
    let reordered_groups =
        "groups:\n  c: [10.0.3.0/24]\n  b: [10.0.2.0/24, \"fd00::/64\"]\n  a: [10.0.1.0/24]\n";
    let reordered_rules = "rules:\n  - name: c-to-a\n    from: c\n    to: a\n  - name: a-to-b\n    from: a\n    to: b\n    ports: [443/tcp]\n";
    let one = from_files(&[("g.yaml", groups), ("r.yaml", rules)], &["192.168.0.1"]);
    let hash = one.content_hash();
    assert_eq!(hash.len(), 16);
    assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{hash}");
    // Other files, another order, another node: the same policy.
    let two = from_files(
        &[("0.yaml", reordered_rules), ("1.yaml", reordered_groups)],
        &["192.168.0.2", "10.0.1.7"],
    );
    assert_ne!(one.ids_v4, two.ids_v4, "the node's addresses differ");
    assert_eq!(
        two.content_hash(),
        hash,
        "{}\n---\n{}",
        one.canonical_text(),
        two.canonical_text()
    );
    // Another port, another group address, another rule name: another hash.
    for (what, g, r) in [
        ("port", groups, rules.replace("443/tcp", "444/tcp")),
        (
            "cidr",
            &groups.replace("10.0.3.0/24", "10.0.4.0/24") as &str,
            rules.to_owned(),
        ),
        ("name", groups, rules.replace("a-to-b", "a-to-b2")),
    ] {
        let other = from_files(&[("g.yaml", g), ("r.yaml", &r)], &["192.168.0.1"]);
        assert_ne!(other.content_hash(), hash, "{what}");
    }
}

/// The node of the encapsulation tests: 10.9.9.9 and fd00::9, in a cluster
/// whose nodes are 10.8.0.0/16 and fd00:8::/64.
fn encap_opts(enforce_host: bool) -> CompileOptions {
    CompileOptions {
        host_addrs: vec![ip("10.9.9.9"), ip("fd00::9")],
        enforce_host,
        node_cidrs: nets(&["10.8.0.0/16", "fd00:8::/64"]),
    }
}

/// Every tunnel the kernel decapsulates, as (protocol, port).
const ENCAP: [(u8, u16); 6] = [
    (UDP, 4789),
    (UDP, 8472),
    (UDP, 6081),
    (4, 0),
    (41, 0),
    (47, 0),
];

#[test]
fn encapsulation_to_host_only_from_nodes() {
    let p = policy(vec![group("svc", &["10.0.1.0/24"], &[])], Vec::new());
    let c = compile(&p, &encap_opts(false)).unwrap();
    let hi = c
        .rule_names
        .iter()
        .position(|n| n == HOST_INGRESS_RULE)
        .unwrap() as u32;
    for (proto, port) in ENCAP {
        for world in ["203.0.113.1", "10.0.1.5"] {
            assert_eq!(
                verdict(&c, world, "10.9.9.9", proto, port),
                None,
                "{world} {proto}/{port}"
            );
            assert_eq!(
                refusing_rule(&c, ip(world), ip("10.9.9.9"), proto, port),
                Some(hi)
            );
        }
        assert_eq!(verdict(&c, "2001:db8::1", "fd00::9", proto, port), None);
        for node in ["10.8.3.4", "10.9.9.9"] {
            assert_eq!(
                verdict(&c, node, "10.9.9.9", proto, port),
                Some(NODE_ENCAP_RULE),
                "{node} {proto}/{port}"
            );
        }
        assert_eq!(
            verdict(&c, "fd00:8::4", "fd00::9", proto, port),
            Some(NODE_ENCAP_RULE)
        );
        // Only traffic to the node is concerned.
        assert_eq!(
            verdict(&c, "10.9.9.9", "203.0.113.1", proto, port),
            Some(HOST_EGRESS_RULE)
        );
    }
    // Everything else still reaches the node from anywhere.
    for (proto, port) in [
        (UDP, 4788),
        (UDP, 4790),
        (UDP, 53),
        (UDP, 8471),
        (TCP, 4789),
        (50, 0),
    ] {
        assert_eq!(
            verdict(&c, "203.0.113.1", "10.9.9.9", proto, port),
            Some(HOST_INGRESS_RULE),
            "{proto}/{port}"
        );
    }
    // Deny entries are exactly the six shapes per (source, host) pair that
    // is not `nodes`.
    let denies: Vec<_> = c
        .rules
        .iter()
        .filter(|(_, _, v)| v.flags & agent_common::RULE_FLAG_DENY != 0)
        .collect();
    assert!(denies.iter().all(|(_, _, v)| v.rule_id == hi));
    let sources = c
        .identities
        .iter()
        .filter(|i| !i.groups.iter().any(|g| g == "nodes"))
        .count();
    assert_eq!(denies.len(), sources * 6);

    // `--enforce-host` adds no built-in rule at all: nothing passes.
    let c = compile(&p, &encap_opts(true)).unwrap();
    assert_eq!(c.rule_names, [""]);
    assert_eq!(verdict(&c, "10.8.3.4", "10.9.9.9", UDP, 4789), None);
    assert!(c.rules.iter().all(|(_, _, v)| v.flags == 0));
}

#[test]
fn an_operator_rule_for_a_tunnel_port_wins() {
    let partner = group("partner", &["198.51.100.0/24"], &[]);
    let rules = vec![
        Rule::new(
            "partner-vxlan",
            &[g("partner")],
            &[Peer::Host],
            &[PortSpec::port(UDP, 4789)],
        ),
        Rule::new(
            "partner-udp",
            &[g("partner")],
            &[Peer::Host],
            &[PortSpec::proto(UDP)],
        ),
        Rule::new(
            "world-gre",
            &[Peer::World],
            &[Peer::Host],
            &[PortSpec::proto(47)],
        ),
        Rule {
            audit: true,
            ..Rule::new("audit-ipip", &[g("partner")], &[Peer::Any], &[])
        },
    ];
    let c = compile(&policy(vec![partner], rules), &encap_opts(false)).unwrap();
    let (p, w) = ("198.51.100.7", "203.0.113.1");
    assert_eq!(verdict(&c, p, "10.9.9.9", UDP, 4789), Some("partner-vxlan"));
    assert_eq!(verdict(&c, p, "10.9.9.9", UDP, 8472), Some("partner-udp"));
    assert_eq!(verdict(&c, w, "10.9.9.9", 47, 0), Some("world-gre"));
    // host-ingress holds (partner, host) /72 over the audit-only rule, yet
    // the audit rule allows IP-in-IP from partner: it answers, not a deny.
    assert_eq!(verdict(&c, p, "10.9.9.9", 4, 0), Some("audit-ipip"));
    assert_eq!(verdict(&c, w, "10.9.9.9", UDP, 4789), None);
    assert_eq!(verdict(&c, w, "10.9.9.9", 4, 0), None);
    // Elsewhere the enforcing built-in keeps the entry it took.
    assert_eq!(verdict(&c, p, "10.9.9.9", TCP, 22), Some(HOST_INGRESS_RULE));
}

#[test]
fn nodes_is_a_group_that_leaves_world_alone() {
    let p = policy(
        vec![group("svc", &["10.0.1.0/24"], &[])],
        vec![
            Rule::new(
                "kubelet",
                &[Peer::Nodes],
                &[g("svc")],
                &[PortSpec::port(TCP, 10250)],
            ),
            Rule::new(
                "web",
                &[Peer::World],
                &[g("svc")],
                &[PortSpec::port(TCP, 80)],
            ),
        ],
    );
    let c = compile(&p, &encap_opts(false)).unwrap();
    assert_eq!(
        verdict(&c, "10.8.3.4", "10.0.1.5", TCP, 10250),
        Some("kubelet")
    );
    assert_eq!(
        verdict(&c, "10.9.9.9", "10.0.1.5", TCP, 10250),
        Some("kubelet")
    );
    assert_eq!(verdict(&c, "203.0.113.1", "10.0.1.5", TCP, 10250), None);
    // A node prefix is still `world` to a rule that names world.
    assert_eq!(verdict(&c, "10.8.3.4", "10.0.1.5", TCP, 80), Some("web"));
    assert_eq!(groups_of(&c, "10.8.3.4"), ["nodes", "world"]);
}

#[test]
fn nodes_is_reserved() {
    let text =
        "groups:\n  nodes: [10.0.0.0/8]\nrules:\n  - name: r\n    from: nodes\n    to: any\n";
    let err = parse_str("p.yaml", text).unwrap_err().to_string();
    assert!(
        err.contains("p.yaml:2:3") && err.contains("built-in group"),
        "{err}"
    );
    let ok = parse_str(
        "p.yaml",
        "rules:\n  - name: r\n    from: nodes\n    to: host\n",
    )
    .unwrap();
    assert_eq!(ok.rules[0].from, [Peer::Nodes]);
}

#[test]
fn explain_names_the_refusal() {
    let p = policy(Vec::new(), Vec::new());
    let opts = encap_opts(false);
    let c = compile(&p, &opts).unwrap();
    let packet = |src: &str| Packet {
        src: ip(src),
        dst: ip("10.9.9.9"),
        proto: UDP,
        port: 8472,
    };
    let e = explain(&p, &c, &opts, &packet("203.0.113.1"));
    assert!(!e.allowed() && e.agrees());
    assert_eq!(
        e.refused_by.and_then(|id| c.rule_name(id)),
        Some(HOST_INGRESS_RULE)
    );
    let host_ingress = check_rules(&p, &opts, &packet("203.0.113.1"))
        .into_iter()
        .find(|r| r.rule.name == HOST_INGRESS_RULE)
        .unwrap();
    assert_eq!(host_ingress.failed, [Part::Encap]);
    let e = explain(&p, &c, &opts, &packet("10.8.0.1"));
    assert!(e.allowed() && e.agrees() && e.refused_by.is_none());
    assert_eq!(e.allowing.len(), 1);
    assert_eq!(e.allowing[0].rule.name, NODE_ENCAP_RULE);
}
