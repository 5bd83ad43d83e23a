import BSON
import Foundation

/// A cluster time as it appears in manifests.
public typealias ClusterTime = BSON.Timestamp

/// One namespace in a backup: its metadata (as canonical extended JSON, exact to the byte
/// when parsed back with any BSON library) and its document segments.
public struct NamespaceEntry: Codable, Equatable, Sendable {
    public var namespace: String
    /// listCollections `type`: collection, view or timeseries.
    public var type: String
    /// listCollections `options`, canonical extended JSON.
    public var options: String
    /// listIndexes specs, each canonical extended JSON, in server order.
    public var indexes: [String]
    /// The collection the documents were scanned from (system.buckets.X for time series).
    public var dataCollection: String
    public var documents: Int64
    public var bytes: Int64
    public var segments: [SegmentInfo]

    public init(namespace: String, type: String, options: String, indexes: [String], dataCollection: String,
                documents: Int64 = 0, bytes: Int64 = 0, segments: [SegmentInfo] = []) {
        self.namespace = namespace
        self.type = type
        self.options = options
        self.indexes = indexes
        self.dataCollection = dataCollection
        self.documents = documents
        self.bytes = bytes
        self.segments = segments
    }

    /// The options as BSON; a manifest whose metadata does not parse is damaged, not empty.
    public func optionsDocument() throws -> Document {
        do { return try Document(json: options) } catch {
            throw ArchiveError.badManifest(path: namespace, reason: "collection options do not parse: \(error)")
        }
    }

    public func indexDocuments() throws -> [Document] {
        try indexes.enumerated().map { i, spec in
            do { return try Document(json: spec) } catch {
                throw ArchiveError.badManifest(path: namespace, reason: "index \(i) does not parse: \(error)")
            }
        }
    }
}

public struct ClusterTimeRange: Codable, Equatable, Sendable {
    /// The change stream starts here: events after it are in `events`.
    public var start: ClusterTime
    /// The consistent point: restore brings the data to exactly this cluster time.
    public var end: ClusterTime
    public init(start: ClusterTime, end: ClusterTime) { self.start = start; self.end = end }
}

public struct ResumeTokens: Codable, Equatable, Sendable {
    /// Canonical extended JSON of the resume tokens at both ends (`{"_data": ...}`).
    public var start: String?
    public var end: String?
    public init(start: String?, end: String?) { self.start = start; self.end = end }
}

public struct EventLog: Codable, Equatable, Sendable {
    public var count: Int64
    public var segments: [SegmentInfo]
    public init(count: Int64, segments: [SegmentInfo]) { self.count = count; self.segments = segments }
}

public struct SourceInfo: Codable, Equatable, Sendable {
    public var hosts: String
    public var replicaSet: String?
    public var serverVersion: String?
    public init(hosts: String, replicaSet: String?, serverVersion: String?) {
        self.hosts = hosts
        self.replicaSet = replicaSet
        self.serverVersion = serverVersion
    }
}

public struct CompressionInfo: Codable, Equatable, Sendable {
    public var codec: String
    public var level: Int
    public init(codec: String = "zstd", level: Int = 3) {
        self.codec = codec
        self.level = level
    }
}

/// The manifest of one backup: `backups/<id>/manifest.json`. Written last, so a backup
/// folder without one is an unfinished backup and is never offered for restore.
public struct Manifest: Codable, Equatable, Sendable {
    public static let formatName = "ciphertail-backup"
    public var format: String = Manifest.formatName
    public var version: Int = 1
    public var id: String
    public var kind: String = "snapshot"
    public var createdAt: Date
    public var completedAt: Date
    public var source: SourceInfo
    public var compression: CompressionInfo
    public var clusterTime: ClusterTimeRange
    public var resumeTokens: ResumeTokens
    public var namespaces: [NamespaceEntry]
    public var events: EventLog
    /// Namespace to the field paths encrypted in it (absent: no field encryption).
    public var protectedFields: [String: [String]]?

    public init(id: String, createdAt: Date, completedAt: Date, source: SourceInfo, compression: CompressionInfo,
                clusterTime: ClusterTimeRange, resumeTokens: ResumeTokens, namespaces: [NamespaceEntry], events: EventLog) {
        self.id = id
        self.createdAt = createdAt
        self.completedAt = completedAt
        self.source = source
        self.compression = compression
        self.clusterTime = clusterTime
        self.resumeTokens = resumeTokens
        self.namespaces = namespaces
        self.events = events
    }

    public var documentCount: Int64 { namespaces.reduce(0) { $0 + $1.documents } }
    public var storedBytes: Int64 {
        namespaces.flatMap(\.segments).reduce(0) { $0 + $1.size } + events.segments.reduce(0) { $0 + $1.size }
    }
    public var rawBytes: Int64 {
        namespaces.flatMap(\.segments).reduce(0) { $0 + $1.rawBytes } + events.segments.reduce(0) { $0 + $1.rawBytes }
    }
    public var allSegments: [SegmentInfo] { namespaces.flatMap(\.segments) + events.segments }

    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        e.dateEncodingStrategy = .iso8601
        return e
    }()

    static let decoder: JSONDecoder = {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        return d
    }()

    public func encoded() throws -> [UInt8] { Array(try Manifest.encoder.encode(self)) + [0x0A] }

    public static func decode(_ bytes: [UInt8], path: String) throws -> Manifest {
        do {
            let m = try decoder.decode(Manifest.self, from: Data(bytes))
            guard m.format == formatName, m.version == 1, m.kind == "snapshot" else {
                throw ArchiveError.badManifest(path: path, reason: "format \(m.format) version \(m.version) kind \(m.kind) is not \(formatName) version 1 snapshot")
            }
            // Segment paths stay inside the backup folder, whatever a damaged or hostile manifest says.
            for s in m.allSegments where s.path.hasPrefix("/") || s.path.split(separator: "/").contains("..") || s.path.isEmpty {
                throw ArchiveError.badManifest(path: path, reason: "segment path \(s.path) leaves the backup folder")
            }
            return m
        } catch let e as ArchiveError {
            throw e
        } catch {
            throw ArchiveError.badManifest(path: path, reason: "\(error)")
        }
    }

    public func json() throws -> String { String(decoding: try Manifest.encoder.encode(self), as: UTF8.self) }
}
