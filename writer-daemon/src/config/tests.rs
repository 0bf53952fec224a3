use super::*;

#[test]
fn defaults_are_valid_and_round_trip_through_toml() {
    let c = Config::default();
    c.validate().unwrap();
    let text = toml::to_string(&c).unwrap();
    assert_eq!(Config::from_toml(&text).unwrap(), c);
    let partial = Config::from_toml("sync = \"never\"\nsegment-max-bytes = 4194304\n").unwrap();
    assert_eq!(partial.sync, SyncPolicy::Never);
    assert_eq!(partial.segment_max_bytes, 4 << 20);
    assert_eq!(partial.chunk_rows_log2, 20);
}

#[test]
fn every_bad_value_is_named() {
    let cases: Vec<(&str, Config)> = vec![
        (
            "segment-max-bytes",
            Config {
                segment_max_bytes: 1000,
                ..Config::default()
            },
        ),
        (
            "chunk-rows-log2",
            Config {
                chunk_rows_log2: 9,
                ..Config::default()
            },
        ),
        (
            "chunk-rows-log2",
            Config {
                chunk_rows_log2: 25,
                ..Config::default()
            },
        ),
        (
            "max-payload-bytes",
            Config {
                max_payload_bytes: 0,
                ..Config::default()
            },
        ),
        (
            "max-payload-bytes",
            Config {
                segment_max_bytes: 8 << 20,
                ..Config::default()
            },
        ),
        (
            "max-batch-events",
            Config {
                max_batch_events: 0,
                ..Config::default()
            },
        ),
        (
            "max-batch-bytes",
            Config {
                max_batch_bytes: 0,
                ..Config::default()
            },
        ),
        (
            "group-commit-max-events",
            Config {
                group_commit_max_events: 0,
                ..Config::default()
            },
        ),
        (
            "writer-queue-capacity",
            Config {
                writer_queue_capacity: 0,
                ..Config::default()
            },
        ),
        (
            "writer-queue-capacity",
            Config {
                writer_queue_capacity: 1_048_577,
                ..Config::default()
            },
        ),
        (
            "writer-queue-capacity",
            Config {
                writer_queue_capacity: u32::MAX,
                ..Config::default()
            },
        ),
        (
            "sync-every-n-events",
            Config {
                sync: SyncPolicy::EveryNEvents,
                sync_every_n_events: 0,
                ..Config::default()
            },
        ),
        (
            "sync-interval-ms",
            Config {
                sync: SyncPolicy::IntervalMs,
                sync_interval_ms: 0,
                ..Config::default()
            },
        ),
        (
            "max-frame-bytes",
            Config {
                max_frame_bytes: 10,
                ..Config::default()
            },
        ),
        (
            "max-in-flight-per-connection",
            Config {
                max_in_flight_per_connection: 0,
                ..Config::default()
            },
        ),
        (
            "max-queued-bytes",
            Config {
                max_queued_bytes: (32 << 20) - 1,
                ..Config::default()
            },
        ),
        (
            "max-staged-bytes",
            Config {
                max_staged_bytes: 1 << 20,
                ..Config::default()
            },
        ),
        (
            "max-connections",
            Config {
                max_connections: 0,
                ..Config::default()
            },
        ),
        (
            "read-timeout-ms",
            Config {
                read_timeout_ms: 5,
                ..Config::default()
            },
        ),
        (
            "socket-mode",
            Config {
                socket_mode: 0o666,
                ..Config::default()
            },
        ),
        (
            "socket-mode",
            Config {
                socket_mode: 0o440,
                ..Config::default()
            },
        ),
        (
            "socket-mode",
            Config {
                socket_mode: 0o060,
                ..Config::default()
            },
        ),
        (
            "socket",
            Config {
                socket: Some(PathBuf::new()),
                ..Config::default()
            },
        ),
        (
            "checkpoint-interval-ms",
            Config {
                checkpoint_interval_ms: 1,
                ..Config::default()
            },
        ),
        (
            "data-dir",
            Config {
                data_dir: PathBuf::new(),
                ..Config::default()
            },
        ),
        (
            "idempotency-window",
            Config {
                idempotency_window: 10_000_001,
                ..Config::default()
            },
        ),
        (
            "max-claimed-ids",
            Config {
                max_claimed_ids: (1 << 16) + 1,
                ..Config::default()
            },
        ),
        (
            "metrics-listen",
            Config {
                metrics_listen: Some(String::new()),
                ..Config::default()
            },
        ),
        (
            "metrics-listen",
            Config {
                metrics_listen: Some("127.0.0.1".into()),
                ..Config::default()
            },
        ),
        (
            "metrics-listen",
            Config {
                metrics_listen: Some(":9464".into()),
                ..Config::default()
            },
        ),
        (
            "log-level",
            Config {
                log_level: "verbose".into(),
                ..Config::default()
            },
        ),
        (
            "log-level",
            Config {
                log_level: "weir_daemon=loud".into(),
                ..Config::default()
            },
        ),
    ];
    for (field, c) in cases {
        let err = c.validate().unwrap_err();
        assert_eq!(err.field, field, "{err}");
        assert!(err.to_string().contains(field));
    }
}

