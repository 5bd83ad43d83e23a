import CZstd

public struct ZstdError: Error, CustomStringConvertible {
    public let description: String
}

/// A reusable zstd compression context (one per thread).
public final class ZstdCompressor {
    private let cctx: OpaquePointer
    public let level: Int32

    public init(level: Int32 = 3) {
        cctx = ZSTD_createCCtx()!
        self.level = level
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level)
    }

    deinit { ZSTD_freeCCtx(cctx) }

    /// Compresses `input` into a new array holding exactly the compressed frame.
    public func compress(_ input: UnsafeRawBufferPointer) throws -> [UInt8] {
        let bound = ZSTD_compressBound(input.count)
        var out = [UInt8](repeating: 0, count: bound)
        let n = out.withUnsafeMutableBytes { dst in
            ZSTD_compress2(cctx, dst.baseAddress, bound, input.baseAddress, input.count)
        }
        if ZSTD_isError(n) != 0 { throw ZstdError(description: "zstd compression failed: \(String(cString: ZSTD_getErrorName(n)))") }
        out.removeSubrange(n...)
        return out
    }

    public func compress(_ input: [UInt8]) throws -> [UInt8] {
        try input.withUnsafeBytes { try compress($0) }
    }

    /// Compresses into caller memory; `destination` must hold `bound(input.count)` bytes.
    /// Returns the compressed length. Saves the zero-fill and copy of `compress(_:)`.
    public func compress(_ input: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer) throws -> Int {
        let n = ZSTD_compress2(cctx, destination.baseAddress, destination.count, input.baseAddress, input.count)
        if ZSTD_isError(n) != 0 { throw ZstdError(description: "zstd compression failed: \(String(cString: ZSTD_getErrorName(n)))") }
        return n
    }

    public static func bound(_ size: Int) -> Int { ZSTD_compressBound(size) }
}

/// A reusable zstd decompression context (one per thread).
public final class ZstdDecompressor {
    private let dctx: OpaquePointer

    public init() { dctx = ZSTD_createDCtx()! }
    deinit { ZSTD_freeDCtx(dctx) }

    /// Decompresses one frame whose decompressed size the caller knows (and bounds).
    public func decompress(_ input: UnsafeRawBufferPointer, expectedSize: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: max(expectedSize, 1))
        let n = out.withUnsafeMutableBytes { dst in
            ZSTD_decompressDCtx(dctx, dst.baseAddress, expectedSize, input.baseAddress, input.count)
        }
        if ZSTD_isError(n) != 0 { throw ZstdError(description: "zstd decompression failed: \(String(cString: ZSTD_getErrorName(n)))") }
        guard n == expectedSize else {
            throw ZstdError(description: "zstd frame decompressed to \(n) bytes, the block header says \(expectedSize)")
        }
        if expectedSize == 0 { out.removeAll() }
        return out
    }

    public func decompress(_ input: [UInt8], expectedSize: Int) throws -> [UInt8] {
        try input.withUnsafeBytes { try decompress($0, expectedSize: expectedSize) }
    }
}

public enum Zstd {
    public static var version: String { String(cString: ZSTD_versionString()) }
}
