//! Typed errors: [`AttachError`] when a file cannot be opened, mapped or
//! validated, [`ReadError`] when a query meets bytes it cannot trust, and the
//! umbrella [`Error`].
#![forbid(unsafe_code)]

use std::path::PathBuf;
use weir_protocol::segment::FrameError;

/// A file of the data directory could not be attached: missing, unreadable,
/// too short, or its header is not what this build reads; or a reader
/// setting in the environment holds a value it does not take.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttachError {
    /// Opening, inspecting or mapping the file failed.
    #[error("cannot open or map {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error (errno kept).
        #[source]
        source: std::io::Error,
    },
    /// The file is not as long as its layout requires (e.g. a truncated copy).
    #[error(
        "{path} is {found} bytes long, expected {expected}; the file is truncated or not a weir file"
    )]
    Length {
        /// The file.
        path: PathBuf,
        /// Required length.
        expected: u64,
        /// Actual length.
        found: u64,
    },
    /// The file does not start with the expected magic.
    #[error("{path} has magic {found:?}, expected {expected:?}: not a weir file of this kind")]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// Expected magic.
        expected: [u8; 8],
        /// Magic found.
        found: [u8; 8],
    },
    /// The layout version is not the one this build reads.
    #[error(
        "{path} has layout version {found}; this build reads version {expected}. Upgrade the reader"
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Supported version.
        expected: u32,
        /// Version in the file.
        found: u32,
    },
    /// A header checksum does not match.
    #[error(
        "{path}: header checksum mismatch (stored {stored:#010x}, computed {computed:#010x}); the file is corrupt"
    )]
    Checksum {
        /// The file.
        path: PathBuf,
        /// Stored CRC.
        stored: u32,
        /// Computed CRC.
        computed: u32,
    },
    /// A header field disagrees with the file's name or with another file.
    #[error("{path}: field `{field}` is {found}, expected {expected}")]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// Which field.
        field: &'static str,
        /// Expected value.
        expected: u64,
        /// Value found.
        found: u64,
    },
    /// The reader has attached as many daemon instances as it can hold
    /// without [`Reader::release_old_views`](crate::Reader::release_old_views).
    #[error(
        "this reader has attached {limit} daemon instances; call Reader::release_old_views to attach more"
    )]
    TooManyViews {
        /// Views a reader holds.
        limit: usize,
    },
    /// An environment variable that tunes readers holds a value it does not
    /// take.
    #[error("environment variable {name} is {value:?}; expected {expected}")]
    Setting {
        /// The variable.
        name: &'static str,
        /// Its value (lossy UTF-8).
        value: String,
        /// The values it takes.
        expected: &'static str,
    },
}

/// Which per-name chain a link belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Chain {
    /// `prev_entity` links from an entity's head.
    Entity,
    /// `prev_scope` links from a scope's head.
    Scope,
    /// `prev_kind` links from a kind's head.
    Kind,
}

/// A query met published bytes that fail their checks. Nothing is returned
/// from such bytes: a typed error instead of garbage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// A lazily mapped file (chunk, strings, names, kinds, segment) could not be attached.
    #[error(transparent)]
    Attach(#[from] AttachError),
    /// The daemon the reader was attached to was superseded, and the new
    /// instance's gate, in place, cannot be attached (e.g. no free file
    /// descriptor, `vm.max_map_count` reached, a damaged file). The last
    /// view is not answered from: the new daemon may have acknowledged
    /// events it does not show. The reader tries again at later queries.
    #[error(
        "the daemon restarted and its new files cannot be attached ({0}); the old ones may miss events it acknowledged"
    )]
    Reattach(#[source] std::sync::Arc<AttachError>),
    /// A published row failed its CRC or self-check.
    #[error("index row of sequence {sequence} is corrupt: {what}")]
    CorruptRow {
        /// Sequence the row is addressed by.
        sequence: u64,
        /// What failed.
        what: &'static str,
    },
    /// A published link led to a row of another entity, scope or kind.
    #[error(
        "{chain:?} chain link to sequence {sequence} reaches a row that does not belong to it ({what})"
    )]
    BrokenLink {
        /// Which chain.
        chain: Chain,
        /// Sequence the link named.
        sequence: u64,
        /// What disagreed.
        what: &'static str,
    },
    /// An interned name entry failed its checks.
    #[error("string entry {string_id} is corrupt: {what}")]
    CorruptString {
        /// The string id (global offset / 8).
        string_id: u64,
        /// What failed.
        what: &'static str,
    },
    /// A mapped table (id table, names table) is inconsistent.
    #[error("{path}: {what}")]
    CorruptTable {
        /// The file.
        path: PathBuf,
        /// What failed.
        what: &'static str,
    },
    /// The frame an index row points at failed to decode or its CRC check.
    #[error("frame of sequence {sequence} in segment {segment} at offset {offset}: {source}")]
    Frame {
        /// Sequence of the event.
        sequence: u64,
        /// Segment id.
        segment: u64,
        /// Frame offset.
        offset: u64,
        /// The decoder's verdict.
        #[source]
        source: FrameError,
    },
    /// The frame decodes but disagrees with its index row.
    #[error(
        "frame of sequence {sequence} in segment {segment} at offset {offset} does not match its index row: {what}"
    )]
    FrameMismatch {
        /// Sequence of the event.
        sequence: u64,
        /// Segment id.
        segment: u64,
        /// Frame offset.
        offset: u64,
        /// What disagreed.
        what: &'static str,
    },
    /// The payload is not valid msgpack for the requested type.
    #[error("payload of sequence {sequence} does not decode: {source}")]
    Decode {
        /// Sequence of the event.
        sequence: u64,
        /// The decoder's error.
        #[source]
        source: rmp_serde::decode::Error,
    },
    /// Waiting on the gate's futex failed.
    #[error("futex wait on the gate failed: {errno}")]
    Futex {
        /// The errno.
        errno: nix::errno::Errno,
    },
}

/// Any error of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Attaching to the data directory failed.
    #[error(transparent)]
    Attach(#[from] AttachError),
    /// A query failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// An append, or the connection for it, failed.
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    /// A saved [`Cursor`](crate::Cursor) could not be read back.
    #[error(transparent)]
    Cursor(#[from] crate::CursorError),
    /// A value could not be encoded as a msgpack payload
    /// ([`AppendRequest::msgpack`](crate::AppendRequest::msgpack)).
    #[error("cannot encode the payload: {0}")]
    Encode(#[from] crate::EncodeError),
}

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn a_client_error_converts_to_the_crate_error() {
        fn connect() -> Result<(), Error> {
            let dir = tempfile::tempdir().expect("temp dir");
            crate::Client::connect_dir(dir.path())?;
            Ok(())
        }
        assert!(matches!(connect(), Err(Error::Client(_))));
    }
}