#[test]
fn a_frame_too_small_for_a_full_batch_is_refused() {
    // A transaction of 4 × 60 KB could be staged but never resent as
    // one batch (a lost commit reply, a reopen after a restart).
    let small = Config {
        max_payload_bytes: 65536,
        max_frame_bytes: 131_072,
        ..Config::default()
    };
    let err = small.validate().unwrap_err();
    assert_eq!(err.field, "max-frame-bytes", "{err}");
    let text = err.to_string();
    assert!(text.contains("max-batch-bytes = 33554432"), "{text}");
    assert!(text.contains("max-batch-events = 10000"), "{text}");
    // The bound is exact: one byte less refuses, the bound itself fits.
    let full = 100_000 + 16 * EVENT_WIRE_OVERHEAD + BATCH_ENVELOPE_BYTES;
    let fits = |frame: u64| Config {
        max_batch_bytes: 100_000,
        max_batch_events: 16,
        max_frame_bytes: frame as u32,
        ..small.clone()
    };
    assert!(fits(full).validate().is_ok());
    assert!(fits(full - 1).validate().is_err());
    assert!(Config::default().validate().is_ok());
}

#[test]
fn a_batch_too_small_for_one_event_of_the_largest_payload_is_refused() {
    // max-payload-bytes plus an entity and a scope of MAX_NAME_BYTES each.
    let bound = (16 << 20) + 2 * MAX_NAME_BYTES as u64;
    let with = |bytes: u64| Config {
        max_batch_bytes: bytes,
        ..Config::default()
    };
    let err = with(1 << 20).validate().unwrap_err();
    assert_eq!(err.field, "max-batch-bytes", "{err}");
    let text = err.to_string();
    assert!(text.contains("max-batch-bytes = 1048576"), "{text}");
    assert!(text.contains("max-payload-bytes = 16777216"), "{text}");
    assert!(text.contains(&bound.to_string()), "{text}");
    assert!(with(bound - 1).validate().is_err());
    assert!(with(bound).validate().is_ok());
}

#[test]
fn segments_are_at_most_32_gib_so_a_footer_lists_every_frame() {
    let with = |bytes: u64| Config {
        segment_max_bytes: bytes,
        ..Config::default()
    };
    with(32 << 30).validate().unwrap();
    let err = with((32 << 30) + 1).validate().unwrap_err();
    assert_eq!(err.field, "segment-max-bytes", "{err}");
    assert!(err.to_string().contains("32 GiB"), "{err}");
    assert!(with(1 << 40).validate().is_err());
}

#[test]
fn a_relative_socket_must_fit_once_made_absolute() {
    // The test runs in the crate's directory, so this 100-byte relative
    // path is longer than 107 bytes once absolute.
    let rel = PathBuf::from(format!("{}.sock", "s".repeat(95)));
    let c = Config {
        socket: Some(rel.clone()),
        ..Config::default()
    };
    let err = c.validate().unwrap_err();
    assert_eq!(err.field, "socket", "{err}");
    let abs = std::path::absolute(&rel).unwrap().as_os_str().len();
    assert!(
        err.reason.contains(&format!("{abs} bytes (100 as given)")),
        "{err}"
    );
    let short = Config {
        socket: Some("s.sock".into()),
        ..Config::default()
    };
    assert!(short.validate().is_ok());
}

#[test]
fn metrics_listen_addresses_are_accepted() {
    for ok in ["127.0.0.1:9464", "[::1]:0", "localhost:9464", "0.0.0.0:80"] {
        let c = Config {
            metrics_listen: Some(ok.into()),
            ..Config::default()
        };
        assert!(c.validate().is_ok(), "{ok}");
    }
}

#[test]
fn no_claims_and_the_most_claims_are_accepted() {
    for max_claimed_ids in [0, 1 << 16] {
        let c = Config {
            max_claimed_ids,
            ..Config::default()
        };
        assert!(c.validate().is_ok(), "{max_claimed_ids}");
    }
}

#[test]
fn the_largest_writer_queue_is_accepted() {
    let c = Config {
        writer_queue_capacity: 1 << 20,
        ..Config::default()
    };
    assert!(c.validate().is_ok());
}

#[test]
fn log_levels_and_directives_are_accepted() {
    for ok in [
        "info",
        "WARN",
        "off",
        "weir_daemon=debug,warn",
        "a::b=trace, info",
    ] {
        let c = Config {
            log_level: ok.into(),
            ..Config::default()
        };
        assert!(c.validate().is_ok(), "{ok}");
    }
}

#[test]
fn unknown_keys_and_bad_types_are_refused() {
    assert!(Config::from_toml("segment-max-byts = 5").is_err());
    assert!(Config::from_toml("sync = \"sometimes\"").is_err());
}
