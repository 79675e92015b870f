//! Prometheus metrics, prefix `meshwork_`. Labels never carry session or client ids (unbounded
//! cardinality); per-session detail belongs in logs and traces.

use prometheus::{
    Encoder as _, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Which transport a connection uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Native clients.
    Quic,
    /// The WebSocket fallback (browsers on networks that block UDP).
    WebSocket,
    /// Browsers over WebRTC data channels.
    WebRtc,
}

impl Transport {
    /// Every transport, for initialising labelled metrics.
    pub const ALL: &'static [Self] = &[Self::Quic, Self::WebRtc, Self::WebSocket];

    /// The label value.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Quic => "quic",
            Self::WebSocket => "ws",
            Self::WebRtc => "webrtc",
        }
    }
}

/// Every metric the server exports.
#[derive(Clone, Debug)]
#[allow(missing_docs)] // reason: each field is documented by its help text below
pub struct Metrics {
    registry: Registry,
    pub commands_appended_total: IntCounterVec,
    pub commands_rejected_total: IntCounterVec,
    pub conflicts_total: IntCounterVec,
    pub command_queue_depth: IntGauge,
    pub signature_verify_seconds: Histogram,
    pub command_apply_seconds: Histogram,
    pub packets_sent_total: IntCounterVec,
    pub packets_received_total: IntCounterVec,
    pub bytes_sent_total: IntCounterVec,
    pub bytes_received_total: IntCounterVec,
    pub clients_connected: IntGaugeVec,
    pub sessions_active: IntGauge,
    pub joins_total: IntCounter,
    pub deltas_total: IntCounter,
    pub resumes_total: IntCounter,
    pub undo_total: IntCounterVec,
    pub membership_changes_total: IntCounterVec,
    pub presence_not_sent_total: IntCounter,
    pub compression_bytes_total: IntCounterVec,
    pub presence_out_of_interest_total: IntCounter,
    pub held_entries_total: IntCounterVec,
    pub held_states_total: IntCounter,
    pub persist_batch_seconds: Histogram,
    pub persist_wait_seconds: Histogram,
    pub persist_batch_entries: Histogram,
    pub log_entries: IntGauge,
    pub store_bytes: IntGauge,
    pub rtc_peers: IntGauge,
    pub rtc_signaling_errors_total: IntCounterVec,
    pub rtc_datagrams_dropped_total: IntCounterVec,
    pub asset_chunks_total: IntCounterVec,
    /// Scheduled archives, by result (`archived`, `failed`).
    pub archives_total: IntCounterVec,
    /// Entries rotated out of the store into scheduled archives.
    pub archived_entries_total: IntCounter,
    /// Time to write and rotate one scheduled archive.
    pub archive_seconds: Histogram,
}

/// Every `outcome` label `asset_chunks_total` can carry.
pub const ASSET_OUTCOMES: [&str; 11] = [
    "accepted",
    "stored",
    "already_stored",
    "offset",
    "chunk_hash",
    "file_hash",
    "too_large",
    "too_many",
    "length",
    "unreadable",
    "store",
];

/// Every `reason` label `rtc_signaling_errors_total` can carry.
pub const SIGNALING_ERRORS: [&str; 5] = [
    "bad_request",
    "bad_sdp",
    "too_many_peers",
    "shutting_down",
    "internal",
];

/// Every `reason` label `rtc_datagrams_dropped_total` can carry.
pub const DATAGRAM_DROPS: [&str; 2] = ["unknown_peer", "refused"];

const PREFIX: &str = "meshwork";

/// Every `reason` label `commands_rejected_total` can carry.
pub const REJECT_REASONS: [&str; 31] = [
    "malformed",
    "wrong_version",
    "wrong_session",
    "unknown_author",
    "key_mismatch",
    "bad_signature",
    "permission",
    "replay",
    "conflict",
    "rate_limited",
    "unsupported_version",
    "invalid_invite",
    "invite_expired",
    "bad_proof",
    "bad_key",
    "no_such_session",
    "session_full",
    "invite_revoked",
    "invite_used_up",
    "frame_too_large",
    "bad_frame",
    "undecodable",
    "out_of_phase",
    "presence_dropped",
    "resync_throttled",
    "fetch_log_throttled",
    "submit_paced",
    "per_address_limit",
    "handshake_timeout",
    "idle_timeout",
    "too_slow",
];

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help).namespace(PREFIX), labels)
        .expect("metric names and labels are static and valid");
    r.register(Box::new(c.clone()))
        .expect("each metric is registered once");
    c
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(
        HistogramOpts::new(name, help)
            .namespace(PREFIX)
            .buckets(buckets),
    )
    .expect("metric names and buckets are static and valid");
    r.register(Box::new(h.clone()))
        .expect("each metric is registered once");
    h
}

