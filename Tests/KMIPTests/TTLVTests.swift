@testable import KMIP
import XCTest

/// Known answers written by hand from the KMIP 1.x encoding rules (section 9.1): the
/// specification's own examples use tag 0x420020, and so do these.
final class TTLVKnownAnswerTests: XCTestCase {
    let t = TTLV.Tag(rawValue: 0x420020)

    func check(_ value: TTLV.Value, _ expected: String, file: StaticString = #filePath, line: UInt = #line) {
        let item = TTLV(t, value)
        XCTAssertEqual(item.encode(), hex(expected), "encode", file: file, line: line)
        XCTAssertEqual(try TTLV.decode(hex(expected)), item, "decode", file: file, line: line)
    }

    func testInteger() {
        check(.integer(8), "42 00 20 | 02 | 00 00 00 04 | 00 00 00 08 00 00 00 00")
        check(.integer(-1), "42 00 20 | 02 | 00 00 00 04 | FF FF FF FF 00 00 00 00")
        check(.integer(.min), "42 00 20 | 02 | 00 00 00 04 | 80 00 00 00 00 00 00 00")
    }

    func testLongInteger() {
        check(.longInteger(123_456_789_000_000_000), "42 00 20 | 03 | 00 00 00 08 | 01 B6 9B 4B A5 74 92 00")
        check(.longInteger(-2), "42 00 20 | 03 | 00 00 00 08 | FF FF FF FF FF FF FF FE")
    }

    func testBigIntegerIsSignExtendedToAMultipleOfEightBytes() throws {
        // 1234567890000000000000000000 = 0x03FD35EB6BC2DF4618080000 (12 bytes, padded to 16).
        let vector = "42 00 20 | 04 | 00 00 00 10 | 00 00 00 00 03 FD 35 EB 6B C2 DF 46 18 08 00 00"
        XCTAssertEqual(TTLV(t, .bigInteger(hex("03 FD 35 EB 6B C2 DF 46 18 08 00 00"))).encode(), hex(vector))
        check(.bigInteger(hex("00 00 00 00 03 FD 35 EB 6B C2 DF 46 18 08 00 00")), vector)
        // Negative values extend with FF: -128 is 80, -1 is FF.
        XCTAssertEqual(TTLV(t, .bigInteger([0x80])).encode(), hex("42 00 20 04 00 00 00 08 FF FF FF FF FF FF FF 80"))
        XCTAssertEqual(TTLV(t, .bigInteger([0xFF])).encode(), hex("42 00 20 04 00 00 00 08 FF FF FF FF FF FF FF FF"))
        // Exactly 8 bytes: nothing added. Empty: zero.
        check(.bigInteger(hex("80 00 00 00 00 00 00 01")), "42 00 20 04 00 00 00 08 80 00 00 00 00 00 00 01")
        XCTAssertEqual(TTLV(t, .bigInteger([])).encode(), hex("42 00 20 04 00 00 00 08 00 00 00 00 00 00 00 00"))
    }

    func testEnumeration() {
        check(.enumeration(255), "42 00 20 | 05 | 00 00 00 04 | 00 00 00 FF 00 00 00 00")
        check(.enumeration(0x8000_0001), "42 00 20 | 05 | 00 00 00 04 | 80 00 00 01 00 00 00 00")
    }

    func testBoolean() {
        check(.boolean(true), "42 00 20 | 06 | 00 00 00 08 | 00 00 00 00 00 00 00 01")
        check(.boolean(false), "42 00 20 | 06 | 00 00 00 08 | 00 00 00 00 00 00 00 00")
    }

    func testTextStringIsPaddedButTheLengthIsNot() {
        check(.textString("Hello World"), "42 00 20 | 07 | 00 00 00 0B | 48 65 6C 6C 6F 20 57 6F 72 6C 64 00 00 00 00 00")
        check(.textString(""), "42 00 20 | 07 | 00 00 00 00")
        check(.textString("12345678"), "42 00 20 | 07 | 00 00 00 08 | 31 32 33 34 35 36 37 38")
        // UTF-8: "é" is two bytes.
        check(.textString("é"), "42 00 20 | 07 | 00 00 00 02 | C3 A9 00 00 00 00 00 00")
    }

