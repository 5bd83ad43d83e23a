@testable import KMIP
import XCTest

/// Parsing hand-built server replies for each operation, failures included.
final class ResponseTests: XCTestCase {
    let key = (0..<32).map { UInt8($0 * 3) }

    func testHeaderAndItemFields() throws {
        let bytes = Reply.message([Reply.Item(operation: .activate, batchItemID: [9], payload: [Reply.uid("1")])],
                                  version: .v1_4).encode()
        let response = try KMIPMessage.parseResponse(bytes)
        XCTAssertEqual(response.version, .v1_4)
        XCTAssertEqual(response.timeStamp, Date(timeIntervalSince1970: 1_205_495_800))
        XCTAssertEqual(response.items.count, 1)
        let item = try response.item(0)
        XCTAssertEqual(item.operation, .activate)
        XCTAssertEqual(item.batchItemID, [9])
        XCTAssertEqual(item.status, .success)
        XCTAssertNil(item.reason)
        XCTAssertEqual(item.payload, TTLV(.responsePayload, .structure([Reply.uid("1")])))
        XCTAssertNoThrow(try item.requireSuccess())
        XCTAssertEqual(try response.activateResult(), "1")
        XCTAssertEqual(try item.activateResult(), "1")
    }

    func testTheTransportFlowFromTheModuleDocumentation() throws {
        let request = KMIPMessage.request(version: .v1_2, .get(uniqueIdentifier: "7")).encode()
        XCTAssertFalse(request.isEmpty)
        let reply = Reply.bytes(.get, [
            TTLV(.objectType, .enumeration(2)), Reply.uid("7"),
            TTLV(.symmetricKey, .structure([Reply.keyBlock(format: .raw, material: .byteString(key), algorithm: .aes, bits: 256)])),
        ])
        let header = Array(reply.prefix(8))
        let total = try TTLV.messageLength(header: header)
        let result = try KMIPMessage.parseResponse(header + reply[8..<total]).getResult()
        XCTAssertEqual(result.keyMaterial, key)
    }

    func testQuery() throws {
        let result = try KMIPMessage.parseResponse(Reply.bytes(.query, [
            TTLV(.operation, .enumeration(1)), TTLV(.operation, .enumeration(10)),
            TTLV(.operation, .enumeration(0x8000_0001)),
            TTLV(.objectType, .enumeration(2)), TTLV(.objectType, .enumeration(7)),
            TTLV(.vendorIdentification, .textString("ACME KMS")),
            TTLV(.serverInformation, .structure([TTLV(.init(rawValue: 0x540001), .textString("build 5"))])),
            TTLV(.applicationNamespace, .textString("ns")),
        ])).queryResult()
        XCTAssertEqual(result.operations, [.create, .get, KMIPOperation(rawValue: 0x8000_0001)])
        XCTAssertEqual(result.objectTypes, [.symmetricKey, .secretData])
        XCTAssertEqual(result.vendorIdentification, "ACME KMS")
        XCTAssertEqual(result.serverInformation, [TTLV(.init(rawValue: 0x540001), .textString("build 5"))])
        XCTAssertEqual(result.applicationNamespaces, ["ns"])

        let empty = try KMIPMessage.parseResponse(Reply.bytes(.query, [])).queryResult()
        XCTAssertEqual(empty, KMIPQueryResult(operations: [], objectTypes: [], vendorIdentification: nil,
                                              serverInformation: nil, applicationNamespaces: []))
    }

    func testDiscoverVersions() throws {
        let pv = { (minor: Int32) in
            TTLV(.protocolVersion, .structure([TTLV(.protocolVersionMajor, .integer(1)),
                                               TTLV(.protocolVersionMinor, .integer(minor))]))
        }
        let bytes = Reply.bytes(.discoverVersions, [pv(4), pv(2)])
        XCTAssertEqual(try KMIPMessage.parseResponse(bytes).discoverVersionsResult(), [.v1_4, .v1_2])
        // No versions in common; the empty payload left out entirely is the same answer.
        XCTAssertEqual(try KMIPMessage.parseResponse(Reply.bytes(.discoverVersions, [])).discoverVersionsResult(), [])
        XCTAssertEqual(try KMIPMessage.parseResponse(Reply.bytes(.discoverVersions, nil)).discoverVersionsResult(), [])
    }

