import Archive
import Capture
import Foundation
import Logging
import Metrics
import Mongo
import Observability
import Pipeline
import Replication

/// What `ciphertail run` can change without a restart (SIGHUP).
public struct ReloadableSettings: Equatable, Sendable {
    public var schedule: CronSchedule?
    public var timeZone: TimeZone
    public var retention: RetentionPolicy?
    public var stallSeconds: Double

    public init(schedule: CronSchedule?, timeZone: TimeZone, retention: RetentionPolicy?, stallSeconds: Double) {
        self.schedule = schedule
        self.timeZone = timeZone
        self.retention = retention
        self.stallSeconds = stallSeconds
    }

    /// The settings of a pipeline file (validated: its cron and zone parse).
    public init(_ file: PipelineFile) throws {
        schedule = try file.schedule?.baseSnapshot.map(CronSchedule.init)
        timeZone = file.schedule?.timeZone.flatMap(TimeZone.init(identifier:)) ?? TimeZone(identifier: "UTC")!
        retention = file.retention.map { RetentionPolicy(keepLast: $0.keepLast, keepDays: $0.keepDays) }
        stallSeconds = file.metrics?.stallSeconds ?? 120
    }

    /// The sections a reload cannot apply: they change what is captured, where, or with
    /// which keys, so they need a restart.
    public static func needsRestart(old: PipelineFile, new: PipelineFile) -> [String] {
        var out: [String] = []
        if old.name != new.name { out.append("name") }
        if old.source != new.source { out.append("source") }
        if old.archive != new.archive { out.append("archive") }
        if old.tail != new.tail { out.append("tail") }
        if old.encryption != new.encryption { out.append("encryption") }
        if old.lease != new.lease { out.append("lease") }
        if old.replication != new.replication { out.append("replication") }
        if old.metrics?.listen != new.metrics?.listen { out.append("metrics.listen") }
        return out
    }
}

/// One pipeline's long-running work: the lease, then (as its holder) continuous capture with
/// scheduled base snapshots, retention after each, and replication. Blocking, on threads of
/// its own; `PipelineService` runs it under swift-service-lifecycle.
public final class PipelineRunner: @unchecked Sendable {
    public struct Configuration {
        public var pipeline: String
        public var connection: ConnectionString
        public var repository: String
        /// Nil: `tail.enabled: false`, scheduled backups only.
        public var tail: TailOptions?
        /// The scheduled backups' settings when there is no tailer.
        public var backup: BackupOptions
        public var settings: ReloadableSettings
        public var leaseNamespace = Namespace(database: "ciphertail", collection: "leases")
        public var leaseTTL: Double = 15
        /// Take a base snapshot as soon as this process holds the lease (`run --snapshot-now`),
        /// then follow the schedule.
        public var snapshotAtStart = false
        /// Encrypted replication of the change log to another cluster (the `replication`
        /// section); its `shouldStop`, callbacks and metrics are the runner's.
        public var replication: ReplicationOptions?

        public init(pipeline: String, connection: ConnectionString, repository: String, tail: TailOptions?,
                    backup: BackupOptions, settings: ReloadableSettings) {
            self.pipeline = pipeline
            self.connection = connection
            self.repository = repository
            self.tail = tail
            self.backup = backup
            self.settings = settings
        }
    }

    public enum Role: String, Sendable { case starting, standby, leader, stopping }

    let configuration: Configuration
    let logger: Logger
    public let lease: PipelineLease
    private let lock = NSLock()
    private var settings: ReloadableSettings
    private var stopping = false
    private var role: Role = .starting
    private var tailer: Tailer?
    private var replicator: Replicator?
    private var lastProgress = Date()
    private var lastDurable: ClusterTime?
    private var paused: Set<String> = []
    private var pruneWanted = false
    private var bytesIn: Int64 = 0
    private var bytesOut: Int64 = 0
    private let scheduleWake = NSCondition()

    public init(_ configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        settings = configuration.settings
        lease = PipelineLease(connection: configuration.connection, namespace: configuration.leaseNamespace,
                              pipeline: configuration.pipeline, ttl: configuration.leaseTTL)
    }

    // MARK: State others read

    public var currentRole: Role { lock.lock(); defer { lock.unlock() }; return role }

    /// `/healthz`: a standby is healthy; a leader is while its capture commits within
    /// `stallSeconds` (an idle stream still commits checkpoints, every idleCheckpointSeconds).
    public func health() -> (healthy: Bool, detail: String) {
        lock.lock(); defer { lock.unlock() }
        switch role {
        case .starting: return (true, "starting")
        case .standby: return (true, "standby: the lease is held by another process")
        case .stopping: return (true, "stopping")
        case .leader:
            let age = Date().timeIntervalSince(lastProgress)
            let pausedText = paused.isEmpty ? "" : ", paused: \(paused.sorted().joined(separator: ", "))"
            if age > settings.stallSeconds {
                return (false, String(format: "stalled: nothing durable for %.0f s (threshold %.0f s)%@", age, settings.stallSeconds, pausedText))
            }
            return (true, String(format: "leader, last durable %.0f s ago%@", age, pausedText))
        }
    }

