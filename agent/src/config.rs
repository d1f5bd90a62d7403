//! `run`'s settings from outside its command line: a YAML file (`--config
//! FILE`, or `NETPOL_CONFIG`) whose keys are the flags' long names, and
//! `NETPOL_<FLAG>` environment variables. Precedence, highest first: the
//! command line, the environment, the file, the built-in default.
//!
//! Both layers are derived from clap's definition of `run`, so a flag added
//! there is settable from the file and the environment without more code.
//! They are handed to clap as the flags' defaults: clap then applies the
//! command line over them, and every value still goes through the flag's
//! own parser. Each value is checked here first, so that a bad one is
//! reported with the file, line and key (or the variable) it came from.
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

use clap::{
    error::{ContextKind, ContextValue},
    Arg, ArgAction, Command, CommandFactory as _, FromArgMatches as _,
};

use crate::cli::{Cli, UsageError};
use crate::policy::{
    did_you_mean, read_settings, PolicyError, PolicyErrors, Setting, SettingScalar, SettingValue,
};

/// The prefix of the environment variables.
pub const ENV_PREFIX: &str = "NETPOL_";
/// Largest configuration file read, in bytes: a settings file is a few
/// hundred bytes; the bound only keeps a wrong path (a log, a device) from
/// being read whole.
pub const CONFIG_FILE_MAX: u64 = 64 << 10;
/// The variable the Kubernetes downward API examples (and the DaemonSet)
/// set to the node's name; read for `--node-name` when NETPOL_NODE_NAME is
/// not set, at the environment's precedence.
const NODE_NAME_ENV: &str = "NODE_NAME";
/// `NETPOL_*` variables that are not settings: the build and test tooling
/// reads them. They are not reported as unknown.
const NOT_SETTINGS: &[&str] = &[
    "NETPOL_AGENT_BIN",
    "NETPOL_BPF_TOOLCHAIN",
    "NETPOL_EBPF_TOOLCHAIN",
    "NETPOL_GIT_REVISION",
    "NETPOL_RUSTC_VERSION",
    "NETPOL_SETUP_NO_BPFFS",
];
/// Prefixes of more such variables (the differential test's knobs).
const NOT_SETTINGS_PREFIXES: &[&str] = &["NETPOL_DIFF_"];

/// The environment variable of the flag `--long`: `policy-dir` ->
/// `NETPOL_POLICY_DIR`.
pub fn env_var(long: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        long.to_ascii_uppercase().replace('-', "_")
    )
}

/// The command line, parsed with the file and environment layers applied.
#[derive(Debug)]
pub struct Parsed {
    pub cli: Cli,
    /// Things to log once logging is set up (an unknown NETPOL_ variable).
    pub warnings: Vec<String>,
}

/// Why the command line could not be parsed.
#[derive(Debug)]
pub enum ParseError {
    /// clap's own error (usage, --help, --version): `exit()` prints it.
    Clap(clap::Error),
    /// A bad file, variable or combination: exit 2 with its lines.
    Settings(anyhow::Error),
}

/// Parses `argv` (program name first) as `Cli::parse` would, with `run`'s
/// flags also taken from `env` (the process environment in `main`) and the
/// configuration file.
pub fn parse(
    argv: Vec<OsString>,
    env: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<Parsed, ParseError> {
    // Settings are text: a NETPOL_ variable that is not UTF-8 is refused
    // (for `run`) rather than left out, which would quietly fall back to the
    // file or the default.
    let mut not_text = Vec::new();
    let env: BTreeMap<String, String> = env
        .into_iter()
        .filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            match v.into_string() {
                Ok(v) => Some((k, v)),
                Err(_) => {
                    if k.starts_with(ENV_PREFIX) || k == NODE_NAME_ENV {
                        not_text.push(PolicyError {
                            file: "environment".into(),
                            line: 0,
                            column: 0,
                            field: k,
                            message: "the value is not UTF-8 text".into(),
                        });
                    }
                    None
                }
            }
        })
        .collect();
    if !not_text.is_empty() && argv.get(1).and_then(|a| a.to_str()) == Some("run") {
        return Err(ParseError::Settings(PolicyErrors(not_text).into()));
    }
    let (cmd, warnings) = layered_command(&argv, &env).map_err(ParseError::Settings)?;
    let matches = cmd.try_get_matches_from(argv).map_err(ParseError::Clap)?;
    let cli = Cli::from_arg_matches(&matches).map_err(ParseError::Clap)?;
    if let crate::cli::Command::Run(run) = &cli.command {
        // clap checks conflicts between flags given on the command line only;
        // the same pair from the file or the environment is as wrong.
        if run.kubernetes && run.kube_objects.is_some() {
            return Err(ParseError::Settings(
                UsageError(
                    "--kube-objects cannot be used with --kubernetes (set on the command line, \
                     in NETPOL_KUBE_OBJECTS / NETPOL_KUBERNETES or in the configuration file)"
                        .into(),
                )
                .into(),
            ));
        }
    }
    Ok(Parsed { cli, warnings })
}

