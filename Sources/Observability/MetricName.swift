/// Every metric ciphertail exports, named once so the modules that emit a metric and the
/// documentation (docs/OBSERVABILITY.md) cannot drift apart. KMIPClient and Erasure spell
/// their names as literals (they stay free of this module); a test checks those literals.
public enum MetricName {
    // Capture.
    public static let captureEvents = "ciphertail_capture_events_total"
    public static let captureDocuments = "ciphertail_capture_documents_total"
    public static let bytesIn = "ciphertail_bytes_in_total"
    public static let bytesOut = "ciphertail_bytes_out_total"
    public static let compressionRatio = "ciphertail_compression_ratio"
    public static let captureLag = "ciphertail_capture_lag_seconds"
    public static let resumeTokenAge = "ciphertail_resume_token_age_seconds"
    /// Label `kind`: change | snapshot.
    public static let segmentsWritten = "ciphertail_segments_written_total"
    public static let gaps = "ciphertail_gaps_total"
    /// Label `reason`: disk_full | keys_unavailable.
    public static let capturePaused = "ciphertail_capture_paused"

    // Replication.
    public static let replicationLag = "ciphertail_replication_lag_seconds"
    public static let replicationEvents = "ciphertail_replication_events_total"

    // Keys.
    /// Label `operation`: the KMIP operation (snake case).
    public static let kmipRequestDuration = "ciphertail_kmip_request_duration_seconds"
    /// Label `operation`.
    public static let kmipErrors = "ciphertail_kmip_errors_total"
    public static let erasures = "ciphertail_erasures_total"

    // Schedule, retention, lease, alerts.
    /// Label `result`: ok | failed.
    public static let baseSnapshots = "ciphertail_base_snapshots_total"
    public static let prunedBackups = "ciphertail_pruned_backups_total"
    public static let leaseHeld = "ciphertail_lease_held"
    /// Label `kind`.
    public static let alerts = "ciphertail_alerts_total"

    /// All of the above, for tests and documentation checks.
    public static let all: [String] = [
        captureEvents, captureDocuments, bytesIn, bytesOut, compressionRatio, captureLag, resumeTokenAge,
        segmentsWritten, gaps, capturePaused, replicationLag, replicationEvents, kmipRequestDuration, kmipErrors,
        erasures, baseSnapshots, prunedBackups, leaseHeld, alerts,
    ]
}
