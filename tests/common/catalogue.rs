//! The table runner the request and response catalogues share: every row on the forward and
//! the reverse listener, one table of outcomes printed, and every misbehaving row listed in
//! the failure instead of the first one stopping the rest.

use std::panic::{AssertUnwindSafe, catch_unwind};

/// The message of a caught panic.
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
}

/// What a catalogue needs from its rig.
pub trait CatalogueRig: Sized {
    type Row;
    fn start() -> Self;
    fn row_name(row: &Self::Row) -> &str;
    /// Runs `row` (number `index`) on listener 0 (forward) or 1 (reverse); returns what
    /// happened, as a table cell, or panics.
    fn run_row(&mut self, listener: usize, row: &Self::Row, index: usize) -> String;
    /// Problems the rig noticed beyond single rows (its API log, its backend), asked before a
    /// failed rig is replaced (`at_end` false) and after the last row.
    fn problems(&mut self, at_end: bool) -> Vec<String>;
}

/// Runs every row on both listeners with a fresh rig after each failed run, prints the table,
/// and fails listing every problem.
pub fn run_catalogue<G: CatalogueRig>(title: &str, rows: &[G::Row]) {
    let mut rig = G::start();
    let mut table = Vec::new();
    let mut failures = Vec::new();
    for (index, row) in rows.iter().enumerate() {
        let mut cells = Vec::new();
        for listener in 0..2 {
            match catch_unwind(AssertUnwindSafe(|| rig.run_row(listener, row, index))) {
                Ok(outcome) => cells.push(outcome),
                Err(panic) => {
                    let text = panic_text(&*panic);
                    cells.push(format!("FAILED: {text}"));
                    failures.push(text);
                    failures.extend(rig.problems(false));
                    rig = G::start();
                }
            }
        }
        table.push(format!(
            "| {} | {} | {} |",
            G::row_name(row),
            cells[0].replace('\n', " "),
            cells[1].replace('\n', " ")
        ));
    }
    failures.extend(rig.problems(true));
    eprintln!(
        "{title}: {} rows\n| row | forward | reverse |\n|---|---|---|\n{}",
        rows.len(),
        table.join("\n")
    );
    assert!(
        failures.is_empty(),
        "{} problems in {} row runs:\n{}",
        failures.len(),
        rows.len() * 2,
        failures.join("\n")
    );
}
