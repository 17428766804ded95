//! One trace spans the api request, the Temporal workflow and its activities: api and worker
//! export to an in-test OTLP/gRPC collector, and the test finds their spans under one trace id.

use burrow_e2e::{Stack, StackOptions, wait};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value as AnyValue,
};
use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

/// (trace id, service name, span name) of every span received.
type Spans = Arc<Mutex<Vec<(Vec<u8>, String, String)>>>;

struct Collector {
    spans: Spans,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut out = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    AnyValue::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    out.push((span.trace_id, service.clone(), span.name));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test]
async fn one_trace_spans_api_workflow_and_activity() {
    let spans: Spans = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let collector = Collector {
        spans: spans.clone(),
    };
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });

    let stack = Stack::start_with(StackOptions {
        otlp_endpoint: format!("http://{addr}"),
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let event_id = format!("evt_{}", uuid::Uuid::new_v4().simple());
    stack
        .send_event(
            &serde_json::json!({"id": event_id, "type": "invoice.paid", "data": {"object": {}}}),
        )
        .await
        .unwrap();
    stack.wait_event_state(&event_id, "ignored").await.unwrap();

    // Spans are exported in batches; wait until one trace holds all three parts.
    let found = wait::until(
        "api, workflow and activity spans in one trace",
        Duration::from_secs(60),
        || {
            let spans = spans.clone();
            async move {
                let spans = spans.lock().unwrap();
                let mut by_trace: HashMap<&[u8], HashSet<(String, String)>> = HashMap::new();
                for (trace, service, name) in spans.iter() {
                    by_trace
                        .entry(trace.as_slice())
                        .or_default()
                        .insert((service.clone(), name.clone()));
                }
                by_trace.into_values().find(|set| {
                    let has = |svc: &str, pred: &dyn Fn(&str) -> bool| {
                        set.iter().any(|(s, n)| s == svc && pred(n))
                    };
                    has("burrow-api", &|n| n == "provider_webhook")
                        && has("burrow-worker", &|n| n.starts_with("RunWorkflow"))
                        && has("burrow-worker", &|n| n == "apply_provider_event")
                })
            }
        },
    )
    .await;
    let all: Vec<(String, String)> = spans
        .lock()
        .unwrap()
        .iter()
        .map(|(_, s, n)| (s.clone(), n.clone()))
        .collect();
    let trace = found.unwrap_or_else(|e| panic!("{e}; spans seen: {all:?}"));
    assert!(trace.len() >= 3, "{trace:?}");
}
