//! An `AppendRequest` built with `AppendRequest::new`/`msgpack` and its
//! setters stores the payload `Client::append_msgpack` stores, and carries
//! its expected version, idempotency key and ids to the daemon, alone or in
//! a batch.

use anyhow::{Context, Result, ensure};
use serde::{Deserialize, Serialize};
use weir::{
    AppendRequest, ClientError, Coordinate, ErrorCode, EventId, EventKind, ExpectedVersion, Reader,
    new_idempotency_key,
};
use weir_tests::{Daemon, SMALL_STORE, Setup, temp_root};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Renamed {
    name: String,
}

fn conflict(r: Result<impl std::fmt::Debug, ClientError>, found: u32) -> Result<()> {
    let e = r.err().context("a stale expected version was stored")?;
    ensure!(e.code() == Some(ErrorCode::VersionConflict), "{e}");
    ensure!(e.found_version() == Some(Some(found)), "{e}");
    Ok(())
}

#[test]
fn a_built_request_stores_what_append_msgpack_stores_and_carries_its_condition_and_ids()
-> Result<()> {
    let root = temp_root()?;
    let setup = Setup::in_dir(root.path()).with(SMALL_STORE);
    let d = Daemon::start(&setup)?;
    let mut c = d.client()?;
    let at = Coordinate::new("user:42", "tenant:a")?;
    let kind = EventKind::new(1, 3)?;
    let ada = Renamed { name: "Ada".into() };

    let plain = c.append_msgpack(&at, kind, &ada)?;
    let stale = AppendRequest::msgpack(&at, kind, &ada)?.with_expected(ExpectedVersion::NoStream);
    conflict(c.append_with(stale), 0)?;
    let built = AppendRequest::msgpack(&at, kind, &ada)?.with_expected(ExpectedVersion::Exact(0));
    let built = c.append_with(built)?;
    let stale = AppendRequest::msgpack(&at, kind, &ada)?.with_expected(ExpectedVersion::Exact(0));
    conflict(c.append_batch(vec![stale]), 1)?;

    let key = new_idempotency_key();
    let id = EventId(0x5c1e_7a2b_90d4_4e6f_8a31_c0ff_ee00_0001);
    let batch = vec![
        AppendRequest::new(&at, kind, b"raw".as_slice())
            .with_expected(ExpectedVersion::Exact(1))
            .with_idempotency_key(key)
            .with_event_id(id)
            .with_correlation_id(EventId(plain.event_id))
            .with_causation_id(EventId(built.event_id)),
    ];
    let first = c.append_batch(batch.clone())?;
    // The same key again: the first receipt, nothing written.
    let again = c.append_batch(batch)?;
    ensure!(again[0].replayed && again[0].sequence == first[0].sequence);
    ensure!(first[0].event_id == id.0 && first[0].clock == 2);

    let reader = Reader::open(&setup.data_dir)?;
    let a = reader.get(EventId(plain.event_id))?.context("plain")?;
    let b = reader.get(EventId(built.event_id))?.context("built")?;
    // Named fields, as append_msgpack writes them (README's payload).
    ensure!(a.payload()? == b"\x81\xa4name\xa3Ada", "{:?}", a.payload()?);
    ensure!(b.payload()? == a.payload()?, "{:?}", b.payload()?);
    ensure!(b.payload_as::<Renamed>()? == ada);
    ensure!((b.entity(), b.scope(), b.kind(), b.clock()) == ("user:42", "tenant:a", kind, 1));
    let x = reader.get(id)?.context("client-chosen id")?;
    ensure!(x.payload()? == b"raw");
    ensure!(x.correlation_id() == EventId(plain.event_id));
    ensure!(x.causation_id() == Some(EventId(built.event_id)));
    ensure!(reader.visible() == 3, "visible {}", reader.visible());
    Ok(())
}
