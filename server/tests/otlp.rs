//! OpenTelemetry: with `MESHWORK_OTLP_ENDPOINT` set, the real binary exports the spans of one
//! command to an in-process OTLP/gRPC receiver, named for each stage and linked to the
//! command's root span.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use glam::Vec3;
use meshwork_protocol::{Command, EntityId};
use meshwork_testkit::server_process::ServerProcess;
use meshwork_testkit::{Client, random_signer};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_meshwork-server");

struct Receiver(mpsc::UnboundedSender<ExportTraceServiceRequest>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let _ = self.0.send(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_command_exports_linked_spans_over_otlp() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Receiver(tx)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let endpoint = format!("http://{addr}");
    let mut server = ServerProcess::start_with_env(
        BIN,
        &data,
        &[],
        &[("MESHWORK_OTLP_ENDPOINT", endpoint.as_str())],
    );
    let ticket = server.ticket(BIN, &data, "editor");
    let mut c = Client::join(&ticket, random_signer()).await.unwrap();
    let cmd = Command::Translate {
        entity: EntityId::new(c.author(), 1),
        delta: Vec3::X,
    };
    c.submit_acked(vec![cmd], Duration::from_secs(10))
        .await
        .unwrap();
    // Shutdown flushes the batch exporter.
    assert!(server.terminate(Duration::from_secs(10)).success());

    let mut spans = Vec::new();
    let end = Instant::now() + Duration::from_secs(20);
    while ![
        "meshwork.command",
        "meshwork.verify_order",
        "meshwork.persist",
        "meshwork.fanout",
    ]
    .iter()
    .all(|n| {
        spans
            .iter()
            .any(|(name, _, _): &(String, Vec<u8>, Vec<u8>)| name == n)
    }) {
        let left = end.saturating_duration_since(Instant::now());
        let Ok(Some(req)) = tokio::time::timeout(left, rx.recv()).await else {
            panic!(
                "spans missing; got {:?}",
                spans.iter().map(|s| &s.0).collect::<Vec<_>>()
            );
        };
        for rs in req.resource_spans {
            for ss in rs.scope_spans {
                for s in ss.spans {
                    spans.push((s.name, s.span_id, s.parent_span_id));
                }
            }
        }
    }
    let by_name: BTreeMap<&str, (&Vec<u8>, &Vec<u8>)> = spans
        .iter()
        .map(|(n, id, parent)| (n.as_str(), (id, parent)))
        .collect();
    let root = by_name["meshwork.command"].0;
    for child in [
        "meshwork.verify_order",
        "meshwork.persist",
        "meshwork.fanout",
    ] {
        assert_eq!(
            by_name[child].1, root,
            "{child} is a child of meshwork.command"
        );
    }
}
