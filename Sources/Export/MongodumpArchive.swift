import BSON

/// The mongodump `--archive` format (mongo-tools' `common/archive/spec.md`; docs/FORMAT.md,
/// "Export: the mongodump archive format"):
///
///     archive    = magic, header, collection-metadata*, terminator, (segment | eof)*
///     segment    = namespace header (EOF false), document*, terminator
///     eof        = namespace header (EOF true, CRC), terminator
///
/// Every integer is little-endian; every document is BSON.
public enum MongodumpArchive {
    /// 0x8199e26d, stored as 6d e2 99 81.
    public static let magic: UInt32 = 0x8199_E26D
    public static let terminator: UInt32 = 0xFFFF_FFFF
    /// The only archive format version mongo-tools writes or knows.
    public static let formatVersion = "0.1"
    /// mongorestore's parser refuses any document larger than this (its buffer size).
    public static let maxDocumentBytes = 16 * 1024 * 1024
    /// What precedes `<name>` in the namespace that holds a time series' buckets.
    public static let bucketsPrefix = "system.buckets."

    /// The archive header, right after the magic number.
    public struct Header: Equatable, Sendable {
        /// How many collections mongodump wrote at once; mongorestore restores at least as
        /// many in parallel.
        public var concurrentCollections: Int32
        public var version: String
        /// The source server's version, `major.minor.patch`: mongorestore parses it, warns
        /// when it differs from the target's, and reads time series data of a 6.0 source
        /// from `system.buckets.<name>`.
        public var serverVersion: String
        public var toolVersion: String

        public init(concurrentCollections: Int32 = 1, version: String = MongodumpArchive.formatVersion,
                    serverVersion: String, toolVersion: String) {
            self.concurrentCollections = concurrentCollections
            self.version = version
            self.serverVersion = serverVersion
            self.toolVersion = toolVersion
        }

        var document: Document {
            Document(["concurrent_collections": .int32(concurrentCollections), "version": .string(version),
                      "server_version": .string(serverVersion), "tool_version": .string(toolVersion)])
        }
    }

    /// One prelude entry: a collection, view or time series and its metadata.
    public struct CollectionMetadata: Equatable, Sendable {
        public var database: String
        public var collection: String
        /// The text of mongodump's `<coll>.metadata.json`: canonical extended JSON of
        /// `{options?, indexes, uuid?, collectionName, type?}`.
        public var metadata: String
        /// The collection's size in bytes (informative: mongorestore only uses it to order
        /// its work; mongodump itself writes 0).
        public var size: Int64
        /// `collection`, `view` or `timeseries`.
        public var type: String

        public init(database: String, collection: String, metadata: String, size: Int64, type: String) {
            self.database = database
            self.collection = collection
            self.metadata = metadata
            self.size = size
            self.type = type
        }

        /// The namespace whose documents the archive carries for this entry: the buckets
        /// for a time series, the collection itself otherwise (a view's stays empty).
        public var dataNamespace: String {
            "\(database).\(type == "timeseries" ? MongodumpArchive.bucketsPrefix + collection : collection)"
        }

        public var namespace: String { "\(database).\(collection)" }

        var document: Document {
            // Go's driver writes an `int` that fits in 32 bits as int32, as mongodump does.
            let sizeValue: BSONValue = Int32(exactly: size).map { .int32($0) } ?? .int64(size)
            return Document(["db": .string(database), "collection": .string(collection), "metadata": .string(metadata),
                             "size": sizeValue, "type": .string(type)])
        }

        /// mongodump's metadata text for a collection: `options` left out when empty, as
        /// mongodump's `omitempty` does; index specs in server order.
        public static func metadataJSON(collection: String, type: String, options: Document, indexes: [Document]) -> String {
            var b = DocumentBuilder()
            if !options.isEmpty { b.append("options", .document(options)) }
            b.append("indexes", .array(indexes.map { .document($0) }))
            b.append("collectionName", .string(collection))
            b.append("type", .string(type))
            return b.document.canonicalJSON
        }
    }

    /// A namespace header: `EOF` false opens a run of documents, true closes the namespace
    /// and carries the CRC-64 of all its documents (the bits of the unsigned value, as int64).
    static func namespaceHeader(database: String, collection: String, eof: Bool, crc: UInt64) -> Document {
        Document(["db": .string(database), "collection": .string(collection), "EOF": .bool(eof),
                  "CRC": .int64(Int64(bitPattern: crc))])
    }
}

/// What the archive writer and reader refuse, naming the namespace (when there is one) and
/// the byte offset from the start of the archive.
public enum MongodumpArchiveError: Error, CustomStringConvertible, Equatable {
    /// The bytes do not follow the format.
    case damaged(namespace: String?, offset: Int, reason: String)
    /// The writer was asked to write something the format (or mongorestore) does not allow.
    case invalidUse(String)

    public var description: String {
        switch self {
        case .damaged(let ns, let offset, let reason):
            return "mongodump archive damaged at byte \(offset)\(ns.map { " (namespace \($0))" } ?? ""): \(reason)"
        case .invalidUse(let why): return "cannot write this mongodump archive: \(why)"
        }
    }
}
