//! A new policy over live flows: revocation, re-check, and TCP state kept
//! across a reload.

use std::time::Duration;

use agent_common::reason::*;
use netpol_agent::datapath::{LoadOptions, Timeouts};
use netpol_agent::policy::CompileOptions;
use netpol_tests::packet::{Packet, TCP_ACK, TCP_PSH, TCP_SYN};
use netpol_tests::progrun::Want::{Drop, Pass};
use netpol_tests::progrun::{small_maps, Bench, Fam, BASE, V4, V6};

const NARROWER: &str = r#"
groups:
  web: [10.0.1.0/24, "fd00:1::/64"]
  db: [10.0.2.0/24, "fd00:2::/64"]
rules:
  - name: web-to-db-dns
    from: web
    to: db
    ports: [53/udp, icmp/8]
"#;

#[test]
fn revocation_on_reload() {
    let Some(mut b) = Bench::new("revocation_on_reload", BASE) else {
        return;
    };
    let (web, db) = (V4.web, V4.db);
    let gen1 = b.dp.config().policy_gen;
    let open_tcp = |b: &Bench, f: Fam, sport: u16| {
        let n = format!("{} flow {sport}", f.name);
        b.xdp(
            &format!("{n}: SYN"),
            &Packet::ip(f.web, f.db).tcp(sport, 5432, TCP_SYN),
            Pass(PASS_POLICY),
        );
        b.xdp(
            &format!("{n}: SYN-ACK"),
            &Packet::ip(f.db, f.web).tcp(5432, sport, TCP_SYN | TCP_ACK),
            Pass(PASS_ESTABLISHED),
        );
    };
    open_tcp(&b, V4, 40000);
    open_tcp(&b, V4, 40001);
    open_tcp(&b, V6, 53003);
    open_tcp(&b, V6, 53004);
    b.xdp(
        "UDP web->db:53",
        &Packet::ip(web, db).udp(53005, 53),
        Pass(PASS_POLICY),
    );
    b.xdp(
        "UDP reply",
        &Packet::ip(db, web).udp(53, 53005),
        Pass(PASS_ESTABLISHED),
    );
    b.xdp(
        "echo request",
        &V4.echo_request(web, db, 53),
        Pass(PASS_POLICY),
    );
    b.xdp(
        "IPv6 UDP web->db:53",
        &Packet::ip(V6.web, V6.db).udp(53006, 53),
        Pass(PASS_POLICY),
    );
    b.assert_ct("before the reload", (4, 3));

    let gen2 = b.apply(NARROWER, &CompileOptions::default());
    assert_ne!(gen2, gen1, "apply must bump the policy generation");
    assert_eq!(b.dp.config().policy_gen, gen2);

    // Revoked flows drop on their next packet, from either side.
    b.xdp(
        "flow 40000: client ACK after revocation",
        &Packet::ip(web, db).tcp(40000, 5432, TCP_ACK),
        Drop(DROP_REVOKED),
    );
    b.xdp(
        "flow 40000: next client ACK (entry gone)",
        &Packet::ip(web, db).tcp(40000, 5432, TCP_ACK),
        Drop(DROP_POLICY),
    );
    b.xdp(
        "flow 40001: server data after revocation",
        &Packet::ip(db, web).tcp(5432, 40001, TCP_ACK),
        Drop(DROP_REVOKED),
    );
    b.xdp(
        "flow 40001: client ACK (entry gone)",
        &Packet::ip(web, db).tcp(40001, 5432, TCP_ACK),
        Drop(DROP_POLICY),
    );
    b.xdp(
        "IPv6 flow 53003: client ACK after revocation",
        &Packet::ip(V6.web, V6.db).tcp(53003, 5432, TCP_ACK),
        Drop(DROP_REVOKED),
    );
    b.tc(
        "IPv6 flow 53004: server data out through TC after revocation",
        &Packet::ip(V6.db, V6.web).tcp(5432, 53004, TCP_ACK),
        Drop(DROP_REVOKED),
    );
    b.xdp(
        "new SYN to 5432",
        &Packet::ip(web, db).tcp(53007, 5432, TCP_SYN),
        Drop(DROP_POLICY),
    );
    // Flows the new policy still allows: re-checked once, then established.
    b.xdp(
        "UDP reply after the reload",
        &Packet::ip(db, web).udp(53, 53005),
        Pass(PASS_RECHECKED),
    );
    b.xdp(
        "UDP reply again",
        &Packet::ip(db, web).udp(53, 53005),
        Pass(PASS_ESTABLISHED),
    );
    b.xdp(
        "UDP request again",
        &Packet::ip(web, db).udp(53005, 53),
        Pass(PASS_ESTABLISHED),
    );
    b.xdp(
        "echo reply after the reload",
        &V4.echo_reply(db, web, 53),
        Pass(PASS_RECHECKED),
    );
    b.xdp(
        "IPv6 UDP request after the reload",
        &Packet::ip(V6.web, V6.db).udp(53006, 53),
        Pass(PASS_RECHECKED),
    );
    b.assert_ct("after the reload", (2, 1));

    // Back to the first policy: the surviving flows are re-checked again.
    let gen3 = b.apply(BASE, &CompileOptions::default());
    assert_ne!(gen3, gen2);
    b.xdp(
        "UDP request after the second reload",
        &Packet::ip(web, db).udp(53005, 53),
        Pass(PASS_RECHECKED),
    );
    b.xdp(
        "new SYN to 5432 after the second reload",
        &Packet::ip(web, db).tcp(53008, 5432, TCP_SYN),
        Pass(PASS_POLICY),
    );
}

