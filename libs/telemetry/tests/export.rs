//! Spans reach an OTLP receiver, named after the service, with their parent links.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use verity_telemetry::TelemetryArgs;
use verity_testkit::otlp::TestCollector;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_with_the_service_name() {
    let collector = TestCollector::start().await.unwrap();
    let args = TelemetryArgs {
        otlp_endpoint: Some(collector.endpoint()),
        ..TelemetryArgs::default()
    };
    let telemetry = verity_telemetry::init("unit-test", &args).await.unwrap();
    let trace_id = {
        let outer = tracing::info_span!("outer");
        let _entered = outer.enter();
        let inner = tracing::info_span!("inner");
        let _inner = inner.enter();
        verity_telemetry::current_trace_id().unwrap()
    };
    drop(telemetry);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let spans = loop {
        let spans = collector.spans();
        if spans.len() >= 2 || tokio::time::Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(spans.len(), 2, "{spans:?}");
    for span in &spans {
        assert_eq!(span.service, "unit-test");
        assert_eq!(span.trace_id, trace_id);
    }
    let outer = spans.iter().find(|s| s.name == "outer").unwrap();
    let inner = spans.iter().find(|s| s.name == "inner").unwrap();
    assert_eq!(inner.parent_span_id, outer.span_id);
}
