import Foundation

// KMIP 1.x messages without networking. A transport (another module) only moves bytes:
//
//     let request = KMIPMessage.request(version: .v1_2, .get(uniqueIdentifier: id))
//     send(request.encode())
//     let header = try receive(8)
//     let rest = try receive(TTLV.messageLength(header: header) - 8)
//     let reply = try KMIPMessage.parseResponse(header + rest)
//     let key = try reply.getResult()          // KMIPGetResult, or throws
//
// - `KMIPRequest` (Operations.swift): one operation and its request payload.
// - `KMIPMessage.request(version:_:)` makes a `KMIPRequestMessage`; `encode()` gives bytes.
// - `KMIPMessage.parseResponse(_:)` gives a `KMIPResponseMessage` of `KMIPResponseItem`s.
// - The typed result readers (`getResult()`, `createResult()`, ..., `KMIPResultSource`)
//   work on a one-item message or on any item, and throw `KMIPOperationError` when the
//   server reports a failure.
// - Errors: `TTLVError` (bytes), `KMIPMessageError` (valid TTLV, not the expected message),
//   `KMIPOperationError` (the server said no).

/// Entry points for building requests and parsing responses.
public enum KMIPMessage {
    /// A request message with one batch item per request. With several requests each item
    /// gets a Unique Batch Item ID (its index, 4 bytes big-endian), which KMIP requires
    /// when Batch Count is above 1.
    public static func request(version: KMIPVersion = .v1_2, _ requests: KMIPRequest...) -> KMIPRequestMessage {
        request(version: version, requests)
    }

    public static func request(version: KMIPVersion = .v1_2, _ requests: [KMIPRequest]) -> KMIPRequestMessage {
        let items = requests.enumerated().map { i, r in
            KMIPRequestMessage.Item(r, batchItemID: requests.count > 1 ? batchItemID(i) : nil)
        }
        return KMIPRequestMessage(version: version, items: items)
    }

    /// The Unique Batch Item ID `request(version:_:)` gives the item at `index`.
    public static func batchItemID(_ index: Int) -> [UInt8] {
        var id: [UInt8] = []
        id.appendBigEndian(UInt32(truncatingIfNeeded: index))
        return id
    }

    /// Parses a whole Response Message (as framed by `TTLV.messageLength`).
    public static func parseResponse(_ bytes: some Collection<UInt8>, limits: TTLV.Limits = .default) throws -> KMIPResponseMessage {
        try KMIPResponseMessage(parsing: TTLV.decode(bytes, limits: limits))
    }
}

public struct KMIPRequestMessage: Hashable, Sendable, CustomStringConvertible {
    public struct Item: Hashable, Sendable {
        public var request: KMIPRequest
        public var batchItemID: [UInt8]?

        public init(_ request: KMIPRequest, batchItemID: [UInt8]? = nil) {
            self.request = request
            self.batchItemID = batchItemID
        }
    }

    public var version: KMIPVersion
    public var items: [Item]
    public var maximumResponseSize: Int32?
    public var batchErrorContinuation: KMIPBatchErrorContinuationOption?

    public init(version: KMIPVersion, items: [Item], maximumResponseSize: Int32? = nil,
                batchErrorContinuation: KMIPBatchErrorContinuationOption? = nil) {
        self.version = version
        self.items = items
        self.maximumResponseSize = maximumResponseSize
        self.batchErrorContinuation = batchErrorContinuation
    }

    public var ttlv: TTLV {
        var header = [version.ttlv]
        if let maximumResponseSize { header.append(.integer(.maximumResponseSize, maximumResponseSize)) }
        if let batchErrorContinuation { header.append(.enumeration(.batchErrorContinuationOption, batchErrorContinuation)) }
        header.append(.integer(.batchCount, Int32(clamping: items.count)))
        let batch = items.map { item in
            var fields = [TTLV.enumeration(.operation, item.request.operation)]
            if let id = item.batchItemID { fields.append(.bytes(.uniqueBatchItemID, id)) }
            fields.append(item.request.payload)
            return TTLV.structure(.batchItem, fields)
        }
        return .structure(.requestMessage, [.structure(.requestHeader, header)] + batch)
    }

