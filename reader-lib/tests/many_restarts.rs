//! A long-lived reader follows any number of daemon restarts as long as it
//! calls `release_old_views` now and then; one that holds all the views it
//! can fails its queries rather than answer from a superseded view.
//! (A reader holds 65,536 views; these tests open readers that hold 4.)

mod fixture;

use fixture::{Ev, Fixture, Res};
use weir::{AttachError, ReadError, Reader};

#[test]
fn a_reader_that_releases_its_old_views_follows_every_restart() -> Res {
    let mut f = Fixture::new()?;
    f.append(&[Ev::new("r", "s", 0x1001, b"0")])?;
    f.publish();
    let mut r = Reader::open_with_max_views(f.path(), 4)?;
    for n in 1..=20u128 {
        f.supersede(0x1_0000 + n)?;
        f.append(&[Ev::new("r", "s", 0x1001, b"n")])?;
        f.publish();
        let len = r.stream("r")?.len();
        assert_eq!((r.status().instance, len), (0x1_0000 + n, n as usize + 1));
        assert_eq!(r.release_old_views(), 1, "restart {n}");
    }
    Ok(())
}

#[test]
fn a_reader_with_no_view_left_refuses_until_it_releases() -> Res {
    let mut f = Fixture::new()?;
    f.append(&[Ev::new("r", "s", 0x1001, b"0")])?;
    f.publish();
    let mut r = Reader::open_with_max_views(f.path(), 4)?;
    for n in 1..=3u128 {
        f.supersede(0x1_0000 + n)?;
        assert_eq!(r.status().instance, 0x1_0000 + n);
    }
    f.supersede(0x1_0004)?;
    f.append(&[Ev::new("r", "s", 0x1001, b"1")])?;
    f.publish();
    let got = r.stream("r").map(|v| v.len());
    assert!(
        matches!(
            &got,
            Err(ReadError::Reattach(e)) if matches!(**e, AttachError::TooManyViews { limit: 4 })
        ),
        "{got:?}"
    );
    assert_eq!(r.release_old_views(), 3);
    assert_eq!(r.stream("r")?.len(), 2);
    assert_eq!(r.status().instance, 0x1_0004);
    Ok(())
}
