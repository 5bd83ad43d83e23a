import Foundation

/// One KMIP 1.x Attribute structure: Attribute Name, optional Attribute Index, Attribute
/// Value. The value's type depends on the name, so parsing types the standard attributes by
/// name (a "State" that is not an Enumeration is an error) and keeps any other as `.other`.
public struct KMIPAttribute: Hashable, Sendable {
    public var name: String
    public var index: Int32?
    public var value: KMIPAttributeValue

    public init(name: String, index: Int32? = nil, value: KMIPAttributeValue) {
        self.name = name
        self.index = index
        self.value = value
    }

    public static func name(_ name: String, type: KMIPNameType = .uninterpretedTextString) -> KMIPAttribute {
        KMIPAttribute(name: "Name", value: .name(name, type: type))
    }

    public static func objectType(_ type: KMIPObjectType) -> KMIPAttribute {
        KMIPAttribute(name: "Object Type", value: .objectType(type))
    }

    public static func cryptographicAlgorithm(_ algorithm: KMIPCryptographicAlgorithm) -> KMIPAttribute {
        KMIPAttribute(name: "Cryptographic Algorithm", value: .cryptographicAlgorithm(algorithm))
    }

    public static func cryptographicLength(_ bits: Int32) -> KMIPAttribute {
        KMIPAttribute(name: "Cryptographic Length", value: .cryptographicLength(bits))
    }

    public static func usageMask(_ mask: KMIPUsageMask) -> KMIPAttribute {
        KMIPAttribute(name: "Cryptographic Usage Mask", value: .usageMask(mask))
    }

    var ttlv: TTLV {
        var items = [TTLV.text(.attributeName, name)]
        if let index { items.append(.integer(.attributeIndex, index)) }
        items.append(TTLV(.attributeValue, value.wireValue))
        return .structure(.attribute, items)
    }

    init(parsing item: TTLV, parent: [TTLV.Tag]) throws {
        let fields = try Fields(item, parent: parent)
        let name = try fields.text(.attributeName)
        self.name = name
        index = try fields.optionalInteger(.attributeIndex)
        value = try KMIPAttributeValue(named: name, parsing: fields.required(.attributeValue), in: fields)
    }
}

public enum KMIPAttributeValue: Hashable, Sendable {
    /// Unique Identifier, Object Group, Operation Policy Name, Contact Information.
    case text(String)
    case name(String, type: KMIPNameType)
    case objectType(KMIPObjectType)
    case cryptographicAlgorithm(KMIPCryptographicAlgorithm)
    case cryptographicLength(Int32)
    case usageMask(KMIPUsageMask)
    case state(KMIPState)
    case revocationReason(KMIPRevocationReasonCode, message: String?)
    /// Initial, Activation, Deactivation, Destroy, Compromise, Last Change, ... Date.
    case date(Date)
    /// An attribute this module does not type (custom "x-" attributes, Link, Digest, ...).
    case other(TTLV.Value)

    fileprivate enum Kind { case text, name, objectType, algorithm, length, usageMask, state, revocationReason, date }

    fileprivate static let kinds: [String: Kind] = [
        "Unique Identifier": .text, "Object Group": .text, "Operation Policy Name": .text,
        "Contact Information": .text, "Name": .name, "Object Type": .objectType,
        "Cryptographic Algorithm": .algorithm, "Cryptographic Length": .length,
        "Cryptographic Usage Mask": .usageMask, "State": .state, "Revocation Reason": .revocationReason,
        "Initial Date": .date, "Activation Date": .date, "Process Start Date": .date, "Protect Stop Date": .date,
        "Deactivation Date": .date, "Destroy Date": .date, "Compromise Occurrence Date": .date,
        "Compromise Date": .date, "Archive Date": .date, "Last Change Date": .date,
        "Original Creation Date": .date,
    ]

    init(named name: String, parsing raw: TTLV, in fields: Fields) throws {
        guard let kind = Self.kinds[name] else {
            self = .other(raw.value)
            return
        }
        let expected: TTLV.ItemType = switch kind {
        case .text: .textString
        case .name, .revocationReason: .structure
        case .objectType, .algorithm, .state: .enumeration
        case .length, .usageMask: .integer
        case .date: .dateTime
        }
        guard raw.value.type == expected else {
            throw fields.error(.invalidAttribute(name: name, expected: expected, found: raw.value.type))
        }
        switch kind {
        case .text: self = .text(try fields.text(raw))
        case .name:
            let inner = try Fields(raw, parent: fields.path)
            self = .name(try inner.text(.nameValue), type: try inner.enumeration(.nameType))
        case .objectType: self = .objectType(try fields.enumeration(raw))
        case .algorithm: self = .cryptographicAlgorithm(try fields.enumeration(raw))
        case .length: self = .cryptographicLength(try fields.integer(raw))
        case .usageMask: self = .usageMask(KMIPUsageMask(rawValue: UInt32(bitPattern: try fields.integer(raw))))
        case .state: self = .state(try fields.enumeration(raw))
        case .revocationReason:
            let inner = try Fields(raw, parent: fields.path)
            self = .revocationReason(try inner.enumeration(.revocationReasonCode),
                                     message: try inner.optionalText(.revocationMessage))
        case .date: self = .date(kmipDate(try fields.dateTime(raw)))
        }
    }

    var wireValue: TTLV.Value {
        switch self {
        case .text(let s): .textString(s)
        case .name(let s, let type):
            .structure([.text(.nameValue, s), .enumeration(.nameType, type)])
        case .objectType(let t): .enumeration(t.rawValue)
        case .cryptographicAlgorithm(let a): .enumeration(a.rawValue)
        case .cryptographicLength(let n): .integer(n)
        case .usageMask(let m): .integer(Int32(bitPattern: m.rawValue))
        case .state(let s): .enumeration(s.rawValue)
        case .revocationReason(let code, let message):
            .structure([.enumeration(.revocationReasonCode, code)] + (message.map { [.text(.revocationMessage, $0)] } ?? []))
        case .date(let d): .dateTime(kmipSeconds(d))
        case .other(let v): v
        }
    }
}
