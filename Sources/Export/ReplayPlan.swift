import Archive
import BSON

/// The first pass over the change events: which namespaces exist at the target time, where
/// their documents come from, and which documents events touch. It follows the restore's
/// replay (FORMAT.md, "Replay rules") without a server:
///
/// - A *lineage* is one collection's life: it starts as a snapshot namespace of the backup
///   (its `base`) or with the first insert or replace into a namespace that does not exist.
///   A `rename` moves the lineage to its new name (replacing what was there, as
///   `dropTarget: true` does); a `drop` ends it. `dropDatabase` and `invalidate` change
///   nothing (each collection's drop comes as its own event first).
/// - Events of namespaces that `include` leaves out are skipped; a rename happens only
///   when both names are included.
/// - A document event is counted against the lineage that holds its namespace at that
///   point of the log, with the `_id` of its `documentKey`.
///
/// Memory is the set of touched `_id`s per lineage, and the namespace changes.
public final class ReplayPlan {
    public final class Lineage {
        public let id: Int
        /// The snapshot namespace its documents start from; nil for a collection that
        /// events created.
        public let base: NamespaceEntry?
        /// The name it had when it started.
        public let origin: String
        /// `_id`s of the documents its events insert, replace, update or delete.
        public internal(set) var touched: Set<DocumentKey> = []
        /// Indexes of the event sources that hold its document events.
        public internal(set) var sources: Set<Int> = []
        public internal(set) var documentEvents = 0

        init(id: Int, base: NamespaceEntry?, origin: String) {
            self.id = id
            self.base = base
            self.origin = origin
        }
    }

    public private(set) var lineages: [Lineage] = []
    private var live: [String: Int] = [:]
    /// For each namespace, from which event on it held which lineage (nil: none).
    private var timeline: [String: [(seq: Int, lineage: Int?)]] = [:]
    private let include: (String, String) -> Bool
    /// Drops and renames that took effect.
    public private(set) var namespaceEvents = 0

    /// `namespaces` are the backup's entries; those `include` accepts start a lineage each.
    public init(namespaces: [NamespaceEntry], include: @escaping (_ database: String, _ collection: String) -> Bool) {
        self.include = include
        for e in namespaces {
            guard let (db, coll) = ReplayPlan.split(e.namespace), include(db, coll) else { continue }
            _ = start(e.namespace, base: e, at: -1)
        }
    }

    static func split(_ ns: String) -> (String, String)? {
        guard let dot = ns.firstIndex(of: "."), dot != ns.startIndex, ns.index(after: dot) != ns.endIndex else { return nil }
        return (String(ns[..<dot]), String(ns[ns.index(after: dot)...]))
    }

    private func start(_ ns: String, base: NamespaceEntry?, at seq: Int) -> Lineage {
        let l = Lineage(id: lineages.count, base: base, origin: ns)
        lineages.append(l)
        set(ns, l.id, at: seq)
        return l
    }

    private func set(_ ns: String, _ lineage: Int?, at seq: Int) {
        live[ns] = lineage
        timeline[ns, default: []].append((seq, lineage))
    }

    /// What the replay needs to know of one event.
    struct EventFacts {
        enum Kind { case document(DocumentKey, createsCollection: Bool), drop, rename(to: String), other }
        var namespace: String
        var database: String
        var collection: String
        var kind: Kind
    }

    /// Reads the fields the plan needs; nil for an event the restore would skip whole.
    static func facts(_ event: Document) throws -> EventFacts? {
        let fields = try RawBSON.elements(event.bytes[...])
        func field(_ name: String) -> RawBSON.Element? { fields.first { $0.key == Array(name.utf8) } }
        func nsOf(_ e: RawBSON.Element?) throws -> (String, String)? {
            guard let e, e.type == 0x03 else { return nil }
            let parts = try RawBSON.elements(e.value)
            guard let db = parts.first(where: { $0.key == Array("db".utf8) }).flatMap(InMemoryApplier.string) else { return nil }
            return (db, parts.first(where: { $0.key == Array("coll".utf8) }).flatMap(InMemoryApplier.string) ?? "")
        }
        guard let type = field("operationType").flatMap(InMemoryApplier.string), let (db, coll) = try nsOf(field("ns")) else { return nil }
        let ns = "\(db).\(coll)"
        switch type {
        case "insert", "replace", "update", "delete":
            guard let key = field("documentKey"), key.type == 0x03, let id = try RawBSON.idValue(key.value) else { return nil }
            let creates = type != "update" && type != "delete" && field("fullDocument")?.type == 0x03
            return EventFacts(namespace: ns, database: db, collection: coll, kind: .document(DocumentKey(type: id.type, value: id.value), createsCollection: creates))
        case "drop":
            return EventFacts(namespace: ns, database: db, collection: coll, kind: .drop)
        case "rename":
            guard let (toDb, toColl) = try nsOf(field("to")) else { return nil }
            return EventFacts(namespace: ns, database: db, collection: coll, kind: .rename(to: "\(toDb).\(toColl)"))
        default:
            return EventFacts(namespace: ns, database: db, collection: coll, kind: .other)
        }
    }

    /// Takes one event, in log order; `seq` numbers the events of all sources in that order
    /// and `source` says which event source (segment) holds it.
    public func observe(_ event: Document, seq: Int, source: Int) throws {
        guard let f = try ReplayPlan.facts(event), include(f.database, f.collection) else { return }
        switch f.kind {
        case .document(let key, let creates):
            var lineage = live[f.namespace].map { lineages[$0] }
            if lineage == nil {
                // An update or delete of a collection that does not exist changes nothing;
                // an upserting replace creates it.
                guard creates else { return }
                lineage = start(f.namespace, base: nil, at: seq)
            }
            lineage!.touched.insert(key)
            lineage!.sources.insert(source)
            lineage!.documentEvents += 1
        case .drop:
            guard live[f.namespace] != nil else { return }
            set(f.namespace, nil, at: seq)
            namespaceEvents += 1
        case .rename(let to):
            guard let (toDb, toColl) = ReplayPlan.split(to), include(toDb, toColl) else { return }
            let moving = live[f.namespace]
            set(f.namespace, nil, at: seq)
            set(to, moving, at: seq)
            namespaceEvents += 1
        case .other:
            return
        }
    }

    /// The lineage that held `namespace` when event `seq` happened.
    public func lineage(of namespace: String, at seq: Int) -> Lineage? {
        guard let t = timeline[namespace] else { return nil }
        var lo = 0, hi = t.count  // first entry with seq > the one asked
        while lo < hi {
            let mid = (lo + hi) / 2
            if t[mid].seq <= seq { lo = mid + 1 } else { hi = mid }
        }
        return lo == 0 ? nil : t[lo - 1].lineage.map { lineages[$0] }
    }

    /// The namespaces that exist after the last event, sorted, with their lineage.
    public var finalNamespaces: [(namespace: String, lineage: Lineage)] {
        live.map { (namespace: $0.key, lineage: lineages[$0.value]) }.sorted { $0.namespace < $1.namespace }
    }
}
