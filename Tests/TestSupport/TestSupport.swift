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

    /// Spawns with posix_spawn and reaps with waitpid, and sends output to files: a daemon the
    /// child forks (mongod --fork) keeps inherited descriptors open, which makes pipes and
    /// Foundation's Process wait forever. A child still running after `timeout` seconds is
    /// killed, so no test can hang CI.
    public static func run(_ executable: String, _ args: [String], environment: [String: String] = [:],
                           timeout: TimeInterval = 600) -> CLIResult {
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        let base = NSTemporaryDirectory() + "ct-run-\(UUID().uuidString.prefix(8))"
        defer { unlink(base + ".out"); unlink(base + ".err") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, base + ".out", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, base + ".err", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        let argv = ([executable] + args).map { strdup($0) } + [nil]
        let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { argv.forEach { free($0) }; envp.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, nil, argv, envp)
        guard rc == 0 else { return CLIResult(status: -1, stdout: "", stderr: "cannot start \(executable): \(String(cString: strerror(rc)))") }
        let deadline = Date().addingTimeInterval(timeout)
        var status: Int32 = 0
        while waitpid(pid, &status, WNOHANG) == 0 {
            if Date() > deadline { kill(pid, SIGKILL) }
            usleep(10_000)
        }
        let exited = (status & 0x7F) == 0
        let code = exited ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
        let o = (try? String(contentsOfFile: base + ".out", encoding: .utf8)) ?? ""
        let e = (try? String(contentsOfFile: base + ".err", encoding: .utf8)) ?? ""
        return CLIResult(status: code, stdout: o, stderr: e)
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

/// The PyKMIP servers and PKI of ops/kmip.sh: from CIPHERTAIL_TEST_KMIP_DIR and
/// CIPHERTAIL_TEST_KMIP_PORTS (set by ops/test.sh), else started here, as for mongod.
public enum KMIPTestServers {
    public static let pki: String = {
        if let d = ProcessInfo.processInfo.environment["CIPHERTAIL_TEST_KMIP_DIR"], !d.isEmpty { return d }
        let r = TestEnv.shell("\(TestEnv.root)/ops/kmip.sh dir")
        precondition(r.status == 0, "could not create the KMIP test PKI: \(r.stderr)")
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }()

    /// Two running PyKMIP servers on 127.0.0.1.
    public static let ports: [Int] = {
        if let p = ProcessInfo.processInfo.environment["CIPHERTAIL_TEST_KMIP_PORTS"], !p.isEmpty {
            return p.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        }
        return [("ct-kmip-a", 55696), ("ct-kmip-b", 55697)].map { name, port in
            let r = TestEnv.shell("\(TestEnv.root)/ops/kmip.sh start \(name) \(port)")
            precondition(r.status == 0, "could not start the PyKMIP server \(name): \(r.stderr)")
            return Int(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines))!
        }
    }()

    /// A file of the test PKI (ca.pem, client.pem, client-encrypted.pem, ...).
    public static func file(_ name: String) -> String { "\(pki)/\(name)" }

    /// `127.0.0.1:PORT` of server `i` (0 or 1).
    public static func server(_ i: Int) -> String { "127.0.0.1:\(ports[i])" }

    /// A local port nothing listens on: bound by the system, then released.
    public static func freePort() -> Int {
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(s) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, len) } }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(s, $0, &len) } }
        return Int(UInt16(bigEndian: addr.sin_port))
    }
}
