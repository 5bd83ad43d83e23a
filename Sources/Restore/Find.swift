import Archive
import BSON
import FieldCrypto
import Foundation
import Mongo

/// `find` over a live collection or over an archive: the filter's equality values on
/// deterministic fields are encrypted with the right key first, so only ciphertext is
/// compared; results are decrypted for the caller when keys are given.
public struct FindRequest {
    public var namespace: Namespace
    public var filter: Document
    public var limit: Int?
    public var protector: DocumentProtector?
    public var decryptor: LenientDecryptor?

    public init(namespace: Namespace, filter: Document) {
        self.namespace = namespace
        self.filter = filter
    }

    /// The filter as it must run against stored data; nil when it cannot match anything.
    func storedFilter() throws -> Document? {
        guard let protector, let q = QueryEncryptor(protector: protector, database: namespace.database, collection: namespace.collection) else {
            return filter
        }
        return try q.encrypt(filter)
    }

    func open(_ doc: Document) -> (Document, [DecryptFailure]) {
        decryptor?.decrypt(doc, namespace: namespace.description) ?? (doc, [])
    }
}

public struct FindResult {
    public var documents: [Document]
    public var undecryptable: [DecryptFailure]
    /// For archives: the backup read and its consistent cluster time.
    public var backup: String?
}

public enum Finder {
    public static func inCollection(_ connection: ConnectionString, _ request: FindRequest) throws -> FindResult {
        guard let filter = try request.storedFilter() else { return FindResult(documents: [], undecryptable: []) }
        let client = try Client(connection)
        var options = DocumentBuilder()
        if let limit = request.limit { options.append("limit", .int64(Int64(limit))) }
        let cursor = client.collection(request.namespace).find(filter, options: options.document)
        var out = FindResult(documents: [], undecryptable: [])
        while let d = try cursor.next() {
            let (doc, failed) = request.open(d)
            out.documents.append(doc)
            out.undecryptable += failed
        }
        return out
    }

    /// Reads the namespace's documents in a backup, then the change events captured with it,
    /// up to its consistent point: the newest full version of each document wins, deletes
    /// remove it. Matching compares ciphertext for deterministic fields.
    public static func inArchive(repository: String, backupID: String?, _ request: FindRequest) throws -> FindResult {
        let repo = try Repository(path: repository)
        let manifest = try backupID.map { try repo.manifest($0) } ?? repo.latest()
        var out = FindResult(documents: [], undecryptable: [], backup: manifest.id)
        guard let filter = try request.storedFilter() else { return out }
        var found: [BSONValue: Document] = [:]
        var order: [BSONValue] = []
        func consider(_ doc: Document) {
            guard let id = doc["_id"] else { return }
            if FilterMatcher.matches(doc, filter) {
                if found[id] == nil { order.append(id) }
                found[id] = doc
            } else {
                found[id] = nil
            }
        }
        let ns = request.namespace.description
        for entry in manifest.namespaces where entry.namespace == ns && entry.type == "collection" {
            for s in entry.segments {
                let reader = try SegmentReader(path: repo.segmentPath(backup: manifest.id, s))
                while let block = try reader.nextBlock() {
                    block.forEachRecord { consider(Document(trusted: Array($0))) }
                }
            }
        }
        for s in manifest.events.segments {
            let reader = try SegmentReader(path: repo.segmentPath(backup: manifest.id, s))
            while let block = try reader.nextBlock() {
                block.forEachRecord { raw in
                    let e = Document(trusted: Array(raw))
                    guard let nsDoc = e["ns"]?.documentValue, "\(nsDoc["db"]?.stringValue ?? "").\(nsDoc["coll"]?.stringValue ?? "")" == ns,
                          let ts = e["clusterTime"]?.timestampValue, ts <= manifest.clusterTime.end else { return }
                    if e["operationType"]?.stringValue == "delete", let id = e["documentKey"]?.documentValue?["_id"] {
                        found[id] = nil
                    } else if let full = e["fullDocument"]?.documentValue {
                        consider(full)
                    }
                }
            }
        }
        for id in order {
            guard let d = found[id] else { continue }
            if let limit = request.limit, out.documents.count >= limit { break }
            let (doc, failed) = request.open(d)
            out.documents.append(doc)
            out.undecryptable += failed
        }
        return out
    }
}
