import Foundation
import Yams

/// A pipeline file (pipelines/*.yaml). The schema grows issue by issue: source, archive and
/// compression now; encryption, key provider, schedule and retention later.
public struct PipelineFile: Codable, Equatable {
    public struct Source: Codable, Equatable {
        public var uri: String?
        public var namespaces: [String]?
    }
    public struct Compression: Codable, Equatable {
        public var codec: String?
        public var level: Int?
    }
    public struct Archive: Codable, Equatable {
        public var repo: String?
        public var compression: Compression?
        public var blockSize: String?
        public var segmentSize: String?
    }
    public struct Restore: Codable, Equatable {
        public var uri: String?
        public var workers: Int?
        public var batchSize: Int?
    }
    /// `ciphertail tail`: how change segments close, and what an undeliverable event does.
    public struct Tail: Codable, Equatable {
        public var segmentMaxSize: String?
        public var segmentMaxAgeSeconds: Double?
        public var idleCheckpointSeconds: Double?
        public var onLargeEvent: String?
        public var baseSnapshot: Bool?
        /// `ciphertail run` only: false runs the scheduled backups without a change log.
        public var enabled: Bool?
    }
    /// `ciphertail run`: when base snapshots are taken (a cron expression in a time zone).
    public struct Schedule: Codable, Equatable {
        public var baseSnapshot: String?
        public var timeZone: String?
    }
    /// Which base snapshots `prune` (and `run`, after each scheduled snapshot) keeps: the
    /// union of the newest `keepLast` and those needed to restore any point of the last
    /// `keepDays` days.
    public struct Retention: Codable, Equatable {
        public var keepLast: Int?
        public var keepDays: Double?
    }
    /// The lease that lets only one `ciphertail run` of a pipeline write: a document in the
    /// source cluster.
    public struct Lease: Codable, Equatable {
        public var namespace: String?
        public var ttlSeconds: Double?
        public init(namespace: String? = nil, ttlSeconds: Double? = nil) {
            self.namespace = namespace
            self.ttlSeconds = ttlSeconds
        }
    }
    /// Encrypted replication: the captured (encrypted) change log applied to another cluster.
    public struct Replication: Codable, Equatable {
        public var uri: String?
        /// Where the target keeps its checkpoint (`db.coll`, in the target).
        public var checkpointNamespace: String?
        public var batchSize: Int?
    }
    /// The Prometheus endpoint and `/healthz` of `ciphertail run`.
    public struct Metrics: Codable, Equatable {
        public var listen: String?
        public var stallSeconds: Double?
    }

    public var version: Int?
    public var name: String?
    public var source: Source?
    public var archive: Archive?
    public var restore: Restore?
    public var tail: Tail?
    public var encryption: Encryption?
    public var schedule: Schedule?
    public var retention: Retention?
    public var lease: Lease?
    public var replication: Replication?
    public var metrics: Metrics?

    public init() {}

    static let allowedKeys: [String: Set<String>] = [
        "": ["version", "name", "source", "archive", "restore", "tail", "encryption", "schedule", "retention", "lease", "replication", "metrics"],
        "source": ["uri", "namespaces"],
        "archive": ["repo", "compression", "blockSize", "segmentSize"],
        "archive.compression": ["codec", "level"],
        "restore": ["uri", "workers", "batchSize"],
        "tail": ["segmentMaxSize", "segmentMaxAgeSeconds", "idleCheckpointSeconds", "onLargeEvent", "baseSnapshot", "enabled"],
        "schedule": ["baseSnapshot", "timeZone"],
        "retention": ["keepLast", "keepDays"],
        "lease": ["namespace", "ttlSeconds"],
        "replication": ["uri", "checkpointNamespace", "batchSize"],
        "metrics": ["listen", "stallSeconds"],
        "encryption": ["keyVault", "keyVaultNamespace", "masterKey", "rules", "erasureLedger", "keyVaultBackups"],
        "encryption.masterKey": ["provider", "local", "kmip"],
        "encryption.masterKey.local": ["keyFile"],
        "encryption.masterKey.kmip": [
            "serverName", "port", "serverCAFile", "clientCertificateFile", "clientCertificatePasswordFile",
            "clientCertificatePasswordEnv", "keyIdentifier", "rotateMasterKey", "connectRetries", "connectTimeoutMS",
            "keyStatePollingSeconds", "perSubjectKeys",
        ],
    ]
    /// Keys allowed in each element of a list (checked per element).
    static let allowedListKeys: [String: Set<String>] = [
        "encryption.rules": ["namespace", "subject", "keyAltName", "onMissingSubject", "fallbackKeyAltName", "fields"],
        "encryption.rules.fields": ["path", "algorithm", "bsonType", "onErased", "erasedMarker"],
    ]
}

