//! An OTLP collector for the tests: the trace and metrics services of the OTLP protos
//! (opentelemetry-proto's tonic code) on a loopback port, keeping what they receive.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;

/// A span as received.
#[derive(Debug, Clone)]
pub struct Span {
    /// The `service.name` of the process that sent it.
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent: String,
    pub attributes: BTreeMap<String, String>,
}

/// A metric data point as received: its metric's name, attributes and value (a histogram's
/// count as its value).
#[derive(Debug, Clone)]
pub struct Point {
    pub service: String,
    pub metric: String,
    pub attributes: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    points: Vec<Point>,
}

/// The collector; it serves until the test process ends.
#[derive(Clone)]
pub struct Collector {
    received: Arc<Mutex<Received>>,
    /// `http://127.0.0.1:PORT`, for `OTEL_EXPORTER_OTLP_ENDPOINT` with protocol `grpc`.
    pub endpoint: String,
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(kv: &[KeyValue]) -> BTreeMap<String, String> {
    kv.iter().map(|kv| (kv.key.clone(), text(&kv.value))).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn service(resource: Option<&opentelemetry_proto::tonic::resource::v1::Resource>) -> String {
    resource
        .map(|r| attributes(&r.attributes))
        .and_then(|a| a.get("service.name").cloned())
        .unwrap_or_default()
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.received.lock().unwrap_or_else(|p| p.into_inner());
        for rs in request.into_inner().resource_spans {
            let service = service(rs.resource.as_ref());
            for ss in rs.scope_spans {
                for s in ss.spans {
                    got.spans.push(Span {
                        service: service.clone(),
                        name: s.name,
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent: hex(&s.parent_span_id),
                        attributes: attributes(&s.attributes),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as N;
        let mut got = self.received.lock().unwrap_or_else(|p| p.into_inner());
        for rm in request.into_inner().resource_metrics {
            let service = service(rm.resource.as_ref());
            for sm in rm.scope_metrics {
                for m in sm.metrics {
                    let mut push = |attrs: &[KeyValue], value: f64| {
                        got.points.push(Point {
                            service: service.clone(),
                            metric: m.name.clone(),
                            attributes: attributes(attrs),
                            value,
                        })
                    };
                    let number = |v: &Option<N>| match v {
                        Some(N::AsDouble(d)) => *d,
                        Some(N::AsInt(i)) => *i as f64,
                        None => f64::NAN,
                    };
                    match &m.data {
                        Some(Data::Gauge(g)) => {
                            g.data_points.iter().for_each(|p| push(&p.attributes, number(&p.value)))
                        }
                        Some(Data::Sum(s)) => {
                            s.data_points.iter().for_each(|p| push(&p.attributes, number(&p.value)))
                        }
                        Some(Data::Histogram(h)) => {
                            h.data_points.iter().for_each(|p| push(&p.attributes, p.count as f64))
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse { partial_success: None }))
    }
}

impl Collector {
    /// Start one on a free loopback port, on a runtime of its own.
    pub fn start() -> Collector {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the OTLP collector");
        let addr = listener.local_addr().expect("its address");
        listener.set_nonblocking(true).expect("nonblocking");
        let collector = Collector { received: Arc::default(), endpoint: format!("http://{addr}") };
        let served = collector.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                let _ = tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(served.clone()))
                    .add_service(MetricsServiceServer::new(served))
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                    .await;
            });
        });
        collector
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.received.lock().unwrap_or_else(|p| p.into_inner()).spans.clone()
    }

    /// Every metric point received so far.
    pub fn points(&self) -> Vec<Point> {
        self.received.lock().unwrap_or_else(|p| p.into_inner()).points.clone()
    }

    /// Wait (up to `within`) until `found` finds something in what was received.
    pub fn wait_for<T>(&self, within: Duration, mut found: impl FnMut(&Collector) -> Option<T>) -> Option<T> {
        let end = Instant::now() + within;
        loop {
            if let Some(t) = found(self) {
                return Some(t);
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
