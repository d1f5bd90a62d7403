//! The three judges: the reference, `policy::evaluate` over the compiled
//! maps, and the datapath (XDP and TC through BPF_PROG_TEST_RUN).

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

use agent_common::{map_names, CtKey4, CtKey6, CtValue};
use aya::maps::HashMap as BpfHashMap;
use netpol_agent::datapath::{Datapath, LoadOptions};
use netpol_agent::policy::{
    compile, evaluate, merge, parse_str, CompileOptions, Compiled, Policy, PolicyFile,
};
use netpol_tests::packet::hex;
use netpol_tests::progrun::{TC_ACT_SHOT, TC_ACT_UNSPEC, XDP_DROP, XDP_PASS};
use netpol_tests::reference;

use crate::packets::Pkt;
use crate::policy::GPolicy;
use crate::yaml::yaml_files;

/// A policy ready to test: its files, what it means, and its compiled maps.
pub struct Prepared {
    pub files: Vec<(String, String)>,
    pub policy: Policy,
    pub compiled: Compiled,
}

/// Why a generated policy could not be prepared (each is a bug somewhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrepError {
    /// The parser or merge rejected valid YAML.
    Rejected(String),
    /// The parser read something else than what was written.
    Misread(String),
    /// The compiler refused a valid policy.
    Compile(String),
}

impl PrepError {
    pub fn kind(&self) -> &'static str {
        match self {
            PrepError::Rejected(_) => "rejected",
            PrepError::Misread(_) => "misread",
            PrepError::Compile(_) => "compile",
        }
    }
}

pub fn parse_files(files: &[(String, String)]) -> Result<Policy, String> {
    let parsed: Vec<PolicyFile> = files
        .iter()
        .map(|(name, text)| parse_str(name, text).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    merge(parsed).map_err(|e| e.to_string())
}

pub fn strip_origins(mut p: Policy) -> Policy {
    for g in &mut p.groups {
        g.origin = None;
    }
    for r in &mut p.rules {
        r.origin = None;
    }
    p
}

pub fn prepare(gp: &GPolicy) -> Result<Prepared, PrepError> {
    let files = yaml_files(gp);
    let parsed = parse_files(&files).map_err(PrepError::Rejected)?;
    let policy = gp.expected();
    let parsed = strip_origins(parsed);
    if parsed != policy {
        return Err(PrepError::Misread(format!(
            "parsed:\n{parsed:#?}\nmeant:\n{policy:#?}"
        )));
    }
    let compiled =
        compile(&parsed, &gp.compile_options()).map_err(|e| PrepError::Compile(e.to_string()))?;
    Ok(Prepared {
        files,
        policy,
        compiled,
    })
}

/// What each judge said about one packet.
#[derive(Clone, Debug)]
pub struct Observation {
    /// The reference's first allowing rule, and all of them.
    pub reference: Option<String>,
    /// IPv6 neighbour discovery or MLD: `Some(passes)` whatever the policy
    /// (`reference::discovery`).
    pub discovery: Option<bool>,
    /// An ICMP error: these quote nothing, so no flow, and are dropped
    /// whatever the policy (`reference::is_icmp_error`).
    pub icmp_error: bool,
    pub allowing: Vec<String>,
    /// `policy::evaluate`: rule id and name.
    pub evaluate: Option<(u32, String)>,
    xdp_action: u32,
    tc_action: i32,
    /// Rule id of the conntrack entry the XDP run created, if it should have.
    pub ct_rule: Option<Option<u32>>,
}

impl Observation {
    /// Whether the packet should pass: policy allows it, unless it is
    /// discovery, which link rules decide alone.
    pub fn passes(&self) -> bool {
        !self.icmp_error && self.discovery.unwrap_or(self.reference.is_some())
    }

    /// The checks that failed, by name (empty: all agree).
    pub fn failures(&self) -> BTreeSet<&'static str> {
        let want = self.passes();
        let mut f = BTreeSet::new();
        let xdp = match self.xdp_action {
            XDP_PASS => Some(true),
            XDP_DROP => Some(false),
            _ => None,
        };
        if xdp != Some(want) {
            f.insert("xdp-verdict");
        }
        let tc = match self.tc_action {
            TC_ACT_UNSPEC => Some(true),
            TC_ACT_SHOT => Some(false),
            _ => None,
        };
        if tc != Some(want) {
            f.insert("tc-verdict");
        }
        // `evaluate` answers for policy alone, which infrastructure bypasses.
        if self.evaluate.is_some() != self.reference.is_some() {
            f.insert("evaluate-verdict");
        }
        if let Some((_, name)) = &self.evaluate {
            if !self.allowing.contains(name) {
                f.insert("evaluate-rule-does-not-allow");
            }
        }
        if let Some(ct) = self.ct_rule {
            if ct != self.evaluate.as_ref().map(|(id, _)| *id) {
                f.insert("conntrack-rule-id-differs-from-evaluate");
            }
        }
        f
    }

    pub fn report(&self, compiled: &Compiled) -> String {
        let allow = |r: &Option<String>| match r {
            Some(n) => format!("allow (first allowing rule {n:?})"),
            None => "drop".into(),
        };
        let xdp = match self.xdp_action {
            XDP_PASS => "XDP_PASS".to_string(),
            XDP_DROP => "XDP_DROP".to_string(),
            n => format!("XDP action {n}"),
        };
        let tc = match self.tc_action {
            TC_ACT_UNSPEC => "TC_ACT_UNSPEC (pass)".to_string(),
            TC_ACT_SHOT => "TC_ACT_SHOT (drop)".to_string(),
            n => format!("TC action {n}"),
        };
        let eval = match &self.evaluate {
            Some((id, n)) => format!("allow (rule {id} {n:?})"),
            None => "drop".into(),
        };
        let ct = match self.ct_rule {
            None => "not read".to_string(),
            Some(None) => "no entry".to_string(),
            Some(Some(id)) => format!(
                "rule {id} {:?}",
                compiled.rule_name(id).unwrap_or("<unknown id>")
            ),
        };
        format!(
            "  reference:         {}{}\n  allowing rules:    {:?}\n  policy::evaluate:  {eval}\n  datapath XDP:      {xdp}\n  datapath TC:       {tc}\n  conntrack entry:   {ct}",
            allow(&self.reference),
            match self.discovery {
                Some(true) => " (policy); passes anyway: neighbour discovery / MLD on the link",
                Some(false) => " (policy); dropped anyway: neighbour discovery / MLD off the link",
                None if self.icmp_error => " (policy); dropped anyway: an ICMP error of no flow",
                None => "",
            },
            self.allowing,
        )
    }
}

