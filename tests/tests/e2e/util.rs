//! Checks shared by the end-to-end test modules.

use lookout_tests::{get_json, Collector};
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// Every trace of `ids` is found whole (three spans) on `c`.
pub async fn assert_traces_whole(c: &Collector, ids: &[String]) {
    for id in ids {
        let (s, b) = get_json(&c.api_url(&format!("/api/v1/traces/{id}"))).await;
        assert_eq!(s, 200, "acknowledged trace {id} lost");
        assert_eq!(
            b["spans"].as_array().map(Vec::len),
            Some(3),
            "trace {id}: {b}"
        );
    }
}

/// Flush and shut down OpenTelemetry SDK providers on a blocking thread: the SDK flushes
/// on its own threads, so the runtime's workers stay free.
pub async fn flush_and_shut_down(
    tracer: SdkTracerProvider,
    logger: Option<SdkLoggerProvider>,
    meter: SdkMeterProvider,
) {
    tokio::task::spawn_blocking(move || {
        tracer.force_flush().expect("flush spans");
        if let Some(logger) = &logger {
            logger.force_flush().expect("flush logs");
        }
        meter.force_flush().expect("flush metrics");
        tracer.shutdown().expect("shutdown tracer");
        if let Some(logger) = &logger {
            logger.shutdown().expect("shutdown logger");
        }
        meter.shutdown().expect("shutdown meter");
    })
    .await
    .expect("flush task");
}
