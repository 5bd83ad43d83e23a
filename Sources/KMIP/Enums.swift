// KMIP 1.x enumerations. Each is a struct over the wire value rather than a Swift enum,
// so values this module does not name (newer versions, vendor extensions 0x8xxxxxxx) still
// parse, compare and print. Values from the KMIP 1.0-1.4 specifications (section 9.1.3).

/// A KMIP enumeration: a 32-bit wire value with the specification's name when known.
public protocol KMIPEnumeration: RawRepresentable, Hashable, Sendable, CustomStringConvertible
    where RawValue == UInt32 {
    init(rawValue: UInt32)
    static var names: [UInt32: String] { get }
}

extension KMIPEnumeration {
    /// The specification's name, if this module knows the value.
    public var name: String? { Self.names[rawValue] }

    public var description: String {
        name ?? "0x" + String(rawValue, radix: 16, uppercase: true)
    }
}

/// The Operation enumeration.
public struct KMIPOperation: KMIPEnumeration {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let create = Self(rawValue: 0x1)
    public static let createKeyPair = Self(rawValue: 0x2)
    public static let register = Self(rawValue: 0x3)
    public static let rekey = Self(rawValue: 0x4)
    public static let deriveKey = Self(rawValue: 0x5)
    public static let certify = Self(rawValue: 0x6)
    public static let recertify = Self(rawValue: 0x7)
    public static let locate = Self(rawValue: 0x8)
    public static let check = Self(rawValue: 0x9)
    public static let get = Self(rawValue: 0xA)
    public static let getAttributes = Self(rawValue: 0xB)
    public static let getAttributeList = Self(rawValue: 0xC)
    public static let addAttribute = Self(rawValue: 0xD)
    public static let modifyAttribute = Self(rawValue: 0xE)
    public static let deleteAttribute = Self(rawValue: 0xF)
    public static let obtainLease = Self(rawValue: 0x10)
    public static let getUsageAllocation = Self(rawValue: 0x11)
    public static let activate = Self(rawValue: 0x12)
    public static let revoke = Self(rawValue: 0x13)
    public static let destroy = Self(rawValue: 0x14)
    public static let archive = Self(rawValue: 0x15)
    public static let recover = Self(rawValue: 0x16)
    public static let validate = Self(rawValue: 0x17)
    public static let query = Self(rawValue: 0x18)
    public static let cancel = Self(rawValue: 0x19)
    public static let poll = Self(rawValue: 0x1A)
    public static let notify = Self(rawValue: 0x1B)
    public static let put = Self(rawValue: 0x1C)
    public static let rekeyKeyPair = Self(rawValue: 0x1D)
    public static let discoverVersions = Self(rawValue: 0x1E)
    public static let encrypt = Self(rawValue: 0x1F)
    public static let decrypt = Self(rawValue: 0x20)
    public static let sign = Self(rawValue: 0x21)
    public static let signatureVerify = Self(rawValue: 0x22)
    public static let mac = Self(rawValue: 0x23)
    public static let macVerify = Self(rawValue: 0x24)
    public static let rngRetrieve = Self(rawValue: 0x25)
    public static let rngSeed = Self(rawValue: 0x26)
    public static let hash = Self(rawValue: 0x27)
    public static let createSplitKey = Self(rawValue: 0x28)
    public static let joinSplitKey = Self(rawValue: 0x29)
    public static let `import` = Self(rawValue: 0x2A)
    public static let export = Self(rawValue: 0x2B)

    public static let names: [UInt32: String] = [
        0x1: "Create",
        0x2: "Create Key Pair",
        0x3: "Register",
        0x4: "Re-key",
        0x5: "Derive Key",
        0x6: "Certify",
        0x7: "Re-certify",
        0x8: "Locate",
        0x9: "Check",
        0xA: "Get",
        0xB: "Get Attributes",
        0xC: "Get Attribute List",
        0xD: "Add Attribute",
        0xE: "Modify Attribute",
        0xF: "Delete Attribute",
        0x10: "Obtain Lease",
        0x11: "Get Usage Allocation",
        0x12: "Activate",
        0x13: "Revoke",
        0x14: "Destroy",
        0x15: "Archive",
        0x16: "Recover",
        0x17: "Validate",
        0x18: "Query",
        0x19: "Cancel",
        0x1A: "Poll",
        0x1B: "Notify",
        0x1C: "Put",
        0x1D: "Re-key Key Pair",
        0x1E: "Discover Versions",
        0x1F: "Encrypt",
        0x20: "Decrypt",
        0x21: "Sign",
        0x22: "Signature Verify",
        0x23: "MAC",
        0x24: "MAC Verify",
        0x25: "RNG Retrieve",
        0x26: "RNG Seed",
        0x27: "Hash",
        0x28: "Create Split Key",
        0x29: "Join Split Key",
        0x2A: "Import",
        0x2B: "Export",
    ]
}