/// Reads the rule id of the conntrack entry of `p`'s flow.
pub fn ct_rule(dp: &mut Datapath, p: &Pkt) -> Option<u32> {
    let ((a, pa), (b, pb), proto, is_v6) = p.flow_key();
    let ebpf = dp.ebpf_mut();
    if is_v6 {
        let map = ebpf.map(map_names::CT6).expect("CT6 map");
        let ct: BpfHashMap<_, CtKey6, CtValue> = BpfHashMap::try_from(map).expect("CT6 type");
        let key = CtKey6 {
            addr_a: a.to_be_bytes(),
            addr_b: b.to_be_bytes(),
            port_a: pa.to_be_bytes(),
            port_b: pb.to_be_bytes(),
            proto,
            _pad: [0; 3],
        };
        ct.get(&key, 0).ok().map(|v| v.rule_id)
    } else {
        let map = ebpf.map(map_names::CT4).expect("CT4 map");
        let ct: BpfHashMap<_, CtKey4, CtValue> = BpfHashMap::try_from(map).expect("CT4 type");
        let key = CtKey4 {
            addr_a: (a as u32).to_be_bytes(),
            addr_b: (b as u32).to_be_bytes(),
            port_a: pa.to_be_bytes(),
            port_b: pb.to_be_bytes(),
            proto,
            _pad: [0; 3],
        };
        ct.get(&key, 0).ok().map(|v| v.rule_id)
    }
}

pub fn observe(
    dp: &mut Datapath,
    prep: &Prepared,
    host: &[IpAddr],
    nodes: &[IpNet],
    enforce_opt: bool,
    p: &Pkt,
) -> Observation {
    let args = (p.src, p.dst, p.proto, p.port);
    let reference = reference::verdict(
        &prep.policy,
        host,
        nodes,
        enforce_opt,
        args.0,
        args.1,
        args.2,
        args.3,
    );
    let allowing = reference::allowing_rules(
        &prep.policy,
        host,
        nodes,
        enforce_opt,
        args.0,
        args.1,
        args.2,
        args.3,
    );
    let evaluate = evaluate(&prep.compiled, args.0, args.1, args.2, args.3).map(|id| {
        let name = prep.compiled.rule_name(id).unwrap_or("<unknown id>");
        (id, name.to_string())
    });
    let frame = p.frame();
    let (xdp_action, _) = dp
        .xdp_test_run(&frame, 1)
        .unwrap_or_else(|e| panic!("XDP test run: {e}\n{}", hex(&frame)));
    let ct_rule = (xdp_action == XDP_PASS && p.creates_entry()).then(|| ct_rule(dp, p));
    // Same frame on egress: a TCP SYN or ICMP echo request is judged by policy
    // again; the rest now find the entry the ingress run made, or, when dropped,
    // none, and are judged by policy.
    let tc_action = dp
        .tc_test_run(&frame)
        .unwrap_or_else(|e| panic!("TC test run: {e}\n{}", hex(&frame)));
    Observation {
        reference,
        // Frames carry the builder's hop limit, 64: a discovery message with
        // it was routed, and is dropped on both hooks.
        discovery: reference::discovery(p.src, p.dst, p.proto, p.port, 64, true),
        icmp_error: reference::is_icmp_error(p.proto, p.port),
        allowing,
        evaluate,
        xdp_action,
        tc_action,
        ct_rule,
    }
}

/// A datapath of its own, for replaying one failure or checking one regression.
pub fn fresh_datapath() -> Datapath {
    Datapath::load(&LoadOptions {
        ct_max: 4096,
        frag_max: 1024,
        host_hash_min: 2,
        ..LoadOptions::default()
    })
    .unwrap_or_else(|e| panic!("loading the datapath: {:#}", anyhow::Error::from(e)))
}

/// Applies `history` (each compiled with `opts`) and then `prep` to `dp`.
pub fn apply_all(dp: &mut Datapath, history: &[Policy], opts: &CompileOptions, prep: &Prepared) {
    for (i, p) in history.iter().enumerate() {
        let c = compile(p, opts).unwrap_or_else(|e| panic!("history policy {i}: compile: {e}"));
        dp.apply(&c)
            .unwrap_or_else(|e| panic!("history policy {i}: apply: {:#}", anyhow::Error::from(e)));
    }
    dp.apply(&prep.compiled)
        .unwrap_or_else(|e| panic!("apply: {:#}", anyhow::Error::from(e)));
}
