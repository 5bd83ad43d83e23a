import BSON

/// Replays the document events of one namespace in memory, with the results `EventApplier`
/// gets from a real server (FORMAT.md, "Replay rules"): an insert or replace sets the whole
/// document; an update truncates arrays (`$push` with `$each: []` and `$slice`), then sets
/// and unsets fields by dotted path (`$set`/`$unset`), then sets and unsets top-level names
/// that start with `$` (`$setField`/`$unsetField`); a delete removes the document. An update
/// of a document that is not there does nothing (no upsert). An update step that the server
/// would refuse with code 2, 14, 28 or 16837 is skipped and counted as superseded, as the
/// restore does. Elements an event does not touch keep their bytes.
///
/// The applier holds only the documents events touch: the snapshot documents given to
/// `hold`, and those events insert.
public final class InMemoryApplier {
    public enum Outcome: Equatable, Sendable {
        /// The event changed the state (or set it to what it was).
        case applied
        /// An update or delete of a document that is not there, or an event without the
        /// fields its type needs: nothing to do, as in the restore.
        case ignored
        /// Applied, except for `steps` update steps the server would have refused.
        case partlySuperseded(steps: Int)
    }

    /// An event the restore could not replay either (the server would fail the restore).
    public struct Unreplayable: Error, CustomStringConvertible {
        public let reason: String
        public var description: String { "change event cannot be replayed: \(reason)" }
    }

    /// One document that exists after the events.
    public struct Survivor {
        public let key: DocumentKey
        public let bytes: [UInt8]
        /// A held snapshot document that was never deleted: it keeps its place in natural
        /// order (what matters for capped collections). Others come after, in insert order.
        public let keepsSnapshotPosition: Bool
    }

    struct Entry {
        var bytes: [UInt8]?
        var keepsPosition: Bool
        /// When it was held or (re)inserted: the natural order of the survivors.
        var rank: Int
    }

    private var entries: [DocumentKey: Entry] = [:]
    private var nextRank = 0
    /// Update steps skipped because the server would have refused them.
    public private(set) var superseded = 0

    public init() {}

    /// A snapshot document that some event touches, in natural order.
    public func hold(_ document: [UInt8]) throws {
        guard let key = try DocumentKey(document: document) else { throw Unreplayable(reason: "snapshot document without _id") }
        entries[key] = Entry(bytes: document, keepsPosition: true, rank: nextRank)
        nextRank += 1
    }

    public func contains(_ key: DocumentKey) -> Bool { entries[key]?.bytes != nil }

    public func document(_ key: DocumentKey) -> [UInt8]? { entries[key]?.bytes }

    /// Every document that exists now, in natural order: held snapshot documents first, in
    /// the order they were held, then inserted ones in the order of their first insert.
    public func survivors() -> [Survivor] {
        entries.filter { $0.value.bytes != nil }
            .sorted { a, b in (a.value.keepsPosition ? 0 : 1, a.value.rank) < (b.value.keepsPosition ? 0 : 1, b.value.rank) }
            .map { Survivor(key: $0.key, bytes: $0.value.bytes!, keepsSnapshotPosition: $0.value.keepsPosition) }
    }

