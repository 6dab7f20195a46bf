//! The README's `sh` blocks, for the tests that run them as the README writes them (the
//! developer's tour in `shells/cli/tests/demo.rs`, the operator's section in
//! `shells/server/tests/readme_operator.rs`, which include this file by path).

/// The README.
pub const README: &str = include_str!("../../README.md");

/// The lines of the first `sh` block under the README heading `heading` (e.g. `## Five minutes
/// for an operator`), with comments and blank lines removed.
pub fn sh_lines(heading: &str) -> Vec<String> {
    let section = README
        .split(heading)
        .nth(1)
        .unwrap_or_else(|| panic!("the README has no section {heading:?}"));
    let block = section
        .split("```sh")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap_or_else(|| panic!("the README's section {heading:?} has no sh block"));
    block
        .lines()
        .map(|l| l.split(" #").next().unwrap().trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}
