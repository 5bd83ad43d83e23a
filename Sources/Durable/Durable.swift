import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A filesystem failure, naming the operation and the path (never file contents).
public struct FileError: Error, CustomStringConvertible {
    public let operation: String
    public let path: String
    public let errno: Int32

    public init(operation: String, path: String, errno: Int32) {
        self.operation = operation
        self.path = path
        self.errno = errno
    }

    public var description: String {
        "cannot \(operation) \(path): \(String(cString: strerror(errno)))"
    }

    public var isNoSpace: Bool { errno == ENOSPC || errno == EDQUOT }
}

/// Crash-safe file operations. The rule everywhere: write a temporary name in the same
/// folder, fsync it, rename it over the final name, fsync the folder. A reader therefore sees
/// the old file or the whole new one, never a part.
public enum Durable {
    /// Suffix of in-progress files; readers ignore them and cleanup removes them.
    public static let temporarySuffix = ".tmp"

    public static func writeFile(_ bytes: [UInt8], to path: String, mode: mode_t = 0o644) throws {
        let w = try AtomicFileWriter(path: path, mode: mode)
        do {
            try w.write(bytes)
            try w.commit()
        } catch {
            w.abort()
            throw error
        }
    }

    public static func writeFile(_ text: String, to path: String, mode: mode_t = 0o644) throws {
        try writeFile(Array(text.utf8), to: path, mode: mode)
    }

    /// Replaces a file that held secrets (temporary file, fsync, rename, fsync the folder),
    /// then overwrites the old file's bytes with zeros and fsyncs them, so the replaced
    /// content is not left in the old inode's blocks. On copy-on-write file systems and
    /// flash the old blocks may survive anyway: docs/SECURITY.md says so.
    public static func replaceWiping(_ bytes: [UInt8], at path: String, mode: mode_t = 0o600) throws {
        let old = open(path, O_WRONLY | O_CLOEXEC)
        defer { if old >= 0 { close(old) } }
        try writeFile(bytes, to: path, mode: mode)
        guard old >= 0 else { return }
        var st = stat()
        guard fstat(old, &st) == 0, st.st_size > 0 else { return }
        let zeros = [UInt8](repeating: 0, count: 1 << 16)
        for at in stride(from: 0, to: Int(st.st_size), by: zeros.count) {
            try pwriteAll(old, Array(zeros.prefix(Int(st.st_size) - at)), at: at, path: path, operation: "wipe the replaced file")
        }
        if fsync(old) != 0 { throw FileError(operation: "fsync the wiped file", path: path, errno: errno) }
    }

    /// Writes all of `bytes` at `offset` (pwrite until done, EINTR retried).
    public static func pwriteAll(_ fd: Int32, _ bytes: [UInt8], at offset: Int, path: String, operation: String = "write") throws {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress! + done, bytes.count - done, off_t(offset + done)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw FileError(operation: operation, path: path, errno: errno)
            }
            done += n
        }
    }

    public static func fsyncDirectory(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY)
        if fd < 0 { throw FileError(operation: "open folder", path: path, errno: errno) }
        defer { close(fd) }
        if fsync(fd) != 0 { throw FileError(operation: "fsync folder", path: path, errno: errno) }
    }

    /// Creates a folder (and its parents), fsyncing each parent it had to create.
    public static func makeDirectory(_ path: String, mode: mode_t = 0o755) throws {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDir) {
            if isDir.boolValue { return }
            throw FileError(operation: "create folder", path: path, errno: EEXIST)
        }
        let parent = (path as NSString).deletingLastPathComponent
        if !parent.isEmpty && parent != path { try makeDirectory(parent, mode: mode) }
        if mkdir(path, mode) != 0 && errno != EEXIST { throw FileError(operation: "create folder", path: path, errno: errno) }
        if !parent.isEmpty { try fsyncDirectory(parent) }
    }

    /// Renames within one folder and makes the rename durable.
    public static func rename(_ from: String, to: String) throws {
        if Glibc.rename(from, to) != 0 { throw FileError(operation: "rename \(from) to", path: to, errno: errno) }
        let folder = (to as NSString).deletingLastPathComponent
        try fsyncDirectory(folder.isEmpty ? "." : folder)  // a bare file name lives in the working folder
    }

    public static func readFile(_ path: String) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw FileError(operation: "read", path: path, errno: FileManager.default.fileExists(atPath: path) ? EACCES : ENOENT)
        }
        return [UInt8](data)
    }

    /// Fault-injection seam for tests: when set, writes fail with ENOSPC after this many
    /// bytes in total (the environment variable CIPHERTAIL_FAULT_ENOSPC_AFTER sets it).
    nonisolated(unsafe) public static var failWritesAfterBytes: Int? =
        ProcessInfo.processInfo.environment["CIPHERTAIL_FAULT_ENOSPC_AFTER"].flatMap(Int.init)
    nonisolated(unsafe) static var bytesWritten = 0
    /// Fault-injection seam for tests where no small file system can be mounted: while this
    /// file exists, writes fail with ENOSPC (CIPHERTAIL_FAULT_ENOSPC_WHILE sets it), so the
    /// disk can "fill up" and "free up" during a run.
    nonisolated(unsafe) public static var failWritesWhileExists: String? =
        ProcessInfo.processInfo.environment["CIPHERTAIL_FAULT_ENOSPC_WHILE"]
}

/// Streams a file under a temporary name; `commit` makes it appear whole under its final
/// name, `abort` (or deinit without commit) removes it.
public final class AtomicFileWriter {
    public let path: String
    public let temporaryPath: String
    private var fd: Int32
    public private(set) var bytesWritten = 0
    private var done = false

    public init(path: String, mode: mode_t = 0o644) throws {
        self.path = path
        temporaryPath = path + ".\(getpid()).\(UInt32.random(in: 0...UInt32.max))" + Durable.temporarySuffix
        fd = open(temporaryPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        if fd < 0 { throw FileError(operation: "create", path: temporaryPath, errno: errno) }
        fchmod(fd, mode)  // umask must not loosen or tighten what the caller asked for
    }

    deinit { if !done { abort() } }

    public func write(_ data: UnsafeRawBufferPointer) throws {
        var offset = 0
        while offset < data.count {
            if let limit = Durable.failWritesAfterBytes, Durable.bytesWritten + (data.count - offset) > limit {
                throw FileError(operation: "write", path: temporaryPath, errno: ENOSPC)
            }
            if let flag = Durable.failWritesWhileExists, access(flag, F_OK) == 0 {
                throw FileError(operation: "write", path: temporaryPath, errno: ENOSPC)
            }
            let n = Glibc.write(fd, data.baseAddress! + offset, data.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                throw FileError(operation: "write", path: temporaryPath, errno: errno)
            }
            offset += n
            Durable.bytesWritten += n
        }
        bytesWritten += data.count
    }

    public func write(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try write($0) } }

    public func commit() throws {
        if fsync(fd) != 0 { throw FileError(operation: "fsync", path: temporaryPath, errno: errno) }
        if close(fd) != 0 { fd = -1; throw FileError(operation: "close", path: temporaryPath, errno: errno) }
        fd = -1
        try Durable.rename(temporaryPath, to: path)
        done = true
    }

    public func abort() {
        if fd >= 0 { close(fd); fd = -1 }
        unlink(temporaryPath)
        done = true
    }
}