    func testCreateAndRegister() throws {
        let created = Reply.bytes(.create, [TTLV(.objectType, .enumeration(2)), Reply.uid("k-1")])
        XCTAssertEqual(try KMIPMessage.parseResponse(created).createResult(), "k-1")
        let registered = Reply.bytes(.register, [
            Reply.uid("k-2"), TTLV(.templateAttribute, .structure([Reply.attribute("State", .enumeration(1))])),
        ])
        XCTAssertEqual(try KMIPMessage.parseResponse(registered).registerResult(), "k-2")
        let missing = assertMessageError(try KMIPMessage.parseResponse(Reply.bytes(.create, nil)).createResult())
        XCTAssertEqual(missing?.problem, .missing(.responsePayload))
        let noID = assertMessageError(try KMIPMessage.parseResponse(Reply.bytes(.register, [])).registerResult())
        XCTAssertEqual(noID?.problem, .missing(.uniqueIdentifier))
        XCTAssertEqual(noID?.path, [.responseMessage, .batchItem, .responsePayload])
    }

    func testGetSymmetricKey() throws {
        let result = try KMIPMessage.parseResponse(Reply.bytes(.get, [
            TTLV(.objectType, .enumeration(2)), Reply.uid("k"),
            TTLV(.symmetricKey, .structure([Reply.keyBlock(format: .raw, material: .byteString(key), algorithm: .aes, bits: 256)])),
        ])).getResult()
        XCTAssertEqual(result, KMIPGetResult(uniqueIdentifier: "k", objectType: .symmetricKey, keyFormatType: .raw,
                                             keyMaterial: key, cryptographicAlgorithm: .aes, cryptographicLength: 256,
                                             secretDataType: nil))
        XCTAssertTrue(result.description.contains("32 bytes"))
        // Printing never shows key material.
        var secret = result
        secret.keyMaterial = [UInt8](repeating: 0xA7, count: 32)
        let text = "\(secret) \(String(reflecting: secret))"
        XCTAssertFalse(text.contains("167") || text.lowercased().contains("a7"), text)
    }

    func testGetTransparentSymmetricKey() throws {
        let result = try KMIPMessage.parseResponse(Reply.bytes(.get, [
            TTLV(.objectType, .enumeration(2)), Reply.uid("k"),
            TTLV(.symmetricKey, .structure([Reply.keyBlock(format: .transparentSymmetricKey,
                                                           material: .structure([TTLV(.key, .byteString(key))]),
                                                           algorithm: .aes, bits: 256)])),
        ])).getResult()
        XCTAssertEqual(result.keyMaterial, key)
        XCTAssertEqual(result.keyFormatType, .transparentSymmetricKey)
    }

    func testGetSecretData() throws {
        let result = try KMIPMessage.parseResponse(Reply.bytes(.get, [
            TTLV(.objectType, .enumeration(7)), Reply.uid("s"),
            TTLV(.secretData, .structure([TTLV(.secretDataType, .enumeration(2)),
                                          Reply.keyBlock(format: .opaque, material: .byteString([1, 2, 3]))])),
        ])).getResult()
        XCTAssertEqual(result.objectType, .secretData)
        XCTAssertEqual(result.secretDataType, .seed)
        XCTAssertEqual(result.keyFormatType, .opaque)
        XCTAssertEqual(result.keyMaterial, [1, 2, 3])
        XCTAssertNil(result.cryptographicAlgorithm)
        XCTAssertNil(result.cryptographicLength)
    }

