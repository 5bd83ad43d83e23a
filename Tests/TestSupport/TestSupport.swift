import BSON
import Foundation
import Mongo

/// The output of one CLI run.
public struct CLIResult {
    public var status: Int32
    public var stdout: String
    public var stderr: String
}

/// What the integration tests share: the real mongod, temporary folders, and the real CLI.
public enum TestEnv {
    /// The package root, found from this file's location.
    public static let root: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    /// The test replica set: CIPHERTAIL_TEST_URI (set by ops/test.sh), else started here.
    public static let uri: String = {
        if let u = ProcessInfo.processInfo.environment["CIPHERTAIL_TEST_URI"], !u.isEmpty { return u }
        let r = shell("\(root)/ops/mongod.sh start ct-test 27117")
        precondition(r.status == 0, "could not start the test mongod: \(r.stderr)")
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }()

    public static var connection: ConnectionString { ConnectionString(uri) }

    public static func client() throws -> Client { try Client(connection) }

    /// A database name no other test uses.
    public static func uniqueName(_ prefix: String) -> String {
        "\(prefix)_\(UInt32.random(in: 0...UInt32.max))"
    }

    public static func temporaryDirectory(_ prefix: String = "ct") -> String {
        let path = NSTemporaryDirectory() + "\(prefix)-\(UUID().uuidString.prefix(8))"
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// The built `ciphertail` binary, next to the test bundle.
    public static let binary: String = {
        let candidates = [
            Bundle.main.bundleURL.deletingLastPathComponent().appendingPathComponent("ciphertail").path,
            URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("ciphertail").path,
            "\(root)/.build/debug/ciphertail",
        ]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates.last!
    }()

    /// Runs the CLI and waits for it.
    @discardableResult
    public static func ciphertail(_ args: [String], environment: [String: String] = [:]) -> CLIResult {
        run(binary, args, environment: environment)
    }

    public static func run(_ executable: String, _ args: [String], environment: [String: String] = [:]) -> CLIResult {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        p.environment = env
        let out = Pipe()
        let err = Pipe()
        p.standardOutput = out
        p.standardError = err
        do { try p.run() } catch { return CLIResult(status: -1, stdout: "", stderr: "\(error)") }
        // Drain both pipes while the child runs so a chatty child never blocks on a full pipe.
        var outData = Data()
        var errData = Data()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async { outData = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        group.enter()
        DispatchQueue.global().async { errData = err.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        p.waitUntilExit()
        group.wait()
        return CLIResult(status: p.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                         stderr: String(decoding: errData, as: UTF8.self))
    }

    @discardableResult
    public static func shell(_ command: String) -> CLIResult { run("/bin/bash", ["-c", command]) }

    /// All documents of a collection as raw BSON, ordered by _id.
    public static func documents(_ client: Client, _ ns: Namespace) throws -> [Document] {
        try client.collection(ns).find(Document(), options: ["sort": ["_id": 1]]).all()
    }

    /// listCollections entry options by name, without the per-collection uuid.
    public static func collectionOptions(_ client: Client, database: String) throws -> [String: Document] {
        var out: [String: Document] = [:]
        for info in try client.database(database).listCollections() {
            guard let name = info["name"]?.stringValue else { continue }
            out[name] = Document(["type": info["type"] ?? .null, "options": info["options"] ?? .null])
        }
        return out
    }
}
