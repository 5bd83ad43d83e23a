@testable import KMIP
import XCTest

/// Every request builder: encoded, decoded back, and compared field by field with the
/// KMIP 1.x layout written out by hand.
final class RequestTests: XCTestCase {
    func a(_ name: String, _ value: TTLV.Value) -> TTLV { Reply.attribute(name, value) }
    func nameValue(_ s: String) -> TTLV.Value {
        .structure([TTLV(.nameValue, .textString(s)), TTLV(.nameType, .enumeration(1))])
    }

    /// Encodes a one-item request, decodes it, checks the header and batch item, and
    /// returns the payload's fields.
    func payload(_ request: KMIPRequest, version: KMIPVersion = .v1_2, file: StaticString = #filePath,
                 line: UInt = #line) throws -> [TTLV] {
        let bytes = KMIPMessage.request(version: version, request).encode()
        XCTAssertEqual(try TTLV.messageLength(header: bytes), bytes.count, file: file, line: line)
        let root = try TTLV.decode(bytes)
        XCTAssertEqual(root.tag, .requestMessage, file: file, line: line)
        let children = try XCTUnwrap(root.children)
        XCTAssertEqual(children.count, 2, file: file, line: line)
        XCTAssertEqual(children[0], TTLV(.requestHeader, .structure([
            TTLV(.protocolVersion, .structure([TTLV(.protocolVersionMajor, .integer(version.major)),
                                               TTLV(.protocolVersionMinor, .integer(version.minor))])),
            TTLV(.batchCount, .integer(1)),
        ])), file: file, line: line)
        let item = try XCTUnwrap(children[1].children)
        XCTAssertEqual(children[1].tag, .batchItem, file: file, line: line)
        XCTAssertEqual(item.count, 2, "no batch item id for a single item", file: file, line: line)
        XCTAssertEqual(item[0], TTLV(.operation, .enumeration(request.operation.rawValue)), file: file, line: line)
        XCTAssertEqual(item[1].tag, .requestPayload, file: file, line: line)
        return try XCTUnwrap(item[1].children)
    }

    func testAWholeRequestByteForByte() {
        // Activate "1" in KMIP 1.2, laid out by hand.
        let expected = hex("""
            42 00 78 | 01 | 00 00 00 70 |
              42 00 77 | 01 | 00 00 00 38 |
                42 00 69 | 01 | 00 00 00 20 |
                  42 00 6A | 02 | 00 00 00 04 | 00 00 00 01 00 00 00 00 |
                  42 00 6B | 02 | 00 00 00 04 | 00 00 00 02 00 00 00 00 |
                42 00 0D | 02 | 00 00 00 04 | 00 00 00 01 00 00 00 00 |
              42 00 0F | 01 | 00 00 00 28 |
                42 00 5C | 05 | 00 00 00 04 | 00 00 00 12 00 00 00 00 |
                42 00 79 | 01 | 00 00 00 10 |
                  42 00 94 | 07 | 00 00 00 01 | 31 00 00 00 00 00 00 00
            """)
        XCTAssertEqual(KMIPMessage.request(version: .v1_2, .activate(uniqueIdentifier: "1")).encode(), expected)
    }

    func testEveryProtocolVersionFrom1_0To1_4() throws {
        for version in KMIPVersion.supported {
            XCTAssertEqual(try payload(.destroy(uniqueIdentifier: "x"), version: version),
                           [TTLV(.uniqueIdentifier, .textString("x"))])
        }
    }

    func testQuery() throws {
        XCTAssertEqual(try payload(.query([.queryOperations, .queryObjects, .queryServerInformation])), [
            TTLV(.queryFunction, .enumeration(1)), TTLV(.queryFunction, .enumeration(2)),
            TTLV(.queryFunction, .enumeration(3)),
        ])
    }