/// A packet that passes by re-check after a reload still advances the flow's
/// TCP state: a handshake whose SYN-ACK came right after a reload is as
/// established as any other, and keeps the established timeout.
#[test]
fn recheck_keeps_tcp_state() {
    let load = LoadOptions {
        timeouts: Timeouts {
            tcp_syn: Duration::from_secs(1),
            ..Timeouts::default()
        },
        ..small_maps()
    };
    let test = "recheck_keeps_tcp_state";
    let Some(mut b) = Bench::with(test, BASE, &load, &CompileOptions::default()) else {
        return;
    };
    let (web, db) = (V4.web, V4.db);
    // Flow 56000 completes its handshake before the reload, 56001 across it.
    for sport in [56000, 56001] {
        let syn = Packet::ip(web, db).tcp(sport, 5432, TCP_SYN);
        b.xdp(&format!("flow {sport}: SYN"), &syn, Pass(PASS_POLICY));
    }
    let synack = |sport| Packet::ip(db, web).tcp(5432, sport, TCP_SYN | TCP_ACK);
    let ack = |sport| Packet::ip(web, db).tcp(sport, 5432, TCP_ACK);
    b.xdp(
        "flow 56000: SYN-ACK",
        &synack(56000),
        Pass(PASS_ESTABLISHED),
    );
    b.apply(BASE, &CompileOptions::default());
    b.xdp(
        "flow 56000: ACK after the reload",
        &ack(56000),
        Pass(PASS_RECHECKED),
    );
    b.xdp(
        "flow 56001: SYN-ACK after the reload",
        &synack(56001),
        Pass(PASS_RECHECKED),
    );
    b.xdp("flow 56001: ACK", &ack(56001), Pass(PASS_ESTABLISHED));
    // Past the 1 s SYN timeout: both handshakes completed, so both flows are
    // established (6 h) and the server may speak first.
    std::thread::sleep(Duration::from_millis(1250));
    for sport in [56000, 56001] {
        let data = Packet::ip(db, web)
            .tcp(5432, sport, TCP_PSH | TCP_ACK)
            .payload(b"late");
        b.xdp(
            &format!("flow {sport}: server data after 1.25 s"),
            &data,
            Pass(PASS_ESTABLISHED),
        );
    }
}

/// New flows asking the policy the same question (one client, one server,
/// one port) get the answer of the live policy, whichever policy answered
/// the same question before: allowed, then refused by the next policy, then
/// allowed again by a third whose slot is the first one's.
#[test]
fn repeated_questions_follow_reloads() {
    let Some(mut b) = Bench::new("repeated_questions_follow_reloads", BASE) else {
        return;
    };
    let syn = |b: &Bench, f: Fam, sport: u16, want| {
        b.xdp(
            &format!("{} SYN web->db:5432 from {sport}", f.name),
            &Packet::ip(f.web, f.db).tcp(sport, 5432, TCP_SYN),
            want,
        );
    };
    for f in [V4, V6] {
        syn(&b, f, 41000, Pass(PASS_POLICY));
        syn(&b, f, 41001, Pass(PASS_POLICY));
    }
    b.apply(NARROWER, &CompileOptions::default());
    for f in [V4, V6] {
        syn(&b, f, 41002, Drop(DROP_POLICY));
        syn(&b, f, 41003, Drop(DROP_POLICY));
    }
    b.apply(BASE, &CompileOptions::default());
    for f in [V4, V6] {
        syn(&b, f, 41004, Pass(PASS_POLICY));
        syn(&b, f, 41005, Pass(PASS_POLICY));
    }
}