    func testByteString() {
        check(.byteString([1, 2, 3]), "42 00 20 | 08 | 00 00 00 03 | 01 02 03 00 00 00 00 00")
        check(.byteString([]), "42 00 20 | 08 | 00 00 00 00")
        check(.byteString(Array(1...9)), "42 00 20 | 08 | 00 00 00 09 | 01 02 03 04 05 06 07 08 09 00 00 00 00 00 00 00")
    }

    func testDateTime() {
        // Friday, March 14, 2008, 11:56:40 GMT.
        check(.dateTime(0x47DA_67F8), "42 00 20 | 09 | 00 00 00 08 | 00 00 00 00 47 DA 67 F8")
        check(.dateTime(-1), "42 00 20 | 09 | 00 00 00 08 | FF FF FF FF FF FF FF FF")
    }

    func testInterval() {
        // 10 days = 864000 seconds.
        check(.interval(864_000), "42 00 20 | 0A | 00 00 00 04 | 00 0D 2F 00 00 00 00 00")
    }

    func testStructure() {
        check(.structure([TTLV(.init(rawValue: 0x420004), .enumeration(254)),
                          TTLV(.init(rawValue: 0x420005), .integer(255))]),
              """
              42 00 20 | 01 | 00 00 00 20 |
                42 00 04 | 05 | 00 00 00 04 | 00 00 00 FE 00 00 00 00 |
                42 00 05 | 02 | 00 00 00 04 | 00 00 00 FF 00 00 00 00
              """)
        check(.structure([]), "42 00 20 | 01 | 00 00 00 00")
    }

    func testNestedStructureWithPaddedMembers() {
        check(.structure([
            TTLV(.uniqueIdentifier, .textString("abc")),
            TTLV(.keyBlock, .structure([TTLV(.keyMaterial, .byteString([0xAA]))])),
            TTLV(.batchCount, .integer(1)),
        ]), """
        42 00 20 | 01 | 00 00 00 38 |
          42 00 94 | 07 | 00 00 00 03 | 61 62 63 00 00 00 00 00 |
          42 00 40 | 01 | 00 00 00 10 |
            42 00 43 | 08 | 00 00 00 01 | AA 00 00 00 00 00 00 00 |
          42 00 0D | 02 | 00 00 00 04 | 00 00 00 01 00 00 00 00
        """)
    }

    func testUnknownTagsDecodeAndKeepTheirNumber() throws {
        let bytes = hex("54 00 01 | 02 | 00 00 00 04 | 00 00 00 07 00 00 00 00")
        let item = try TTLV.decode(bytes)
        XCTAssertEqual(item.tag.rawValue, 0x540001)
        XCTAssertNil(item.tag.name)
        XCTAssertEqual(item.tag.description, "0x540001")
        XCTAssertEqual(item.encode(), bytes)
        XCTAssertEqual(TTLV.Tag.uniqueIdentifier.description, "Unique Identifier (0x420094)")
    }

    func testDecodeAcceptsSlicesAndOtherCollections() throws {
        let bytes = [0xEE] + hex("42 00 20 02 00 00 00 04 00 00 00 08 00 00 00 00")
        XCTAssertEqual(try TTLV.decode(bytes[1...]), TTLV(t, .integer(8)))
        XCTAssertEqual(try TTLV.decode(bytes.dropFirst().reversed().reversed()), TTLV(t, .integer(8)))
    }

    func testDescriptionNeverShowsByteStringsOrBigIntegers() {
        let item = TTLV(.keyBlock, .structure([TTLV(.keyMaterial, .byteString([0xDE, 0xAD, 0xBE, 0xEF])),
                                               TTLV(t, .bigInteger([0x12, 0x34]))]))
        let text = item.description + String(reflecting: item) + "\(Optional(item) as Any)"
        XCTAssertTrue(text.contains("<4 bytes>"), text)
        XCTAssertFalse(text.lowercased().contains("de"), text)
        XCTAssertFalse(text.contains("222") || text.contains("0x12") || text.contains("18, 52"), text)
    }

