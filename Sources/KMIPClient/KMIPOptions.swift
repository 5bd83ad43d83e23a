import Foundation

/// One KMIP server: a host name or IP literal, and a port.
public struct KMIPServer: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// `host:port`, with IPv6 literals in brackets.
    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Whether `host` is an IPv4 or IPv6 literal (checked against the certificate's IP
    /// addresses, and sent without SNI).
    public var isIPLiteral: Bool {
        var v4 = in_addr(), v6 = in6_addr()
        return inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1
    }
}

/// The KMIP settings, named as Percona Server for MongoDB names them (`kmipServerName`,
/// `kmipPort`, `kmipServerCAFile`, `kmipClientCertificateFile`,
/// `kmipClientCertificatePassword`, `kmipKeyIdentifier`, `kmipRotateMasterKey`,
/// `kmipConnectRetries`, `kmipConnectTimeoutMS`).
///
/// The password is the password itself. Callers resolve it with `password(fromFile:)` or
/// `password(fromEnvironment:)`; it never comes from the command line, where `ps` shows it.
public struct KMIPOptions: Sendable, Equatable {
    public static let defaultPort = 5696
    public static let defaultConnectTimeoutMS = 5000
    public static let minimumConnectTimeoutMS = 1000
    public static let defaultMaxResponseBytes = 1 << 20

    /// Comma-separated servers, tried in this order. Each entry is a host, or (an extension
    /// of PSMDB's setting) `host:port` / `[ipv6]:port` to override `port` for that server.
    public var serverName: String
    public var port: Int
    /// PEM file of the CA(s) the server certificate must chain to; nil: the system store.
    public var serverCAFile: String?
    /// One PEM file holding the client's private key, certificate and chain.
    public var clientCertificateFile: String
    /// The client key's password, when the key in `clientCertificateFile` is encrypted.
    public var clientCertificatePassword: String?
    /// The master key's KMIP unique identifier; nil: one is created.
    public var keyIdentifier: String?
    public var rotateMasterKey: Bool
    /// Extra rounds over all servers after the first: attempts = (retries + 1) x servers.
    public var connectRetries: Int
    /// Bounds the TCP connect, the TLS handshake, and each write and read of a request.
    public var connectTimeoutMS: Int
    /// Largest response length a header may declare; refused before anything is allocated.
    public var maxResponseBytes: Int

    public init(serverName: String, port: Int = KMIPOptions.defaultPort, serverCAFile: String? = nil,
                clientCertificateFile: String, clientCertificatePassword: String? = nil,
                keyIdentifier: String? = nil, rotateMasterKey: Bool = false, connectRetries: Int = 0,
                connectTimeoutMS: Int = KMIPOptions.defaultConnectTimeoutMS,
                maxResponseBytes: Int = KMIPOptions.defaultMaxResponseBytes) {
        self.serverName = serverName
        self.port = port
        self.serverCAFile = serverCAFile
        self.clientCertificateFile = clientCertificateFile
        self.clientCertificatePassword = clientCertificatePassword
        self.keyIdentifier = keyIdentifier
        self.rotateMasterKey = rotateMasterKey
        self.connectRetries = connectRetries
        self.connectTimeoutMS = connectTimeoutMS
        self.maxResponseBytes = maxResponseBytes
    }

    /// The servers of `serverName`, in order, spaces around entries trimmed.
    public func servers() throws -> [KMIPServer] {
        let entries = serverName.split(separator: ",", omittingEmptySubsequences: false)
            .map { $0.trimmingCharacters(in: .whitespaces) }
        guard entries.contains(where: { !$0.isEmpty }) else { throw KMIPOptionsError.emptyServerName }
        var out: [KMIPServer] = []
        for entry in entries {
            guard !entry.isEmpty else { throw KMIPOptionsError.invalidServer(entry: entry, reason: "empty entry in the list") }
            let server = try Self.parseServer(entry, defaultPort: port)
            if !out.contains(server) { out.append(server) }
        }
        return out
    }

