import COpenSSL
import Foundation

/// The client side of mutual TLS: one `SSL_CTX` with the CA, the client certificate chain
/// and its key, loaded once and checked before any connection is made. OpenSSL allows
/// many connections (on any thread) to share a context once it is set up.
final class TLSContext: @unchecked Sendable {
    let ctx: OpaquePointer

    init(options: KMIPOptions) throws {
        _ = TLSContext.ignoreSIGPIPE
        // Files first, so a missing one is named before OpenSSL reports it its own way.
        let certFile = options.clientCertificateFile
        try Self.checkReadable(certFile, role: "client certificate file")
        if let ca = options.serverCAFile { try Self.checkReadable(ca, role: "server CA file") }

        ERR_clear_error()
        guard let method = TLS_client_method(), let ctx = SSL_CTX_new(method) else {
            throw KMIPTransportError.tlsSetup(reason: "SSL_CTX_new: \(OpenSSLErrors.drain().text)")
        }
        self.ctx = ctx
        guard ct_SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1 else {
            throw KMIPTransportError.tlsSetup(reason: "cannot require TLS 1.2: \(OpenSSLErrors.drain().text)")
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nil)

        if let ca = options.serverCAFile {
            guard SSL_CTX_load_verify_locations(ctx, ca, nil) == 1 else {
                throw KMIPTransportError.fileUnusable(role: "server CA file", path: ca,
                                                      reason: "no CA certificate could be read (\(OpenSSLErrors.drain().text))")
            }
        } else if SSL_CTX_set_default_verify_paths(ctx) != 1 {
            throw KMIPTransportError.tlsSetup(reason: "cannot load the system CA store: \(OpenSSLErrors.drain().text)")
        }

        guard SSL_CTX_use_certificate_chain_file(ctx, certFile) == 1 else {
            throw KMIPTransportError.fileUnusable(role: "client certificate file", path: certFile,
                                                  reason: "no certificate could be read (\(OpenSSLErrors.drain().text))")
        }
        try Self.loadKey(ctx, path: certFile, password: options.clientCertificatePassword)
        guard SSL_CTX_check_private_key(ctx) == 1 else {
            ERR_clear_error()
            throw KMIPTransportError.keyDoesNotMatchCertificate(path: certFile)
        }
        ERR_clear_error()
    }

    deinit { SSL_CTX_free(ctx) }

    /// OpenSSL writes to sockets with write(2), which raises SIGPIPE when the server has
    /// closed the connection, and the default action of SIGPIPE kills the process. Linux
    /// has no per-socket SO_NOSIGPIPE, so the signal is ignored for the whole process, once;
    /// the write then fails with EPIPE, which is reported as a lost connection. This is
    /// what network daemons do anyway; libmongoc sends with MSG_NOSIGNAL and is unaffected.
    static let ignoreSIGPIPE: Void = { _ = signal(SIGPIPE, SIG_IGN) }()

    private static func checkReadable(_ path: String, role: String) throws {
        var st = stat()
        guard stat(path, &st) == 0 else {
            if errno == ENOENT || errno == ENOTDIR { throw KMIPTransportError.fileNotFound(role: role, path: path) }
            throw KMIPTransportError.fileUnusable(role: role, path: path, reason: String(cString: strerror(errno)))
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw KMIPTransportError.fileUnusable(role: role, path: path, reason: "not a regular file")
        }
        guard access(path, R_OK) == 0 else {
            throw KMIPTransportError.fileUnusable(role: role, path: path, reason: String(cString: strerror(errno)))
        }
    }

    /// The password reaches OpenSSL only through this callback, which copies it into
    /// OpenSSL's buffer. The box records whether OpenSSL asked, which is how a wrong
    /// password is told apart from a file without a usable key.
    private final class PasswordBox {
        var bytes: [UInt8]?
        var asked = false
        init(_ password: String?) { bytes = password.map { Array($0.utf8) } }
        deinit { if var b = bytes { b.withUnsafeMutableBytes { if let p = $0.baseAddress { explicit_bzero(p, $0.count) } } } }
    }

    private static func loadKey(_ ctx: OpaquePointer, path: String, password: String?) throws {
        let box = PasswordBox(password)
        // Always set: without a callback OpenSSL would prompt on the terminal for a password.
        SSL_CTX_set_default_passwd_cb(ctx) { buf, size, _, userdata in
            guard let buf, let userdata else { return -1 }
            let box = Unmanaged<PasswordBox>.fromOpaque(userdata).takeUnretainedValue()
            box.asked = true
            guard let pw = box.bytes, !pw.isEmpty, pw.count <= Int(size) else { return -1 }
            pw.withUnsafeBytes { _ = memcpy(buf, $0.baseAddress!, pw.count) }
            return Int32(pw.count)
        }
        SSL_CTX_set_default_passwd_cb_userdata(ctx, Unmanaged.passUnretained(box).toOpaque())
        // The context outlives the box: it must not keep a pointer to it.
        defer {
            SSL_CTX_set_default_passwd_cb(ctx, nil)
            SSL_CTX_set_default_passwd_cb_userdata(ctx, nil)
        }
        let ok = withExtendedLifetime(box) { SSL_CTX_use_PrivateKey_file(ctx, path, SSL_FILETYPE_PEM) == 1 }
        if ok { return }
        let errors = OpenSSLErrors.drain()
        // OpenSSL compares the key with the certificate loaded before it.
        if errors.codes.contains(where: { ERR_GET_LIB($0) == ERR_LIB_X509
                && [X509_R_KEY_VALUES_MISMATCH, X509_R_KEY_TYPE_MISMATCH].contains(ERR_GET_REASON($0)) }) {
            throw KMIPTransportError.keyDoesNotMatchCertificate(path: path)
        }
        if box.asked {
            if password == nil { throw KMIPTransportError.keyPasswordRequired(path: path) }
            throw KMIPTransportError.wrongKeyPassword(path: path)
        }
        throw KMIPTransportError.fileUnusable(role: "client certificate file", path: path,
                                              reason: "no private key could be read (\(errors.text))")
    }
}

/// The calling thread's OpenSSL error queue, emptied.
struct OpenSSLErrors {
    var codes: [UInt] = []

    static func drain() -> OpenSSLErrors {
        var out = OpenSSLErrors()
        while true {
            let e = ERR_get_error()
            if e == 0 { break }
            out.codes.append(e)
        }
        return out
    }

    var reasons: [Int32] { codes.map { ERR_GET_REASON($0) } }

    /// OpenSSL's reason strings ("sslv3 alert certificate expired"), innermost first.
    var text: String {
        let parts = codes.map { code -> String in
            if let r = ERR_reason_error_string(code) { return String(cString: r) }
            var buf = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buf, buf.count)
            return String(cString: buf)
        }
        return parts.isEmpty ? "no OpenSSL error" : parts.joined(separator: "; ")
    }
}