/// The Result Status of a response batch item.
public struct KMIPResultStatus: KMIPEnumeration {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let success = Self(rawValue: 0x0)
    public static let operationFailed = Self(rawValue: 0x1)
    public static let operationPending = Self(rawValue: 0x2)
    public static let operationUndone = Self(rawValue: 0x3)

    public static let names: [UInt32: String] = [
        0x0: "Success",
        0x1: "Operation Failed",
        0x2: "Operation Pending",
        0x3: "Operation Undone",
    ]
}

/// The Result Reason of a failed batch item.
public struct KMIPResultReason: KMIPEnumeration {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let itemNotFound = Self(rawValue: 0x1)
    public static let responseTooLarge = Self(rawValue: 0x2)
    public static let authenticationNotSuccessful = Self(rawValue: 0x3)
    public static let invalidMessage = Self(rawValue: 0x4)
    public static let operationNotSupported = Self(rawValue: 0x5)
    public static let missingData = Self(rawValue: 0x6)
    public static let invalidField = Self(rawValue: 0x7)
    public static let featureNotSupported = Self(rawValue: 0x8)
    public static let operationCanceledByRequester = Self(rawValue: 0x9)
    public static let cryptographicFailure = Self(rawValue: 0xA)
    public static let illegalOperation = Self(rawValue: 0xB)
    public static let permissionDenied = Self(rawValue: 0xC)
    public static let objectArchived = Self(rawValue: 0xD)
    public static let indexOutOfBounds = Self(rawValue: 0xE)
    public static let applicationNamespaceNotSupported = Self(rawValue: 0xF)
    public static let keyFormatTypeNotSupported = Self(rawValue: 0x10)
    public static let keyCompressionTypeNotSupported = Self(rawValue: 0x11)
    public static let encodingOptionError = Self(rawValue: 0x12)
    public static let keyValueNotPresent = Self(rawValue: 0x13)
    public static let attestationRequired = Self(rawValue: 0x14)
    public static let attestationFailed = Self(rawValue: 0x15)
    public static let sensitive = Self(rawValue: 0x16)
    public static let notExtractable = Self(rawValue: 0x17)
    public static let objectAlreadyExists = Self(rawValue: 0x18)
    public static let generalFailure = Self(rawValue: 0x100)

    public static let names: [UInt32: String] = [
        0x1: "Item Not Found",
        0x2: "Response Too Large",
        0x3: "Authentication Not Successful",
        0x4: "Invalid Message",
        0x5: "Operation Not Supported",
        0x6: "Missing Data",
        0x7: "Invalid Field",
        0x8: "Feature Not Supported",
        0x9: "Operation Canceled By Requester",
        0xA: "Cryptographic Failure",
        0xB: "Illegal Operation",
        0xC: "Permission Denied",
        0xD: "Object Archived",
        0xE: "Index Out Of Bounds",
        0xF: "Application Namespace Not Supported",
        0x10: "Key Format Type Not Supported",
        0x11: "Key Compression Type Not Supported",
        0x12: "Encoding Option Error",
        0x13: "Key Value Not Present",
        0x14: "Attestation Required",
        0x15: "Attestation Failed",
        0x16: "Sensitive",
        0x17: "Not Extractable",
        0x18: "Object Already Exists",
        0x100: "General Failure",
    ]
}

/// The Object Type enumeration.
public struct KMIPObjectType: KMIPEnumeration {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let certificate = Self(rawValue: 0x1)
    public static let symmetricKey = Self(rawValue: 0x2)
    public static let publicKey = Self(rawValue: 0x3)
    public static let privateKey = Self(rawValue: 0x4)
    public static let splitKey = Self(rawValue: 0x5)
    public static let template = Self(rawValue: 0x6)
    public static let secretData = Self(rawValue: 0x7)
    public static let opaqueObject = Self(rawValue: 0x8)
    public static let pgpKey = Self(rawValue: 0x9)