    /// Applies one insert, replace, update or delete event; other kinds are the caller's.
    @discardableResult
    public func apply(_ event: Document) throws -> Outcome {
        let fields = try RawBSON.elements(event.bytes[...])
        func field(_ name: String) -> RawBSON.Element? { fields.first { $0.key == Array(name.utf8) } }
        guard let type = field("operationType").flatMap(Self.string),
              let keyDoc = field("documentKey"), keyDoc.type == 0x03,
              let id = try RawBSON.idValue(keyDoc.value)
        else { return .ignored }
        let key = DocumentKey(type: id.type, value: id.value)
        switch type {
        case "insert", "replace":
            guard let full = field("fullDocument"), full.type == 0x03 else { return .ignored }
            let doc = try Self.idFirst(Array(full.value))
            if let e = entries[key], e.bytes != nil {
                entries[key]!.bytes = doc  // replaced in place: the record keeps its place
            } else {
                entries[key] = Entry(bytes: doc, keepsPosition: false, rank: nextRank)
                nextRank += 1
            }
            return .applied
        case "delete":
            guard entries[key]?.bytes != nil else { return .ignored }
            entries[key]!.bytes = nil
            entries[key]!.keepsPosition = false
            return .applied
        case "update":
            guard let desc = field("updateDescription"), desc.type == 0x03 else { return .ignored }
            guard let current = entries[key]?.bytes else { return .ignored }
            let (updated, skipped) = try Self.update(current, description: desc.value)
            entries[key]!.bytes = updated
            superseded += skipped
            return skipped == 0 ? .applied : .partlySuperseded(steps: skipped)
        default:
            return .ignored
        }
    }

    static func string(_ e: RawBSON.Element) -> String? {
        guard e.type == 0x02, e.value.count >= 5 else { return nil }
        return String(decoding: e.value.dropFirst(4).dropLast(), as: UTF8.self)
    }

    /// The server stores `_id` first; a replacement that has it elsewhere is reordered.
    static func idFirst(_ doc: [UInt8]) throws -> [UInt8] {
        let els = try RawBSON.elements(doc[...])
        guard let i = els.firstIndex(where: { $0.key == RawBSON.idKey }), i > 0 else { return doc }
        var body: [UInt8] = []
        for e in [els[i]] + els.enumerated().filter({ $0.offset != i }).map(\.element) { RawBSON.append(e.type, e.key, e.value, to: &body) }
        return RawBSON.document(body)
    }

    // MARK: updates

    /// Applies one `updateDescription` as the restore sends it: each truncation, then the
    /// `$set`/`$unset`, then the `$`-prefixed top-level names, each step on its own.
    static func update(_ doc: [UInt8], description: ArraySlice<UInt8>) throws -> ([UInt8], skipped: Int) {
        let desc = try RawBSON.elements(description)
        func field(_ name: String) -> RawBSON.Element? { desc.first { $0.key == Array(name.utf8) } }
        var root = try Node.expand(0x03, doc[...])
        var skipped = 0
        func step(_ body: (inout Node) throws -> Void) throws {
            var copy = root
            do {
                try body(&copy)
                root = copy
            } catch is Superseded {
                skipped += 1
            }
        }
        if let t = field("truncatedArrays"), t.type == 0x04 {
            for entry in try RawBSON.elements(t.value) where entry.type == 0x03 {
                let parts = try RawBSON.elements(entry.value)
                guard let f = parts.first(where: { $0.key == Array("field".utf8) }).flatMap(string),
                      let size = parts.first(where: { $0.key == Array("newSize".utf8) }).flatMap(integer)
                else { continue }
                let tree = PathNode()
                try tree.add(path: f, action: .truncate(size))
                try step { try apply(tree, to: &$0) }
            }
        }
        let set = try field("updatedFields").flatMap { $0.type == 0x03 ? $0 : nil }.map { try RawBSON.elements($0.value) } ?? []
        let removed: [[UInt8]] = try field("removedFields").flatMap { $0.type == 0x04 ? $0 : nil }
            .map { try RawBSON.elements($0.value).compactMap { string($0).map { Array($0.utf8) } } } ?? []
        let dollar = UInt8(ascii: "$")
        let tree = PathNode()
        for e in set where e.key.first != dollar { try tree.add(path: e.key, action: .set(.raw(e.type, e.value))) }
        for r in removed where r.first != dollar { try tree.add(path: r, action: .unset) }
        if !tree.children.isEmpty { try step { try apply(tree, to: &$0) } }
        // Top-level names that start with `$` go through $setField/$unsetField: the name is
        // a literal, never a path.
        let literalSets = set.filter { $0.key.first == dollar }
        let literalUnsets = removed.filter { $0.first == dollar }
        if !literalSets.isEmpty || !literalUnsets.isEmpty {
            try step { node in
                guard case .document(var fields) = node else { return }
                for e in literalSets {
                    if let i = fields.firstIndex(where: { $0.key == e.key }) { fields[i].node = .raw(e.type, e.value) } else {
                        fields.append(Field(key: e.key, node: .raw(e.type, e.value)))
                    }
                }
                for r in literalUnsets { fields.removeAll { $0.key == r } }
                node = .document(fields)
            }
        }
        return (root.encoded().bytes, skipped)
    }