    public func encode() -> [UInt8] { ttlv.encode() }

    public var description: String {
        "KMIP \(version) request: " + items.map { "\($0.request)" }.joined(separator: ", ")
    }
}

public struct KMIPResponseMessage: Sendable {
    public var version: KMIPVersion
    /// The header's Time Stamp (required by the specification, tolerated when missing).
    public var timeStamp: Date?
    public var items: [KMIPResponseItem]

    public init(version: KMIPVersion, timeStamp: Date?, items: [KMIPResponseItem]) {
        self.version = version
        self.timeStamp = timeStamp
        self.items = items
    }

    init(parsing root: TTLV) throws {
        guard root.tag == .responseMessage else {
            throw KMIPMessageError(path: [], problem: .unexpectedTag(expected: .responseMessage, found: root.tag))
        }
        let message = try Fields(root)
        let header = try message.structure(.responseHeader)
        version = try KMIPVersion(parsing: header.required(.protocolVersion), parent: header.path)
        timeStamp = try header.optionalDateTime(.timeStamp).map(kmipDate)
        let count = try header.integer(.batchCount)
        items = try message.all(.batchItem).map { try KMIPResponseItem(parsing: $0, parent: message.path) }
        guard Int(count) == items.count else {
            throw header.error(.batchCountMismatch(declared: count, found: items.count))
        }
    }

    public func item(_ index: Int) throws -> KMIPResponseItem {
        guard items.indices.contains(index) else {
            throw KMIPMessageError(path: [.responseMessage], problem: .noBatchItem(index: index, count: items.count))
        }
        return items[index]
    }

    /// The item whose Unique Batch Item ID is `id` (see `KMIPMessage.batchItemID`).
    public func item(batchItemID id: [UInt8]) throws -> KMIPResponseItem {
        let found = items.filter { $0.batchItemID == id }
        guard found.count == 1 else {
            throw KMIPMessageError(path: [.responseMessage], problem: .batchItemIDNotUnique(id, matches: found.count))
        }
        return found[0]
    }
}

/// One response batch item. `payload` is the Response Payload as received; the typed
/// readers of `KMIPResultSource` parse it.
public struct KMIPResponseItem: Sendable {
    /// Present when the request named it (the specification then requires it).
    public var operation: KMIPOperation?
    public var batchItemID: [UInt8]?
    public var status: KMIPResultStatus
    public var reason: KMIPResultReason?
    public var message: String?
    public var payload: TTLV?

    public init(operation: KMIPOperation?, batchItemID: [UInt8]? = nil, status: KMIPResultStatus,
                reason: KMIPResultReason? = nil, message: String? = nil, payload: TTLV? = nil) {
        self.operation = operation
        self.batchItemID = batchItemID
        self.status = status
        self.reason = reason
        self.message = message
        self.payload = payload
    }

    init(parsing item: TTLV, parent: [TTLV.Tag]) throws {
        let fields = try Fields(item, parent: parent)
        operation = try fields.optionalEnumeration(.operation)
        batchItemID = try fields.optionalBytes(.uniqueBatchItemID)
        status = try fields.enumeration(.resultStatus)
        reason = try fields.optionalEnumeration(.resultReason)
        message = try fields.optionalText(.resultMessage)
        payload = try fields.optional(.responsePayload)
        if let payload, payload.value.type != .structure {
            throw fields.wrongType(payload, .structure)
        }
    }

    /// Throws `KMIPOperationError` unless the status is Success.
    public func requireSuccess() throws {
        guard status == .success else {
            throw KMIPOperationError(operation: operation, status: status, reason: reason, message: message)
        }
    }
}

/// The server reported that an operation did not succeed (Result Status other than
/// Success): the status, the named reason and the server's own message.
public struct KMIPOperationError: Error, Equatable, CustomStringConvertible {
    public var operation: KMIPOperation?
    public var status: KMIPResultStatus
    public var reason: KMIPResultReason?
    public var message: String?

