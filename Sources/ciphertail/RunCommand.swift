import Archive
import ArgumentParser
import Capture
import Dispatch
import Foundation
import Logging
import Mongo
import Observability
import Pipeline
import Sidecar

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run one pipeline as a long-lived sidecar: capture, scheduled base snapshots, retention, replication, metrics.",
        discussion: """
        One process per pipeline file (run several side by side, one per file in pipelines/, \
        each under its own systemd unit: ops/systemd/ciphertail@.service). The process first \
        takes the pipeline's lease, a document in the source cluster (lease.namespace, default \
        ciphertail.leases): only its holder writes. A second process on the same pipeline waits \
        as a healthy standby and takes over when the holder's lease expires (lease.ttlSeconds, \
        default 15), resuming from the durable resume token in the repository.

        As the holder it follows the change stream into the repository's change log (as \
        `ciphertail tail`; tail.enabled: false runs scheduled backups only), takes a base \
        snapshot at every time of schedule.baseSnapshot (a cron expression in \
        schedule.timeZone), applies the retention policy after each, and with a replication \
        section applies the encrypted change log to another cluster. Prometheus metrics and \
        /healthz are served on metrics.listen (default 127.0.0.1:9464; docs/OBSERVABILITY.md).

        Signals: SIGHUP reloads schedule, retention and metrics.stallSeconds (other changes are \
        logged as needing a restart); SIGTERM or SIGINT commit the open segment, release the \
        lease and exit 0. If the disk fills, capture pauses with an alert and resumes from the \
        last durable entry when space returns.

        Examples:
          ciphertail run --pipeline pipelines/continuous-backup.yaml
          ciphertail run --pipeline /etc/ciphertail/pipelines/orders.yaml --log-format json
          systemctl reload ciphertail@orders      # SIGHUP
        """)

    @OptionGroup var common: CommonOptions

    @Option(name: .customLong("metrics-listen"), help: ArgumentHelp("Serve /metrics and /healthz here (host:port; port 0 picks one; overrides metrics.listen).", valueName: "host:port"))
    var metricsListen: String?

    @Flag(name: .customLong("snapshot-now"), help: "Take a base snapshot as soon as this process holds the lease, then follow the schedule.")
    var snapshotNow = false

    @OptionGroup var keys: KeyOptions

    func validate() throws {
        guard common.pipeline != nil else { throw ValidationError("run needs --pipeline FILE") }
        if let l = metricsListen, PipelineFile.parseListen(l) == nil { throw ValidationError("--metrics-listen: '\(l)' is not host:port") }
    }

    func run() throws {
        try runReportingErrors {
            let path = common.pipeline!
            let file = try PipelineFile.load(path: path, forRun: true)
            let settings = file.resolve(uri: nil, namespaces: [], repo: nil, level: nil)
            let (name, uri, repo) = (file.name!, settings.uri!, settings.repo!)
            let logger = common.makeLogger("run")
            let stage = try CaptureKeys(file, keys: keys, common: common)
            defer { stage.stop() }

            var tail: TailOptions?
            if file.tail?.enabled ?? true {
                var options = try makeTailOptions(file, settings: settings, uri: uri, repo: repo, stage: stage)
                options.onAlert = { alert in logger.warning("ALERT \(alert.kind.rawValue): \(alert.message)") }
                tail = options
            }
            var backup = BackupOptions(connection: ConnectionString(uri), repository: repo)
            backup.useArchiveSettings(settings)
            backup.namespaces = try settings.namespaces.map(NamespacePattern.init)
            backup.protector = stage.protector
            backup.excludedNamespaces = stage.excluded

            var configuration = PipelineRunner.Configuration(
                pipeline: name, connection: ConnectionString(uri), repository: repo, tail: tail, backup: backup,
                settings: try ReloadableSettings(file))
            if let ns = file.lease?.namespace.flatMap(Namespace.init) { configuration.leaseNamespace = ns }
            if let ttl = file.lease?.ttlSeconds { configuration.leaseTTL = ttl }
            configuration.snapshotAtStart = snapshotNow
            if let target = file.replication?.uri {
                configuration.replication = try makeReplicationOptions(file, pipelinePath: path, repo: repo, target: target)
            }
            let runner = PipelineRunner(configuration, logger: logger)

            let reload: @Sendable () -> Void = {
                do {
                    let new = try PipelineFile.load(path: path, forRun: true)
                    let restart = ReloadableSettings.needsRestart(old: file, new: new)
                    if !restart.isEmpty {
                        logger.warning("SIGHUP: changes to these sections need a restart and were not applied", metadata: ["sections": "\(restart.joined(separator: ", "))"])
                    }
                    runner.reload(try ReloadableSettings(new))
                } catch {
                    logger.error("SIGHUP: the pipeline file does not load; the running settings stay", metadata: ["error": "\(error)"])
                }
            }
            let listen = PipelineFile.parseListen(metricsListen ?? file.metrics?.listen ?? "127.0.0.1:9464")!
            let endpoint = MetricsEndpoint(host: listen.host, port: listen.port, registry: Telemetry.bootstrap()) {
                let h = runner.health()
                return h.healthy ? .ok(h.detail) : .unhealthy(h.detail)
            }
            let metrics = BackgroundService(start: {
                let port = try endpoint.start()
                logger.notice("metrics endpoint listening", metadata: ["metrics": "http://\(listen.host):\(port)/metrics", "healthz": "http://\(listen.host):\(port)/healthz"])
            }, stop: { endpoint.stop() })
            logger.notice("pipeline starting", metadata: ["pipeline": "\(name)", "repository": "\(repo)", "source": "\(ConnectionString(uri).redacted)"])
            try waitForAsync {
                try await runner.serve(companions: [metrics, ReloadService(reload: reload)], logger: logger)
            }
            logger.notice("pipeline stopped", metadata: ["pipeline": "\(name)"])
        }
    }
}

/// Runs async work from a synchronous command (the CLI's root command is synchronous).
func waitForAsync(_ body: @escaping @Sendable () async throws -> Void) throws {
    final class Outcome: @unchecked Sendable { var error: Error? }
    let outcome = Outcome()
    let done = DispatchSemaphore(value: 0)
    Task {
        do { try await body() } catch { outcome.error = error }
        done.signal()
    }
    done.wait()
    if let e = outcome.error { throw e }
}
