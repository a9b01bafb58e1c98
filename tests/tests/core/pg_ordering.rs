//! PostgreSQL: a tailing reader never skips an event that commits after one with a higher
//! position, even when every writer holds its transaction open for a while before commit.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use vodsource_commands::ports::{EventLog, ExpectedVersion};
use vodsource_commands::Subscription;

use crate::conformance::{append, published};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tailing_reader_sees_every_event_once_in_order_while_16_writers_commit_late() {
    const WRITERS: usize = 16;
    const APPENDS: usize = 500;
    let log = crate::helpers::pg_log().await;
    let shared: Arc<dyn EventLog> = Arc::new(log.clone());

    let mut subscription = Subscription::new(shared.clone(), 0).with_page(100);
    let reader = tokio::spawn(async move {
        let mut seen = Vec::with_capacity(WRITERS * APPENDS);
        while seen.len() < WRITERS * APPENDS {
            let batch = tokio::time::timeout(Duration::from_secs(60), subscription.next_batch())
                .await
                .expect("the reader keeps receiving events")
                .expect("batch");
            seen.extend(batch.into_iter().map(|e| (e.position, e.event_id)));
        }
        seen
    });

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let log = log.clone();
        writers.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(APPENDS);
            for v in 0..APPENDS {
                let hold = Duration::from_micros(rand::thread_rng().gen_range(0..=5_000));
                let request = append(
                    &format!("writer-{w}"),
                    ExpectedVersion::Exact(v as u64),
                    vec![published()],
                );
                ids.push(request.events[0].event_id);
                log.append_holding(request, hold).await.expect("append");
            }
            ids
        }));
    }
    let mut written = HashSet::new();
    for writer in writers {
        written.extend(writer.await.expect("writer"));
    }
    let seen = reader.await.expect("reader");

    let positions: Vec<u64> = seen.iter().map(|(p, _)| *p).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "positions arrive strictly increasing"
    );
    assert_eq!(
        positions,
        (1..=(WRITERS * APPENDS) as u64).collect::<Vec<_>>(),
        "no gaps, nothing twice"
    );
    let ids: HashSet<_> = seen.iter().map(|(_, id)| *id).collect();
    assert_eq!(ids.len(), WRITERS * APPENDS, "every event exactly once");
    assert_eq!(ids, written, "the reader saw exactly what was written");
}