    public init(operation: KMIPOperation?, status: KMIPResultStatus, reason: KMIPResultReason?, message: String?) {
        self.operation = operation
        self.status = status
        self.reason = reason
        self.message = message
    }

    public var description: String {
        var text = "KMIP " + (operation.map { "\($0) " } ?? "") + "\(status)"
        if let reason { text += ": \(reason)" }
        if let message {
            // The server's text goes to logs and terminals: no control characters, bounded length.
            let clean = String(message.unicodeScalars.prefix(500).map {
                $0.properties.generalCategory == .control ? "?" : Character($0)
            })
            text += " (server: \"\(clean)\")"
        }
        return text
    }
}

/// Valid TTLV that is not the message expected: a field missing, repeated or of the wrong
/// type, a batch count that does not match, a reply to another operation. `path` names the
/// structures from the message down to where the problem is.
public struct KMIPMessageError: Error, Equatable, CustomStringConvertible {
    public var path: [TTLV.Tag]
    public var problem: Problem

    public enum Problem: Equatable, Sendable {
        case unexpectedTag(expected: TTLV.Tag, found: TTLV.Tag)
        case missing(TTLV.Tag)
        case repeated(TTLV.Tag)
        case wrongType(TTLV.Tag, expected: TTLV.ItemType, found: TTLV.ItemType)
        case batchCountMismatch(declared: Int32, found: Int)
        case noBatchItem(index: Int, count: Int)
        case batchItemIDNotUnique([UInt8], matches: Int)
        /// A typed result asked of a message that does not have exactly one batch item.
        case notOneBatchItem(count: Int)
        case unexpectedOperation(expected: KMIPOperation, found: KMIPOperation)
        case invalidAttribute(name: String, expected: TTLV.ItemType, found: TTLV.ItemType)
        /// Get returned an object this module cannot take key material from.
        case unsupportedObject(KMIPObjectType)
        /// Get returned a wrapped key (Key Wrapping Data, or a Key Value that is a Byte String).
        case wrappedKey
    }

    public var description: String {
        let what: String
        switch problem {
        case .unexpectedTag(let expected, let found): what = "expected \(expected), found \(found)"
        case .missing(let tag): what = "missing \(tag)"
        case .repeated(let tag): what = "\(tag) appears more than once"
        case .wrongType(let tag, let expected, let found): what = "\(tag) is a \(found), expected a \(expected)"
        case .batchCountMismatch(let declared, let found):
            what = "Batch Count says \(declared), the message has \(found) batch items"
        case .noBatchItem(let index, let count): what = "no batch item \(index) (the message has \(count))"
        case .batchItemIDNotUnique(let id, let matches):
            what = "\(matches) batch items have Unique Batch Item ID \(id.map { String($0, radix: 16) }.joined(separator: " "))"
        case .notOneBatchItem(let count): what = "expected one batch item, the message has \(count)"
        case .unexpectedOperation(let expected, let found): what = "a \(found) response where \(expected) was expected"
        case .invalidAttribute(let name, let expected, let found):
            what = "attribute \"\(name)\" has a \(found) value, expected a \(expected)"
        case .unsupportedObject(let type): what = "cannot read key material from a \(type) object"
        case .wrappedKey: what = "the key is wrapped; unwrapping is not supported"
        }
        let location = path.map { $0.name ?? $0.description }.joined(separator: "/")
        return "KMIP message: \(what)" + (location.isEmpty ? "" : " in \(location)")
    }
}

extension KMIPVersion {
    var ttlv: TTLV {
        .structure(.protocolVersion, [.integer(.protocolVersionMajor, major), .integer(.protocolVersionMinor, minor)])
    }

    init(parsing item: TTLV, parent: [TTLV.Tag]) throws {
        let fields = try Fields(item, parent: parent)
        self.init(major: try fields.integer(.protocolVersionMajor), minor: try fields.integer(.protocolVersionMinor))
    }
}