    private static func parseServer(_ entry: String, defaultPort: Int) throws -> KMIPServer {
        func bad(_ reason: String) -> KMIPOptionsError { .invalidServer(entry: entry, reason: reason) }
        func portNumber(_ s: Substring) throws -> Int {
            guard let p = Int(s), (1...65535).contains(p) else { throw bad("port must be 1 to 65535") }
            return p
        }
        var host = Substring(entry)
        var port = defaultPort
        if entry.hasPrefix("[") {
            // [ipv6] or [ipv6]:port
            guard let close = entry.firstIndex(of: "]") else { throw bad("unclosed '['") }
            host = entry[entry.index(after: entry.startIndex)..<close]
            let rest = entry[entry.index(after: close)...]
            if !rest.isEmpty {
                guard rest.hasPrefix(":") else { throw bad("unexpected text after ']'") }
                port = try portNumber(rest.dropFirst())
            }
        } else if entry.filter({ $0 == ":" }).count == 1, let colon = entry.firstIndex(of: ":") {
            host = entry[..<colon]
            port = try portNumber(entry[entry.index(after: colon)...])
        }
        // More than one colon without brackets: a bare IPv6 literal, on the default port.
        guard !host.isEmpty else { throw bad("no host") }
        guard !host.contains(where: { $0.isWhitespace || $0 == "/" || $0 == "\0" }) else {
            throw bad("a host name cannot contain spaces or '/'")
        }
        return KMIPServer(host: String(host), port: port)
    }

    /// Checks every setting without touching the network or the files (their contents are
    /// checked when `KMIPTransport` loads them).
    public func validate() throws {
        _ = try servers()
        guard (1...65535).contains(port) else { throw KMIPOptionsError.invalidPort(port) }
        guard connectTimeoutMS >= Self.minimumConnectTimeoutMS else {
            throw KMIPOptionsError.connectTimeoutTooSmall(connectTimeoutMS)
        }
        // An hour: large enough for anything real, small enough that timeval and poll cannot overflow.
        guard connectTimeoutMS <= 3_600_000 else { throw KMIPOptionsError.connectTimeoutTooLarge(connectTimeoutMS) }
        guard (0...100).contains(connectRetries) else { throw KMIPOptionsError.invalidConnectRetries(connectRetries) }
        guard !clientCertificateFile.isEmpty else { throw KMIPOptionsError.missingClientCertificateFile }
        if let ca = serverCAFile, ca.isEmpty { throw KMIPOptionsError.emptyServerCAFile }
        if let pw = clientCertificatePassword {
            guard !pw.isEmpty else { throw KMIPOptionsError.emptyPassword }
            guard !pw.utf8.contains(0) else { throw KMIPOptionsError.passwordContainsNUL }
        }
        if let id = keyIdentifier, id.trimmingCharacters(in: .whitespaces).isEmpty {
            throw KMIPOptionsError.emptyKeyIdentifier
        }
        guard (8...(64 << 20)).contains(maxResponseBytes) else {
            throw KMIPOptionsError.invalidMaxResponseBytes(maxResponseBytes)
        }
    }

    /// Reads a password from a file: a regular file no group or other user can access (the
    /// same rule as the master key file), at most 4 KiB. One trailing newline is dropped.
    public static func password(fromFile path: String) throws -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            throw KMIPOptionsError.passwordFile(path: path, problem: "cannot be read: " + String(cString: strerror(errno)))
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            throw KMIPOptionsError.passwordFile(path: path, problem: "cannot be read: " + String(cString: strerror(errno)))
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw KMIPOptionsError.passwordFile(path: path, problem: "is not a regular file")
        }
        let perms = st.st_mode & 0o777
        guard perms & 0o077 == 0 else {
            throw KMIPOptionsError.passwordFile(
                path: path, problem: String(format: "has mode %04o; group and others must have no access (chmod 600)", perms))
        }
        let limit = 4096
        guard st.st_size <= limit else { throw KMIPOptionsError.passwordFile(path: path, problem: "is larger than \(limit) bytes") }
        var bytes = [UInt8](repeating: 0, count: limit + 1)
        defer { bytes.withUnsafeMutableBytes { if let p = $0.baseAddress { explicit_bzero(p, $0.count) } } }
        var done = 0
        while done <= limit {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, limit + 1 - done) }
            if n < 0 {
                if errno == EINTR { continue }
                throw KMIPOptionsError.passwordFile(path: path, problem: "cannot be read: " + String(cString: strerror(errno)))
            }
            if n == 0 { break }
            done += n
        }
        guard done <= limit else { throw KMIPOptionsError.passwordFile(path: path, problem: "is larger than \(limit) bytes") }
        var end = done
        if end > 0, bytes[end - 1] == UInt8(ascii: "\n") { end -= 1 }
        if end > 0, bytes[end - 1] == UInt8(ascii: "\r") { end -= 1 }
        guard end > 0 else { throw KMIPOptionsError.passwordFile(path: path, problem: "is empty") }
        guard let pw = String(validating: bytes[0..<end], as: UTF8.self) else {
            throw KMIPOptionsError.passwordFile(path: path, problem: "is not UTF-8 text")
        }
        guard !pw.utf8.contains(0) else { throw KMIPOptionsError.passwordFile(path: path, problem: "contains a NUL byte") }
        return pw
    }

    /// Reads a password from an environment variable (set, not empty).
    public static func password(fromEnvironment name: String,
                                environment: [String: String] = ProcessInfo.processInfo.environment) throws -> String {
        guard let pw = environment[name] else { throw KMIPOptionsError.passwordVariable(name: name, problem: "is not set") }
        guard !pw.isEmpty else { throw KMIPOptionsError.passwordVariable(name: name, problem: "is empty") }
        return pw
    }
}