impl Metrics {
    /// A fresh registry with every metric registered.
    #[must_use]
    pub fn new() -> Self {
        let r = Registry::new();
        let latency = vec![
            0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05,
            0.1, 0.25, 1.0,
        ];
        let commands_appended_total = counter_vec(
            &r,
            "commands_appended_total",
            "Commands accepted into a session log, by command kind.",
            &["kind"],
        );
        let commands_rejected_total = counter_vec(
            &r,
            "commands_rejected_total",
            "Commands, joins and frames refused, by reason.",
            &["reason"],
        );
        let conflicts_total = counter_vec(
            &r,
            "conflicts_total",
            "Concurrent commands on one scope resolved by a conflict strategy.",
            &["strategy"],
        );
        let command_queue_depth = IntGauge::with_opts(
            Opts::new(
                "command_queue_depth",
                "Messages waiting in session driver inboxes.",
            )
            .namespace(PREFIX),
        )
        .expect("static metric");
        r.register(Box::new(command_queue_depth.clone()))
            .expect("registered once");
        let signature_verify_seconds = histogram(
            &r,
            "signature_verify_seconds",
            "Time to verify (batch signature check) and order one submitted batch of commands.",
            latency.clone(),
        );
        let command_apply_seconds = histogram(
            &r,
            "command_apply_seconds",
            "From a batch of commands being received to its entries being durable and fanned out.",
            latency,
        );
        let t = &["transport"];
        let packets_sent_total =
            counter_vec(&r, "packets_sent_total", "Frames and datagrams sent.", t);
        let packets_received_total = counter_vec(
            &r,
            "packets_received_total",
            "Frames and datagrams received.",
            t,
        );
        let bytes_sent_total = counter_vec(&r, "bytes_sent_total", "Payload bytes sent.", t);
        let bytes_received_total =
            counter_vec(&r, "bytes_received_total", "Payload bytes received.", t);
        let clients_connected = IntGaugeVec::new(
            Opts::new("clients_connected", "Open client connections.").namespace(PREFIX),
            t,
        )
        .expect("static metric");
        r.register(Box::new(clients_connected.clone()))
            .expect("registered once");
        let sessions_active = IntGauge::with_opts(
            Opts::new("sessions_active", "Sessions hosted by this process.").namespace(PREFIX),
        )
        .expect("static metric");
        r.register(Box::new(sessions_active.clone()))
            .expect("registered once");
        let joins_total = IntCounter::with_opts(
            Opts::new("joins_total", "Clients that completed the join handshake.")
                .namespace(PREFIX),
        )
        .expect("static metric");
        r.register(Box::new(joins_total.clone()))
            .expect("registered once");
        let deltas_total = IntCounter::with_opts(
            Opts::new(
                "deltas_total",
                "Fan-outs sent as a scene delta instead of entries.",
            )
            .namespace(PREFIX),
        )
        .expect("static metric");
        r.register(Box::new(deltas_total.clone()))
            .expect("registered once");
        let resumes_total = IntCounter::with_opts(
            Opts::new(
                "resumes_total",
                "Reconnecting clients caught up by a sealed delta from their position instead of \
                 a snapshot.",
            )
            .namespace(PREFIX),
        )
        .expect("static metric");
        r.register(Box::new(resumes_total.clone()))
            .expect("registered once");
        let membership_changes_total = IntCounterVec::new(
            Opts::new(
                "membership_changes_total",
                "Admins' membership changes carried out, by change (role_changed, kicked).",
            )
            .namespace(PREFIX),
            &["change"],
        )
        .expect("static metric");
        r.register(Box::new(membership_changes_total.clone()))
            .expect("registered once");
        let undo_total = IntCounterVec::new(
            Opts::new(
                "undo_total",
                "Undo and redo commands by outcome: accepted, or why they were refused \
                 (changed, built_on, nothing_to_undo, nothing_to_redo, no_such_step, limit).",
            )
            .namespace(PREFIX),
            &["op", "outcome"],
        )
        .expect("static metric");
        r.register(Box::new(undo_total.clone()))
            .expect("registered once");
        let presence_not_sent_total = IntCounter::with_opts(
            Opts::new(
                "presence_not_sent_total",
                "Relayed presence updates not queued because the client's outbox was half full \
                 (the latest-wins lane never pushes the log out).",
            )
            .namespace(PREFIX),
        )
        .expect("static metric");
        r.register(Box::new(presence_not_sent_total.clone()))
            .expect("registered once");
        let compression_bytes_total = counter_vec(
            &r,
            "compression_bytes_total",
            "Bytes of a compressed stream before (`stage=\"before\"`: the messages, or the \
             scene's encoding) and after (`stage=\"after\"`: the frames sent) compression, per \
             stream (`presence`: the unreliable lane's packs; `snapshot`: join and resync \
             snapshots) and transport.",
            &["stream", "transport", "stage"],
        );
        let presence_out_of_interest_total = IntCounter::with_opts(
            Opts::new(
                "presence_out_of_interest_total",
                "Relayed presence-lane messages (presence, previews, selections) not sent to a \
                 client because they were outside the region it asked for.",
            )
            .namespace(PREFIX),
        )
        .expect("static metric");
        r.register(Box::new(presence_out_of_interest_total.clone()))
            .expect("registered once");
        let held_entries_total = IntCounterVec::new(
            Opts::new(
                "held_entries_total",
                "Entries fanned out to clients that hold part of the scene, by outcome: sent \
                 as entries, or not_sent (outside the region the client holds, or reaching it \
                 as state: an undo, a redo, an import).",
            )
            .namespace(PREFIX),
            &["outcome"],
        )
        .expect("static metric");
        r.register(Box::new(held_entries_total.clone()))
            .expect("registered once");
        // Both outcomes from the start, at zero: a dashboard's rate has a series to show.
        for outcome in ["sent", "not_sent"] {
            held_entries_total.with_label_values(&[outcome]);
        }
        let held_states_total = IntCounter::with_opts(
            Opts::new(
                "held_states_total",
                "Entity states sent to clients that hold part of the scene, at fan-outs and \
                 region moves: what came into their region, left it, or changed without an \
                 entry they could apply.",
            )
            .namespace(PREFIX),
        )
        .expect("static metric");
        r.register(Box::new(held_states_total.clone()))
            .expect("registered once");
        let persist_batch_seconds = histogram(
            &r,
            "persist_batch_seconds",
            "Time to write and flush one group commit of the store.",
            vec![
                0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
            ],
        );
        let persist_wait_seconds = histogram(
            &r,
            "persist_wait_seconds",
            "Time the store writer held queued work for the commit interval \
             (--commit-interval-ms) before starting a group commit; 0 when it started at once.",
            vec![0.0, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02],
        );
        let persist_batch_entries = histogram(
            &r,
            "persist_batch_entries",
            "Log entries written per group commit.",
            vec![
                0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
            ],
        );
        let log_entries = IntGauge::with_opts(
            Opts::new(
                "log_entries",
                "Entries in the durable logs of all sessions.",
            )
            .namespace(PREFIX),
        )
        .expect("static metric");
        r.register(Box::new(log_entries.clone()))
            .expect("registered once");
        let store_bytes = IntGauge::with_opts(
            Opts::new("store_bytes", "Size of the embedded store on disk.").namespace(PREFIX),
        )
        .expect("static metric");
        r.register(Box::new(store_bytes.clone()))
            .expect("registered once");
        let rtc_peers = IntGauge::with_opts(
            Opts::new(
                "rtc_peers",
                "WebRTC peer connections held (signaled, connecting or open).",
            )
            .namespace(PREFIX),
        )
        .expect("static metric");
        r.register(Box::new(rtc_peers.clone()))
            .expect("registered once");
        let rtc_signaling_errors_total = counter_vec(
            &r,
            "rtc_signaling_errors_total",
            "WebRTC offers refused by the signaling endpoint, by reason.",
            &["reason"],
        );
        let rtc_datagrams_dropped_total = counter_vec(
            &r,
            "rtc_datagrams_dropped_total",
            "UDP datagrams on the WebRTC port dropped: from no known peer, or refused by its peer \
             connection.",
            &["reason"],
        );
        for reason in SIGNALING_ERRORS {
            rtc_signaling_errors_total.with_label_values(&[reason]);
        }
        let asset_chunks_total = counter_vec(
            &r,
            "asset_chunks_total",
            "Asset upload chunks, by outcome: taken, the last one stored, or refused and why.",
            &["outcome"],
        );
        for outcome in ASSET_OUTCOMES {
            asset_chunks_total.with_label_values(&[outcome]);
        }
        for reason in DATAGRAM_DROPS {
            rtc_datagrams_dropped_total.with_label_values(&[reason]);
        }
        let build_info = IntGaugeVec::new(
            Opts::new("build_info", "Build of this server: always 1.").namespace(PREFIX),
            &["version", "protocol"],
        )
        .expect("static metric");
        r.register(Box::new(build_info.clone()))
            .expect("registered once");
        build_info
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                &meshwork_protocol::PROTOCOL_VERSION.to_string(),
            ])
            .set(1);
        // Every known label value exists from the start at 0, so rate() and dashboards work
        // before the first event (Prometheus practice for bounded label sets).
        for kind in meshwork_protocol::CommandKind::ALL {
            commands_appended_total.with_label_values(&[kind.as_str()]);
        }
        let archives_total = counter_vec(
            &r,
            "archives_total",
            "Scheduled archives of old history (written, then rotated out of the store), by result.",
            &["result"],
        );
        for result in ["archived", "failed"] {
            archives_total.with_label_values(&[result]);
        }
        let archived_entries_total = IntCounter::with_opts(
            Opts::new(
                "archived_entries_total",
                "Log entries rotated out of the store into scheduled archives.",
            )
            .namespace(PREFIX),
        )
        .expect("static metric");
        r.register(Box::new(archived_entries_total.clone()))
            .expect("registered once");
        let archive_seconds = histogram(
            &r,
            "archive_seconds",
            "Time to verify, write and rotate one scheduled archive (beside the writer).",
            vec![0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0],
        );
        for strategy in ["merge", "last_write_wins", "reject"] {
            conflicts_total.with_label_values(&[strategy]);
        }
        for reason in REJECT_REASONS {
            commands_rejected_total.with_label_values(&[reason]);
        }
        for transport in Transport::ALL {
            for vec in [
                &packets_sent_total,
                &packets_received_total,
                &bytes_sent_total,
                &bytes_received_total,
            ] {
                vec.with_label_values(&[transport.as_str()]);
            }
        }
        for transport in Transport::ALL {
            clients_connected
                .with_label_values(&[transport.as_str()])
                .set(0);
            for stage in ["before", "after"] {
                compression_bytes_total
                    .with_label_values(&["presence", transport.as_str(), stage])
                    .inc_by(0);
            }
        }
        Self {
            registry: r,
            commands_appended_total,
            commands_rejected_total,
            conflicts_total,
            command_queue_depth,
            signature_verify_seconds,
            command_apply_seconds,
            packets_sent_total,
            packets_received_total,
            bytes_sent_total,
            bytes_received_total,
            clients_connected,
            sessions_active,
            joins_total,
            deltas_total,
            resumes_total,
            undo_total,
            membership_changes_total,
            presence_not_sent_total,
            compression_bytes_total,
            presence_out_of_interest_total,
            held_entries_total,
            held_states_total,
            persist_batch_seconds,
            persist_wait_seconds,
            persist_batch_entries,
            log_entries,
            store_bytes,
            rtc_peers,
            rtc_signaling_errors_total,
            rtc_datagrams_dropped_total,
            asset_chunks_total,
            archives_total,
            archived_entries_total,
            archive_seconds,
        }
    }

    /// The text exposition format of every metric.
    #[must_use]
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Counts a compressed frame of `stream` sent: `before` bytes of messages went as `after`.
    pub fn compressed(&self, stream: &str, transport: Transport, before: usize, after: usize) {
        for (stage, bytes) in [("before", before), ("after", after)] {
            self.compression_bytes_total
                .with_label_values(&[stream, transport.as_str(), stage])
                .inc_by(bytes as u64);
        }
    }

    /// Counts a frame sent.
    pub fn sent(&self, transport: Transport, bytes: usize) {
        self.packets_sent_total
            .with_label_values(&[transport.as_str()])
            .inc();
        self.bytes_sent_total
            .with_label_values(&[transport.as_str()])
            .inc_by(bytes as u64);
    }

    /// Counts a frame received.
    pub fn received(&self, transport: Transport, bytes: usize) {
        self.packets_received_total
            .with_label_values(&[transport.as_str()])
            .inc();
        self.bytes_received_total
            .with_label_values(&[transport.as_str()])
            .inc_by(bytes as u64);
    }

    /// Counts a refusal.
    pub fn rejected(&self, reason: &str) {
        self.commands_rejected_total
            .with_label_values(&[reason])
            .inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