/// Host prefixes kept in the hash maps, behind `HOST_FILTER`: each swap
/// writes the new slot's filter whole before the slot goes live, and the
/// datapath probes the hash only for an address the filter lets through.
#[test]
fn host_filter_is_written_with_its_slot_and_gates_the_probe() {
    const HOSTS: &str = r#"
groups:
  web: [10.0.1.0/24, "fd00:1::/64"]
  db: [10.0.2.0/24, "fd00:2::/64"]
  admin: [10.0.1.9/32, "fd00:1::9/128"]
rules:
  - name: admin-to-db
    from: admin
    to: db
    ports: [22/tcp]
"#;
    let test = "host_filter_is_written_with_its_slot_and_gates_the_probe";
    let load = LoadOptions {
        host_hash_min: 1,
        ..small_maps()
    };
    let Some(mut b) = Bench::with(test, HOSTS, &load, &CompileOptions::default()) else {
        return;
    };
    let live = |b: &Bench| b.dp.config().policy_gen & 1;
    let bits = |b: &Bench| {
        let slot = live(b);
        let f = b.dp.config().flags;
        (
            f & (agent_common::CFG_F_HOSTS4 << slot) != 0,
            f & (agent_common::CFG_F_SLOT_INDEX << slot) != 0,
        )
    };
    b.same(
        "host bit and filter bit of the live slot",
        bits(&b),
        (true, true),
    );
    let (admin, web) = (["10.0.1.9", "fd00:1::9"], ["10.0.1.5", "fd00:1::5"]);
    let dst = |v6: bool, n: u8| {
        if v6 {
            format!("fd00:2::{n}")
        } else {
            format!("10.0.2.{n}")
        }
    };
    for (i, v6) in [false, true].into_iter().enumerate() {
        b.xdp(
            &format!("{v6}: the host prefix, found in the hash"),
            &Packet::ip(admin[i], &dst(v6, 7)).tcp(44000, 22, TCP_SYN),
            Pass(PASS_POLICY),
        );
        b.xdp(
            &format!("{v6}: an address of the /24 only"),
            &Packet::ip(web[i], &dst(v6, 7)).tcp(44001, 22, TCP_SYN),
            Drop(DROP_POLICY),
        );
    }
    // Filters emptied behind the agent's back: the host is ruled out and
    // gets the /24's answer, so the datapath does consult the filter.
    b.zero_words(
        agent_common::map_names::HOST_FILTER,
        2 * agent_common::HOST_FILTER_WORDS,
    );
    for (i, v6) in [false, true].into_iter().enumerate() {
        b.xdp(
            &format!("{v6}: the host prefix, filter emptied"),
            &Packet::ip(admin[i], &dst(v6, 8)).tcp(44002, 22, TCP_SYN),
            Drop(DROP_POLICY),
        );
    }
    // The next swap writes the other slot's filter whole (it was never
    // written), and the host is found again.
    b.apply(HOSTS, &CompileOptions::default());
    b.same(
        "host bit and filter bit after the swap",
        bits(&b),
        (true, true),
    );
    for (i, v6) in [false, true].into_iter().enumerate() {
        b.xdp(
            &format!("{v6}: the host prefix after the swap"),
            &Packet::ip(admin[i], &dst(v6, 9)).tcp(44003, 22, TCP_SYN),
            Pass(PASS_POLICY),
        );
    }
}

