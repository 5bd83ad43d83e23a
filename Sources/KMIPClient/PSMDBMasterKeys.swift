import Foundation
import KMIP

/// The two formats PSMDB has kept its master key in.
public enum PSMDBKeyFormat: String, CaseIterable, Codable, Sendable {
    case raw
    case legacyBase64 = "legacy-base64"
}

/// Why a PSMDB key operation was refused: the key itself (`key`, exit 8 in the CLI) or the
/// request (`request`, exit 64).
public enum PSMDBKeyError: Error, CustomStringConvertible {
    case key(String)
    case request(String)
    public var description: String {
        switch self {
        case .key(let m), .request(let m): return m
        }
    }
}

/// What `kmip inspect` shows of a key: never its material.
public struct PSMDBKeyReport: Codable, Sendable {
    public var id: String
    public var objectType: String
    public var state: String?
    public var cryptographicAlgorithm: String?
    public var cryptographicLength: Int32?
    public var keyFormatType: String
    public var materialBytes: Int
    /// raw, legacy-base64 or other.
    public var format: String
    public var names: [String]
}

/// A key registered by `provision-master-key` or `convert`.
public struct PSMDBKeyCreated: Codable, Sendable {
    public var id: String
    public var format: PSMDBKeyFormat
    public var name: String?
    public var cryptographicLength: Int
    /// For `convert`: the key it was made from.
    public var sourceId: String?
    public var sourceFormat: PSMDBKeyFormat?
}

/// PSMDB's data-at-rest master key on a KMIP server: an AES-256 Symmetric Key whose
/// material is the 32 raw bytes (PSMDB 6.0.6-5, 5.0.17-14, 4.4.21-20 and later) or their
/// base64 text (earlier versions). Material lives only in arrays wiped after use.
public struct PSMDBMasterKeys {
    public let client: KMIPClient

    public init(_ client: KMIPClient) { self.client = client }

    public static func name(_ format: KeyMaterialFormat) -> String {
        switch format {
        case .raw: "raw"
        case .legacyBase64: "legacy-base64"
        case .other: "other"
        }
    }

    /// Which PSMDB versions read a format, for the plain output.
    public static func versions(_ format: String) -> String {
        switch format {
        case "raw": " (PSMDB 6.0.6-5, 5.0.17-14, 4.4.21-20 and later)"
        case "legacy-base64": " (PSMDB before 6.0.6-5, 5.0.17-14, 4.4.21-20)"
        default: " (not a PSMDB master key)"
        }
    }

    public func inspect(_ id: String) throws -> PSMDBKeyReport {
        var got = try client.get(id)
        defer { wipe(&got.keyMaterial) }
        let attributes = try client.attributes(id)
        return PSMDBKeyReport(
            id: id, objectType: "\(got.objectType)", state: attributes.state.map { "\($0)" },
            cryptographicAlgorithm: (attributes.cryptographicAlgorithm ?? got.cryptographicAlgorithm).map { "\($0)" },
            cryptographicLength: attributes.cryptographicLength ?? got.cryptographicLength,
            keyFormatType: "\(got.keyFormatType)", materialBytes: got.keyMaterial.count,
            format: Self.name(KeyMaterialFormat.classify(got.keyMaterial)), names: attributes.names)
    }

    public func provision(_ format: PSMDBKeyFormat, name: String?) throws -> PSMDBKeyCreated {
        var rng = SystemRandomNumberGenerator()  // getrandom(2)
        var key = (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }
        defer { wipe(&key) }
        return try register(key, as: format, name: name)
    }

    public func convert(_ id: String, to target: PSMDBKeyFormat, name: String?) throws -> PSMDBKeyCreated {
        var got = try client.get(id)
        defer { wipe(&got.keyMaterial) }
        func refuse(_ why: String) -> Error { PSMDBKeyError.key("KMIP key \(id) \(why)") }
        guard got.objectType == .symmetricKey else {
            throw refuse("is \(got.objectType), not a Symmetric Key: not a PSMDB master key")
        }
        let format = KeyMaterialFormat.classify(got.keyMaterial)
        guard format != .other, var key = KeyMaterialFormat.key(from: got.keyMaterial) else {
            throw refuse("is in neither PSMDB format (\(got.keyMaterial.count) bytes; raw is 32 bytes, legacy-base64 44 characters)")
        }
        defer { wipe(&key) }
        let source: PSMDBKeyFormat = format == .raw ? .raw : .legacyBase64
        guard source != target else {
            throw PSMDBKeyError.request("KMIP key \(id) is already \(target.rawValue): nothing to convert")
        }
        if let state = try client.attributes(id, names: ["State"]).state,
           state == .compromised || state == .destroyedCompromised {
            throw refuse("is \(state): its material must not be registered again; provision a new key")
        }
        var created = try register(key, as: target, name: name)
        created.sourceId = id
        created.sourceFormat = source
        return created
    }

    /// Registers the 32-byte `key` in `format`, then activates it.
    private func register(_ key: [UInt8], as format: PSMDBKeyFormat, name given: String?) throws -> PSMDBKeyCreated {
        var name = given
        if name == nil && format == .legacyBase64 { name = Self.defaultName() }
        if let name {
            // The oldest KMIP versions of PSMDB Locate their key by Name: it must be unique.
            let holders = try client.locate(name: name)
            guard holders.isEmpty else {
                throw PSMDBKeyError.request("the KMIP name \"\(name)\" is already used by object \(holders.joined(separator: ", ")); give another --name")
            }
        }
        var material = format == .raw ? key : Self.base64(key)
        defer { wipe(&material) }
        // The Register request says Cryptographic Length = material bytes x 8 (256, or 352
        // for the base64 text): what PSMDB's legacy client sent, and what PyKMIP checks.
        let id = try client.registerSymmetricKey(material: material, name: name)
        do {
            try client.activate(id)
        } catch {
            FileHandle.standardError.write(Data("ciphertail: key \(id) was registered but not activated; destroy it, or activate it on the KMIP server\n".utf8))
            throw error
        }
        return PSMDBKeyCreated(id: id, format: format, name: name, cryptographicLength: material.count * 8)
    }

    public static func defaultName(_ now: Date = Date()) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyyMMdd'T'HHmmss.SSS'Z'"
        return "ciphertail-psmdb-master-" + f.string(from: now)
    }

    /// Standard base64 with padding, into an array that can be wiped (a String cannot).
    public static func base64(_ bytes: [UInt8]) -> [UInt8] {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i < bytes.count {
            let n = UInt32(bytes[i]) << 16 | UInt32(i + 1 < bytes.count ? bytes[i + 1] : 0) << 8
                | UInt32(i + 2 < bytes.count ? bytes[i + 2] : 0)
            out.append(alphabet[Int(n >> 18 & 63)])
            out.append(alphabet[Int(n >> 12 & 63)])
            out.append(i + 1 < bytes.count ? alphabet[Int(n >> 6 & 63)] : UInt8(ascii: "="))
            out.append(i + 2 < bytes.count ? alphabet[Int(n & 63)] : UInt8(ascii: "="))
            i += 3
        }
        return out
    }

    private func wipe(_ bytes: inout [UInt8]) {
        bytes.withUnsafeMutableBytes { if let p = $0.baseAddress { explicit_bzero(p, $0.count) } }
    }
}