/// The flags of `run` that take settings: every one with a long name.
pub fn run_args(cmd: &Command) -> Vec<&Arg> {
    cmd.find_subcommand("run")
        .expect("run is a subcommand")
        .get_arguments()
        .filter(|a| a.get_long().is_some() && !matches!(a.get_id().as_str(), "help" | "version"))
        .collect()
}

/// `Cli::command()` with the defaults of `run`'s flags replaced by the
/// values the environment and the file give (nothing changes for the other
/// subcommands).
pub fn layered_command(
    argv: &[OsString],
    env: &BTreeMap<String, String>,
) -> anyhow::Result<(Command, Vec<String>)> {
    let cmd = Cli::command();
    if argv.get(1).and_then(|a| a.to_str()) != Some("run") {
        return Ok((cmd, Vec::new()));
    }
    let run = cmd.find_subcommand("run").expect("run").clone();
    let args = run_args(&cmd);
    let mut errors = Vec::new();
    let mut layers: BTreeMap<String, Vec<String>> = BTreeMap::new();

    let file = config_path(&argv[2..]).or_else(|| {
        env.get(&env_var("config"))
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    if let Some(path) = &file {
        let settings = read_settings(path, CONFIG_FILE_MAX)?;
        let name = path.display().to_string();
        for s in &settings {
            match from_file(&run, &args, &name, s) {
                Ok(v) => {
                    layers.insert(s.name.clone(), v);
                }
                Err(e) => errors.push(e),
            }
        }
    }

    let mut warnings = Vec::new();
    for a in &args {
        let long = a.get_long().expect("filtered");
        let var = env_var(long);
        let value = env.get(&var).filter(|v| !v.is_empty()).map(|v| (&var, v));
        let value = value.or_else(|| {
            (long == "node-name")
                .then(|| env.get(NODE_NAME_ENV).filter(|v| !v.is_empty()))
                .flatten()
                .map(|v| (&var, v))
        });
        let Some((var, text)) = value else { continue };
        match from_env(&run, a, var, text) {
            Ok(v) => {
                layers.insert(long.to_owned(), v);
            }
            Err(e) => errors.push(e),
        }
    }
    let known: Vec<String> = args
        .iter()
        .filter_map(|a| a.get_long())
        .map(env_var)
        .collect();
    for var in env.keys().filter(|k| k.starts_with(ENV_PREFIX)) {
        let tooling = NOT_SETTINGS.contains(&var.as_str())
            || NOT_SETTINGS_PREFIXES.iter().any(|p| var.starts_with(p));
        if !known.contains(var) && !tooling {
            warnings.push(format!(
                "environment variable {var} is not a setting of run and is ignored{}",
                did_you_mean(var, known.iter().map(String::as_str))
            ));
        }
    }
    if !errors.is_empty() {
        return Err(PolicyErrors(errors).into());
    }

    let ids: BTreeMap<String, String> = args
        .iter()
        .map(|a| {
            (
                a.get_long().expect("filtered").to_owned(),
                a.get_id().to_string(),
            )
        })
        .collect();
    let cmd = cmd.mut_subcommand("run", |mut sc| {
        for (long, values) in layers {
            // A layered value stands in for the default; a flag clap requires
            // on the command line is then satisfied by it.
            sc = sc.mut_arg(&ids[&long], |a| a.default_values(values).required(false));
        }
        sc
    });
    Ok((cmd, warnings))
}

/// The value of `--config` on `run`'s command line (`args` follow `run`),
/// read as clap reads it: `--config FILE` or `--config=FILE`, before `--`.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let Some(a) = a.to_str() else { continue };
        if a == "--" {
            break;
        }
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    None
}

/// What kind of value a flag takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// A switch: true or false.
    Switch,
    /// Repeatable: a list.
    List,
    One,
}

fn shape(a: &Arg) -> Shape {
    match a.get_action() {
        ArgAction::SetTrue => Shape::Switch,
        ArgAction::Append => Shape::List,
        _ => Shape::One,
    }
}