    public func reload(_ new: ReloadableSettings) {
        lock.lock(); let old = settings; settings = new; lock.unlock()
        if old != new {
            logger.notice("settings reloaded", metadata: [
                "schedule": "\(new.schedule?.description ?? "none")", "timeZone": "\(new.timeZone.identifier)",
                "keepLast": "\(new.retention?.keepLast.map(String.init) ?? "-")", "keepDays": "\(new.retention?.keepDays.map { "\($0)" } ?? "-")",
            ])
        }
        scheduleWake.lock(); scheduleWake.broadcast(); scheduleWake.unlock()
    }

    /// Asks the run to end: the open segment is committed, the lease released.
    public func stop() {
        lock.lock(); stopping = true; lock.unlock()
        scheduleWake.lock(); scheduleWake.broadcast(); scheduleWake.unlock()
    }

    var isStopping: Bool { lock.lock(); defer { lock.unlock() }; return stopping }

    private func setRole(_ r: Role) {
        lock.lock(); role = r; if r == .leader { lastProgress = Date() }; lock.unlock()
        Gauge(label: MetricName.leaseHeld).record(r == .leader ? 1 : 0)
    }

    // MARK: The run

    /// Blocks until `stop()` (returns) or an error that a restart must handle (throws).
    public func run() throws {
        let client = try Client(configuration.connection, appName: "ciphertail-lease")
        let renewer = Thread { [self] in renewLoop(client: try? Client(configuration.connection, appName: "ciphertail-lease")) }
        renewer.name = "ciphertail.lease"
        let ticker = Thread { [self] in tickLoop() }
        ticker.name = "ciphertail.metrics"
        let scheduler = Thread { [self] in scheduleLoop() }
        scheduler.name = "ciphertail.schedule"
        renewer.start(); ticker.start(); scheduler.start()
        defer {
            stop()
            lease.release(client: client)
            setRole(.stopping)
        }
        var announcedStandby = false
        while !isStopping {
            let term: Int64?
            do { term = try lease.acquireOrRenew(client: client) } catch {
                logger.warning("cannot reach the lease in the source cluster; retrying", metadata: ["error": "\(error)"])
                sleep(configuration.leaseTTL / 3)
                continue
            }
            guard let term else {
                if !announcedStandby {
                    let holder = (try? lease.current(client: client))?["owner"]?.stringValue ?? "another process"
                    logger.notice("standby: the pipeline's lease is held elsewhere", metadata: ["holder": "\(holder)", "lease": "\(configuration.leaseNamespace)"])
                    announcedStandby = true
                }
                setRole(.standby)
                sleep(configuration.leaseTTL / 3)
                continue
            }
            announcedStandby = false
            // The repository is made and claimed before anything (the schedule) may write to it.
            let repo = try Repository(path: configuration.repository, create: true)
            try repo.claim(pipeline: configuration.pipeline)
            logger.notice("lease taken: this process writes the pipeline", metadata: ["term": "\(term)", "owner": "\(lease.owner)"])
            setRole(.leader)
            scheduleWake.lock(); scheduleWake.broadcast(); scheduleWake.unlock()
            do {
                try lead(term: term)
            } catch CaptureError.leaseLost(let reason) {
                logger.error("lease lost; writing stopped, back to standby", metadata: ["reason": "\(reason)"])
                Counter(label: MetricName.alerts, dimensions: [("kind", "leaseLost")]).increment()
                setRole(.standby)
                continue
            }
            if !isStopping && !lease.isHeld {
                logger.error("lease lost; back to standby")
                setRole(.standby)
            }
        }
    }