/// A configuration error with the file, line and field it is about.
public struct PipelineError: Error, CustomStringConvertible {
    public let file: String
    public let line: Int?
    public let field: String
    public let reason: String
    public var description: String {
        "\(file)\(line.map { ":\($0)" } ?? ""): \(field.isEmpty ? "" : "\(field): ")\(reason)"
    }
}

/// The settings every command resolves from flags over the pipeline file over defaults.
public struct ResolvedSettings: Equatable {
    public var uri: String?
    public var namespaces: [String]
    public var repo: String?
    public var compressionLevel: Int
    public var blockBytes: Int
    public var segmentBytes: Int
}

extension PipelineFile {
    /// `forRun`: also what `ciphertail run` needs (a name, a source, a repository).
    public static func load(path: String, forRun: Bool = false) throws -> PipelineFile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw PipelineError(file: path, line: nil, field: "", reason: "cannot read the file")
        }
        return try parse(String(decoding: data, as: UTF8.self), file: path, forRun: forRun)
    }

    public static func parse(_ text: String, file: String, forRun: Bool = false) throws -> PipelineFile {
        let node: Node
        do {
            guard let n = try Yams.compose(yaml: text) else { return PipelineFile() }
            node = n
        } catch let e as YamlError {
            throw PipelineError(file: file, line: nil, field: "", reason: "not valid YAML: \(e)")
        }
        try checkKeys(node, path: "", file: file)
        let pipeline: PipelineFile
        do {
            pipeline = try YAMLDecoder().decode(PipelineFile.self, from: text)
        } catch let DecodingError.typeMismatch(_, ctx), let DecodingError.valueNotFound(_, ctx),
                let DecodingError.dataCorrupted(ctx) {
            let field = ctx.codingPath.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
            throw PipelineError(file: file, line: line(of: ctx.codingPath.map { $0.intValue.map(String.init) ?? $0.stringValue }, in: node),
                                field: field, reason: "has the wrong type (\(ctx.debugDescription))")
        }
        try pipeline.validate(file: file, node: node)
        if forRun { try pipeline.validateForRun(file: file, node: node) }
        return pipeline
    }

    static func line(of path: [String], in root: Node) -> Int? {
        var node = root
        for key in path {
            if let m = node.mapping, let v = m[Node(key)] { node = v } else if let s = node.sequence, let i = Int(key), i < s.count { node = s[i] } else { break }
        }
        return node.mark.map { $0.line }
    }

    static func checkKeys(_ node: Node, path: String, file: String) throws {
        if let items = node.sequence, let allowed = allowedListKeys[path] {
            for (i, item) in items.enumerated() {
                guard let mapping = item.mapping else { continue }
                for (k, v) in mapping {
                    guard let key = k.string else { continue }
                    if !allowed.contains(key) {
                        throw PipelineError(file: file, line: k.mark?.line, field: "\(path)[\(i)].\(key)",
                                            reason: "unknown field (expected one of: \(allowed.sorted().joined(separator: ", ")))")
                    }
                    try checkKeys(v, path: "\(path).\(key)", file: file)
                }
            }
            return
        }
        guard let mapping = node.mapping, let allowed = allowedKeys[path] else { return }
        for (k, v) in mapping {
            guard let key = k.string else { continue }
            let sub = path.isEmpty ? key : "\(path).\(key)"
            if !allowed.contains(key) {
                throw PipelineError(file: file, line: k.mark?.line, field: sub,
                                    reason: "unknown field (expected one of: \(allowed.sorted().joined(separator: ", ")))")
            }
            try checkKeys(v, path: sub, file: file)
        }
    }

    func validate(file: String, node: Node) throws {
        if let v = version, v != 1 {
            throw PipelineError(file: file, line: Self.line(of: ["version"], in: node), field: "version", reason: "only version 1 exists")
        }
        if let c = archive?.compression {
            if let codec = c.codec, codec != "zstd" {
                throw PipelineError(file: file, line: Self.line(of: ["archive", "compression", "codec"], in: node),
                                    field: "archive.compression.codec", reason: "'\(codec)' is not supported (zstd)")
            }
            if let l = c.level, !(1...19).contains(l) {
                throw PipelineError(file: file, line: Self.line(of: ["archive", "compression", "level"], in: node),
                                    field: "archive.compression.level", reason: "\(l) is outside 1...19")
            }
        }
        try encryption?.validate(file: file, node: node)
        if let t = tail {
            if let v = t.segmentMaxSize, PipelineFile.parseSize(v) == nil || PipelineFile.parseSize(v)! < 1 {
                throw PipelineError(file: file, line: Self.line(of: ["tail", "segmentMaxSize"], in: node), field: "tail.segmentMaxSize",
                                    reason: "'\(v)' is not a size such as 16MiB")
            }
            for (field, value, least) in [("segmentMaxAgeSeconds", t.segmentMaxAgeSeconds, 0.05), ("idleCheckpointSeconds", t.idleCheckpointSeconds, 0.05)] {
                if let v = value, !(v >= least && v <= 86_400) {
                    throw PipelineError(file: file, line: Self.line(of: ["tail", field], in: node), field: "tail.\(field)",
                                        reason: "\(v) is outside \(least)...86400 seconds")
                }
            }
            if let p = t.onLargeEvent, !["stop", "gap"].contains(p) {
                throw PipelineError(file: file, line: Self.line(of: ["tail", "onLargeEvent"], in: node), field: "tail.onLargeEvent",
                                    reason: "'\(p)' is not stop or gap")
            }
        }
        try validateService(file: file, node: node)
        if let b = restore?.batchSize, b < 1 {
            throw PipelineError(file: file, line: Self.line(of: ["restore", "batchSize"], in: node), field: "restore.batchSize", reason: "must be at least 1")
        }
        for (field, value) in [("blockSize", archive?.blockSize), ("segmentSize", archive?.segmentSize)] {
            if let v = value, PipelineFile.parseSize(v) == nil {
                throw PipelineError(file: file, line: Self.line(of: ["archive", field], in: node), field: "archive.\(field)",
                                    reason: "'\(v)' is not a size such as 1MiB or 256MiB")
            }
        }
    }

    /// The sections only `ciphertail run` (and `prune`, `replicate`) read.
    func validateService(file: String, node: Node) throws {
        func fail(_ path: [String], _ reason: String) -> PipelineError {
            PipelineError(file: file, line: Self.line(of: path, in: node), field: path.joined(separator: "."), reason: reason)
        }
        if let s = schedule {
            if let cron = s.baseSnapshot {
                do { _ = try CronSchedule(cron) } catch { throw fail(["schedule", "baseSnapshot"], "\(error)") }
            }
            if let z = s.timeZone, TimeZone(identifier: z) == nil {
                throw fail(["schedule", "timeZone"], "'\(z)' is not a time zone of the tz database (such as UTC or Europe/Berlin)")
            }
            if s.baseSnapshot == nil && s.timeZone != nil { throw fail(["schedule"], "timeZone without baseSnapshot") }
        }
        if let r = retention {
            if let n = r.keepLast, n < 1 { throw fail(["retention", "keepLast"], "must be at least 1 (the newest base snapshot is always kept)") }
            if let d = r.keepDays, !(d > 0) { throw fail(["retention", "keepDays"], "must be more than 0") }
            if r.keepLast == nil && r.keepDays == nil { throw fail(["retention"], "names neither keepLast nor keepDays") }
        }
        if let l = lease {
            if let ns = l.namespace, Self.splitNamespace(ns) == nil { throw fail(["lease", "namespace"], "'\(ns)' is not db.collection") }
            if let t = l.ttlSeconds, !(t >= 3 && t <= 600) { throw fail(["lease", "ttlSeconds"], "\(t) is outside 3...600 seconds") }
        }
        if let r = replication {
            guard let uri = r.uri, !uri.isEmpty else { throw fail(["replication"], "has no uri (the target cluster)") }
            if uri == source?.uri { throw fail(["replication", "uri"], "is the source cluster") }
            if let ns = r.checkpointNamespace, Self.splitNamespace(ns) == nil { throw fail(["replication", "checkpointNamespace"], "'\(ns)' is not db.collection") }
            if let b = r.batchSize, b < 1 { throw fail(["replication", "batchSize"], "must be at least 1") }
        }
        if let m = metrics {
            if let l = m.listen, Self.parseListen(l) == nil { throw fail(["metrics", "listen"], "'\(l)' is not host:port (such as 127.0.0.1:9464)") }
            if let s = m.stallSeconds, !(s > 0) { throw fail(["metrics", "stallSeconds"], "must be more than 0") }
        }
    }

    func validateForRun(file: String, node: Node) throws {
        let required: [([String], Bool, String)] = [
            (["name"], !(name ?? "").isEmpty, "ciphertail run needs a pipeline name (it names the lease and claims the repository)"),
            (["source", "uri"], !(source?.uri ?? "").isEmpty, "ciphertail run needs the source cluster's connection string"),
            (["archive", "repo"], !(archive?.repo ?? "").isEmpty, "ciphertail run needs a repository folder"),
        ]
        for (path, present, reason) in required where !present {
            // The line of the deepest part of the path that is there.
            throw PipelineError(file: file, line: Self.line(of: path, in: node) ?? 1, field: path.joined(separator: "."), reason: reason)
        }
    }

    static func splitNamespace(_ text: String) -> (String, String)? {
        guard let dot = text.firstIndex(of: "."), dot != text.startIndex, text.index(after: dot) != text.endIndex else { return nil }
        return (String(text[..<dot]), String(text[text.index(after: dot)...]))
    }

    /// `host:port` (port 0: any free port, for tests).
    public static func parseListen(_ text: String) -> (host: String, port: Int)? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else { return nil }
        let host = String(text[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        return host.isEmpty ? nil : (host, port)
    }

    /// `512KiB`, `1MiB`, `2GiB` or a byte count.
    public static func parseSize(_ text: String) -> Int? {
        let t = text.trimmingCharacters(in: .whitespaces)
        for (suffix, factor) in [("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("B", 1)] where t.hasSuffix(suffix) {
            return Int(t.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)).map { $0 * factor }
        }
        return Int(t)
    }

    /// Flags win over the file; the file wins over defaults.
    public func resolve(uri: String?, namespaces: [String], repo: String?, level: Int?) -> ResolvedSettings {
        ResolvedSettings(
            uri: uri ?? source?.uri,
            namespaces: namespaces.isEmpty ? (source?.namespaces ?? []) : namespaces,
            repo: repo ?? archive?.repo,
            compressionLevel: level ?? archive?.compression?.level ?? 3,
            blockBytes: archive?.blockSize.flatMap(PipelineFile.parseSize) ?? (1 << 20),
            segmentBytes: archive?.segmentSize.flatMap(PipelineFile.parseSize) ?? (256 << 20))
    }
}