    public static let names: [UInt32: String] = [
        0x1: "Certificate",
        0x2: "Symmetric Key",
        0x3: "Public Key",
        0x4: "Private Key",
        0x5: "Split Key",
        0x6: "Template",
        0x7: "Secret Data",
        0x8: "Opaque Object",
        0x9: "PGP Key",
    ]
}

/// An object's life-cycle State.
public struct KMIPState: KMIPEnumeration {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let preActive = Self(rawValue: 0x1)
    public static let active = Self(rawValue: 0x2)
    public static let deactivated = Self(rawValue: 0x3)
    public static let compromised = Self(rawValue: 0x4)
    public static let destroyed = Self(rawValue: 0x5)
    public static let destroyedCompromised = Self(rawValue: 0x6)

    public static let names: [UInt32: String] = [
        0x1: "Pre-Active",
        0x2: "Active",
        0x3: "Deactivated",
        0x4: "Compromised",
        0x5: "Destroyed",
        0x6: "Destroyed Compromised",
    ]
}

/// The Cryptographic Algorithm enumeration (KMIP 1.0 to 1.4 values).
public struct KMIPCryptographicAlgorithm: KMIPEnumeration {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let des = Self(rawValue: 0x1)
    public static let tripleDES = Self(rawValue: 0x2)
    public static let aes = Self(rawValue: 0x3)
    public static let rsa = Self(rawValue: 0x4)
    public static let dsa = Self(rawValue: 0x5)
    public static let ecdsa = Self(rawValue: 0x6)
    public static let hmacSHA1 = Self(rawValue: 0x7)
    public static let hmacSHA224 = Self(rawValue: 0x8)
    public static let hmacSHA256 = Self(rawValue: 0x9)
    public static let hmacSHA384 = Self(rawValue: 0xA)
    public static let hmacSHA512 = Self(rawValue: 0xB)
    public static let hmacMD5 = Self(rawValue: 0xC)
    public static let dh = Self(rawValue: 0xD)
    public static let ecdh = Self(rawValue: 0xE)
    public static let ecmqv = Self(rawValue: 0xF)
    public static let blowfish = Self(rawValue: 0x10)
    public static let camellia = Self(rawValue: 0x11)
    public static let cast5 = Self(rawValue: 0x12)
    public static let idea = Self(rawValue: 0x13)
    public static let mars = Self(rawValue: 0x14)
    public static let rc2 = Self(rawValue: 0x15)
    public static let rc4 = Self(rawValue: 0x16)
    public static let rc5 = Self(rawValue: 0x17)
    public static let skipjack = Self(rawValue: 0x18)
    public static let twofish = Self(rawValue: 0x19)
    public static let ec = Self(rawValue: 0x1A)
    public static let oneTimePad = Self(rawValue: 0x1B)
    public static let chaCha20 = Self(rawValue: 0x1C)
    public static let poly1305 = Self(rawValue: 0x1D)
    public static let chaCha20Poly1305 = Self(rawValue: 0x1E)
    public static let sha3_224 = Self(rawValue: 0x1F)
    public static let sha3_256 = Self(rawValue: 0x20)
    public static let sha3_384 = Self(rawValue: 0x21)
    public static let sha3_512 = Self(rawValue: 0x22)
    public static let hmacSHA3_224 = Self(rawValue: 0x23)
    public static let hmacSHA3_256 = Self(rawValue: 0x24)
    public static let hmacSHA3_384 = Self(rawValue: 0x25)
    public static let hmacSHA3_512 = Self(rawValue: 0x26)
    public static let shake128 = Self(rawValue: 0x27)
    public static let shake256 = Self(rawValue: 0x28)

    public static let names: [UInt32: String] = [
        0x1: "DES",
        0x2: "3DES",
        0x3: "AES",
        0x4: "RSA",
        0x5: "DSA",
        0x6: "ECDSA",
        0x7: "HMAC-SHA1",
        0x8: "HMAC-SHA224",
        0x9: "HMAC-SHA256",
        0xA: "HMAC-SHA384",
        0xB: "HMAC-SHA512",
        0xC: "HMAC-MD5",
        0xD: "DH",
        0xE: "ECDH",
        0xF: "ECMQV",
        0x10: "Blowfish",
        0x11: "Camellia",
        0x12: "CAST5",
        0x13: "IDEA",
        0x14: "MARS",
        0x15: "RC2",
        0x16: "RC4",
        0x17: "RC5",
        0x18: "SKIPJACK",
        0x19: "Twofish",
        0x1A: "EC",
        0x1B: "One Time Pad",
        0x1C: "ChaCha20",
        0x1D: "Poly1305",
        0x1E: "ChaCha20Poly1305",
        0x1F: "SHA3-224",
        0x20: "SHA3-256",
        0x21: "SHA3-384",
        0x22: "SHA3-512",
        0x23: "HMAC-SHA3-224",
        0x24: "HMAC-SHA3-256",
        0x25: "HMAC-SHA3-384",
        0x26: "HMAC-SHA3-512",
        0x27: "SHAKE-128",
        0x28: "SHAKE-256",
    ]
}

