//! Test helper: the byte tables of `docs/FORMAT.md`.

/// The text of the `docs/FORMAT.md` section whose heading starts with
/// `heading` (up to the next heading), and the (offset, width) of each of
/// its table rows whose two first cells are plain numbers.
pub(crate) fn section(heading: &str) -> (&'static str, Vec<(usize, usize)>) {
    let spec = include_str!("../../docs/FORMAT.md");
    let text = spec
        .split(heading)
        .nth(1)
        .and_then(|s| s.split("\n#").next())
        .unwrap_or_else(|| panic!("FORMAT.md has a section {heading:?}"));
    let rows = text
        .lines()
        .filter_map(|l| {
            let c: Vec<&str> = l.split('|').map(str::trim).collect();
            Some((c.get(1)?.parse().ok()?, c.get(2)?.parse().ok()?))
        })
        .collect();
    (text, rows)
}
