//! The `tracing` feature: a span for each task poll, events for cancel
//! requests, task ends and slow polls, seen by a subscriber that records
//! them.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Keeps each event's message and fields as text, and counts span entries.
#[derive(Clone, Default)]
struct Recorder {
    events: Arc<Mutex<Vec<String>>>,
    entered: Arc<Mutex<usize>>,
}

struct Text(String);
impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={:?}", field.name(), value));
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut text = Text(format!(
            "{} {}",
            event.metadata().level(),
            event.metadata().target()
        ));
        event.record(&mut text);
        self.events.lock().unwrap().push(text.0);
    }
    fn enter(&self, _: &Id) {
        *self.entered.lock().unwrap() += 1;
    }
    fn exit(&self, _: &Id) {}
}

#[test]
fn polls_cancels_ends_and_slow_polls_are_traced() {
    let rec = Recorder::default();
    tracing::subscriber::with_default(rec.clone(), || {
        let mut rt = ringio::Runtime::builder()
            .debug(true)
            .slow_callback_duration(Duration::from_millis(20))
            .logger(|_| {})
            .build()
            .unwrap();
        rt.run(async {
            let t = ringio::create_task(async {
                ringio::sleep(Duration::from_secs(3600)).await?;
                Ok::<_, ringio::Error>(())
            });
            ringio::sleep(Duration::from_millis(1)).await.unwrap();
            t.cancel_with("enough");
            assert!(t.await.unwrap_err().is_cancelled());
            // A poll that blocks the loop.
            ringio::create_task(async {
                std::thread::sleep(Duration::from_millis(40));
                Ok::<_, ringio::Error>(())
            })
            .await
            .unwrap();
        })
        .unwrap();
    });
    let events = rec.events.lock().unwrap().clone();
    let has = |needle: &[&str]| events.iter().any(|e| needle.iter().all(|n| e.contains(n)));
    assert!(
        has(&["DEBUG ringio::task", "cancel requested", "enough"]),
        "{events:#?}"
    );
    assert!(has(&["task ended", "cancelled=true"]), "{events:#?}");
    assert!(has(&["WARN ringio::loop", "took"]), "{events:#?}");
    assert!(*rec.entered.lock().unwrap() >= 3, "poll spans were entered");
}