/// What one value of `a` must be, for an error message.
fn expected_one(a: &Arg) -> String {
    let names: Vec<String> = a
        .get_possible_values()
        .iter()
        .filter(|p| !p.is_hide_set())
        .map(|p| p.get_name().to_owned())
        .collect();
    if !names.is_empty() {
        return format!("one of {}", names.join(", "));
    }
    if a.get_value_names()
        .is_some_and(|n| n.iter().any(|n| n.as_str() == "SIZE"))
    {
        return "a size in bytes (or with a KiB, MiB or GiB suffix)".into();
    }
    let t = a.get_value_parser().type_id();
    use std::any::TypeId;
    if t == TypeId::of::<u64>() || t == TypeId::of::<u32>() {
        "a whole number".into()
    } else if t == TypeId::of::<std::net::SocketAddr>() {
        "an address and port (ADDR:PORT)".into()
    } else if t == TypeId::of::<PathBuf>() {
        "a path".into()
    } else {
        "a string".into()
    }
}

fn expected(a: &Arg) -> String {
    match shape(a) {
        Shape::Switch => "a boolean (true or false)".into(),
        Shape::List => format!("a list of {}", plural(&expected_one(a))),
        Shape::One => expected_one(a),
    }
}

fn plural(one: &str) -> String {
    match one {
        "a string" => "strings".into(),
        "a path" => "paths".into(),
        other => format!("values, each {other}"),
    }
}

/// Why clap refused a value, without its usage text.
fn reason(e: &clap::Error) -> String {
    use std::error::Error as _;
    if let Some(source) = e.source() {
        return source.to_string();
    }
    if let Some(ContextValue::Strings(v)) = e.get(ContextKind::ValidValue) {
        return format!("possible values: {}", v.join(", "));
    }
    e.kind().to_string()
}

/// Runs `values` through the flag's own parser, as clap will.
fn validate(run: &Command, a: &Arg, values: &[String]) -> Result<(), (usize, String)> {
    let long = a.get_long().expect("filtered");
    for (i, v) in values.iter().enumerate() {
        let probe = run
            .clone()
            .no_binary_name(true)
            .mut_args(|a| a.required(false));
        if let Err(e) = probe.try_get_matches_from([format!("--{long}={v}")]) {
            return Err((i, reason(&e)));
        }
    }
    Ok(())
}

fn from_file(
    run: &Command,
    args: &[&Arg],
    file: &str,
    s: &Setting,
) -> Result<Vec<String>, PolicyError> {
    let err = |pos: crate::policy::Pos, message: String| PolicyError {
        file: file.to_owned(),
        line: pos.line,
        column: pos.column,
        field: s.name.clone(),
        message,
    };
    if s.name == "config" {
        return Err(err(
            s.pos,
            "the configuration file cannot name another one".into(),
        ));
    }
    let Some(a) = args.iter().find(|a| a.get_long() == Some(s.name.as_str())) else {
        let longs = args.iter().filter_map(|a| a.get_long());
        return Err(err(
            s.pos,
            format!(
                "unknown setting {:?} (settings are run's flags without the leading --){}",
                s.name,
                did_you_mean(&s.name, longs)
            ),
        ));
    };
    let wrong = |found: &str, pos| err(pos, format!("expected {}, found {found}", expected(a)));
    let scalars: Vec<&SettingScalar> = match (&s.value, shape(a)) {
        (SettingValue::Scalar(v), Shape::Switch) => {
            return match v.as_bool() {
                Some(b) => Ok(vec![b.to_string()]),
                None => Err(wrong(v.describe, v.pos)),
            }
        }
        (SettingValue::Scalar(v), Shape::One) if v.describe != "nothing (null)" => vec![v],
        // One value where a list goes is a list of one.
        (SettingValue::Scalar(v), Shape::List) if v.describe != "nothing (null)" => vec![v],
        (SettingValue::List(l), Shape::List) => l.iter().collect(),
        (SettingValue::Scalar(v), _) => return Err(wrong(v.describe, v.pos)),
        (other, _) => return Err(wrong(other.describe(), s.pos)),
    };
    if let Some(v) = scalars
        .iter()
        .find(|v| matches!(v.describe, "nothing (null)" | "a list" | "a mapping"))
    {
        return Err(wrong(v.describe, v.pos));
    }
    let values: Vec<String> = scalars.iter().map(|v| v.text.clone()).collect();
    validate(run, a, &values).map_err(|(i, why)| {
        let v = scalars[i];
        err(
            v.pos,
            format!("{:?} is not {}: {why}", v.text, expected_one(a)),
        )
    })?;
    Ok(values)
}

