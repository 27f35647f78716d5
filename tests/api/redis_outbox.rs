//! The webhook outbox on Redis: claims, cursors, reading in order across
//! shards, trimming to what every endpoint is done with, the backlog.

use std::time::Duration;

use presence::webhooks::{Cursor, StreamId};

use super::redis_events::{Rig, beat, rig, rig_on};
use super::redis_server::shared_cluster;

/// Eight events on `r`: four users come online in pms.
async fn four_users(r: &mut Rig) {
    for user in ["1", "2", "alice", "bob"] {
        r.beat(beat(user, "pms")).await;
    }
    r.take().await;
}

#[tokio::test]
async fn one_holder_has_a_claim_until_it_lapses() {
    let Some(r) = rig(1, 1000, &["e"]) else {
        return;
    };
    let ttl = Duration::from_millis(300);
    assert!(r.outbox.claim("e", "A", ttl).await.unwrap());
    assert!(!r.outbox.claim("e", "B", ttl).await.unwrap(), "A has it");
    assert!(r.outbox.claim("e", "A", ttl).await.unwrap(), "A renews");
    assert!(
        r.outbox.claim("f", "B", ttl).await.unwrap(),
        "one claim per endpoint"
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(
        r.outbox.claim("e", "B", ttl).await.unwrap(),
        "lapsed: B takes over"
    );
    assert!(!r.outbox.claim("e", "A", ttl).await.unwrap());
}

#[tokio::test]
async fn a_holder_reads_on_from_the_committed_cursor() {
    let Some(mut r) = rig(1, 1000, &["e"]) else {
        return;
    };
    four_users(&mut r).await;
    let start = r.outbox.committed("e").await.unwrap();
    assert_eq!(
        start,
        Cursor(vec![StreamId::default()]),
        "none yet: the start"
    );
    let first = r.outbox.read(&start, 3).await.unwrap();
    assert_eq!(first.len(), 3);
    let mut cursor = start.clone();
    for e in &first {
        cursor.advance(e);
    }
    r.outbox.commit("e", &cursor).await.unwrap();
    assert_eq!(r.outbox.committed("e").await.unwrap(), cursor);
    r.outbox.commit("e", &start).await.unwrap();
    assert_eq!(
        r.outbox.committed("e").await.unwrap(),
        cursor,
        "a cursor never moves back"
    );
    let rest = r.outbox.read(&cursor, 100).await.unwrap();
    assert_eq!(rest.len(), 5);
    assert!(rest[0].id > first[2].id);
    let all = r.outbox.read(&start, 100).await.unwrap();
    assert_eq!(all.len(), 5, "what every endpoint is done with is trimmed");
}

#[tokio::test]
async fn the_log_is_trimmed_to_the_slowest_endpoint_and_backlogs_count_each() {
    let Some(mut r) = rig(1, 1000, &["e", "f"]) else {
        return;
    };
    let stream = format!("{{{}}}:events", r.prefix);
    four_users(&mut r).await;
    let all = r.outbox.read(&Cursor::default(), 100).await.unwrap();
    let upto = |n: usize| {
        let mut c = Cursor::default();
        for e in &all[..n] {
            c.advance(e);
        }
        c
    };
    r.outbox.commit("e", &upto(8)).await.unwrap();
    assert_eq!(r.cmd::<u64>(&["XLEN", &stream]), 8, "f has read nothing");
    r.outbox.commit("f", &upto(2)).await.unwrap();
    assert_eq!(r.cmd::<u64>(&["XLEN", &stream]), 6);
    let e = r.outbox.backlog("e").await.unwrap();
    assert_eq!((e.events, e.oldest_at), (0, None));
    let f = r.outbox.backlog("f").await.unwrap();
    assert_eq!((f.events, f.oldest_at), (6, Some(all[2].event.at)));
    r.outbox.commit("e", &upto(8)).await.unwrap();
    r.outbox.commit("f", &upto(5)).await.unwrap();
    assert_eq!(r.outbox.backlog("f").await.unwrap().events, 3);
    assert_eq!(r.cmd::<u64>(&["XLEN", &stream]), 3);
    assert_eq!(r.outbox.backlog("new").await.unwrap().events, 3);
}

#[tokio::test]
async fn an_entry_that_is_no_event_is_skipped() {
    let Some(mut r) = rig(1, 1000, &["e"]) else {
        return;
    };
    let stream = format!("{{{}}}:events", r.prefix);
    r.beat(beat("1", "pms")).await;
    let _: String = r.cmd(&["XADD", &stream, "*", "e", "not json"]);
    let _: String = r.cmd(&["XADD", &stream, "*", "x", "{}"]);
    r.beat(beat("2", "pms")).await;
    assert_eq!(
        r.log().await,
        [
            "user.online 1 pms",
            "module.enter 1 pms",
            "user.online 2 pms",
            "module.enter 2 pms"
        ]
    );
}

/// Claims, reads across shards, commits and trims on `r` (three shards).
async fn outbox_on_three_shards(mut r: Rig) {
    four_users(&mut r).await;
    let all = r.outbox.read(&Cursor::default(), 100).await.unwrap();
    assert_eq!(all.len(), 8);
    assert!(
        all.windows(2)
            .all(|w| (w[0].id, w[0].shard) < (w[1].id, w[1].shard)),
        "oldest first across shards"
    );
    let some = r.outbox.read(&Cursor::default(), 3).await.unwrap();
    assert_eq!(some, all[..3], "the first entries of all shards");
    let mut cursor = Cursor::default();
    for e in &all[..5] {
        cursor.advance(e);
    }
    r.outbox.commit("e", &cursor).await.unwrap();
    let committed = r.outbox.committed("e").await.unwrap();
    assert_eq!(committed.0.len(), 3);
    let rest = r.outbox.read(&committed, 100).await.unwrap();
    assert_eq!(rest, all[5..]);
    let backlog = r.outbox.backlog("e").await.unwrap();
    assert_eq!(backlog.events, 3);
    assert_eq!(r.outbox.dropped().await.unwrap(), 0);
    assert!(
        r.outbox
            .claim("e", "A", Duration::from_secs(5))
            .await
            .unwrap()
    );
    assert!(
        !r.outbox
            .claim("e", "B", Duration::from_secs(5))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn the_outbox_reads_three_shards_as_one_log() {
    let Some(r) = rig(3, 1000, &["e"]) else {
        return;
    };
    outbox_on_three_shards(r).await;
}

#[tokio::test]
async fn the_outbox_works_on_a_cluster() {
    if !super::redis_server::available() {
        return;
    }
    let cluster = shared_cluster().expect("redis-server is available");
    let nodes = cluster.seed_urls();
    let url = nodes[0].clone();
    let r = rig_on(
        presence::store::Topology::Cluster { nodes },
        &url,
        3,
        1000,
        &["e"],
    );
    outbox_on_three_shards(r).await;
}

#[tokio::test]
async fn the_outbox_works_behind_sentinels() {
    if !super::redis_server::available() {
        return;
    }
    let set = super::redis_server::shared_sentinels().expect("redis-server is available");
    let topology = presence::store::Topology::Sentinel {
        sentinels: set.sentinel_urls(),
        master: super::redis_server::SentinelSet::MASTER.into(),
    };
    let url = set.sentinel_urls()[0].clone();
    outbox_on_three_shards(rig_on(topology, &url, 3, 1000, &["e"])).await;
}