    func testEveryTagTheBriefListsHasItsSpecificationValue() {
        let expected: [(TTLV.Tag, UInt32)] = [
            (.requestMessage, 0x420078), (.requestHeader, 0x420077), (.protocolVersion, 0x420069),
            (.protocolVersionMajor, 0x42006A), (.protocolVersionMinor, 0x42006B), (.batchCount, 0x42000D),
            (.batchItem, 0x42000F), (.operation, 0x42005C), (.requestPayload, 0x420079),
            (.responseMessage, 0x42007B), (.responseHeader, 0x42007A), (.timeStamp, 0x420092),
            (.resultStatus, 0x42007F), (.resultReason, 0x42007E), (.resultMessage, 0x42007D),
            (.responsePayload, 0x42007C), (.uniqueIdentifier, 0x420094), (.objectType, 0x420057),
            (.templateAttribute, 0x420091), (.attribute, 0x420008), (.attributeName, 0x42000A),
            (.attributeValue, 0x42000B), (.symmetricKey, 0x42008F), (.secretData, 0x420085),
            (.secretDataType, 0x420086), (.keyBlock, 0x420040), (.keyFormatType, 0x420042),
            (.keyValue, 0x420045), (.keyMaterial, 0x420043), (.cryptographicAlgorithm, 0x420028),
            (.cryptographicLength, 0x42002A), (.cryptographicUsageMask, 0x42002C), (.name, 0x420053),
            (.nameValue, 0x420055), (.nameType, 0x420054), (.state, 0x42008D), (.revocationReason, 0x420081),
            (.revocationReasonCode, 0x420082), (.queryFunction, 0x420074), (.vendorIdentification, 0x42009D),
            (.serverInformation, 0x420088), (.maximumResponseSize, 0x420050),
            (.batchErrorContinuationOption, 0x42000E), (.uniqueBatchItemID, 0x420093),
        ]
        for (tag, value) in expected {
            XCTAssertEqual(tag.rawValue, value, "\(tag)")
            XCTAssertNotNil(tag.name, String(value, radix: 16))
        }
    }

    func testEnumerationValues() {
        XCTAssertEqual([KMIPOperation.create, .register, .locate, .get, .getAttributes, .activate, .revoke, .destroy,
                        .query, .discoverVersions].map(\.rawValue), [1, 3, 8, 10, 11, 18, 19, 20, 24, 30])
        XCTAssertEqual([KMIPResultStatus.success, .operationFailed, .operationPending, .operationUndone].map(\.rawValue),
                       [0, 1, 2, 3])
        XCTAssertEqual([KMIPResultReason.itemNotFound, .responseTooLarge, .authenticationNotSuccessful,
                        .invalidMessage, .operationNotSupported, .missingData, .invalidField, .featureNotSupported,
                        .permissionDenied, .objectAlreadyExists, .generalFailure].map(\.rawValue),
                       [1, 2, 3, 4, 5, 6, 7, 8, 12, 24, 0x100])
        XCTAssertEqual([KMIPState.preActive, .active, .deactivated, .compromised, .destroyed, .destroyedCompromised]
            .map(\.rawValue), [1, 2, 3, 4, 5, 6])
        XCTAssertEqual([KMIPObjectType.certificate, .symmetricKey, .publicKey, .privateKey, .splitKey, .template,
                        .secretData, .opaqueObject].map(\.rawValue), Array(1...8))
        XCTAssertEqual(KMIPCryptographicAlgorithm.aes.rawValue, 3)
        XCTAssertEqual([KMIPKeyFormatType.raw, .opaque, .transparentSymmetricKey].map(\.rawValue), [1, 2, 7])
        XCTAssertEqual([KMIPSecretDataType.password, .seed].map(\.rawValue), [1, 2])
        XCTAssertEqual(KMIPNameType.uninterpretedTextString.rawValue, 1)
        XCTAssertEqual([KMIPRevocationReasonCode.unspecified, .keyCompromise, .caCompromise, .affiliationChanged,
                        .superseded, .cessationOfOperation, .privilegeWithdrawn].map(\.rawValue), Array(1...7))
        XCTAssertEqual([KMIPQueryFunction.queryOperations, .queryObjects, .queryServerInformation].map(\.rawValue),
                       [1, 2, 3])
        XCTAssertEqual(([.encrypt, .decrypt] as KMIPUsageMask).rawValue, 0x0C)
        XCTAssertEqual(([.wrapKey, .unwrapKey] as KMIPUsageMask).rawValue, 0x30)
        // Names for known values, hex for the rest.
        XCTAssertEqual(KMIPResultReason.itemNotFound.description, "Item Not Found")
        XCTAssertEqual(KMIPOperation(rawValue: 0x8000_0002).description, "0x80000002")
        XCTAssertEqual(KMIPVersion.v1_4.description, "1.4")
        XCTAssertTrue(KMIPVersion.v1_0 < .v1_4)
    }
}

