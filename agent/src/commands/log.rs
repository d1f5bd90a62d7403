//! The log: env_logger's text lines for people, or with `run --log-format
//! json` one JSON object per line (`ts`, `level`, `target`, `msg`) for log
//! collectors, which then need no parsing rules for the agent.
use std::io::Write as _;

use crate::cli::LogFormat;

/// Sets up the process's logger (level from RUST_LOG, default info).
pub fn init(format: LogFormat) {
    let mut b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if format == LogFormat::Json {
        b.format(|buf, record| {
            let ts = buf.timestamp_millis().to_string();
            let line = json_line(
                &ts,
                record.level().as_str(),
                record.target(),
                &record.args().to_string(),
            );
            writeln!(buf, "{line}")
        });
    }
    b.init();
}

/// One log record as a JSON object on one line (serde_json escapes any
/// newline in the message, so a record never spans lines).
pub fn json_line(ts: &str, level: &str, target: &str, msg: &str) -> String {
    serde_json::json!({ "ts": ts, "level": level, "target": target, "msg": msg }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_one_json_line() {
        let line = json_line(
            "2026-12-01T03:00:00.000Z",
            "WARN",
            "netpol_agent::daemon",
            "two\nlines \"quoted\"",
        );
        assert!(!line.contains('\n'), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["ts"], "2026-12-01T03:00:00.000Z");
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["target"], "netpol_agent::daemon");
        assert_eq!(v["msg"], "two\nlines \"quoted\"");
    }
}
