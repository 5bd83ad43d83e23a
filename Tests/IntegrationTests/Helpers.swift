import Archive
import BSON
import Capture
import Foundation
import Logging
import Mongo
import Restore
import TestSupport
import XCTest

let testLogger: Logger = {
    var l = Logger(label: "ciphertail.tests") { StreamLogHandler.standardError(label: $0) }
    l.logLevel = .warning
    return l
}()

@discardableResult
func backup(_ patterns: [String], repo: String, configure: (inout BackupOptions) -> Void = { _ in }) throws -> Manifest {
    var o = BackupOptions(connection: TestEnv.connection, repository: repo)
    o.namespaces = try patterns.map(NamespacePattern.init)
    configure(&o)
    return try BackupRunner(o, logger: testLogger).run()
}

@discardableResult
func restore(repo: String, from: String, to: String, backupID: String? = nil, drop: Bool = false) throws -> RestoreSummary {
    var o = RestoreOptions(connection: TestEnv.connection, repository: repo)
    o.mapping = try NamespaceMapping(from: from, to: to)
    o.include = [try NamespacePattern(from)]
    o.backupID = backupID
    o.drop = drop
    return try RestoreRunner(o, logger: testLogger).run()
}

/// Asserts two collections hold the same documents, byte for byte, in _id order.
func assertSameDocuments(_ client: Client, _ a: Namespace, _ b: Namespace, file: StaticString = #filePath, line: UInt = #line) throws {
    let left = try TestEnv.documents(client, a)
    let right = try TestEnv.documents(client, b)
    XCTAssertEqual(left.count, right.count, "document count of \(a) vs \(b)", file: file, line: line)
    for (x, y) in zip(left, right) where x.bytes != y.bytes {
        XCTFail("document differs between \(a) and \(b):\n  \(x.relaxedJSON.prefix(400))\n  \(y.relaxedJSON.prefix(400))", file: file, line: line)
        return
    }
}

func insert(_ client: Client, _ ns: Namespace, _ docs: [Document]) throws {
    let bulk = client.collection(ns).bulk(ordered: true)
    for d in docs { try bulk.insert(d) }
    try bulk.execute()
}

func dropDatabases(_ names: String...) {
    guard let c = try? TestEnv.client() else { return }
    for n in names { try? c.database(n).drop() }
}

func RestoreOptionsFor(repo: String) -> RestoreOptions { RestoreOptions(connection: TestEnv.connection, repository: repo) }
func RestoreRunnerFor(_ o: RestoreOptions) -> RestoreRunner { RestoreRunner(o, logger: testLogger) }