/// Decoding hostile input: every problem is a `TTLVError` with the right offset and tag.
final class TTLVHostileInputTests: XCTestCase {
    let t = TTLV.Tag(rawValue: 0x420020)

    func testWrongLengthsForFixedSizeTypes() {
        let cases: [(UInt8, UInt32, TTLV.ItemType)] = [
            (0x02, 8, .integer), (0x02, 2, .integer), (0x03, 4, .longInteger), (0x05, 8, .enumeration),
            (0x06, 4, .boolean), (0x06, 16, .boolean), (0x09, 4, .dateTime), (0x0A, 8, .interval),
            (0x04, 4, .bigInteger), (0x04, 0, .bigInteger), (0x01, 4, .structure),
        ]
        for (type, length, itemType) in cases {
            var bytes = hex("42 00 20") + [type]
            bytes.appendBigEndian(length)
            bytes += [UInt8](repeating: 0, count: Int(length + 7) / 8 * 8)
            let error = assertTTLVError(try TTLV.decode(bytes))
            XCTAssertEqual(error?.problem, .invalidLength(itemType, UInt64(length)), "type \(type) length \(length)")
            XCTAssertEqual(error?.offset, 4)
            XCTAssertEqual(error?.tag, t)
        }
    }

    func testLengthsPastTheEndAreTruncationNotAllocation() {
        for length: UInt32 in [0xFFFF_FFFF, 0x8000_0000, 0x7FFF_FFFF, 0x10_0000, 24, 17] {
            var bytes = hex("42 00 20 08")
            bytes.appendBigEndian(length)
            bytes += [UInt8](repeating: 0, count: 16)
            let error = assertTTLVError(try TTLV.decode(bytes))
            XCTAssertEqual(error?.problem, .truncated(needed: Int(length), available: 16))
            XCTAssertEqual(error?.offset, 4)
        }
        // The value fits, its padding does not.
        let error = assertTTLVError(try TTLV.decode(hex("42 00 20 08 00 00 00 09") + [UInt8](repeating: 0, count: 12)))
        XCTAssertEqual(error?.problem, .truncated(needed: 16, available: 12))
        XCTAssertEqual(error?.offset, 17)
    }

    func testTruncatedAtEveryOffsetOfAMessage() throws {
        let message = KMIPMessage.request(version: .v1_4,
                                          .registerSymmetricKey(material: Array(repeating: 7, count: 32), name: "k"),
                                          .getAttributes(uniqueIdentifier: "42", names: ["State"])).encode()
        XCTAssertNoThrow(try TTLV.decode(message))
        for cut in 0..<message.count {
            let error = assertTTLVError(try TTLV.decode(message[0..<cut]))
            XCTAssertLessThanOrEqual(error?.offset ?? .max, cut)
            if case .truncated? = error?.problem {} else { XCTFail("cut \(cut): \(String(describing: error))") }
        }
    }

