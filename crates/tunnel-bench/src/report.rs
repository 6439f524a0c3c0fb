//! The results: a table for people and a JSON file for comparing runs.

use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

use crate::median;

/// Which way is better for a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    /// Throughput.
    Higher,
    /// Latency, memory, time.
    Lower,
}

/// One measured figure, for the tunnel and (when it has one) the direct path.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// Stable key in the JSON file.
    pub key: &'static str,
    /// Label in the table.
    pub label: String,
    /// Unit of the values.
    pub unit: &'static str,
    /// Which way is better.
    pub better: Better,
    /// Per-round values through the direct path (empty when there is no direct equivalent).
    pub direct_rounds: Vec<f64>,
    /// Per-round values through the tunnel.
    pub tunnel_rounds: Vec<f64>,
    /// Median of `direct_rounds`.
    pub direct: Option<f64>,
    /// Median of `tunnel_rounds`.
    pub tunnel: Option<f64>,
    /// Median of the per-round ratios tunnel / direct.
    pub ratio: Option<f64>,
    /// Per-round values through two raw TCP relays (see [`crate::relay`]), when measured.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub relay_rounds: Vec<f64>,
    /// Median of `relay_rounds`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay: Option<f64>,
    /// Median of the per-round ratios relay / direct: the floor of a two-process tunnel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_ratio: Option<f64>,
}

/// Median of the per-round ratios `num / den`.
fn ratio_of(num: &[f64], den: &[f64]) -> Option<f64> {
    let ratios: Vec<f64> = den
        .iter()
        .zip(num)
        .filter(|(d, _)| **d > 0.0)
        .map(|(d, n)| n / d)
        .collect();
    median(&ratios)
}

impl Figure {
    /// A figure with both paths; rounds are paired in order.
    pub fn paired(
        key: &'static str,
        label: impl Into<String>,
        unit: &'static str,
        better: Better,
        direct_rounds: Vec<f64>,
        tunnel_rounds: Vec<f64>,
    ) -> Self {
        Self {
            key,
            label: label.into(),
            unit,
            better,
            direct: median(&direct_rounds),
            tunnel: median(&tunnel_rounds),
            ratio: ratio_of(&tunnel_rounds, &direct_rounds),
            direct_rounds,
            tunnel_rounds,
            relay_rounds: Vec::new(),
            relay: None,
            relay_ratio: None,
        }
    }

    /// Adds the same figure through the raw TCP relays; rounds pair with the direct ones.
    pub fn with_relay(mut self, relay_rounds: Vec<f64>) -> Self {
        self.relay = median(&relay_rounds);
        self.relay_ratio = ratio_of(&relay_rounds, &self.direct_rounds);
        self.relay_rounds = relay_rounds;
        self
    }

    /// A figure of the tunnel alone (memory, start-up time).
    pub fn alone(
        key: &'static str,
        label: impl Into<String>,
        unit: &'static str,
        rounds: Vec<f64>,
    ) -> Self {
        Self {
            key,
            label: label.into(),
            unit,
            better: Better::Lower,
            direct: None,
            tunnel: median(&rounds),
            ratio: None,
            direct_rounds: Vec::new(),
            tunnel_rounds: rounds,
            relay_rounds: Vec::new(),
            relay: None,
            relay_ratio: None,
        }
    }
}

/// One goal of issue 5 and whether this run meets it.
#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    /// What is compared, e.g. `small req/s vs direct`.
    pub what: String,
    /// The target, e.g. `>= 0.55x`.
    pub target: String,
    /// The measured value, formatted.
    pub measured: String,
    /// Whether it is met (`None` when the figure is missing).
    pub met: Option<bool>,
}

/// Everything one run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When the run started (UTC, RFC 3339).
    pub date: String,
    /// `--quick` mode (smaller transfers, one round).
    pub quick: bool,
    /// Rounds per paired figure.
    pub rounds: usize,
    /// Cores, kernel, load generator.
    pub machine: serde_json::Value,
    /// The figures.
    pub figures: Vec<Figure>,
    /// The goals.
    pub goals: Vec<Goal>,
    /// Notes on how figures were taken.
    pub notes: Vec<String>,
}

fn fmt_value(v: Option<f64>, unit: &str) -> String {
    match v {
        None => "-".into(),
        Some(v) if unit == "req/s" => format!("{v:.0}"),
        Some(v) if v >= 100.0 => format!("{v:.0} {unit}"),
        Some(v) if v >= 10.0 => format!("{v:.1} {unit}"),
        Some(v) => format!("{v:.2} {unit}"),
    }
}

impl Report {
    /// The figure with `key`.
    pub fn figure(&self, key: &str) -> Option<&Figure> {
        self.figures.iter().find(|f| f.key == key)
    }

    /// The table, as Markdown (it reads as well in a terminal as in the README).
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "| figure | direct | tunnel | tunnel / direct | TCP relay | relay / direct |\n\
             |---|---|---|---|---|---|\n",
        );
        let times = |r: Option<f64>| r.map(|r| format!("{r:.2}×")).unwrap_or_default();
        for f in &self.figures {
            let relay = if f.relay.is_some() {
                fmt_value(f.relay, f.unit)
            } else {
                String::new()
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                f.label,
                fmt_value(f.direct, f.unit),
                fmt_value(f.tunnel, f.unit),
                times(f.ratio),
                relay,
                times(f.relay_ratio),
            ));
        }
        out.push_str("\n| goal | target | measured | met |\n|---|---|---|---|\n");
        for g in &self.goals {
            let met = match g.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "?",
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                g.what, g.target, g.measured, met
            ));
        }
        out
    }

    /// Writes the JSON file, creating its directory.
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n").with_context(|| format!("write {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_is_the_median_of_round_ratios() {
        let f = Figure::paired(
            "k",
            "l",
            "MB/s",
            Better::Higher,
            vec![100.0, 200.0, 100.0],
            vec![50.0, 150.0, 60.0],
        );
        assert_eq!(f.direct, Some(100.0));
        assert_eq!(f.tunnel, Some(60.0));
        assert_eq!(f.ratio, Some(0.6));
        let f = f.with_relay(vec![80.0, 100.0, 90.0]);
        assert_eq!(f.relay, Some(90.0));
        assert_eq!(f.relay_ratio, Some(0.8));
        assert!(f.to_owned().relay_rounds.len() == 3);
    }
}
