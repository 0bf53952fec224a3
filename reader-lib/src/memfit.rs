//! Whether a reader should ask for huge pages on the segments it maps.
//!
//! `MADV_HUGEPAGE` on a segment mapping makes a fault on a page that is not
//! cached read the 2 MiB around it (4 MiB with readahead) into one folio.
//! While the store fits in memory that is what readers want: a store read
//! back after a reboot or an eviction is cached in 2 MiB folios again, and
//! every reader maps those with one page-table entry each. On a store larger
//! than the memory this process may use, most random lookups fault, and
//! each fault would read megabytes for one frame: 1.2 ms against 0.14 ms per
//! cold lookup here, with 30× the reads (bench/README, "Cold segments").
//!
//! So readers ask only while the store's segments take at most half of
//! that memory: the smaller of the machine's (`MemTotal`) and every memory
//! limit of the process's control groups (v2 `memory.max` and `memory.high`,
//! v1 `memory.limit_in_bytes`, from its own group up to the root). When the
//! machine's memory cannot be read, they do not ask; a group limit that
//! cannot be read counts as none.
//!
//! Those figures are for the kernel's default readahead (128 KiB). Where a
//! device reads ahead more (`read_ahead_kb`), a cold fault without the advice
//! reads that much instead, and `always` may read less.
//!
//! [`HUGE_PAGES_ENV`] overrides the choice for every reader of a process:
//! `always`, `never`, or `auto` (the rule above, also when unset or empty).
//! It is read once per process.
#![forbid(unsafe_code)]

use crate::error::AttachError;
use std::path::Path;
use std::sync::OnceLock;

/// The environment variable that overrides whether readers map segments with
/// huge pages: `auto` (the default), `always` or `never`.
pub const HUGE_PAGES_ENV: &str = "WEIR_HUGE_PAGES";

/// Whether a reader asks for huge pages on its segment mappings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HugePages {
    /// While the store fits in half the memory limit.
    Auto,
    /// On every segment.
    Always,
    /// Never.
    Never,
}

impl HugePages {
    /// The choice [`HUGE_PAGES_ENV`] makes, read once per process (a reader
    /// that re-attaches keeps the choice it opened with); a value it does not
    /// take is an error naming it.
    pub(crate) fn from_env() -> Result<Self, AttachError> {
        static SETTING: OnceLock<Result<HugePages, String>> = OnceLock::new();
        let setting = SETTING.get_or_init(|| {
            let value = std::env::var_os(HUGE_PAGES_ENV).unwrap_or_default();
            let value = value.to_string_lossy();
            Self::parse(&value).ok_or_else(|| value.into_owned())
        });
        setting.clone().map_err(|value| AttachError::Setting {
            name: HUGE_PAGES_ENV,
            value,
            expected: "auto, always or never",
        })
    }

    fn parse(value: &str) -> Option<Self> {
        match value {
            "" | "auto" => Some(Self::Auto),
            "always" => Some(Self::Always),
            "never" => Some(Self::Never),
            _ => None,
        }
    }

    /// Whether a segment of a store whose segments total `store_bytes`
    /// should be mapped with huge pages.
    pub(crate) fn pay(self, store_bytes: u64) -> bool {
        match self {
            Self::Auto => huge_pages_pay(store_bytes, memory_limit()),
            Self::Always => true,
            Self::Never => false,
        }
    }
}

/// Huge pages pay while the segments take at most `limit / HUGE_SHARE`.
const HUGE_SHARE: u64 = 2;

/// Whether segments of a store whose segments total `store_bytes` should be
/// mapped with huge pages, under memory `limit` (`None`: unknown).
pub(crate) fn huge_pages_pay(store_bytes: u64, limit: Option<u64>) -> bool {
    limit.is_some_and(|l| store_bytes <= l / HUGE_SHARE)
}

/// The memory this process may fill with page cache, in bytes: the
/// machine's (`sysinfo`, as `MemTotal`), lowered by any control-group limit;
/// `None` if the kernel does not tell.
/// Read once per process, when the first segment is mapped.
pub(crate) fn memory_limit() -> Option<u64> {
    static LIMIT: OnceLock<Option<u64>> = OnceLock::new();
    *LIMIT.get_or_init(read_memory_limit)
}

fn read_memory_limit() -> Option<u64> {
    let total = nix::sys::sysinfo::sysinfo().ok()?.ram_total();
    let groups = read(Path::new("/proc/self/cgroup")).unwrap_or_default();
    Some(cgroup_limit(&groups, read).map_or(total, |l| l.min(total)))
}