/// `ID_BLOCKS`: the datapath answers an address from its block when the
/// slot's block table says the whole block shares one identity, and each
/// swap writes the new slot's table before the slot goes live.
#[test]
fn block_table_is_written_with_its_slot_and_answers_whole_blocks() {
    use agent_common::{
        map_names, IdBlock, IdKey4, IdentityValue, ID_BLOCK_COUNT, ID_BLOCK_ONE, ID_BLOCK_TRIE,
        SLOT_BITS,
    };
    use aya::maps::{lpm_trie::Key, Array, LpmTrie, MapData};
    let test = "block_table_is_written_with_its_slot_and_answers_whole_blocks";
    let Some(mut b) = Bench::new(test, BASE) else {
        return;
    };
    let slot = b.dp.config().policy_gen & 1;
    // IPv4 is family 0, IPv6 family 1.
    let at = |family: u32, byte: u32| (family * 2 + slot) * ID_BLOCK_COUNT + byte;
    fn table(b: &mut Bench) -> Array<&mut MapData, IdBlock> {
        Array::try_from(
            b.dp.ebpf_mut()
                .map_mut(map_names::ID_BLOCKS)
                .expect("ID_BLOCKS"),
        )
        .expect("ID_BLOCKS is an array of IdBlock")
    }
    let state = |b: &mut Bench, i: u32| table(b).get(&i, 0).expect("reading ID_BLOCKS").state;
    // BASE: 10.0.1.0/24 and fd00:1::/64 are long prefixes in their blocks;
    // 192.0.2.1 and 2001:db8::1 are in blocks only the world's /0 covers.
    let states = [
        state(&mut b, at(0, 10)),
        state(&mut b, at(1, 0xfd)),
        state(&mut b, at(0, 192)),
        state(&mut b, at(1, 0x20)),
    ];
    b.same(
        "10/8 and fd00::/8 ask the trie; 192/8 and 2000::/8 are the world's",
        states,
        [ID_BLOCK_TRIE, ID_BLOCK_TRIE, ID_BLOCK_ONE, ID_BLOCK_ONE],
    );
    for f in [V4, V6] {
        b.xdp(
            &format!("{}: world to db, from the block table", f.name),
            &Packet::ip(f.world, f.db).tcp(45000, 5432, TCP_SYN),
            Drop(DROP_POLICY),
        );
    }
    // Give the world's block web's identity behind the agent's back: world
    // now passes as web, so the datapath does answer from the table. (Another
    // db address: the answer cache holds the first question's denial.)
    let web: IdentityValue = {
        let ids: LpmTrie<&MapData, IdKey4, IdentityValue> =
            LpmTrie::try_from(b.dp.ebpf_mut().map(map_names::IDS4).expect("IDS4"))
                .expect("IDS4 is a trie");
        let key = IdKey4 {
            slot: slot as u8,
            addr: [10, 0, 1, 5],
        };
        ids.get(&Key::new(SLOT_BITS + 32, key), 0)
            .expect("web's identity")
    };
    let as_web = IdBlock {
        value: web,
        state: ID_BLOCK_ONE,
        _pad: 0,
    };
    table(&mut b)
        .set(at(0, 192), as_web, 0)
        .expect("writing ID_BLOCKS");
    b.xdp(
        "IPv4: world to db, its block claiming web's identity",
        &Packet::ip(V4.world, "10.0.2.8").tcp(45001, 5432, TCP_SYN),
        Pass(PASS_POLICY),
    );
    // The next swap writes the other slot's table whole.
    b.apply(BASE, &CompileOptions::default());
    b.xdp(
        "IPv4: world to db after the swap",
        &Packet::ip(V4.world, "10.0.2.8").tcp(45002, 5432, TCP_SYN),
        Drop(DROP_POLICY),
    );
}

/// The answer cache keeps answers by source identity as well as by source
/// address: a second address of an identity that already asked the same
/// question is answered without the destination and rule lookups (which a
/// flood from random sources would otherwise pay on every packet).
#[test]
fn a_source_identity_answer_serves_its_other_addresses() {
    use agent_common::{map_names, RuleKey, RuleValue};
    use aya::maps::{lpm_trie::Key, LpmTrie, MapData};
    let test = "a_source_identity_answer_serves_its_other_addresses";
    let Some(mut b) = Bench::new(test, BASE) else {
        return;
    };
    let slot = (b.dp.config().policy_gen & 1) as u8;
    b.xdp(
        "IPv4: web to db, asked first",
        &Packet::ip("10.0.1.5", V4.db).tcp(46000, 5432, TCP_SYN),
        Pass(PASS_POLICY),
    );
    // Remove the live slot's rules behind the agent's back: only an answer
    // kept from before can still pass web's traffic.
    {
        let mut rules: LpmTrie<&mut MapData, RuleKey, RuleValue> =
            LpmTrie::try_from(b.dp.ebpf_mut().map_mut(map_names::RULES).expect("RULES"))
                .expect("RULES is a trie");
        let keys: Vec<Key<RuleKey>> = rules.keys().map(|k| k.expect("RULES key")).collect();
        for k in keys.iter().filter(|k| k.data().slot == slot) {
            rules.remove(k).expect("removing a rule");
        }
    }
    b.xdp(
        "IPv4: another web address, same question: the identity's answer",
        &Packet::ip("10.0.1.6", V4.db).tcp(46001, 5432, TCP_SYN),
        Pass(PASS_POLICY),
    );
    b.xdp(
        "IPv4: web to db's DNS: a new question, asked of the emptied maps",
        &Packet::ip("10.0.1.7", V4.db).udp(46002, 53),
        Drop(DROP_POLICY),
    );
    // A swap asks everything again.
    b.apply(BASE, &CompileOptions::default());
    b.xdp(
        "IPv4: web to db after the swap",
        &Packet::ip("10.0.1.8", V4.db).tcp(46003, 5432, TCP_SYN),
        Pass(PASS_POLICY),
    );
}
