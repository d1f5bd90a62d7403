//! Targets judged from one run's own ratios, so a loaded or quiet machine
//! moves the measured value and its reference together.

/// Which side of the threshold passes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Bound {
    AtLeast(f64),
    AtMost(f64),
}

/// How a value and its threshold are written.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unit {
    /// A ratio to a reference measured in the same run.
    Times,
    /// A spread, as a fraction (shown in percent).
    Percent,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Target {
    pub what: String,
    pub measured: f64,
    /// `measured` as the table shows it.
    pub measured_text: String,
    pub target: String,
    pub met: bool,
}

fn show(v: f64, unit: Unit) -> String {
    match unit {
        Unit::Times => format!("{v:.2}x"),
        Unit::Percent => format!("{:.0}%", v * 100.0),
    }
}

impl Target {
    pub fn new(what: impl Into<String>, measured: f64, bound: Bound, unit: Unit) -> Target {
        let (target, met) = match bound {
            Bound::AtLeast(t) => (format!(">= {}", show(t, unit)), measured >= t),
            Bound::AtMost(t) => (format!("<= {}", show(t, unit)), measured <= t),
        };
        Target {
            what: what.into(),
            measured,
            measured_text: show(measured, unit),
            target,
            met,
        }
    }
}

/// `what | measured | target | met?`, as Markdown.
pub fn markdown(targets: &[Target]) -> String {
    let mut md = String::from(
        "\n**Targets, judged from this run's ratios**\n\n| what | measured | target | met? |\n|---|---:|---:|---|\n",
    );
    for t in targets {
        md.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            t.what,
            t.measured_text,
            t.target,
            if t.met { "yes" } else { "**no**" }
        ));
    }
    md
}

/// max/min - 1 of a series (how far the best is above the worst); None for
/// fewer than two values or a zero.
pub fn spread(values: &[f64]) -> Option<f64> {
    if values.len() < 2 {
        return None;
    }
    let (lo, hi) = values
        .iter()
        .fold((f64::MAX, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    (lo > 0.0).then(|| hi / lo - 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_text() {
        let t = Target::new("a", 0.36, Bound::AtLeast(0.8), Unit::Times);
        assert!(!t.met);
        assert_eq!(
            (t.measured_text.as_str(), t.target.as_str()),
            ("0.36x", ">= 0.80x")
        );
        let t = Target::new("b", 0.12, Bound::AtMost(0.15), Unit::Percent);
        assert!(t.met);
        assert_eq!(
            (t.measured_text.as_str(), t.target.as_str()),
            ("12%", "<= 15%")
        );
    }

    #[test]
    fn spread_is_max_over_min() {
        assert_eq!(spread(&[1.0]), None);
        assert!((spread(&[1.0, 1.5, 1.2]).unwrap() - 0.5).abs() < 1e-9);
    }
}