/// The Key Format Type of a Key Block.
public struct KMIPKeyFormatType: KMIPEnumeration {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let raw = Self(rawValue: 0x1)
    public static let opaque = Self(rawValue: 0x2)
    public static let pkcs1 = Self(rawValue: 0x3)
    public static let pkcs8 = Self(rawValue: 0x4)
    public static let x509 = Self(rawValue: 0x5)
    public static let ecPrivateKey = Self(rawValue: 0x6)
    public static let transparentSymmetricKey = Self(rawValue: 0x7)
    public static let transparentDSAPrivateKey = Self(rawValue: 0x8)
    public static let transparentDSAPublicKey = Self(rawValue: 0x9)
    public static let transparentRSAPrivateKey = Self(rawValue: 0xA)
    public static let transparentRSAPublicKey = Self(rawValue: 0xB)
    public static let transparentDHPrivateKey = Self(rawValue: 0xC)
    public static let transparentDHPublicKey = Self(rawValue: 0xD)
    public static let transparentECDSAPrivateKey = Self(rawValue: 0xE)
    public static let transparentECDSAPublicKey = Self(rawValue: 0xF)
    public static let transparentECDHPrivateKey = Self(rawValue: 0x10)
    public static let transparentECDHPublicKey = Self(rawValue: 0x11)
    public static let transparentECMQVPrivateKey = Self(rawValue: 0x12)
    public static let transparentECMQVPublicKey = Self(rawValue: 0x13)
    public static let transparentECPrivateKey = Self(rawValue: 0x14)
    public static let transparentECPublicKey = Self(rawValue: 0x15)
    public static let pkcs12 = Self(rawValue: 0x16)

    public static let names: [UInt32: String] = [
        0x1: "Raw",
        0x2: "Opaque",
        0x3: "PKCS#1",
        0x4: "PKCS#8",
        0x5: "X.509",
        0x6: "ECPrivateKey",
        0x7: "Transparent Symmetric Key",
        0x8: "Transparent DSA Private Key",
        0x9: "Transparent DSA Public Key",
        0xA: "Transparent RSA Private Key",
        0xB: "Transparent RSA Public Key",
        0xC: "Transparent DH Private Key",
        0xD: "Transparent DH Public Key",
        0xE: "Transparent ECDSA Private Key",
        0xF: "Transparent ECDSA Public Key",
        0x10: "Transparent ECDH Private Key",
        0x11: "Transparent ECDH Public Key",
        0x12: "Transparent ECMQV Private Key",
        0x13: "Transparent ECMQV Public Key",
        0x14: "Transparent EC Private Key",
        0x15: "Transparent EC Public Key",
        0x16: "PKCS#12",
    ]
}

/// The Secret Data Type of a Secret Data object.
public struct KMIPSecretDataType: KMIPEnumeration {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let password = Self(rawValue: 0x1)
    public static let seed = Self(rawValue: 0x2)

    public static let names: [UInt32: String] = [
        0x1: "Password",
        0x2: "Seed",
    ]
}

/// The Name Type of a Name attribute.
public struct KMIPNameType: KMIPEnumeration {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let uninterpretedTextString = Self(rawValue: 0x1)
    public static let uri = Self(rawValue: 0x2)

    public static let names: [UInt32: String] = [
        0x1: "Uninterpreted Text String",
        0x2: "URI",
    ]
}

/// The Revocation Reason Code of a Revoke request.
public struct KMIPRevocationReasonCode: KMIPEnumeration {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let unspecified = Self(rawValue: 0x1)
    public static let keyCompromise = Self(rawValue: 0x2)
    public static let caCompromise = Self(rawValue: 0x3)
    public static let affiliationChanged = Self(rawValue: 0x4)
    public static let superseded = Self(rawValue: 0x5)
    public static let cessationOfOperation = Self(rawValue: 0x6)
    public static let privilegeWithdrawn = Self(rawValue: 0x7)