fn from_env(run: &Command, a: &Arg, var: &str, text: &str) -> Result<Vec<String>, PolicyError> {
    let err = |message: String| PolicyError {
        file: "environment".into(),
        line: 0,
        column: 0,
        field: var.to_owned(),
        message,
    };
    let values: Vec<String> = match shape(a) {
        Shape::Switch => {
            return match text {
                "true" | "1" => Ok(vec!["true".into()]),
                "false" | "0" => Ok(vec!["false".into()]),
                _ => Err(err(format!("{text:?} is not {}", expected(a)))),
            }
        }
        // Lists are comma-separated; spaces around the commas are dropped.
        Shape::List => text
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect(),
        Shape::One => vec![text.to_owned()],
    };
    validate(run, a, &values)
        .map_err(|(i, why)| err(format!("{:?} is not {}: {why}", values[i], expected_one(a))))?;
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::cli::{Command as Sub, LogFormat, RunArgs};

    /// A file under the temp directory, removed when dropped.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(text: &str) -> TempFile {
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "netpol-config-{}-{}.yaml",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::write(&p, text).unwrap();
            TempFile(p)
        }

        fn arg(&self) -> String {
            self.0.display().to_string()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn argv(args: &[&str]) -> Vec<OsString> {
        std::iter::once("netpol-agent")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect()
    }

    fn envs(vars: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        vars.iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    fn run_with(args: &[&str], vars: &[(&str, &str)]) -> Result<RunArgs, String> {
        match parse(argv(args), envs(vars)) {
            Ok(Parsed {
                cli: Cli {
                    command: Sub::Run(r),
                },
                ..
            }) => Ok(r),
            Ok(other) => panic!("{other:?}"),
            Err(ParseError::Clap(e)) => Err(e.to_string()),
            Err(ParseError::Settings(e)) => Err(crate::cli::error_lines(&e).join("\n")),
        }
    }

    #[test]
    fn variable_names() {
        assert_eq!(env_var("policy-dir"), "NETPOL_POLICY_DIR");
        assert_eq!(env_var("listen"), "NETPOL_LISTEN");
        assert_eq!(env_var("config"), "NETPOL_CONFIG");
        assert_eq!(env_var("log-format"), "NETPOL_LOG_FORMAT");
    }

    #[test]
    fn precedence_is_flag_then_environment_then_file_then_default() {
        let file = TempFile::new(
            "iface: [from-file0, \"file*\"]\npolicy-dir: /etc/netpol\nlisten: \"0.0.0.0:1001\"\n",
        );
        let f = file.arg();
        // The default.
        let r = run_with(&["run", "--iface", "x", "--policy-dir", "p"], &[]).unwrap();
        assert_eq!(r.counting.listen.to_string(), "127.0.0.1:9986");
        // The file over the default; required flags satisfied by it.
        let r = run_with(&["run", "--config", &f], &[]).unwrap();
        assert_eq!(r.counting.listen.to_string(), "0.0.0.0:1001");
        assert_eq!(r.ifaces, ["from-file0", "file*"]);
        assert_eq!(r.policy_dir, PathBuf::from("/etc/netpol"));
        assert_eq!(r.config.as_deref(), Some(file.0.as_path()));
        // The environment over the file (NETPOL_CONFIG names the file too).
        let env = [
            ("NETPOL_CONFIG", f.as_str()),
            ("NETPOL_LISTEN", "0.0.0.0:1002"),
            ("NETPOL_IFACE", "env0, env1"),
        ];
        let r = run_with(&["run"], &env).unwrap();
        assert_eq!(r.counting.listen.to_string(), "0.0.0.0:1002");
        assert_eq!(r.ifaces, ["env0", "env1"]);
        assert_eq!(
            r.policy_dir,
            PathBuf::from("/etc/netpol"),
            "still the file's"
        );
        // The command line over both; a repeated flag replaces the list.
        let r = run_with(
            &[
                "run",
                "--listen",
                "0.0.0.0:1003",
                "--iface",
                "cli0",
                "--iface",
                "cli1",
            ],
            &env,
        )
        .unwrap();
        assert_eq!(r.counting.listen.to_string(), "0.0.0.0:1003");
        assert_eq!(r.ifaces, ["cli0", "cli1"]);
        // --config=FILE on the command line over NETPOL_CONFIG.
        let other = TempFile::new("iface: other0\npolicy-dir: /other\n");
        let r = run_with(
            &["run", &format!("--config={}", other.arg())],
            &[("NETPOL_CONFIG", f.as_str())],
        )
        .unwrap();
        assert_eq!(r.ifaces, ["other0"]);
        // Without anything, run still requires its flags.
        let e = run_with(&["run"], &[]).unwrap_err();
        assert!(e.contains("--iface"), "{e}");
    }

    #[test]
    fn switches_and_the_node_name() {
        let file =
            TempFile::new("iface: [a]\npolicy-dir: p\nenforce-host: true\nlog-format: json\n");
        let f = file.arg();
        let r = run_with(&["run", "--config", &f], &[]).unwrap();
        assert!(r.enforce_host);
        assert_eq!(r.log_format, LogFormat::Json);
        // The environment switches off what the file switched on.
        let r = run_with(
            &["run", "--config", &f],
            &[("NETPOL_ENFORCE_HOST", "false")],
        )
        .unwrap();
        assert!(!r.enforce_host);
        let r = run_with(&["run", "--config", &f], &[("NODE_NAME", "n1")]).unwrap();
        assert_eq!(r.node_name.as_deref(), Some("n1"));
        let r = run_with(
            &["run", "--config", &f],
            &[("NODE_NAME", "n1"), ("NETPOL_NODE_NAME", "n2")],
        )
        .unwrap();
        assert_eq!(r.node_name.as_deref(), Some("n2"));
        // clap's conflict holds whichever layer set the flags.
        let e = run_with(
            &["run", "--config", &f, "--kube-objects", "o"],
            &[("NETPOL_KUBERNETES", "true")],
        )
        .unwrap_err();
        assert!(e.contains("cannot be used with --kubernetes"), "{e}");
    }

    #[test]
    fn bad_settings_name_the_file_line_and_key() {
        let file = TempFile::new(
            "iface: [a]\npolicy-dir: p\npolcy-dir: q\nct-max: lots\nkubernetes: \"yes\"\nlisten: [a]\nmode: strict\niface2: x\n",
        );
        let f = file.arg();
        let e = run_with(&["run", "--config", &f], &[]).unwrap_err();
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(
            lines[0],
            format!(
                "{f}:3:1: polcy-dir: unknown setting \"polcy-dir\" (settings are run's flags \
                 without the leading --); did you mean \"policy-dir\"?"
            )
        );
        assert!(
            lines[1].starts_with(&format!(
                "{f}:4:9: ct-max: \"lots\" is not a whole number: invalid digit"
            )),
            "{e}"
        );
        assert_eq!(
            lines[2],
            format!("{f}:5:13: kubernetes: expected a boolean (true or false), found a string")
        );
        assert_eq!(
            lines[3],
            format!("{f}:6:1: listen: expected an address and port (ADDR:PORT), found a list")
        );
        assert!(
            lines[4].starts_with(&format!(
                "{f}:7:7: mode: \"strict\" is not one of enforce, audit"
            )),
            "{e}"
        );
        assert!(lines[5].contains("unknown setting \"iface2\""), "{e}");
        assert_eq!(lines.len(), 6, "{e}");

        let e = run_with(&["run", "--config", &f], &[("NETPOL_CT_MAX", "-1")]).unwrap_err();
        assert!(
            e.contains("environment: NETPOL_CT_MAX: \"-1\" is not a whole number"),
            "{e}"
        );
        let e = run_with(&["run", "--config", "/nonexistent/netpol.yaml"], &[]).unwrap_err();
        assert!(e.starts_with("/nonexistent/netpol.yaml: "), "{e}");
        let e = run_with(&["run", "--config", "/dev/null"], &[]).unwrap_err();
        assert!(
            e.contains("/dev/null") && e.contains("not a regular file"),
            "{e}"
        );
    }

    #[test]
    fn a_variable_that_is_not_text_is_refused() {
        use std::os::unix::ffi::OsStringExt as _;
        let vars = vec![(
            OsString::from("NETPOL_POLICY_DIR"),
            OsString::from_vec(vec![b'/', 0xff]),
        )];
        let argv = argv(&["run", "--iface", "a", "--policy-dir", "p"]);
        let Err(ParseError::Settings(e)) = parse(argv, vars) else {
            panic!("accepted")
        };
        assert_eq!(
            crate::cli::error_lines(&e),
            ["environment: NETPOL_POLICY_DIR: the value is not UTF-8 text"]
        );
    }

    #[test]
    fn unknown_variables_are_warned_about() {
        let p = parse(
            argv(&["run", "--iface", "a", "--policy-dir", "p"]),
            envs(&[("NETPOL_POLCY_DIR", "x"), ("NETPOL_GIT_REVISION", "abc")]),
        )
        .unwrap();
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(
            p.warnings[0].contains("did you mean \"NETPOL_POLICY_DIR\"?"),
            "{:?}",
            p.warnings
        );
        // Other commands take no settings from the environment.
        let p = parse(argv(&["version"]), envs(&[("NETPOL_POLCY_DIR", "x")])).unwrap();
        assert!(p.warnings.is_empty());
    }

    /// A value `a` accepts that is not its default, as (YAML, environment,
    /// the raw values clap should then hold).
    fn sample(run: &Command, a: &Arg) -> (String, String, Vec<String>) {
        let defaults: Vec<String> = a
            .get_default_values()
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect();
        match shape(a) {
            Shape::Switch => ("true".into(), "true".into(), vec!["true".into()]),
            Shape::List => {
                // Names (`--iface`), else prefixes (`--node-cidr`).
                let pairs = [["x7", "y7"], ["10.7.0.0/16", "fd00:7::/64"]];
                let [x, y] = pairs
                    .into_iter()
                    .find(|p| validate(run, a, &p.map(String::from)).is_ok())
                    .unwrap_or_else(|| panic!("no sample list for --{:?}", a.get_long()));
                (
                    format!("[{x:?}, {y:?}]"),
                    format!("{x},{y}"),
                    vec![x.into(), y.into()],
                )
            }
            Shape::One => {
                let mut candidates: Vec<String> = a
                    .get_possible_values()
                    .iter()
                    .map(|p| p.get_name().to_owned())
                    .collect();
                candidates.extend(["7", "127.0.0.1:7", "x7"].map(String::from));
                let v = candidates
                    .into_iter()
                    .find(|c| {
                        !defaults.contains(c) && validate(run, a, std::slice::from_ref(c)).is_ok()
                    })
                    .unwrap_or_else(|| panic!("no sample value for --{:?}", a.get_long()));
                (format!("{v:?}"), v.clone(), vec![v])
            }
        }
    }

    #[test]
    fn every_run_flag_is_settable_from_the_file_and_the_environment() {
        let cmd = Cli::command();
        let run = cmd.find_subcommand("run").unwrap().clone();
        let args = run_args(&cmd);
        assert!(args.len() >= 30, "{} flags", args.len());
        for a in args {
            let long = a.get_long().unwrap();
            let id = a.get_id().as_str();
            let (yaml, env, want) = sample(&run, a);
            let raw = |m: &clap::ArgMatches| -> Vec<String> {
                let run = m.subcommand_matches("run").unwrap();
                run.get_raw(id)
                    .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
                    .unwrap_or_default()
            };
            // The required flags come from the file unless under test.
            let mut text = String::new();
            for (k, v) in [("iface", "[a]"), ("policy-dir", "p")] {
                if k != long {
                    text.push_str(&format!("{k}: {v}\n"));
                }
            }
            let base = TempFile::new(&text);
            if long != "config" {
                let file = TempFile::new(&format!("{text}{long}: {yaml}\n"));
                let av = argv(&["run", "--config", &file.arg()]);
                let (c, _) = layered_command(&av, &BTreeMap::new())
                    .unwrap_or_else(|e| panic!("{long} from the file: {e:#}"));
                let m = c
                    .try_get_matches_from(av)
                    .unwrap_or_else(|e| panic!("{long} from the file: {e}"));
                assert_eq!(raw(&m), want, "--{long} from the file");
            }
            let env_value = if long == "config" { base.arg() } else { env };
            let want = if long == "config" {
                vec![base.arg()]
            } else {
                want
            };
            let vars: BTreeMap<String, String> = [
                (env_var(long), env_value),
                ("NETPOL_CONFIG".to_owned(), base.arg()),
            ]
            .into_iter()
            .collect();
            let av = argv(&["run"]);
            let (c, warnings) = layered_command(&av, &vars)
                .unwrap_or_else(|e| panic!("{long} from {}: {e:#}", env_var(long)));
            assert!(warnings.is_empty(), "{warnings:?}");
            let m = c
                .try_get_matches_from(av)
                .unwrap_or_else(|e| panic!("{long} from the environment: {e}"));
            assert_eq!(raw(&m), want, "--{long} from {}", env_var(long));
        }
    }
}