    func testAChildRunningPastItsParentIsCaughtWithTheChildsTag() {
        // The structure says 16 bytes; its child says 16 more.
        let bytes = hex("""
            42 00 20 01 00 00 00 10
              42 00 94 08 00 00 00 10 00 00 00 00 00 00 00 00
              00 00 00 00 00 00 00 00
            """)
        let error = assertTTLVError(try TTLV.decode(bytes))
        XCTAssertEqual(error?.tag, .uniqueIdentifier)
        XCTAssertEqual(error?.offset, 12)
        XCTAssertEqual(error?.problem, .truncated(needed: 16, available: 8))
    }

    func testAStructureLongerThanTheBufferIsNamed() {
        let bytes = hex("42 00 20 01 00 00 00 08 42 00 94 07 00 00 00")
        let error = assertTTLVError(try TTLV.decode(bytes))
        XCTAssertEqual(error?.problem, .truncated(needed: 8, available: 7))
        XCTAssertEqual(error?.offset, 4)
        XCTAssertEqual(error?.tag, t)
    }

    func testBytesAfterTheLastChildOfTheOutermostItem() {
        let error = assertTTLVError(try TTLV.decode(hex("42 00 77 01 00 00 00 08 42 00 94 07 00 00 00 00 42 00 0D 02")))
        XCTAssertEqual(error?.problem, .trailingBytes(4))
        XCTAssertEqual(error?.offset, 16)
    }

    func testNonZeroPaddingIsRejectedAtItsByte() {
        var bytes = hex("42 00 20 | 07 | 00 00 00 03 | 61 62 63 00 00 00 00 00")
        bytes[13] = 1
        let error = assertTTLVError(try TTLV.decode(bytes))
        XCTAssertEqual(error?.problem, .nonZeroPadding)
        XCTAssertEqual(error?.offset, 13)
        XCTAssertEqual(error?.tag, t)
        var integer = hex("42 00 20 | 02 | 00 00 00 04 | 00 00 00 08 00 00 00 00")
        integer[15] = 0x80
        XCTAssertEqual(assertTTLVError(try TTLV.decode(integer))?.offset, 15)
    }

    func testInvalidUTF8() {
        for bad in ["C3 28", "C0 80", "ED A0 80", "FF", "F4 90 80 80", "E2 82"] {
            let value = hex(bad)
            var bytes = hex("42 00 55 07")
            bytes.appendBigEndian(UInt32(value.count))
            bytes += value + [UInt8](repeating: 0, count: 8 - value.count)
            let error = assertTTLVError(try TTLV.decode(bytes))
            XCTAssertEqual(error?.problem, .invalidUTF8, bad)
            XCTAssertEqual(error?.offset, 8)
            XCTAssertEqual(error?.tag, .nameValue)
        }
    }

    func testBooleansAreZeroOrOne() {
        let error = assertTTLVError(try TTLV.decode(hex("42 00 20 06 00 00 00 08 00 00 00 00 00 00 00 02")))
        XCTAssertEqual(error?.problem, .invalidBoolean(2))
        XCTAssertEqual(error?.offset, 8)
        XCTAssertNotNil(assertTTLVError(try TTLV.decode(hex("42 00 20 06 00 00 00 08 01 00 00 00 00 00 00 01"))))
    }

    func testUnknownTypes() {
        for type: UInt8 in [0x00, 0x0B, 0x80, 0xFF] {
            let error = assertTTLVError(try TTLV.decode(hex("42 00 20") + [type] + hex("00 00 00 00")))
            XCTAssertEqual(error?.problem, .unknownType(type))
            XCTAssertEqual(error?.offset, 3)
        }
    }