    func testGetRefusesWhatItCannotRead() {
        func get(_ fields: [TTLV]) -> KMIPMessageError.Problem? {
            assertMessageError(try KMIPMessage.parseResponse(Reply.bytes(.get, fields)).getResult())?.problem
        }
        let block = Reply.keyBlock(format: .raw, material: .byteString(key))
        // The object does not match the Object Type.
        XCTAssertEqual(get([TTLV(.objectType, .enumeration(2)), Reply.uid("k"), TTLV(.secretData, .structure([block]))]),
                       .missing(.symmetricKey))
        XCTAssertEqual(get([TTLV(.objectType, .enumeration(1)), Reply.uid("c")]), .unsupportedObject(.certificate))
        // Wrapped keys: Key Wrapping Data, or a Key Value that is a Byte String.
        let wrapped = TTLV(.keyBlock, .structure([TTLV(.keyFormatType, .enumeration(1)),
                                                  TTLV(.keyValue, .byteString([1, 2, 3]))]))
        XCTAssertEqual(get([TTLV(.objectType, .enumeration(2)), Reply.uid("k"), TTLV(.symmetricKey, .structure([wrapped]))]),
                       .wrappedKey)
        var withWrapping = block
        withWrapping.value = .structure(block.children! + [TTLV(.keyWrappingData, .structure([]))])
        XCTAssertEqual(get([TTLV(.objectType, .enumeration(2)), Reply.uid("k"),
                            TTLV(.symmetricKey, .structure([withWrapping]))]), .wrappedKey)
        // Two identifiers: ambiguous, refused.
        XCTAssertEqual(get([TTLV(.objectType, .enumeration(2)), Reply.uid("k"), Reply.uid("j"),
                            TTLV(.symmetricKey, .structure([block]))]), .repeated(.uniqueIdentifier))
        // Key material of the wrong type.
        XCTAssertEqual(get([TTLV(.objectType, .enumeration(2)), Reply.uid("k"),
                            TTLV(.symmetricKey, .structure([Reply.keyBlock(format: .raw, material: .textString("k"))]))]),
                       .wrongType(.keyMaterial, expected: .byteString, found: .textString))
    }

    func testGetAttributesTypesValuesByName() throws {
        let list = try KMIPMessage.parseResponse(Reply.bytes(.getAttributes, [
            Reply.uid("k"),
            Reply.attribute("State", .enumeration(2)),
            Reply.attribute("Name", .structure([TTLV(.nameValue, .textString("mk")), TTLV(.nameType, .enumeration(1))])),
            Reply.attribute("Cryptographic Length", .integer(256)),
            Reply.attribute("Object Type", .enumeration(2)),
            Reply.attribute("Cryptographic Algorithm", .enumeration(3)),
            Reply.attribute("Cryptographic Usage Mask", .integer(12)),
            Reply.attribute("Revocation Reason", .structure([TTLV(.revocationReasonCode, .enumeration(5))])),
            Reply.attribute("Activation Date", .dateTime(1_205_495_800)),
            Reply.attribute("Unique Identifier", .textString("k")),
            Reply.attribute("x-owner", .textString("ops")),
            TTLV(.attribute, .structure([TTLV(.attributeName, .textString("Name")), TTLV(.attributeIndex, .integer(1)),
                                         TTLV(.attributeValue, .structure([TTLV(.nameValue, .textString("alias")),
                                                                           TTLV(.nameType, .enumeration(2))]))])),
        ])).getAttributesResult()
        XCTAssertEqual(list.uniqueIdentifier, "k")
        XCTAssertEqual(list.state, .active)
        XCTAssertEqual(list.names, ["mk", "alias"])
        XCTAssertEqual(list.cryptographicLength, 256)
        XCTAssertEqual(list.objectType, .symmetricKey)
        XCTAssertEqual(list.cryptographicAlgorithm, .aes)
        XCTAssertEqual(list.values(named: "Cryptographic Usage Mask"), [.usageMask([.encrypt, .decrypt])])
        XCTAssertEqual(list.values(named: "Revocation Reason"), [.revocationReason(.superseded, message: nil)])
        XCTAssertEqual(list.values(named: "Activation Date"), [.date(Date(timeIntervalSince1970: 1_205_495_800))])
        XCTAssertEqual(list.values(named: "Unique Identifier"), [.text("k")])
        XCTAssertEqual(list.values(named: "x-owner"), [.other(.textString("ops"))])
        XCTAssertEqual(list.attributes.last, KMIPAttribute(name: "Name", index: 1, value: .name("alias", type: .uri)))
        // Encoding a parsed attribute gives back what came in.
        XCTAssertEqual(list.attributes.last?.ttlv.encode(), TTLV(.attribute, .structure([
            TTLV(.attributeName, .textString("Name")), TTLV(.attributeIndex, .integer(1)),
            TTLV(.attributeValue, .structure([TTLV(.nameValue, .textString("alias")), TTLV(.nameType, .enumeration(2))])),
        ])).encode())
    }