    func testDiscoverVersionsSendsOursNewestFirst() throws {
        let fields = try payload(.discoverVersions())
        XCTAssertEqual(fields.map(\.tag), Array(repeating: .protocolVersion, count: 5))
        XCTAssertEqual(fields.map { [$0[.protocolVersionMajor]!.value, $0[.protocolVersionMinor]!.value] },
                       [4, 3, 2, 1, 0].map { [.integer(1), .integer($0)] })
        XCTAssertEqual(try payload(.discoverVersions([])), [])
    }

    func testCreateSymmetricKey() throws {
        XCTAssertEqual(try payload(.createSymmetricKey()), [
            TTLV(.objectType, .enumeration(2)),
            TTLV(.templateAttribute, .structure([
                a("Cryptographic Algorithm", .enumeration(3)),
                a("Cryptographic Length", .integer(256)),
                a("Cryptographic Usage Mask", .integer(0x0C)),
            ])),
        ])
        let named = try payload(.createSymmetricKey(lengthBits: 128, usageMask: [.encrypt, .decrypt, .wrapKey],
                                                    name: "ciphertail-master"))
        XCTAssertEqual(named[1], TTLV(.templateAttribute, .structure([
            a("Cryptographic Algorithm", .enumeration(3)),
            a("Cryptographic Length", .integer(128)),
            a("Cryptographic Usage Mask", .integer(0x1C)),
            a("Name", nameValue("ciphertail-master")),
        ])))
    }

    func testRegisterSymmetricKey() throws {
        let key = (0..<32).map { UInt8($0) }
        XCTAssertEqual(try payload(.registerSymmetricKey(material: key, name: "mk")), [
            TTLV(.objectType, .enumeration(2)),
            TTLV(.templateAttribute, .structure([a("Cryptographic Usage Mask", .integer(0x0C)), a("Name", nameValue("mk"))])),
            TTLV(.symmetricKey, .structure([TTLV(.keyBlock, .structure([
                TTLV(.keyFormatType, .enumeration(1)),
                TTLV(.keyValue, .structure([TTLV(.keyMaterial, .byteString(key))])),
                TTLV(.cryptographicAlgorithm, .enumeration(3)),
                TTLV(.cryptographicLength, .integer(256)),
            ]))])),
        ])
        // Without attributes the Template-Attribute is still sent, empty.
        let bare = try payload(.registerSymmetricKey(material: [1, 2], usageMask: nil))
        XCTAssertEqual(bare[1], TTLV(.templateAttribute, .structure([])))
        XCTAssertEqual(bare[2][.keyBlock]?[.cryptographicLength], TTLV(.cryptographicLength, .integer(16)))
    }

    func testRegisterSecretData() throws {
        let secret = Array("correct horse".utf8)
        XCTAssertEqual(try payload(.registerSecretData(material: secret, type: .password, usageMask: [.deriveKey],
                                                       name: "pw")), [
            TTLV(.objectType, .enumeration(7)),
            TTLV(.templateAttribute, .structure([a("Cryptographic Usage Mask", .integer(0x200)), a("Name", nameValue("pw"))])),
            TTLV(.secretData, .structure([
                TTLV(.secretDataType, .enumeration(1)),
                TTLV(.keyBlock, .structure([
                    TTLV(.keyFormatType, .enumeration(2)),
                    TTLV(.keyValue, .structure([TTLV(.keyMaterial, .byteString(secret))])),
                ])),
            ])),
        ])
    }

    func testGet() throws {
        XCTAssertEqual(try payload(.get(uniqueIdentifier: "17")), [TTLV(.uniqueIdentifier, .textString("17"))])
        XCTAssertEqual(try payload(.get(uniqueIdentifier: "17", keyFormat: .raw)),
                       [TTLV(.uniqueIdentifier, .textString("17")), TTLV(.keyFormatType, .enumeration(1))])
    }