    /// As the lease holder: complete any interrupted prune, then capture (and replicate)
    /// until stopped or the lease is gone.
    private func lead(term: Int64) throws {
        lock.lock(); pruneWanted = settings.retention != nil; lock.unlock()
        let shouldStop: @Sendable () -> Bool = { [self] in isStopping || !lease.isHeld }
        let replication = DispatchGroup()
        if var options = configuration.replication {
            options.shouldStop = shouldStop
            options.onApplied = { entry, lag in
                Counter(label: MetricName.replicationEvents).increment(by: Int(entry.events ?? 0))
                Gauge(label: MetricName.replicationLag).record(lag)
            }
            options.onAlert = { [self] kind, message in
                logger.warning("ALERT replication \(kind.rawValue): \(message)")
                Counter(label: MetricName.alerts, dimensions: [("kind", "replication_\(kind.rawValue)")]).increment()
            }
            let replicator = Replicator(options, logger: logger)
            lock.lock(); self.replicator = replicator; lock.unlock()
            replication.enter()
            let t = Thread { [self] in
                defer { replication.leave() }
                do { _ = try replicator.run() } catch {
                    logger.error("replication stopped", metadata: ["error": "\(error)"])
                    Counter(label: MetricName.alerts, dimensions: [("kind", "replicationStopped")]).increment()
                }
            }
            t.name = "ciphertail.replication"
            t.start()
        }
        // Replication ends with the lease or the run; the leader waits for it before it steps down.
        defer { replication.wait() }
        guard var options = configuration.tail else {
            // Scheduled backups only: nothing to do here but hold the lease.
            while !shouldStop() { sleep(0.5); touch() }
            if !isStopping { throw CaptureError.leaseLost(reason: "not renewed in time") }
            return
        }
        options.shouldStop = shouldStop
        options.canWrite = { [lease] in lease.term == term }
        options.leaseTerm = term
        let onCommit = options.onCommit
        options.onCommit = { [self] entry, lags in
            onCommit?(entry, lags)
            committed(entry)
        }
        let onAlert = options.onAlert
        options.onAlert = { [self] alert in
            onAlert?(alert)
            alerted(alert)
        }
        let onSnapshot = options.onSnapshot
        options.onSnapshot = { [self] result in
            onSnapshot?(result)
            snapshotDone(result)
        }
        let t = Tailer(options, logger: logger)
        if configuration.snapshotAtStart { t.requestBaseSnapshot() }
        lock.lock(); tailer = t; lock.unlock()
        defer { lock.lock(); tailer = nil; lock.unlock() }
        _ = try t.run()
        if !isStopping && !lease.isHeld { throw CaptureError.leaseLost(reason: "not renewed in time") }
    }

    // MARK: Lease renewal

    private func renewLoop(client: Client?) {
        guard let client else { return }
        while !isStopping {
            sleep(configuration.leaseTTL / 3)
            guard currentRole == .leader, !isStopping else { continue }
            do {
                if try lease.acquireOrRenew(client: client) == nil {
                    logger.error("the lease was taken over by another process")
                }
            } catch {
                logger.warning("lease renewal failed", metadata: ["error": "\(error)"])
            }
        }
    }

    // MARK: Schedule and retention

    private func scheduleLoop() {
        var startSnapshotDue = configuration.snapshotAtStart && configuration.tail == nil
        while !isStopping {
            if startSnapshotDue && currentRole == .leader {
                startSnapshotDue = false
                takeScheduledSnapshot()
            }
            lock.lock(); let s = settings; let prune = pruneWanted && role == .leader; lock.unlock()
            if prune { runPrune(s.retention) }
            let next = s.schedule?.next(after: Date(), in: s.timeZone)
            scheduleWake.lock()
            // Wake at the time, on a reload, on stop, or every minute to notice pending prunes.
            let until = min(next ?? .distantFuture, Date().addingTimeInterval(60))
            _ = scheduleWake.wait(until: until)
            scheduleWake.unlock()
            guard !isStopping, let next, Date() >= next else { continue }
            guard currentRole == .leader else {
                logger.info("scheduled base snapshot skipped: this process is the standby")
                continue
            }
            takeScheduledSnapshot()
        }
    }

    private func takeScheduledSnapshot() {
        lock.lock(); let t = tailer; lock.unlock()
        if let t {
            if t.requestBaseSnapshot() {
                logger.notice("scheduled base snapshot requested")
            } else {
                logger.notice("scheduled base snapshot: one is already running")
            }
            return
        }
        guard configuration.tail == nil else { return }
        do {
            let m = try BackupRunner(configuration.backup, logger: logger).run()
            logger.notice("scheduled backup taken", metadata: ["backup": "\(m.id)"])
            snapshotDone(.success(m))
        } catch {
            logger.error("scheduled backup failed", metadata: ["error": "\(error)"])
            snapshotDone(.failure(error))
        }
    }