    public static let names: [UInt32: String] = [
        0x1: "Unspecified",
        0x2: "Key Compromise",
        0x3: "CA Compromise",
        0x4: "Affiliation Changed",
        0x5: "Superseded",
        0x6: "Cessation of Operation",
        0x7: "Privilege Withdrawn",
    ]
}

/// What a Query asks the server for.
public struct KMIPQueryFunction: KMIPEnumeration {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let queryOperations = Self(rawValue: 0x1)
    public static let queryObjects = Self(rawValue: 0x2)
    public static let queryServerInformation = Self(rawValue: 0x3)
    public static let queryApplicationNamespaces = Self(rawValue: 0x4)
    public static let queryExtensionList = Self(rawValue: 0x5)
    public static let queryExtensionMap = Self(rawValue: 0x6)
    public static let queryAttestationTypes = Self(rawValue: 0x7)
    public static let queryRNGs = Self(rawValue: 0x8)
    public static let queryValidations = Self(rawValue: 0x9)
    public static let queryProfiles = Self(rawValue: 0xA)
    public static let queryCapabilities = Self(rawValue: 0xB)
    public static let queryClientRegistrationMethods = Self(rawValue: 0xC)

    public static let names: [UInt32: String] = [
        0x1: "Query Operations",
        0x2: "Query Objects",
        0x3: "Query Server Information",
        0x4: "Query Application Namespaces",
        0x5: "Query Extension List",
        0x6: "Query Extension Map",
        0x7: "Query Attestation Types",
        0x8: "Query RNGs",
        0x9: "Query Validations",
        0xA: "Query Profiles",
        0xB: "Query Capabilities",
        0xC: "Query Client Registration Methods",
    ]
}

/// What the server does after a failed batch item (Stop when not sent).
public struct KMIPBatchErrorContinuationOption: KMIPEnumeration {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let `continue` = Self(rawValue: 0x1)
    public static let stop = Self(rawValue: 0x2)
    public static let undo = Self(rawValue: 0x3)

    public static let names: [UInt32: String] = [
        0x1: "Continue",
        0x2: "Stop",
        0x3: "Undo",
    ]
}

/// The Cryptographic Usage Mask attribute: a bit mask, sent as an Integer.
public struct KMIPUsageMask: OptionSet, Hashable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let sign = Self(rawValue: 0x1)
    public static let verify = Self(rawValue: 0x2)
    public static let encrypt = Self(rawValue: 0x4)
    public static let decrypt = Self(rawValue: 0x8)
    public static let wrapKey = Self(rawValue: 0x10)
    public static let unwrapKey = Self(rawValue: 0x20)
    public static let export = Self(rawValue: 0x40)
    public static let macGenerate = Self(rawValue: 0x80)
    public static let macVerify = Self(rawValue: 0x100)
    public static let deriveKey = Self(rawValue: 0x200)
    public static let contentCommitment = Self(rawValue: 0x400)
    public static let keyAgreement = Self(rawValue: 0x800)
    public static let certificateSign = Self(rawValue: 0x1000)
    public static let crlSign = Self(rawValue: 0x2000)
    public static let generateCryptogram = Self(rawValue: 0x4000)
    public static let validateCryptogram = Self(rawValue: 0x8000)
    public static let translateEncrypt = Self(rawValue: 0x1_0000)
    public static let translateDecrypt = Self(rawValue: 0x2_0000)
    public static let translateWrap = Self(rawValue: 0x4_0000)
    public static let translateUnwrap = Self(rawValue: 0x8_0000)
}

/// A KMIP protocol version. Requests built here use the KMIP 1.x layouts, so send one of
/// `supported`; parsing accepts any version a server names.
public struct KMIPVersion: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var major: Int32
    public var minor: Int32

    public init(major: Int32, minor: Int32) {
        self.major = major
        self.minor = minor
    }

    public static let v1_0 = KMIPVersion(major: 1, minor: 0)
    public static let v1_1 = KMIPVersion(major: 1, minor: 1)
    public static let v1_2 = KMIPVersion(major: 1, minor: 2)
    public static let v1_3 = KMIPVersion(major: 1, minor: 3)
    public static let v1_4 = KMIPVersion(major: 1, minor: 4)

    /// Newest first: the order Discover Versions lists a client's preference in.
    public static let supported: [KMIPVersion] = [.v1_4, .v1_3, .v1_2, .v1_1, .v1_0]

    public static func < (a: KMIPVersion, b: KMIPVersion) -> Bool { (a.major, a.minor) < (b.major, b.minor) }

    public var description: String { "\(major).\(minor)" }
}
