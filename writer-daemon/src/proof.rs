//! What the previous instance showed the log holds, read from its gate and
//! its index generation before restore: a start that finds less under
//! `segments/` refuses ([`OpenError::MissingSegments`],
//! [`OpenError::DamagedLog`]) rather than publish a store with stored events
//! missing and their sequences given again (FORMAT.md, "Restore order").

use crate::error::OpenError;
use crate::index::{IndexWriter, generation_dir};
use std::path::Path;
use weir_protocol::gate::STATE_STOPPED;
#[cfg(doc)]
use weir_protocol::gate::published_durable_only;
use weir_protocol::locate::unpack_position;

/// Evidence of what the log held, each item with what shows it.
#[derive(Debug, Clone, Default)]
pub struct Published {
    /// The newest segment known to have been created (a segment's file and
    /// directory entry are synced when it is created).
    segment: Option<(u64, String)>,
    /// Every sequence below it was durable.
    durable: Option<(u64, String)>,
}

impl Published {
    /// From the previous gate (its header's CRC held): its `state`,
    /// `visible` and `published` words, and its sync word
    /// ([`published_durable_only`]; `always_now`: `sync = always` is
    /// configured now, which stands in for a gate without the word).
    /// `visible` shows durable events after a clean stop, or if the
    /// instance ran under `sync = always`: under the other policies an
    /// unsynced tail may be lost in a crash.
    #[must_use]
    pub fn from_gate(
        state: u64,
        visible: u64,
        published: u64,
        sync_word: Option<bool>,
        always_now: bool,
    ) -> Self {
        let mut p = Self::default();
        if published != 0 {
            let (segment, _) = unpack_position(published);
            p.segment(
                segment,
                "the previous instance's gate published frames in it".into(),
            );
        }
        if state == STATE_STOPPED {
            p.durable(
                visible,
                format!(
                    "the previous instance stopped cleanly with sequences below {visible} published (gate), all of them durable"
                ),
            );
        } else if sync_word == Some(true) {
            p.durable(
                visible,
                format!(
                    "the previous instance's gate published sequences below {visible}, and it ran under sync = always, which publishes only durable events"
                ),
            );
        } else if sync_word.is_none() && always_now {
            p.durable(
                visible,
                format!(
                    "the previous instance's gate published sequences below {visible}, and under sync = always only durable events are published (its gate, from an older build, does not say which policy it ran under: if another, start it once with that policy)"
                ),
            );
        }
        p
    }

    /// Adds what generation `g`'s checkpoint in `meta` shows: the segment it
    /// names, and after a clean stop its watermark. One page read.
    pub fn add_index(&mut self, data_dir: &Path, g: u64) {
        let Ok(Some((cp, _))) = IndexWriter::read_checkpoint(data_dir, g) else {
            return;
        };
        let meta = generation_dir(data_dir, g).join("meta");
        self.segment(
            cp.segment_id.get(),
            format!("the checkpoint in {} names it", meta.display()),
        );
        if cp.clean.get() == 1 {
            let w = cp.watermark.get();
            self.durable(
                w,
                format!(
                    "the clean stop's checkpoint in {} records sequences below {w} as durable",
                    meta.display()
                ),
            );
        }
    }

    /// Records that segment `id` existed.
    pub fn segment(&mut self, id: u64, why: String) {
        if self.segment.as_ref().is_none_or(|(s, _)| id > *s) {
            self.segment = Some((id, why));
        }
    }

    /// Records that every sequence below `end` was durable.
    pub fn durable(&mut self, end: u64, why: String) {
        if end > 0 && self.durable.as_ref().is_none_or(|(d, _)| end > *d) {
            self.durable = Some((end, why));
        }
    }

    /// Sequences below the result were durable (0: nothing shows any), and
    /// what shows it.
    #[must_use]
    pub fn durable_end(&self) -> (u64, &str) {
        self.durable
            .as_ref()
            .map_or((0, ""), |(d, why)| (*d, why.as_str()))
    }

    /// Refuses segment ids `ids` (ascending, distinct) unless they run from
    /// 0 without a gap through the newest segment known to exist: weir
    /// never deletes a segment, and the first one is 0.
    pub fn check_segments(&self, dir: &Path, ids: &[u64]) -> Result<(), OpenError> {
        let last = ids.last().copied();
        let known = self.segment.as_ref().map(|(s, _)| *s);
        let Some(newest) = last.max(known) else {
            let (end, why) = self.durable_end();
            return if end > 0 {
                Err(OpenError::MissingSegments {
                    dir: dir.to_owned(),
                    missing: vec![0],
                    proof: format!("there are no segment files, but {why}"),
                })
            } else {
                Ok(())
            };
        };
        if ids.len() as u64 == newest + 1 {
            return Ok(());
        }
        let missing: Vec<u64> = (0..=newest)
            .filter(|id| ids.binary_search(id).is_err())
            .collect();
        let proof = match (last, &self.segment) {
            (Some(l), _) if missing[0] < l => format!(
                "segments are numbered from 0 without gaps and {} exists",
                crate::storage::segment_file_name(l)
            ),
            (_, Some((s, why))) => format!("{}: {why}", crate::storage::segment_file_name(*s)),
            _ => unreachable!("the newest segment is a listed or a known one"),
        };
        Err(OpenError::MissingSegments {
            dir: dir.to_owned(),
            missing,
            proof,
        })
    }
}
