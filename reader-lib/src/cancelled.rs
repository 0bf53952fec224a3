//! Every cancelled range, for a gate whose range slots overflowed: the
//! gate then holds only the first ranges, and tombstone cells (entity id
//! `NO_NAME`, FORMAT.md) are the authority for the rest.
#![forbid(unsafe_code)]

use crate::error::ReadError;
use crate::gate::Watermark;
use crate::view::View;
use weir_protocol::gate::merge_range;
use weir_protocol::index::NO_NAME;

/// The cancelled ranges below `wm.visible`, sorted and merged: the gate's
/// loaded ranges plus every run of tombstone cells in the entity columns.
/// One pass over the published entity column (4 bytes an event), so it is
/// called only when the gate overflowed.
pub(crate) fn complete(view: &View, wm: &Watermark) -> Result<Vec<(u64, u64)>, ReadError> {
    let log2 = view.geo.log2;
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut run: Option<(u64, u64)> = None;
    let mut base = 0;
    while base < wm.visible {
        let rows = usize::try_from((wm.visible - base).min(1 << log2)).unwrap_or(usize::MAX);
        let cols = view.columns(base >> log2, rows)?;
        for (i, e) in cols.entities.iter().enumerate() {
            if e.get() != NO_NAME {
                continue;
            }
            let seq = base + i as u64;
            match &mut run {
                Some((_, end)) if *end == seq => *end = seq + 1,
                _ => {
                    if let Some((s, e)) = run.replace((seq, seq + 1)) {
                        out.push((s, e));
                    }
                }
            }
        }
        base += 1 << log2;
    }
    out.extend(run);
    for &(s, e) in wm.cancelled() {
        merge_range(&mut out, s, e);
    }
    Ok(out)
}