// The password never reaches a description, a debugger summary or `dump`.
extension KMIPOptions: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var description: String {
        var parts = ["serverName: \(serverName)", "port: \(port)",
                     "serverCAFile: \(serverCAFile ?? "(system store)")",
                     "clientCertificateFile: \(clientCertificateFile)"]
        if clientCertificatePassword != nil { parts.append("clientCertificatePassword: <redacted>") }
        if let keyIdentifier { parts.append("keyIdentifier: \(keyIdentifier)") }
        parts += ["rotateMasterKey: \(rotateMasterKey)", "connectRetries: \(connectRetries)",
                  "connectTimeoutMS: \(connectTimeoutMS)"]
        return "KMIPOptions(" + parts.joined(separator: ", ") + ")"
    }

    public var debugDescription: String { description }

    public var customMirror: Mirror {
        Mirror(self, children: [
            "serverName": serverName, "port": port, "serverCAFile": serverCAFile as Any,
            "clientCertificateFile": clientCertificateFile,
            "clientCertificatePassword": clientCertificatePassword == nil ? "nil" : "<redacted>",
            "keyIdentifier": keyIdentifier as Any, "rotateMasterKey": rotateMasterKey,
            "connectRetries": connectRetries, "connectTimeoutMS": connectTimeoutMS,
            "maxResponseBytes": maxResponseBytes,
        ])
    }
}

/// A KMIP setting that cannot work. Names the setting and the value, never a password.
public enum KMIPOptionsError: Error, Equatable, CustomStringConvertible {
    case emptyServerName
    case invalidServer(entry: String, reason: String)
    case invalidPort(Int)
    case connectTimeoutTooSmall(Int)
    case connectTimeoutTooLarge(Int)
    case invalidConnectRetries(Int)
    case missingClientCertificateFile
    case emptyServerCAFile
    case emptyPassword
    case passwordContainsNUL
    case emptyKeyIdentifier
    case invalidMaxResponseBytes(Int)
    case passwordFile(path: String, problem: String)
    case passwordVariable(name: String, problem: String)

    public var description: String {
        switch self {
        case .emptyServerName: return "KMIP serverName is empty: give at least one host"
        case let .invalidServer(entry, reason): return "KMIP serverName entry '\(entry)' is invalid: \(reason)"
        case let .invalidPort(p): return "KMIP port \(p) is invalid: it must be 1 to 65535"
        case let .connectTimeoutTooSmall(ms):
            return "KMIP connectTimeoutMS \(ms) is too small: it must be at least \(KMIPOptions.minimumConnectTimeoutMS)"
        case let .connectTimeoutTooLarge(ms): return "KMIP connectTimeoutMS \(ms) is too large: at most 3600000 (one hour)"
        case let .invalidConnectRetries(n): return "KMIP connectRetries \(n) is invalid: it must be 0 to 100"
        case .missingClientCertificateFile: return "KMIP clientCertificateFile is required (a PEM file with the key and certificate)"
        case .emptyServerCAFile: return "KMIP serverCAFile is empty: give a PEM file, or leave it out to use the system store"
        case .emptyPassword: return "KMIP clientCertificatePassword is empty"
        case .passwordContainsNUL: return "KMIP clientCertificatePassword contains a NUL byte"
        case .emptyKeyIdentifier: return "KMIP keyIdentifier is empty: leave it out to have one created"
        case let .invalidMaxResponseBytes(n): return "KMIP maximum response size \(n) is invalid: it must be 8 bytes to 64 MiB"
        case let .passwordFile(path, problem): return "KMIP client certificate password file \(path) \(problem)"
        case let .passwordVariable(name, problem): return "KMIP client certificate password variable \(name) \(problem)"
        }
    }
}