    private func snapshotDone(_ result: Result<Manifest, Error>) {
        switch result {
        case .success(let m):
            Counter(label: MetricName.baseSnapshots, dimensions: [("result", "ok")]).increment()
            Counter(label: MetricName.captureDocuments).increment(by: m.documentCount)
            let segments = m.namespaces.reduce(0) { $0 + $1.segments.count } + m.events.segments.count
            Counter(label: MetricName.segmentsWritten, dimensions: [("kind", "snapshot")]).increment(by: segments)
            let raw = m.namespaces.flatMap(\.segments).reduce(Int64(0)) { $0 + $1.rawBytes }
            let stored = m.namespaces.flatMap(\.segments).reduce(Int64(0)) { $0 + $1.size }
            countBytes(in: raw, out: stored)
            lock.lock(); pruneWanted = settings.retention != nil; lock.unlock()
            scheduleWake.lock(); scheduleWake.broadcast(); scheduleWake.unlock()
        case .failure:
            Counter(label: MetricName.baseSnapshots, dimensions: [("result", "failed")]).increment()
        }
    }

    private func runPrune(_ policy: RetentionPolicy?) {
        lock.lock(); pruneWanted = false; lock.unlock()
        guard let policy, lease.isHeld else { return }
        do {
            let repo = try Repository(path: configuration.repository)
            // Entries the replica has not applied yet stay, whatever the policy says.
            lock.lock(); let applied = replicator?.status().sequence; lock.unlock()
            let keepFrom = configuration.replication == nil ? nil : (applied ?? 0) + 1
            let done = try Retention.prune(repo, policy: policy, keepEntriesFrom: keepFrom) { [logger] line in logger.notice("\(line)") }
            Counter(label: MetricName.prunedBackups).increment(by: done.remove.count)
            logger.notice("retention applied", metadata: ["kept": "\(done.keep.count)", "removed": "\(done.remove.count)",
                                                       "entriesRemoved": "\(done.entriesRemoved)"])
        } catch {
            logger.error("prune failed; it is completed on the next attempt", metadata: ["error": "\(error)"])
            Counter(label: MetricName.alerts, dimensions: [("kind", "pruneFailed")]).increment()
        }
    }

    // MARK: Metrics

    private func touch() { lock.lock(); lastProgress = Date(); lock.unlock() }

    private func committed(_ entry: ChangeEntry) {
        lock.lock()
        lastProgress = Date()
        lastDurable = entry.to
        let wasPaused = !paused.isEmpty
        paused.removeAll()
        lock.unlock()
        if wasPaused {
            for reason in ["disk_full", "keys_unavailable"] { Gauge(label: MetricName.capturePaused, dimensions: [("reason", reason)]).record(0) }
        }
        Counter(label: MetricName.captureEvents).increment(by: Int(entry.events ?? 0))
        Counter(label: MetricName.segmentsWritten, dimensions: [("kind", "change")]).increment()
        if let s = entry.segment { countBytes(in: s.rawBytes, out: s.size) }
    }

    private func countBytes(in raw: Int64, out stored: Int64) {
        Counter(label: MetricName.bytesIn).increment(by: Int(raw))
        Counter(label: MetricName.bytesOut).increment(by: Int(stored))
        lock.lock(); bytesIn += raw; bytesOut += stored; let (i, o) = (bytesIn, bytesOut); lock.unlock()
        if o > 0 { Gauge(label: MetricName.compressionRatio).record(Double(i) / Double(o)) }
    }

    private func alerted(_ alert: TailAlert) {
        Counter(label: MetricName.alerts, dimensions: [("kind", alert.kind.rawValue)]).increment()
        switch alert.kind {
        case .gap:
            Counter(label: MetricName.gaps).increment()
        case .diskFull, .keysUnavailable:
            let reason = alert.kind == .diskFull ? "disk_full" : "keys_unavailable"
            lock.lock(); paused.insert(reason); lock.unlock()
            Gauge(label: MetricName.capturePaused, dimensions: [("reason", reason)]).record(1)
        case .diskSpaceBack:
            lock.lock(); paused.remove("disk_full"); lock.unlock()
            Gauge(label: MetricName.capturePaused, dimensions: [("reason", "disk_full")]).record(0)
        default:
            break
        }
    }

    /// Lag and token age move with the clock, not only with commits.
    private func tickLoop() {
        while !isStopping {
            sleep(1)
            lock.lock(); let (durable, progress, r) = (lastDurable, lastProgress, role); lock.unlock()
            guard r == .leader else { continue }
            Gauge(label: MetricName.resumeTokenAge).record(Date().timeIntervalSince(progress))
            if let durable {
                Gauge(label: MetricName.captureLag).record(max(0, Date().timeIntervalSince1970 - Double(durable.t)))
            }
            lock.lock(); let replicator = self.replicator; lock.unlock()
            if let status = replicator?.status() { Gauge(label: MetricName.replicationLag).record(status.lagSeconds) }
        }
    }

    private func sleep(_ seconds: Double) {
        let end = Date().addingTimeInterval(seconds)
        while !isStopping, Date() < end { Thread.sleep(forTimeInterval: min(0.1, seconds)) }
    }
}
