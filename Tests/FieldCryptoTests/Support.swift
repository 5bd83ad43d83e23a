import BSON
import FieldCrypto
import Foundation
import XCTest

/// A fresh folder per test, removed afterwards.
func makeTemporaryFolder() throws -> String {
    let path = NSTemporaryDirectory() + "fieldcrypto-\(getpid())-\(UUID().uuidString.prefix(8))"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

func mode(of path: String) -> Int {
    (try? FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int) ?? -1
}

func randomMasterKey() throws -> LocalMasterKey {
    var g = SystemRandomNumberGenerator()
    return try LocalMasterKey(bytes: (0..<96).map { _ in UInt8.random(in: 0...255, using: &g) })
}

/// Runs `body`, expects a FieldCryptoError, returns it.
func expectFieldCryptoError<T>(_ body: () throws -> T, file: StaticString = #filePath, line: UInt = #line) -> FieldCryptoError? {
    do {
        let value = try body()
        XCTFail("expected an error, got \(value)", file: file, line: line)
        return nil
    } catch let e as FieldCryptoError {
        return e
    } catch {
        XCTFail("expected a FieldCryptoError, got \(type(of: error)): \(error)", file: file, line: line)
        return nil
    }
}

/// A key vault that records the queries it answers, over an in-memory vault.
final class RecordingKeyVault: KeyVault, @unchecked Sendable {
    let inner: any KeyVault
    private let lock = NSLock()
    private var _queries: [KeyVaultQuery] = []
    var queries: [KeyVaultQuery] { lock.withLock { _queries } }

    init(_ inner: any KeyVault) { self.inner = inner }

    func keys(matching query: KeyVaultQuery) throws -> [Document] {
        lock.withLock { _queries.append(query) }
        return try inner.keys(matching: query)
    }
    func insert(_ keyDocument: Document) throws { try inner.insert(keyDocument) }
    func allKeys() throws -> [Document] { try inner.allKeys() }
    func replace(_ keyDocuments: [Document]) throws { try inner.replace(keyDocuments) }
    func delete(ids: [UUID]) throws -> Int { try inner.delete(ids: ids) }
}

extension BSONValue {
    var binaryBytes: [UInt8]? { if case .binary(_, let d) = self { return d }; return nil }
    var binarySubtype: UInt8? { if case .binary(let s, _) = self { return s }; return nil }
}
