//! `invalid_reload_keeps_last_good_policy`: a broken file is rejected, the
//! last good policy stays, the fixed file is enforced.

use std::net::{IpAddr, SocketAddrV4};

use netpol_tests::{
    require_root, tcp_exchange, AgentProcess, Endpoint, Lab, ALLOWED_TIMEOUT, DENIED_TIMEOUT,
};

use crate::agent::{latest_generation, reload, reload_errors, Outcome};
use crate::policies::{append_rule, variant_a, PolicyDir};
use crate::sockets::Echo;

#[test]
fn invalid_reload_keeps_last_good_policy() {
    if !require_root() {
        return;
    }
    let a = variant_a();
    let dir = PolicyDir::new("invalid");
    dir.install(&a.files);

    let lab = Lab::localplus();
    let (gateway, ledger, wallet) = (lab.ep("gateway"), lab.ep("ledger-a"), lab.ep("wallet"));
    let (world, merchant) = (lab.ep("world"), lab.ep("merchant"));
    let ledger_http = SocketAddrV4::new(ledger.v4, 8080);
    let wallet_grpc = SocketAddrV4::new(wallet.v4, 50051);
    let _ledger_srv = Echo::spawn(&ledger.ns, ledger_http.into(), None);
    let _wallet_srv = Echo::spawn(&wallet.ns, wallet_grpc.into(), None);

    let mut agent = AgentProcess::spawn(&lab, &dir.path, &[]);
    let gen0 = latest_generation(&agent.log());

    let exchange = |from: &Endpoint, to: SocketAddrV4, timeout| {
        tcp_exchange(&from.ns, IpAddr::V4(from.v4), to.into(), timeout)
    };
    let expect = |when: &str, log: &dyn Fn() -> String| {
        let allowed = exchange(gateway, ledger_http, ALLOWED_TIMEOUT);
        assert!(
            allowed.is_ok(),
            "{when}: gateway -> ledger-a 8080/tcp should be allowed: {}\n--- agent log ---\n{}",
            allowed.unwrap_err(),
            log()
        );
        for (from, to) in [(world, ledger_http), (merchant, wallet_grpc)] {
            match exchange(from, to, DENIED_TIMEOUT) {
                Err(e) if e.is_timeout() => {}
                other => panic!(
                    "{when}: {} -> {to} should be dropped, got {other:?}\n--- agent log ---\n{}",
                    from.name,
                    log()
                ),
            }
        }
    };
    expect("under A", &|| agent.log());

    // A new rule whose first port is fine and whose second is not: a reload
    // that applied the file partially would open merchant -> wallet 50051.
    let base = a.file("services.yaml");
    let rule_index = base
        .lines()
        .filter(|l| l.trim_start().starts_with("- name:"))
        .count();
    let broken_rule = concat!(
        "  - name: merchant-to-wallet\n",
        "    from: svc-merchant\n",
        "    to: svc-wallet\n",
        "    ports: [50051/tcp, \"70000/tcp\"]\n",
    );
    let broken = append_rule(base, broken_rule);
    let (line, col) = broken
        .lines()
        .enumerate()
        .find_map(|(i, l)| l.find("\"70000/tcp\"").map(|c| (i + 1, c + 1)))
        .expect("the broken port is in the file");
    let want_at = format!("services.yaml:{line}:{col}: rules[{rule_index}].ports[1]");

    dir.install_file("services.yaml", &broken);
    let rejection = match reload(&mut agent) {
        Ok((Outcome::Refused(text), t)) => {
            println!("rejected after {t:.2?}: {text}");
            text
        }
        other => panic!(
            "SIGHUP with a broken file: expected \"reload rejected\", got {other:?}\n\
             --- agent log ---\n{}",
            agent.log()
        ),
    };
    assert!(
        rejection.contains("reload rejected")
            && rejection.contains(&want_at)
            && rejection.contains("70000"),
        "the rejection should be a \"reload rejected\" naming {want_at:?} and the bad value:\n\
         {rejection}"
    );
    let log = agent.log();
    assert!(agent.is_running(), "agent exited on a bad reload:\n{log}");
    assert_eq!(
        latest_generation(&log),
        gen0,
        "a rejected reload changed the policy generation:\n{log}"
    );
    expect("after the rejected reload", &|| agent.log());
    // The agent may also have reloaded on its own (inotify); every such
    // attempt on the broken directory must have been a rejection too.
    assert!(
        reload_errors(&agent.log())
            .iter()
            .all(|l| l.contains("reload rejected")),
        "a reload of the broken directory failed in another way than a rejection:\n{}",
        agent.log()
    );
    let rejections = reload_errors(&agent.log()).len();

    // Fixed: the rule keeps its valid port only, and is enforced.
    let fixed = append_rule(
        base,
        &broken_rule.replace("[50051/tcp, \"70000/tcp\"]", "[50051/tcp]"),
    );
    dir.install_file("services.yaml", &fixed);
    let gen1 = match reload(&mut agent) {
        Ok((Outcome::Enforced(g), _)) if g > gen0 => g,
        other => panic!(
            "SIGHUP after fixing the file: expected a new generation after {gen0}, got \
             {other:?}\n--- agent log ---\n{}",
            agent.log()
        ),
    };
    let now_allowed = exchange(merchant, wallet_grpc, ALLOWED_TIMEOUT);
    assert!(
        now_allowed.is_ok(),
        "generation {gen1} enforced but merchant -> wallet 50051/tcp (the fixed rule) fails: \
         {}\n--- agent log ---\n{}",
        now_allowed.unwrap_err(),
        agent.log()
    );
    let allowed = exchange(gateway, ledger_http, ALLOWED_TIMEOUT);
    assert!(
        allowed.is_ok(),
        "after the fix: gateway -> ledger-a 8080/tcp fails: {}",
        allowed.unwrap_err()
    );
    match exchange(world, ledger_http, DENIED_TIMEOUT) {
        Err(e) if e.is_timeout() => {}
        other => panic!("after the fix: world -> ledger-a should be dropped, got {other:?}"),
    }
    let log = agent.log();
    assert_eq!(
        reload_errors(&log).len(),
        rejections,
        "a reload failed after the directory was fixed:\n{log}"
    );
    println!(
        "invalid_reload_keeps_last_good_policy: rejected at {want_at} ({rejections} rejected \
         reloads), generation {gen0} kept, generation {gen1} enforced after the fix"
    );
}
