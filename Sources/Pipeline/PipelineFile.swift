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
    }

    public var version: Int?
    public var name: String?
    public var source: Source?
    public var archive: Archive?
    public var restore: Restore?
    public var tail: Tail?
    public var encryption: Encryption?

    public init() {}

    static let allowedKeys: [String: Set<String>] = [
        "": ["version", "name", "source", "archive", "restore", "tail", "encryption"],
        "source": ["uri", "namespaces"],
        "archive": ["repo", "compression", "blockSize", "segmentSize"],
        "archive.compression": ["codec", "level"],
        "restore": ["uri", "workers", "batchSize"],
        "tail": ["segmentMaxSize", "segmentMaxAgeSeconds", "idleCheckpointSeconds", "onLargeEvent", "baseSnapshot"],
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
    public static func load(path: String) throws -> PipelineFile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw PipelineError(file: path, line: nil, field: "", reason: "cannot read the file")
        }
        return try parse(String(decoding: data, as: UTF8.self), file: path)
    }

    public static func parse(_ text: String, file: String) throws -> PipelineFile {
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