/// A small file of `/proc` or `/sys`, read with no `stat` for its size (they
/// report 0): this runs on the way to a reader's first answer.
fn read(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).ok()?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => return String::from_utf8(buf).ok(),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// The lowest memory limit on the path of each group named in
/// `/proc/self/cgroup` (`groups`), read through `read`; `None` if none is
/// set. Limits are looked up where systemd mounts the hierarchies.
fn cgroup_limit(groups: &str, read: impl Fn(&Path) -> Option<String>) -> Option<u64> {
    let mut lowest: Option<u64> = None;
    for line in groups.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let (base, files): (_, &[&str]) = if controllers.is_empty() {
            // `memory.high` too: the kernel reclaims hard above it.
            (Path::new("/sys/fs/cgroup"), &["memory.max", "memory.high"])
        } else if controllers.split(',').any(|c| c == "memory") {
            (
                Path::new("/sys/fs/cgroup/memory"),
                &["memory.limit_in_bytes"],
            )
        } else {
            continue;
        };
        // A group outside this namespace's view (`/../..`) has no file here.
        if path.split('/').any(|part| part == "..") {
            continue;
        }
        let mut group = Some(Path::new(path.trim_start_matches('/')));
        while let Some(g) = group {
            for file in files {
                let limit =
                    read(&base.join(g).join(file)).and_then(|s| s.trim().parse::<u64>().ok());
                if let Some(l) = limit {
                    lowest = Some(lowest.map_or(l, |m| m.min(l)));
                }
            }
            group = g.parent();
        }
    }
    lowest
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn huge_pages_pay_up_to_half_the_limit() {
        let gib = 1u64 << 30;
        assert!(huge_pages_pay(3 * gib, Some(24 * gib)));
        assert!(huge_pages_pay(12 * gib, Some(24 * gib)));
        assert!(!huge_pages_pay(12 * gib + 1, Some(24 * gib)));
        assert!(!huge_pages_pay(512 << 20, Some(96 << 20)));
        assert!(
            !huge_pages_pay(1, None),
            "an unknown limit asks for nothing"
        );
    }

    #[test]
    fn the_setting_takes_three_words() {
        assert_eq!(HugePages::parse("auto"), Some(HugePages::Auto));
        assert_eq!(HugePages::parse("always"), Some(HugePages::Always));
        assert_eq!(HugePages::parse("never"), Some(HugePages::Never));
        assert_eq!(HugePages::parse(""), Some(HugePages::Auto));
        assert_eq!(HugePages::parse("Never"), None);
        assert_eq!(HugePages::parse("off"), None);
        assert!(HugePages::Always.pay(u64::MAX));
        assert!(!HugePages::Never.pay(0));
    }

    fn files(entries: &[(&str, &str)]) -> impl Fn(&Path) -> Option<String> {
        let map: HashMap<String, String> = entries
            .iter()
            .map(|(p, v)| ((*p).to_owned(), (*v).to_owned()))
            .collect();
        move |p: &Path| map.get(p.to_str()?).cloned()
    }

    #[test]
    fn the_lowest_limit_on_the_group_path_wins() {
        // v2: the group's own limit is "max", its parent's is set.
        let v2 = files(&[
            (
                "/sys/fs/cgroup/system.slice/weir.service/memory.max",
                "max\n",
            ),
            ("/sys/fs/cgroup/system.slice/memory.max", "1073741824\n"),
        ]);
        assert_eq!(
            cgroup_limit("0::/system.slice/weir.service\n", &v2),
            Some(1 << 30)
        );
        // v1: the memory hierarchy only; others are ignored.
        let v1 = files(&[
            (
                "/sys/fs/cgroup/memory/a/b/memory.limit_in_bytes",
                "100663296\n",
            ),
            (
                "/sys/fs/cgroup/memory/a/memory.limit_in_bytes",
                "200000000\n",
            ),
            (
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
            ("/sys/fs/cgroup/cpu/a/b/memory.limit_in_bytes", "1\n"),
        ]);
        let groups = "4:cpu,cpuacct:/a/b\n3:memory:/a/b\n";
        assert_eq!(cgroup_limit(groups, &v1), Some(96 << 20));
        // `memory.high` below `memory.max` binds too.
        let high = files(&[
            ("/sys/fs/cgroup/a/memory.max", "max\n"),
            ("/sys/fs/cgroup/a/memory.high", "100663296\n"),
        ]);
        assert_eq!(cgroup_limit("0::/a\n", &high), Some(96 << 20));
        // A path outside the namespace's view is not followed.
        assert_eq!(cgroup_limit("0::/../a\n", &high), None);
        // A parent's lower limit binds its children.
        let parent = files(&[
            ("/sys/fs/cgroup/a/b/memory.max", "200000000\n"),
            ("/sys/fs/cgroup/a/memory.max", "100663296\n"),
        ]);
        assert_eq!(cgroup_limit("0::/a/b\n", &parent), Some(96 << 20));
        // A namespace root: the limit sits on the mount's own directory.
        let root = files(&[("/sys/fs/cgroup/memory.max", "536870912\n")]);
        assert_eq!(cgroup_limit("0::/\n", &root), Some(512 << 20));
        // Nothing set, or nothing readable.
        assert_eq!(cgroup_limit("0::/a\n", files(&[])), None);
        assert_eq!(cgroup_limit("garbage\n", &v2), None);
    }
}