    func testAStandardAttributeOfTheWrongTypeIsAnError() {
        let error = assertMessageError(try KMIPMessage.parseResponse(Reply.bytes(.getAttributes, [
            Reply.uid("k"), Reply.attribute("State", .integer(2)),
        ])).getAttributesResult())
        XCTAssertEqual(error?.problem, .invalidAttribute(name: "State", expected: .enumeration, found: .integer))
        XCTAssertEqual(error?.path, [.responseMessage, .batchItem, .responsePayload, .attribute])
        XCTAssertEqual(error?.description,
                       "KMIP message: attribute \"State\" has a Integer value, expected a Enumeration in Response Message/Batch Item/Response Payload/Attribute")
    }

    func testRevokeAndDestroy() throws {
        XCTAssertEqual(try KMIPMessage.parseResponse(Reply.bytes(.revoke, [Reply.uid("r")])).revokeResult(), "r")
        XCTAssertEqual(try KMIPMessage.parseResponse(Reply.bytes(.destroy, [Reply.uid("d")])).destroyResult(), "d")
    }

    func testLocate() throws {
        let found = Reply.bytes(.locate, [TTLV(.locatedItems, .integer(3)), Reply.uid("a"), Reply.uid("b"), Reply.uid("c")])
        XCTAssertEqual(try KMIPMessage.parseResponse(found).locateResult(), ["a", "b", "c"])
        XCTAssertEqual(try KMIPMessage.parseResponse(Reply.bytes(.locate, [])).locateResult(), [])
        XCTAssertEqual(try KMIPMessage.parseResponse(Reply.bytes(.locate, nil)).locateResult(), [])
    }

    func testAFailureBecomesATypedErrorWithTheServersMessage() throws {
        let bytes = Reply.message([Reply.Item(operation: .get, status: .operationFailed, reason: .itemNotFound,
                                              message: "no object with id 9")]).encode()
        let response = try KMIPMessage.parseResponse(bytes)
        do {
            _ = try response.getResult()
            XCTFail("expected a failure")
        } catch let error as KMIPOperationError {
            XCTAssertEqual(error, KMIPOperationError(operation: .get, status: .operationFailed, reason: .itemNotFound,
                                                     message: "no object with id 9"))
            XCTAssertEqual(error.description, "KMIP Get Operation Failed: Item Not Found (server: \"no object with id 9\")")
        }
        XCTAssertThrowsError(try response.item(0).requireSuccess()) {
            XCTAssertEqual(($0 as? KMIPOperationError)?.reason, .itemNotFound)
        }
        // A failure reported for another operation is still the failure, not a mismatch.
        XCTAssertThrowsError(try response.locateResult()) { XCTAssertTrue($0 is KMIPOperationError) }
    }

    func testFailuresWithoutAnOperationOrReasonAndUnknownReasons() throws {
        let bytes = Reply.message([Reply.Item(operation: nil, status: .operationFailed,
                                              reason: KMIPResultReason(rawValue: 0x42), message: "bad\u{1B}[31m\ntext")]).encode()
        do {
            _ = try KMIPMessage.parseResponse(bytes).destroyResult()
            XCTFail("expected a failure")
        } catch let error as KMIPOperationError {
            XCTAssertEqual(error.operation, .destroy, "named after the operation asked for")
            XCTAssertEqual(error.reason?.rawValue, 0x42)
            XCTAssertEqual(error.message, "bad\u{1B}[31m\ntext")
            XCTAssertEqual(error.description, "KMIP Destroy Operation Failed: 0x42 (server: \"bad?[31m?text\")")
        }
        let pending = Reply.message([Reply.Item(operation: .create, status: .operationPending)]).encode()
        XCTAssertThrowsError(try KMIPMessage.parseResponse(pending).createResult()) {
            XCTAssertEqual(($0 as? KMIPOperationError)?.status, .operationPending)
            XCTAssertNil(($0 as? KMIPOperationError)?.reason)
        }
    }

