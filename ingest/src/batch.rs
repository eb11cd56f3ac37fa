//! A decoded export request of any signal: the unit the WAL stores and the stores apply.

use lookout_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use lookout_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use lookout_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use lookout_proto::otlp::metrics::v1::metric::Data;
use prost::Message;

use crate::signal::Signal;

/// One export request, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Batch {
    /// Spans.
    Traces(ExportTraceServiceRequest),
    /// Log records.
    Logs(ExportLogsServiceRequest),
    /// Metrics.
    Metrics(ExportMetricsServiceRequest),
}

impl Batch {
    /// The signal of this batch.
    pub fn signal(&self) -> Signal {
        match self {
            Batch::Traces(_) => Signal::Traces,
            Batch::Logs(_) => Signal::Logs,
            Batch::Metrics(_) => Signal::Metrics,
        }
    }

    /// Decode protobuf bytes of `signal`.
    pub fn decode_protobuf(signal: Signal, bytes: &[u8]) -> Result<Batch, prost::DecodeError> {
        Ok(match signal {
            Signal::Traces => Batch::Traces(ExportTraceServiceRequest::decode(bytes)?),
            Signal::Logs => Batch::Logs(ExportLogsServiceRequest::decode(bytes)?),
            Signal::Metrics => Batch::Metrics(ExportMetricsServiceRequest::decode(bytes)?),
        })
    }

    /// Decode an OTLP/JSON body of `signal`.
    pub fn decode_json(
        signal: Signal,
        bytes: &[u8],
    ) -> Result<Batch, lookout_proto::json::JsonError> {
        Ok(match signal {
            Signal::Traces => Batch::Traces(lookout_proto::json::decode_traces(bytes)?),
            Signal::Logs => Batch::Logs(lookout_proto::json::decode_logs(bytes)?),
            Signal::Metrics => Batch::Metrics(lookout_proto::json::decode_metrics(bytes)?),
        })
    }

    /// Decode an OTLP/JSON body of `signal`, telling `grow` what the decoded batch holds
    /// as it grows ([`lookout_proto::json::decode_traces_metered`]).
    pub fn decode_json_metered(
        signal: Signal,
        bytes: &[u8],
        grow: lookout_proto::json::Grow<'_>,
    ) -> Result<Batch, lookout_proto::json::JsonError> {
        use lookout_proto::json;
        Ok(match signal {
            Signal::Traces => Batch::Traces(json::decode_traces_metered(bytes, grow)?),
            Signal::Logs => Batch::Logs(json::decode_logs_metered(bytes, grow)?),
            Signal::Metrics => Batch::Metrics(json::decode_metrics_metered(bytes, grow)?),
        })
    }

    /// Protobuf encoding, as written to the WAL.
    pub fn encode_protobuf(&self) -> Vec<u8> {
        match self {
            Batch::Traces(r) => r.encode_to_vec(),
            Batch::Logs(r) => r.encode_to_vec(),
            Batch::Metrics(r) => r.encode_to_vec(),
        }
    }

    /// Number of items: spans, log records or metric data points.
    pub fn item_count(&self) -> u64 {
        match self {
            Batch::Traces(r) => r
                .resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .map(|ss| ss.spans.len() as u64)
                .sum(),
            Batch::Logs(r) => r
                .resource_logs
                .iter()
                .flat_map(|rl| &rl.scope_logs)
                .map(|sl| sl.log_records.len() as u64)
                .sum(),
            Batch::Metrics(r) => r
                .resource_metrics
                .iter()
                .flat_map(|rm| &rm.scope_metrics)
                .flat_map(|sm| &sm.metrics)
                .map(|m| metric_points(m.data.as_ref()))
                .sum(),
        }
    }
}

/// Data points in one metric.
pub fn metric_points(data: Option<&Data>) -> u64 {
    match data {
        Some(Data::Gauge(g)) => g.data_points.len() as u64,
        Some(Data::Sum(s)) => s.data_points.len() as u64,
        Some(Data::Histogram(h)) => h.data_points.len() as u64,
        Some(Data::ExponentialHistogram(h)) => h.data_points.len() as u64,
        Some(Data::Summary(s)) => s.data_points.len() as u64,
        None => 0,
    }
}
