import COpenSSL
import Foundation

/// One TLS connection to one KMIP server. It owns its socket and `SSL` and frees them in
/// deinit; no C pointer leaves this file. Not thread-safe: `KMIPTransport` serialises use.
///
/// Every step is bounded by the timeout: the TCP connect (non-blocking connect, then
/// poll), and, through SO_RCVTIMEO/SO_SNDTIMEO on the then blocking socket, the TLS
/// handshake and each write and read. A server that accepts TCP and then says nothing
/// fails after about the timeout.
final class TLSConnection {
    let server: KMIPServer
    private let context: TLSContext
    let timeoutMS: Int
    private var fd: Int32 = -1
    private var ssl: OpaquePointer?
    /// Set after any failure: the stream is out of step, and OpenSSL says not to send
    /// close_notify after a fatal error.
    private(set) var broken = false

    init(to server: KMIPServer, context: TLSContext, timeoutMS: Int) throws {
        self.server = server
        self.context = context
        self.timeoutMS = timeoutMS
        try connectTCP()
        try handshake()
    }

    deinit {
        if let ssl {
            // close_notify, bounded by SO_SNDTIMEO; no wait for the server's own.
            if !broken { ERR_clear_error(); _ = SSL_shutdown(ssl); ERR_clear_error() }
            SSL_free(ssl)
        }
        if fd >= 0 { close(fd) }
    }

    // MARK: TCP

    private func connectTCP() throws {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Self.streamType
        hints.ai_protocol = Int32(IPPROTO_TCP)
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(server.host, String(server.port), &hints, &list)
        guard rc == 0, let first = list else {
            let reason = rc == EAI_SYSTEM ? String(cString: strerror(errno)) : String(cString: gai_strerror(rc))
            throw KMIPTransportError.unresolvable(server: server, reason: reason)
        }
        defer { freeaddrinfo(list) }

        // One deadline for all the addresses of the name (localhost: ::1, then 127.0.0.1).
        let deadline = Deadline(milliseconds: timeoutMS)
        var errors: [KMIPTransportError] = []
        var ai: UnsafeMutablePointer<addrinfo>? = first
        while let a = ai {
            ai = a.pointee.ai_next
            let s: Int32
            do {
                s = try openSocket(a.pointee, deadline: deadline)
            } catch let e as KMIPTransportError {
                errors.append(e)
                if case .timeout = e { break }
                continue
            }
            fd = s // from here deinit closes it
            try configureSocket()
            return
        }
        // "Refused" only when every address refused; otherwise the more telling error.
        throw errors.first { if case .connectionRefused = $0 { return false } else { return true } }
            ?? errors.first ?? KMIPTransportError.unreachable(server: server, reason: "no address")
    }

    private func openSocket(_ a: addrinfo, deadline: Deadline) throws -> Int32 {
        let s = socket(a.ai_family, a.ai_socktype | Self.closeOnExec, a.ai_protocol)
        guard s >= 0 else { throw KMIPTransportError.unreachable(server: server, reason: "socket: \(Self.errnoText())") }
        var keep = false
        defer { if !keep { close(s) } }
        let flags = fcntl(s, F_GETFL)
        _ = fcntl(s, F_SETFL, flags | O_NONBLOCK)
        if connect(s, a.ai_addr, a.ai_addrlen) != 0 {
            let e = errno
            guard e == EINPROGRESS || e == EINTR else { throw connectError(e) }
            var pfd = pollfd(fd: s, events: Int16(POLLOUT), revents: 0)
            while true {
                let n = poll(&pfd, 1, deadline.remainingMS)
                if n > 0 { break }
                if n == 0 { throw KMIPTransportError.timeout(server: server, phase: .connect, milliseconds: timeoutMS) }
                if errno != EINTR { throw connectError(errno) }
            }
            var soError: Int32 = 0
            var len = socklen_t(MemoryLayout<Int32>.size)
            guard getsockopt(s, SOL_SOCKET, SO_ERROR, &soError, &len) == 0 else { throw connectError(errno) }
            if soError != 0 { throw connectError(soError) }
        }
        _ = fcntl(s, F_SETFL, flags & ~O_NONBLOCK)
        keep = true
        return s
    }

