#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// A plain HTTP/1.1 exchange over a real TCP socket: what a scraper or a probe does.
public struct HTTPReply {
    public var status: Int
    public var headers: [String: String]  // lower-cased names
    public var body: String
}

public enum RawHTTP {
    public struct Failure: Error, CustomStringConvertible { public var description: String }

    public static func connect(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: \(errno)") }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            let e = errno
            close(fd)
            throw Failure(description: "connect: \(String(cString: strerror(e)))")
        }
        return fd
    }

    /// Sends `raw` and reads until the server closes the connection.
    public static func exchange(port: Int, raw: String) throws -> String {
        let fd = try connect(port: port)
        defer { close(fd) }
        let bytes = Array(raw.utf8)
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress!, $0.count, 0) }
            guard n > 0 else { throw Failure(description: "send: \(errno)") }
            sent += n
        }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(fd, &buf, buf.count, 0)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            out += buf[0..<n]
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func get(port: Int, _ path: String, method: String = "GET") throws -> HTTPReply {
        let text = try exchange(port: port, raw: "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        return try parse(text).first ?? { throw Failure(description: "no response") }()
    }

    /// Responses in order, each cut by its Content-Length.
    public static func parse(_ text: String) throws -> [HTTPReply] {
        var replies: [HTTPReply] = []
        var rest = Substring(text)
        while !rest.isEmpty {
            guard let end = rest.range(of: "\r\n\r\n") else { throw Failure(description: "no header end in \(rest)") }
            let lines = rest[..<end.lowerBound].components(separatedBy: "\r\n")
            let statusParts = lines[0].split(separator: " ")
            guard statusParts.count >= 2, let status = Int(statusParts[1]) else { throw Failure(description: "bad status line \(lines[0])") }
            var headers: [String: String] = [:]
            for l in lines.dropFirst() {
                guard let colon = l.firstIndex(of: ":") else { continue }
                headers[l[..<colon].lowercased()] = l[l.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
            let length = Int(headers["content-length"] ?? "0") ?? 0
            let bodyBytes = Array(rest[end.upperBound...].utf8)
            guard bodyBytes.count >= length else { throw Failure(description: "short body") }
            replies.append(HTTPReply(status: status, headers: headers, body: String(decoding: bodyBytes[0..<length], as: UTF8.self)))
            rest = Substring(String(decoding: bodyBytes[length...], as: UTF8.self))
        }
        return replies
    }
}
