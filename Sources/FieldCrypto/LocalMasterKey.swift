import Durable
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The 96-byte master key of libmongocrypt's `local` KMS provider. It wraps (encrypts) the
/// keyMaterial of every data key. It never prints, reflects or appears in an error.
public final class LocalMasterKey: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable,
    @unchecked Sendable
{
    public static let size = 96

    /// Immutable after init; zeroed (best effort) when the key is released.
    private(set) var bytes: [UInt8]

    public init(bytes: [UInt8]) throws {
        guard bytes.count == Self.size else {
            throw FieldCryptoError.masterKey(path: nil, problem: "must be \(Self.size) bytes, got \(bytes.count)")
        }
        self.bytes = bytes
    }

    deinit {
        bytes.withUnsafeMutableBytes { raw in
            if let p = raw.baseAddress { wipe(p, raw.count) }
        }
    }

    public var description: String { "LocalMasterKey(\(Self.size) bytes, redacted)" }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: [], displayStyle: .class) }

    /// Loads a key file: exactly 96 bytes, a regular file, no access for group or others.
    public static func load(from path: String) throws -> LocalMasterKey {
        let bytes = try SecretFile.read(path, maxSize: size + 1) { FieldCryptoError.masterKey(path: path, problem: $0) }
        guard bytes.count == size else {
            throw FieldCryptoError.masterKey(path: path, problem: "is \(bytes.count) bytes; a local master key is exactly \(size) bytes")
        }
        return try LocalMasterKey(bytes: bytes)
    }

    /// Creates a new key file of 96 random bytes with mode 0600. Refuses to replace an
    /// existing file: losing a master key loses every value encrypted under it.
    public static func create(at path: String) throws -> LocalMasterKey {
        var rng = SystemRandomNumberGenerator()  // getrandom(2) on Linux; independent of libmongocrypt
        var bytes = [UInt8](repeating: 0, count: size)
        for i in stride(from: 0, to: size, by: 8) {
            withUnsafeBytes(of: rng.next() as UInt64) { word in
                for j in 0..<8 { bytes[i + j] = word[j] }
            }
        }
        try SecretFile.createNew(bytes, at: path) { FieldCryptoError.masterKey(path: path, problem: $0) }
        return try LocalMasterKey(bytes: bytes)
    }
}

/// Reading and creating files that hold secrets (master keys, key vaults).
enum SecretFile {
    /// Reads a regular file after checking, on the open descriptor, that group and others
    /// have no access.
    /// Reads `count` bytes (or to the end) from `offset`, after the same checks as `read`.
    static func read(_ path: String, maxSize: Int, from offset: Int, count: Int?, refuse: (String) -> Error) throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw FileError(operation: "open", path: path, errno: errno) }
        defer { close(fd) }
        var st = stat()
        if fstat(fd, &st) != 0 { throw FileError(operation: "stat", path: path, errno: errno) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw refuse("is not a regular file") }
        let perms = st.st_mode & 0o777
        guard perms & 0o077 == 0 else {
            throw refuse(String(format: "has mode %04o; group and others must have no access (chmod 600 %@)", perms, path))
        }
        guard Int(st.st_size) <= maxSize else { throw refuse("is \(st.st_size) bytes, more than the \(maxSize) allowed") }
        let want = max(0, min(count ?? Int.max, Int(st.st_size) - offset))
        var out = [UInt8](repeating: 0, count: want)
        var done = 0
        while done < want {
            let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, want - done, off_t(offset + done)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw FileError(operation: "read", path: path, errno: errno)
            }
            if n == 0 { break }
            done += n
        }
        out.removeSubrange(done...)
        return out
    }

    static func read(_ path: String, maxSize: Int, refuse: (String) -> Error) throws -> [UInt8] {
        try read(path, maxSize: maxSize, from: 0, count: nil, refuse: refuse)
    }

    /// Writes a new file crash-safely without ever replacing an existing one: temporary
    /// name (mode set on the descriptor), write, fsync, link(2) to the final name (fails
    /// if it exists), unlink the temporary name, fsync the folder.
    static func createNew(_ bytes: [UInt8], at path: String, mode: mode_t = 0o600, refuse: (String) -> Error) throws {
        let w = try AtomicFileWriter(path: path + ".new", mode: mode)
        defer { w.abort() }
        try w.write(bytes)
        let fd = open(w.temporaryPath, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw FileError(operation: "open", path: w.temporaryPath, errno: errno) }
        defer { close(fd) }
        if fsync(fd) != 0 { throw FileError(operation: "fsync", path: w.temporaryPath, errno: errno) }
        if link(w.temporaryPath, path) != 0 {
            if errno == EEXIST { throw refuse("already exists; refusing to replace it") }
            throw FileError(operation: "create", path: path, errno: errno)
        }
        // abort() (deferred) unlinks the temporary name; the data stays under `path`.
        let dir = (path as NSString).deletingLastPathComponent
        try Durable.fsyncDirectory(dir.isEmpty ? "." : dir)
    }
}

/// Zeroes memory in a way the optimiser may not remove (glibc's explicit_bzero).
func wipe(_ p: UnsafeMutableRawPointer, _ count: Int) {
    explicit_bzero(p, count)
}