    func testBatchesOfSeveralItems() throws {
        let bytes = Reply.message([
            Reply.Item(operation: .activate, batchItemID: KMIPMessage.batchItemID(0), payload: [Reply.uid("a")]),
            Reply.Item(operation: .get, batchItemID: KMIPMessage.batchItemID(1), status: .operationFailed,
                       reason: .permissionDenied, message: "no"),
        ]).encode()
        let response = try KMIPMessage.parseResponse(bytes)
        XCTAssertEqual(try response.item(batchItemID: KMIPMessage.batchItemID(0)).activateResult(), "a")
        XCTAssertThrowsError(try response.item(batchItemID: KMIPMessage.batchItemID(1)).getResult()) {
            XCTAssertEqual(($0 as? KMIPOperationError)?.reason, .permissionDenied)
        }
        XCTAssertEqual(assertMessageError(try response.getResult())?.problem, .notOneBatchItem(count: 2))
        XCTAssertEqual(assertMessageError(try response.item(2))?.problem, .noBatchItem(index: 2, count: 2))
        XCTAssertEqual(assertMessageError(try response.item(batchItemID: [7]))?.problem,
                       .batchItemIDNotUnique([7], matches: 0))
    }

    func testMalformedMessages() {
        // Batch Count disagrees with the items.
        let counted = Reply.message([Reply.Item(operation: .get)], batchCount: 2).encode()
        let count = assertMessageError(try KMIPMessage.parseResponse(counted))
        XCTAssertEqual(count?.problem, .batchCountMismatch(declared: 2, found: 1))
        XCTAssertEqual(count?.path, [.responseMessage, .responseHeader])
        // A request is not a response.
        let request = KMIPMessage.request(.activate(uniqueIdentifier: "1")).encode()
        XCTAssertEqual(assertMessageError(try KMIPMessage.parseResponse(request))?.problem,
                       .unexpectedTag(expected: .responseMessage, found: .requestMessage))
        // A reply to another operation.
        XCTAssertEqual(assertMessageError(try KMIPMessage.parseResponse(Reply.bytes(.destroy, [Reply.uid("x")])).activateResult())?.problem,
                       .unexpectedOperation(expected: .activate, found: .destroy))
        // No header; a header without a version; a status of the wrong type.
        let noHeader = TTLV(.responseMessage, .structure([])).encode()
        XCTAssertEqual(assertMessageError(try KMIPMessage.parseResponse(noHeader))?.problem, .missing(.responseHeader))
        let noVersion = TTLV(.responseMessage, .structure([TTLV(.responseHeader, .structure([TTLV(.batchCount, .integer(0))]))]))
        XCTAssertEqual(assertMessageError(try KMIPMessage.parseResponse(noVersion.encode()))?.problem, .missing(.protocolVersion))
        var message = Reply.message([Reply.Item(operation: .get)])
        var items = message.children!
        items[1] = TTLV(.batchItem, .structure([TTLV(.resultStatus, .integer(0))]))
        message.value = .structure(items)
        XCTAssertEqual(assertMessageError(try KMIPMessage.parseResponse(message.encode()))?.problem,
                       .wrongType(.resultStatus, expected: .enumeration, found: .integer))
        // A payload that is not a structure.
        items[1] = TTLV(.batchItem, .structure([TTLV(.resultStatus, .enumeration(0)), TTLV(.responsePayload, .integer(0))]))
        message.value = .structure(items)
        XCTAssertEqual(assertMessageError(try KMIPMessage.parseResponse(message.encode()))?.problem,
                       .wrongType(.responsePayload, expected: .structure, found: .integer))
        // Bytes that are not TTLV at all.
        XCTAssertThrowsError(try KMIPMessage.parseResponse(Array("HTTP/1.1 400 Bad Request\r\n".utf8))) {
            XCTAssertTrue($0 is TTLVError)
        }
    }

    func testAMissingTimeStampIsToleratedAndExtraFieldsIgnored() throws {
        var message = Reply.message([Reply.Item(operation: .activate, payload: [Reply.uid("1")])], timeStamp: nil)
        var items = message.children!
        items[0].value = .structure(items[0].children! + [TTLV(.clientCorrelationValue, .textString("c"))])
        items.append(TTLV(.init(rawValue: 0x540099), .boolean(true)))
        message.value = .structure(items)
        let response = try KMIPMessage.parseResponse(message.encode())
        XCTAssertNil(response.timeStamp)
        XCTAssertEqual(try response.activateResult(), "1")
    }
}