    func testNestingDepthIsBounded() throws {
        func nested(_ depth: Int) -> TTLV {
            (1..<depth).reduce(TTLV(t, .structure([]))) { inner, _ in TTLV(t, .structure([inner])) }
        }
        XCTAssertNoThrow(try TTLV.decode(nested(32).encode()))
        let error = assertTTLVError(try TTLV.decode(nested(33).encode()))
        XCTAssertEqual(error?.problem, .tooDeep(limit: 32))
        XCTAssertEqual(error?.offset, 32 * 8)
        // Far deeper than any stack would like: still only an error.
        var deep: [UInt8] = []
        for level in 0..<100_000 {
            deep += hex("42 00 20 01")
            deep.appendBigEndian(UInt32((100_000 - level - 1) * 8))
        }
        XCTAssertEqual(assertTTLVError(try TTLV.decode(deep))?.problem, .tooDeep(limit: 32))
        XCTAssertNoThrow(try TTLV.decode(nested(40).encode(), limits: TTLV.Limits(maximumDepth: 40)))
    }

    func testTotalSizeIsBounded() {
        let item = TTLV(.keyMaterial, .byteString([UInt8](repeating: 1, count: 1000)))
        let bytes = item.encode()
        let error = assertTTLVError(try TTLV.decode(bytes, limits: TTLV.Limits(maximumLength: 1000)))
        XCTAssertEqual(error?.problem, .tooLarge(length: 1008, limit: 1000))
        XCTAssertEqual(try TTLV.decode(bytes, limits: TTLV.Limits(maximumLength: 1008)), item)
    }

    func testTrailingBytesAndEmptyInput() {
        let error = assertTTLVError(try TTLV.decode(hex("42 00 20 07 00 00 00 00 00")))
        XCTAssertEqual(error?.problem, .trailingBytes(1))
        XCTAssertEqual(error?.offset, 8)
        XCTAssertEqual(assertTTLVError(try TTLV.decode([UInt8]()))?.problem, .truncated(needed: 8, available: 0))
    }

    func testErrorDescriptionsNameTheProblemOffsetAndTag() {
        let error = TTLVError(offset: 13, tag: .uniqueIdentifier, problem: .nonZeroPadding)
        XCTAssertEqual(error.description, "TTLV: non-zero padding byte at byte 13 (tag Unique Identifier (0x420094))")
    }
}

/// `TTLV.messageLength` frames replies for the transport.
final class MessageLengthTests: XCTestCase {
    func testLengthOfAValidHeader() throws {
        let message = KMIPMessage.request(.query([.queryOperations])).encode()
        XCTAssertEqual(try TTLV.messageLength(header: message.prefix(8)), message.count)
        XCTAssertEqual(try TTLV.messageLength(header: message), message.count, "only the first 8 bytes are read")
        XCTAssertEqual(try TTLV.messageLength(header: hex("42 00 7B 01 00 00 00 00")), 8)
    }

    func testBadHeaders() {
        XCTAssertEqual(assertTTLVError(try TTLV.messageLength(header: hex("42 00 7B 01 00 00 00")))?.problem,
                       .truncated(needed: 8, available: 7))
        XCTAssertEqual(assertTTLVError(try TTLV.messageLength(header: hex("42 00 7B 07 00 00 00 08")))?.problem,
                       .notAStructure(.textString))
        XCTAssertEqual(assertTTLVError(try TTLV.messageLength(header: hex("42 00 7B 0C 00 00 00 08")))?.problem,
                       .unknownType(0x0C))
        XCTAssertEqual(assertTTLVError(try TTLV.messageLength(header: hex("42 00 7B 01 00 00 00 0C")))?.problem,
                       .invalidLength(.structure, 12))
        XCTAssertEqual(assertTTLVError(try TTLV.messageLength(header: hex("42 00 7B 01 FF FF FF F8")))?.problem,
                       .tooLarge(length: 0xFFFF_FFF8 + 8, limit: TTLV.Limits.default.maximumLength))
        XCTAssertEqual(try TTLV.messageLength(header: hex("42 00 7B 01 00 00 03 F8"), limits: .init(maximumLength: 1024)), 1024)
        XCTAssertNotNil(assertTTLVError(try TTLV.messageLength(header: hex("42 00 7B 01 00 00 04 00"),
                                                               limits: .init(maximumLength: 1024))))
        XCTAssertNotNil(assertTTLVError(try TTLV.messageLength(header: hex("42 00 7B 01 00 00 00 00"),
                                                               limits: .init(maximumLength: .min))))
    }
}