    static func integer(_ e: RawBSON.Element) -> Int64? {
        switch e.type {
        case 0x10: return Int64(RawBSON.int32(e.value, at: e.value.startIndex))
        case 0x12: return e.value.withUnsafeBytes { Int64(littleEndian: $0.loadUnaligned(as: Int64.self)) }
        case 0x01:
            let d = e.value.withUnsafeBytes { Double(bitPattern: UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
            return d.rounded() == d && d.magnitude < 9e18 ? Int64(d) : nil
        default: return nil
        }
    }

    /// A step the server would refuse with a code the restore tolerates (2, 14, 28, 16837).
    struct Superseded: Error { let code: Int; let reason: String }

    /// A value in a document being edited: untouched values stay raw bytes; documents and
    /// arrays on an edited path are opened up.
    indirect enum Node {
        case raw(UInt8, ArraySlice<UInt8>)
        case document([Field])
        case array([Node])

        static let null = Node.raw(0x0A, [])

        static func expand(_ type: UInt8, _ value: ArraySlice<UInt8>) throws -> Node {
            let els = try RawBSON.elements(value)
            if type == 0x04 { return .array(els.map { .raw($0.type, $0.value) }) }
            return .document(els.map { Field(key: $0.key, node: .raw($0.type, $0.value)) })
        }

        func encoded() -> (type: UInt8, bytes: [UInt8]) {
            switch self {
            case .raw(let t, let v): return (t, Array(v))
            case .document(let fields):
                var body: [UInt8] = []
                for f in fields {
                    let (t, v) = f.node.encoded()
                    RawBSON.append(t, f.key, v, to: &body)
                }
                return (0x03, RawBSON.document(body))
            case .array(let items):
                var body: [UInt8] = []
                for (i, item) in items.enumerated() {
                    let (t, v) = item.encoded()
                    RawBSON.append(t, Array(String(i).utf8), v, to: &body)
                }
                return (0x04, RawBSON.document(body))
            }
        }
    }

    struct Field {
        var key: [UInt8]
        var node: Node
    }

    enum Action {
        case set(Node)
        case unset
        case truncate(Int64)
    }

    /// The paths of one update step as a tree, children in the order the server applies
    /// them: by name, bytewise, except that two numeric names compare as numbers.
    final class PathNode {
        var children: [[UInt8]: PathNode] = [:]
        var action: Action?

        func add(path: String, action: Action) throws { try add(path: Array(path.utf8), action: action) }

        func add(path: [UInt8], action: Action) throws {
            let parts = path.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false).map(Array.init)
            guard !parts.contains(where: \.isEmpty) else {
                throw Unreplayable(reason: "an update path with an empty part")
            }
            var node = self
            for part in parts {
                if node.action != nil { throw Unreplayable(reason: "conflicting update paths") }
                if let next = node.children[part] { node = next } else {
                    let next = PathNode()
                    node.children[part] = next
                    node = next
                }
            }
            if node.action != nil || !node.children.isEmpty { throw Unreplayable(reason: "conflicting update paths") }
            node.action = action
        }

        /// True when applying creates something where nothing is (an unset never does).
        var creates: Bool {
            switch action {
            case .set?, .truncate?: return true
            case .unset?: return false
            case nil: return children.values.contains { $0.creates }
            }
        }

        var sortedChildren: [([UInt8], PathNode)] {
            children.sorted { PathNode.precedes($0.key, $1.key) }.map { ($0.key, $0.value) }
        }

        static func numeric(_ name: [UInt8]) -> Bool {
            !name.isEmpty && name.allSatisfy { $0 >= 0x30 && $0 <= 0x39 }
        }

        static func precedes(_ a: [UInt8], _ b: [UInt8]) -> Bool {
            if numeric(a) && numeric(b) {
                let x = a.drop { $0 == 0x30 }, y = b.drop { $0 == 0x30 }
                if x.count != y.count { return x.count < y.count }
                if x != y { return x.lexicographicallyPrecedes(y) }
            }
            return a.lexicographicallyPrecedes(b)
        }
    }

    /// An array position: digits only, no leading zero (but "0").
    static func arrayIndex(_ name: [UInt8]) -> Int? {
        guard PathNode.numeric(name), name.count == 1 || name.first != 0x30, name.count <= 9 else { return nil }
        return Int(String(decoding: name, as: UTF8.self))
    }

    /// The server refuses to fill more than this many nulls in front of a new array element.
    static let maxBackfill = 1_500_000

    static func apply(_ tree: PathNode, to node: inout Node) throws {
        switch node {
        case .raw(let t, let v) where t == 0x03 || t == 0x04:
            node = try Node.expand(t, v)
            try apply(tree, to: &node)
        case .document(var fields):
            node = .null
            for (name, child) in tree.sortedChildren {
                if let i = fields.firstIndex(where: { $0.key == name }) {
                    switch child.action {
                    case .unset?: fields.remove(at: i)
                    case .set(let v)?: fields[i].node = v
                    case .truncate(let n)?: try truncate(&fields[i].node, n, name)
                    case nil: try descend(child, into: &fields[i].node, name)
                    }
                } else if child.creates {
                    fields.append(Field(key: name, node: create(child)))
                }
            }
            node = .document(fields)
        case .array(var items):
            node = .null
            for (name, child) in tree.sortedChildren {
                guard let i = arrayIndex(name) else {
                    if child.creates { throw Superseded(code: 28, reason: "cannot create a named field in an array") }
                    continue
                }
                if i < items.count {
                    switch child.action {
                    case .unset?: items[i] = .null
                    case .set(let v)?: items[i] = v
                    case .truncate(let n)?: try truncate(&items[i], n, name)
                    case nil: try descend(child, into: &items[i], name)
                    }
                } else if child.creates {
                    guard i - items.count <= maxBackfill else {
                        throw Unreplayable(reason: "an array position more than \(maxBackfill) past the end")
                    }
                    while items.count < i { items.append(.null) }
                    items.append(create(child))
                }
            }
            node = .array(items)
        case .raw:
            if tree.creates { throw Superseded(code: 28, reason: "a path through a value that is not a document or array") }
        }
    }

    static func descend(_ child: PathNode, into node: inout Node, _ name: [UInt8]) throws {
        try apply(child, to: &node)
    }

    static func truncate(_ node: inout Node, _ size: Int64, _ name: [UInt8]) throws {
        if case .raw(let t, let v) = node, t == 0x04 { node = try Node.expand(t, v) }
        guard case .array(let items) = node else {
            throw Superseded(code: 2, reason: "truncation of a value that is not an array")
        }
        let n = Int(clamping: size)
        node = .array(n >= 0 ? Array(items.prefix(n)) : Array(items.suffix(-n)))
    }

    /// What an update creates where its path does not exist: documents down to the value
    /// (an empty array for a truncation, as `$push` makes one).
    static func create(_ tree: PathNode) -> Node {
        switch tree.action {
        case .set(let v)?: return v
        case .truncate?: return .array([])
        case .unset?: return .null  // never called: an unset creates nothing
        case nil:
            return .document(tree.sortedChildren.filter { $0.1.creates }.map { Field(key: $0.0, node: create($0.1)) })
        }
    }
}