    private func connectError(_ e: Int32) -> KMIPTransportError {
        if e == ECONNREFUSED { return .connectionRefused(server: server) }
        if e == ETIMEDOUT { return .timeout(server: server, phase: .connect, milliseconds: timeoutMS) }
        return .unreachable(server: server, reason: String(cString: strerror(e)))
    }

    private func configureSocket() throws {
        var tv = timeval(tv_sec: timeoutMS / 1000, tv_usec: Int(timeoutMS % 1000) * 1000)
        let size = socklen_t(MemoryLayout<timeval>.size)
        guard setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, size) == 0,
              setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, size) == 0 else {
            throw KMIPTransportError.tlsSetup(reason: "cannot set socket timeouts: \(Self.errnoText())")
        }
        // Requests and responses are small and strictly alternate: do not wait to coalesce.
        var one: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    // MARK: TLS

    private func handshake() throws {
        // Until the handshake completes, deinit must not send close_notify.
        broken = true
        ERR_clear_error()
        guard let ssl = SSL_new(context.ctx) else {
            throw KMIPTransportError.tlsSetup(reason: "SSL_new: \(OpenSSLErrors.drain().text)")
        }
        self.ssl = ssl
        // A socket BIO on the descriptor; SIGPIPE is ignored (TLSContext.ignoreSIGPIPE).
        guard SSL_set_fd(ssl, fd) == 1 else {
            throw KMIPTransportError.tlsSetup(reason: "SSL_set_fd: \(OpenSSLErrors.drain().text)")
        }
        if server.isIPLiteral {
            // RFC 6066 forbids IP literals in SNI; the certificate must list the address.
            guard X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), server.host) == 1 else {
                throw KMIPTransportError.tlsSetup(reason: "cannot check the certificate for IP \(server.host)")
            }
        } else {
            SSL_set_hostflags(ssl, UInt32(X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS))
            guard SSL_set1_host(ssl, server.host) == 1, ct_SSL_set_tlsext_host_name(ssl, server.host) == 1 else {
                throw KMIPTransportError.tlsSetup(reason: "cannot set the host name \(server.host): \(OpenSSLErrors.drain().text)")
            }
        }
        let deadline = Deadline(milliseconds: timeoutMS)
        while true {
            errno = 0
            let r = SSL_connect(ssl)
            let e = errno
            if r == 1 { break }
            try retryOrThrow(SSL_get_error(ssl, r), errno: e, phase: .tlsHandshake, deadline: deadline, received: nil)
        }
        // SSL_VERIFY_PEER already failed the handshake otherwise; checked again on purpose.
        let verify = SSL_get_verify_result(ssl)
        guard verify == X509_V_OK else {
            throw KMIPTransportError.serverCertificateRejected(server: server, reason: Self.verifyText(verify))
        }
        broken = false
    }

    /// After a failed SSL_connect, SSL_write_ex or SSL_read_ex: returns when the call
    /// should be repeated (interrupted, or the timeout is not over), else throws the error.
    private func retryOrThrow(_ code: Int32, errno e: Int32, phase: KMIPPhase, deadline: Deadline,
                              received: (Int, Int)?) throws {
        switch code {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            // With a blocking socket this is SO_RCVTIMEO/SO_SNDTIMEO expiring (EAGAIN), or
            // a signal (EINTR): the latter is repeated until the deadline.
            if e != EAGAIN && e != EWOULDBLOCK && !deadline.passed { return }
            broken = true
            ERR_clear_error()
            throw KMIPTransportError.timeout(server: server, phase: phase, milliseconds: timeoutMS)
        case SSL_ERROR_ZERO_RETURN:
            broken = true
            throw closedError(phase: phase, received: received, how: "the server closed the TLS session")
        case SSL_ERROR_SYSCALL:
            broken = true
            let errors = OpenSSLErrors.drain()
            if e == 0 && errors.codes.isEmpty {
                throw closedError(phase: phase, received: received, how: "the server closed the connection")
            }
            if e == EAGAIN || e == EWOULDBLOCK {
                throw KMIPTransportError.timeout(server: server, phase: phase, milliseconds: timeoutMS)
            }
            let reason = e != 0 ? String(cString: strerror(e)) : errors.text
            throw KMIPTransportError.connectionLost(server: server, phase: phase, reason: reason)
        default:
            broken = true
            throw classify(OpenSSLErrors.drain(), phase: phase, received: received)
        }
    }

    private func closedError(phase: KMIPPhase, received: (Int, Int)?, how: String) -> KMIPTransportError {
        if let (got, expected) = received {
            return .truncatedResponse(server: server, expected: expected, received: got)
        }
        return .connectionLost(server: server, phase: phase, reason: how)
    }

    /// TLS alerts about certificates (OpenSSL reason = 1000 + alert number) mean the server
    /// refused ours: bad_certificate 42, unsupported 43, revoked 44, expired 45, unknown 46,
    /// unknown_ca 48, access_denied 49, certificate_required 116 (TLS 1.3).
    private static let clientCertificateAlerts: Set<Int32> = [1042, 1043, 1044, 1045, 1046, 1048, 1049, 1116]
    private static let unexpectedEOF: Int32 = 294 // SSL_R_UNEXPECTED_EOF_WHILE_READING

    private func classify(_ errors: OpenSSLErrors, phase: KMIPPhase, received: (Int, Int)?) -> KMIPTransportError {
        if let ssl {
            let verify = SSL_get_verify_result(ssl)
            if verify != X509_V_OK {
                return .serverCertificateRejected(server: server, reason: Self.verifyText(verify))
            }
        }
        let reasons = errors.reasons
        if reasons.contains(where: Self.clientCertificateAlerts.contains) {
            return .clientCertificateRejected(server: server, alert: errors.text)
        }
        if reasons.contains(Self.unexpectedEOF) {
            return closedError(phase: phase, received: received, how: "the server closed the connection")
        }
        return .tlsFailed(server: server, phase: phase, reason: errors.text)
    }

    private static func verifyText(_ result: Int) -> String {
        "\(String(cString: X509_verify_cert_error_string(result))) (X509 verify result \(result))"
    }

    // MARK: I/O

    func writeAll(_ bytes: [UInt8]) throws {
        guard let ssl, !broken else { throw KMIPTransportError.connectionLost(server: server, phase: .write, reason: "connection already failed") }
        let deadline = Deadline(milliseconds: timeoutMS)
        ERR_clear_error()
        do {
            try writeAll(bytes, ssl: ssl, deadline: deadline)
        } catch let error as KMIPTransportError {
            throw alertAfterFailedWrite(error)
        }
    }

    private func writeAll(_ bytes: [UInt8], ssl: OpaquePointer, deadline: Deadline) throws {
        try bytes.withUnsafeBytes { buf in
            var offset = 0
            while offset < buf.count {
                var written = 0
                errno = 0
                // A retried call must repeat the same arguments, which these are.
                let r = SSL_write_ex(ssl, buf.baseAddress! + offset, buf.count - offset, &written)
                let e = errno
                if r == 1 {
                    offset += written
                    continue
                }
                try retryOrThrow(SSL_get_error(ssl, r), errno: e, phase: .write, deadline: deadline, received: nil)
            }
        }
    }

    /// Reads exactly `count` bytes into `out` from `offset` (the caller has checked
    /// `count` against its limit). `total` is what the message was meant to hold, for
    /// the truncation error.
    func readExactly(into out: inout [UInt8], from start: Int, count: Int, total: Int, deadline: Deadline) throws {
        guard let ssl, !broken else { throw KMIPTransportError.connectionLost(server: server, phase: .read, reason: "connection already failed") }
        ERR_clear_error()
        try out.withUnsafeMutableBytes { buf in
            var offset = start
            let end = start + count
            while offset < end {
                var got = 0
                errno = 0
                let r = SSL_read_ex(ssl, buf.baseAddress! + offset, end - offset, &got)
                let e = errno
                if r == 1 {
                    offset += got
                    continue
                }
                try retryOrThrow(SSL_get_error(ssl, r), errno: e, phase: .read, deadline: deadline,
                                 received: (offset, total))
            }
        }
    }

    /// Before a kept connection carries another request: false when the server has closed
    /// it (or sent something unasked) since the last response. Throws
    /// `clientCertificateRejected` when what arrived is the server's alert refusing our
    /// certificate (a TLS 1.3 server does that after the handshake). Does not block.
    func checkIdle() throws -> Bool {
        guard let ssl, !broken else { return false }
        if SSL_pending(ssl) > 0 { broken = true; return false }
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        if poll(&pfd, 1, 0) == 0 { return true }
        // Something arrived: a close, an alert, unasked data, or only TLS 1.3 session
        // tickets, which a non-blocking peek consumes before reporting that no data is there.
        switch peekNonBlocking() {
        case .nothing: return true
        case let .alert(error): throw error
        case .closedOrData: return false
        }
    }

    /// A server that refuses the client certificate after a TLS 1.3 handshake sends an
    /// alert and closes. A request written after that fails with EPIPE or ECONNRESET, but
    /// the alert can still be read, and it says more than the write error.
    private func alertAfterFailedWrite(_ error: KMIPTransportError) -> KMIPTransportError {
        guard case .connectionLost = error else { return error }
        if case let .alert(alert) = peekNonBlocking() { return alert }
        return error
    }

    private enum Peeked {
        case nothing
        case alert(KMIPTransportError)
        case closedOrData
    }

    private func peekNonBlocking() -> Peeked {
        guard let ssl else { return .closedOrData }
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        defer { _ = fcntl(fd, F_SETFL, flags) }
        ERR_clear_error()
        var byte: UInt8 = 0
        var n = 0
        let r = SSL_peek_ex(ssl, &byte, 1, &n)
        let code = r == 1 ? SSL_ERROR_NONE : SSL_get_error(ssl, r)
        let errors = OpenSSLErrors.drain()
        if code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE { return .nothing }
        broken = true
        if code == SSL_ERROR_SSL, errors.reasons.contains(where: Self.clientCertificateAlerts.contains) {
            return .alert(.clientCertificateRejected(server: server, alert: errors.text))
        }
        return .closedOrData
    }

    func markBroken() { broken = true }

    // MARK: Platform

    private static func errnoText() -> String { String(cString: strerror(errno)) }

    #if os(Linux)
    private static let streamType = Int32(SOCK_STREAM.rawValue)
    private static let closeOnExec = Int32(SOCK_CLOEXEC.rawValue)
    #else
    private static let streamType = SOCK_STREAM
    private static let closeOnExec: Int32 = 0
    #endif
}

/// A point in time a phase must finish by (monotonic clock).
struct Deadline {
    private let end: UInt64

    init(milliseconds: Int) {
        end = Deadline.nowNS() + UInt64(milliseconds) * 1_000_000
    }

    var passed: Bool { Deadline.nowNS() >= end }

    /// What is left, rounded up, for poll(2).
    var remainingMS: Int32 {
        let now = Deadline.nowNS()
        guard now < end else { return 0 }
        return Int32(min((end - now + 999_999) / 1_000_000, UInt64(Int32.max)))
    }

    private static func nowNS() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}
