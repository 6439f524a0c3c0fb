//! The results: figures per path with their spread over rounds, per-request counts per
//! process, the goals of issue 14; a table for people ([`table`]) and a JSON file for
//! comparing runs.

mod goals;
mod model;
mod table;

use std::path::Path;

use anyhow::Context as _;

pub(crate) use goals::goals;
pub use model::{Better, Figure, Goal, ProcRow, Report, Series};

impl Report {
    /// The tables, as Markdown (they read as well in a terminal as in the README).
    pub fn table(&self) -> String {
        table::render(self)
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
