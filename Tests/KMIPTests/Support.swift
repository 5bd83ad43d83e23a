@testable import KMIP
import XCTest

/// Bytes from hex text; spaces, "|" and newlines are ignored (so vectors can be written
/// as the specification prints them: tag | type | length | value).
func hex(_ text: String) -> [UInt8] {
    let digits = text.filter { $0.isHexDigit }
    precondition(digits.count % 2 == 0, "odd hex digit count")
    var out: [UInt8] = []
    var i = digits.startIndex
    while i < digits.endIndex {
        let j = digits.index(i, offsetBy: 2)
        out.append(UInt8(digits[i..<j], radix: 16)!)
        i = j
    }
    return out
}

/// SplitMix64: a small, seeded, deterministic generator, so every fuzz run sees the same inputs.
struct SeededRandom: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8.random(in: 0...255, using: &self) } }
}

/// Asserts that `body` throws a `TTLVError` and returns it.
@discardableResult
func assertTTLVError(_ body: @autoclosure () throws -> Any, file: StaticString = #filePath, line: UInt = #line) -> TTLVError? {
    do {
        _ = try body()
        XCTFail("expected a TTLVError", file: file, line: line)
    } catch let error as TTLVError {
        return error
    } catch {
        XCTFail("expected a TTLVError, got \(error)", file: file, line: line)
    }
    return nil
}

@discardableResult
func assertMessageError(_ body: @autoclosure () throws -> Any, file: StaticString = #filePath, line: UInt = #line) -> KMIPMessageError? {
    do {
        _ = try body()
        XCTFail("expected a KMIPMessageError", file: file, line: line)
    } catch let error as KMIPMessageError {
        return error
    } catch {
        XCTFail("expected a KMIPMessageError, got \(error)", file: file, line: line)
    }
    return nil
}

/// Hand-built server replies, written field by field from the KMIP 1.x response layout.
enum Reply {
    struct Item {
        var operation: KMIPOperation?
        var batchItemID: [UInt8]? = nil
        var status: KMIPResultStatus = .success
        var reason: KMIPResultReason? = nil
        var message: String? = nil
        var payload: [TTLV]? = nil
    }

    static func message(_ items: [Item], version: KMIPVersion = .v1_2, timeStamp: Int64? = 0x47DA_67F8,
                        batchCount: Int32? = nil) -> TTLV {
        var header: [TTLV] = [TTLV(.protocolVersion, .structure([
            TTLV(.protocolVersionMajor, .integer(version.major)), TTLV(.protocolVersionMinor, .integer(version.minor)),
        ]))]
        if let timeStamp { header.append(TTLV(.timeStamp, .dateTime(timeStamp))) }
        header.append(TTLV(.batchCount, .integer(batchCount ?? Int32(items.count))))
        let batch = items.map { item -> TTLV in
            var fields: [TTLV] = []
            if let op = item.operation { fields.append(TTLV(.operation, .enumeration(op.rawValue))) }
            if let id = item.batchItemID { fields.append(TTLV(.uniqueBatchItemID, .byteString(id))) }
            fields.append(TTLV(.resultStatus, .enumeration(item.status.rawValue)))
            if let r = item.reason { fields.append(TTLV(.resultReason, .enumeration(r.rawValue))) }
            if let m = item.message { fields.append(TTLV(.resultMessage, .textString(m))) }
            if let p = item.payload { fields.append(TTLV(.responsePayload, .structure(p))) }
            return TTLV(.batchItem, .structure(fields))
        }
        return TTLV(.responseMessage, .structure([TTLV(.responseHeader, .structure(header))] + batch))
    }

    /// One successful item for `operation` with `payload`, encoded.
    static func bytes(_ operation: KMIPOperation, _ payload: [TTLV]?) -> [UInt8] {
        message([Item(operation: operation, payload: payload)]).encode()
    }

    static func uid(_ id: String) -> TTLV { TTLV(.uniqueIdentifier, .textString(id)) }

    static func attribute(_ name: String, _ value: TTLV.Value) -> TTLV {
        TTLV(.attribute, .structure([TTLV(.attributeName, .textString(name)), TTLV(.attributeValue, value)]))
    }

    static func keyBlock(format: KMIPKeyFormatType, material: TTLV.Value, algorithm: KMIPCryptographicAlgorithm? = nil,
                         bits: Int32? = nil) -> TTLV {
        var fields = [TTLV(.keyFormatType, .enumeration(format.rawValue)),
                      TTLV(.keyValue, .structure([TTLV(.keyMaterial, material)]))]
        if let algorithm { fields.append(TTLV(.cryptographicAlgorithm, .enumeration(algorithm.rawValue))) }
        if let bits { fields.append(TTLV(.cryptographicLength, .integer(bits))) }
        return TTLV(.keyBlock, .structure(fields))
    }
}