    func testGetAttributes() throws {
        XCTAssertEqual(try payload(.getAttributes(uniqueIdentifier: "17",
                                                  names: ["State", "Name", "Cryptographic Length", "Object Type"])), [
            TTLV(.uniqueIdentifier, .textString("17")),
            TTLV(.attributeName, .textString("State")), TTLV(.attributeName, .textString("Name")),
            TTLV(.attributeName, .textString("Cryptographic Length")), TTLV(.attributeName, .textString("Object Type")),
        ])
        XCTAssertEqual(try payload(.getAttributes(uniqueIdentifier: "17")), [TTLV(.uniqueIdentifier, .textString("17"))])
    }

    func testActivateAndDestroy() throws {
        XCTAssertEqual(try payload(.activate(uniqueIdentifier: "a")), [TTLV(.uniqueIdentifier, .textString("a"))])
        XCTAssertEqual(try payload(.destroy(uniqueIdentifier: "d")), [TTLV(.uniqueIdentifier, .textString("d"))])
    }

    func testRevoke() throws {
        XCTAssertEqual(try payload(.revoke(uniqueIdentifier: "r", reason: .cessationOfOperation)), [
            TTLV(.uniqueIdentifier, .textString("r")),
            TTLV(.revocationReason, .structure([TTLV(.revocationReasonCode, .enumeration(6))])),
        ])
        let compromised = try payload(.revoke(uniqueIdentifier: "r", reason: .keyCompromise, message: "leaked",
                                              compromiseOccurrenceDate: Date(timeIntervalSince1970: 1_205_495_800.9)))
        XCTAssertEqual(compromised, [
            TTLV(.uniqueIdentifier, .textString("r")),
            TTLV(.revocationReason, .structure([TTLV(.revocationReasonCode, .enumeration(2)),
                                                TTLV(.revocationMessage, .textString("leaked"))])),
            TTLV(.compromiseOccurrenceDate, .dateTime(1_205_495_800)),
        ])
    }

    func testLocate() throws {
        XCTAssertEqual(try payload(.locate(name: "mk")), [a("Name", nameValue("mk"))])
        XCTAssertEqual(try payload(.locate(name: "mk", objectType: .symmetricKey, maximumItems: 2)), [
            TTLV(.maximumItems, .integer(2)), a("Object Type", .enumeration(2)), a("Name", nameValue("mk")),
        ])
        XCTAssertEqual(try payload(.locate(name: nil)), [])
    }

    func testBatchesNumberTheirItemsAndCarryHeaderOptions() throws {
        var message = KMIPMessage.request(version: .v1_1, .activate(uniqueIdentifier: "a"), .get(uniqueIdentifier: "a"))
        message.maximumResponseSize = 4096
        message.batchErrorContinuation = .stop
        let root = try TTLV.decode(message.encode())
        let header = try XCTUnwrap(root[.requestHeader])
        XCTAssertEqual(header[.maximumResponseSize]?.value, .integer(4096))
        XCTAssertEqual(header[.batchErrorContinuationOption]?.value, .enumeration(2))
        XCTAssertEqual(header[.batchCount]?.value, .integer(2))
        let items = try XCTUnwrap(root.children).filter { $0.tag == .batchItem }
        XCTAssertEqual(items.map { $0[.uniqueBatchItemID]?.value }, [.byteString([0, 0, 0, 0]), .byteString([0, 0, 0, 1])])
        XCTAssertEqual(items.map { $0[.operation]?.value }, [.enumeration(18), .enumeration(10)])
        XCTAssertEqual(KMIPMessage.batchItemID(1), [0, 0, 0, 1])
    }

    func testPrintingARequestNeverShowsKeyMaterial() {
        let key = [UInt8](repeating: 0xAB, count: 32)
        let message = KMIPMessage.request(.registerSymmetricKey(material: key, name: "mk"),
                                          .registerSecretData(material: Array("hunter2".utf8)))
        let text = "\(message) \(String(reflecting: message)) \(message.items[0].request)"
        XCTAssertFalse(text.contains("171") || text.lowercased().contains("ab, ") || text.contains("hunter2"), text)
        XCTAssertTrue(text.contains("256 bits"), text)
    }
}
