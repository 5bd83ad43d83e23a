/// A TTLV tag: three bytes on the wire. KMIP's own tags are 0x42xxxx; 0x54xxxx are
/// extensions. Tags this module has no name for still decode and encode (kept as numbers),
/// so a server that adds fields never breaks parsing.
extension TTLV {
    public struct Tag: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public let rawValue: UInt32

        /// The value must fit in 24 bits (the wire has three bytes for it).
        public init(rawValue: UInt32) {
            precondition(rawValue <= 0xFF_FFFF, "a TTLV tag has 24 bits")
            self.rawValue = rawValue
        }

        init(_ rawValue: UInt32) { self.init(rawValue: rawValue) }

        /// The specification's name, if this module knows the tag.
        public var name: String? { Tag.names[rawValue] }

        public var description: String {
            let hex = "0x" + String(rawValue, radix: 16, uppercase: true)
            return name.map { "\($0) (\(hex))" } ?? hex
        }

        // Values from the KMIP 1.0-1.4 specifications (section 9.1.3); a tag never changes between versions.
        public static let activationDate = Tag(0x420001)
        public static let applicationNamespace = Tag(0x420003)
        public static let archiveDate = Tag(0x420005)
        public static let asynchronousCorrelationValue = Tag(0x420006)
        public static let asynchronousIndicator = Tag(0x420007)
        public static let attribute = Tag(0x420008)
        public static let attributeIndex = Tag(0x420009)
        public static let attributeName = Tag(0x42000A)
        public static let attributeValue = Tag(0x42000B)
        public static let authentication = Tag(0x42000C)
        public static let batchCount = Tag(0x42000D)
        public static let batchErrorContinuationOption = Tag(0x42000E)
        /// The same tag in requests and responses.
        public static let batchItem = Tag(0x42000F)
        public static let batchOrderOption = Tag(0x420010)
        public static let compromiseDate = Tag(0x420020)
        public static let compromiseOccurrenceDate = Tag(0x420021)
        public static let cryptographicAlgorithm = Tag(0x420028)
        public static let cryptographicLength = Tag(0x42002A)
        public static let cryptographicParameters = Tag(0x42002B)
        public static let cryptographicUsageMask = Tag(0x42002C)
        public static let deactivationDate = Tag(0x42002F)
        public static let destroyDate = Tag(0x420033)
        public static let initialDate = Tag(0x420039)
        /// The key bytes inside a Transparent Symmetric Key's Key Material.
        public static let key = Tag(0x42003F)
        public static let keyBlock = Tag(0x420040)
        public static let keyCompressionType = Tag(0x420041)
        public static let keyFormatType = Tag(0x420042)
        public static let keyMaterial = Tag(0x420043)
        public static let keyValue = Tag(0x420045)
        public static let keyWrappingData = Tag(0x420046)
        public static let keyWrappingSpecification = Tag(0x420047)
        public static let lastChangeDate = Tag(0x420048)
        public static let maximumItems = Tag(0x42004F)
        public static let maximumResponseSize = Tag(0x420050)
        public static let messageExtension = Tag(0x420051)
        public static let name = Tag(0x420053)
        public static let nameType = Tag(0x420054)
        public static let nameValue = Tag(0x420055)
        public static let objectGroup = Tag(0x420056)
        public static let objectType = Tag(0x420057)
        public static let opaqueObject = Tag(0x42005B)
        public static let operation = Tag(0x42005C)
        public static let operationPolicyName = Tag(0x42005D)
        public static let privateKey = Tag(0x420064)
        public static let processStartDate = Tag(0x420067)
        public static let protectStopDate = Tag(0x420068)
        public static let protocolVersion = Tag(0x420069)
        public static let protocolVersionMajor = Tag(0x42006A)
        public static let protocolVersionMinor = Tag(0x42006B)
        public static let publicKey = Tag(0x42006D)
        public static let queryFunction = Tag(0x420074)
        public static let requestHeader = Tag(0x420077)
        public static let requestMessage = Tag(0x420078)
        public static let requestPayload = Tag(0x420079)
        public static let responseHeader = Tag(0x42007A)
        public static let responseMessage = Tag(0x42007B)
        public static let responsePayload = Tag(0x42007C)
        public static let resultMessage = Tag(0x42007D)
        public static let resultReason = Tag(0x42007E)
        public static let resultStatus = Tag(0x42007F)
        public static let revocationMessage = Tag(0x420080)
        public static let revocationReason = Tag(0x420081)
        public static let revocationReasonCode = Tag(0x420082)
        public static let secretData = Tag(0x420085)
        public static let secretDataType = Tag(0x420086)
        public static let serverInformation = Tag(0x420088)
        public static let splitKey = Tag(0x420089)
        public static let state = Tag(0x42008D)
        public static let storageStatusMask = Tag(0x42008E)
        public static let symmetricKey = Tag(0x42008F)
        public static let template = Tag(0x420090)
        public static let templateAttribute = Tag(0x420091)
        public static let timeStamp = Tag(0x420092)
        public static let uniqueBatchItemID = Tag(0x420093)
        public static let uniqueIdentifier = Tag(0x420094)
        public static let vendorIdentification = Tag(0x42009D)
        // KMIP 1.1
        public static let extensionInformation = Tag(0x4200A4)
        // KMIP 1.2
        public static let originalCreationDate = Tag(0x4200BC)
        public static let pgpKey = Tag(0x4200BD)
        // KMIP 1.3
        public static let offsetItems = Tag(0x4200D4)
        public static let locatedItems = Tag(0x4200D5)
        // KMIP 1.4
        public static let clientCorrelationValue = Tag(0x420105)
        public static let serverCorrelationValue = Tag(0x420106)

        static let names: [UInt32: String] = {
            let pairs: [(Tag, String)] = [
                (.activationDate, "Activation Date"), (.applicationNamespace, "Application Namespace"),
                (.archiveDate, "Archive Date"), (.asynchronousCorrelationValue, "Asynchronous Correlation Value"),
                (.asynchronousIndicator, "Asynchronous Indicator"), (.attribute, "Attribute"),
                (.attributeIndex, "Attribute Index"), (.attributeName, "Attribute Name"),
                (.attributeValue, "Attribute Value"), (.authentication, "Authentication"),
                (.batchCount, "Batch Count"), (.batchErrorContinuationOption, "Batch Error Continuation Option"),
                (.batchItem, "Batch Item"), (.batchOrderOption, "Batch Order Option"),
                (.compromiseDate, "Compromise Date"), (.compromiseOccurrenceDate, "Compromise Occurrence Date"),
                (.cryptographicAlgorithm, "Cryptographic Algorithm"), (.cryptographicLength, "Cryptographic Length"),
                (.cryptographicParameters, "Cryptographic Parameters"),
                (.cryptographicUsageMask, "Cryptographic Usage Mask"), (.deactivationDate, "Deactivation Date"),
                (.destroyDate, "Destroy Date"), (.initialDate, "Initial Date"), (.key, "Key"),
                (.keyBlock, "Key Block"), (.keyCompressionType, "Key Compression Type"),
                (.keyFormatType, "Key Format Type"), (.keyMaterial, "Key Material"), (.keyValue, "Key Value"),
                (.keyWrappingData, "Key Wrapping Data"), (.keyWrappingSpecification, "Key Wrapping Specification"),
                (.lastChangeDate, "Last Change Date"), (.maximumItems, "Maximum Items"),
                (.maximumResponseSize, "Maximum Response Size"), (.messageExtension, "Message Extension"),
                (.name, "Name"), (.nameType, "Name Type"), (.nameValue, "Name Value"),
                (.objectGroup, "Object Group"), (.objectType, "Object Type"), (.opaqueObject, "Opaque Object"),
                (.operation, "Operation"), (.operationPolicyName, "Operation Policy Name"),
                (.privateKey, "Private Key"), (.processStartDate, "Process Start Date"),
                (.protectStopDate, "Protect Stop Date"), (.protocolVersion, "Protocol Version"),
                (.protocolVersionMajor, "Protocol Version Major"), (.protocolVersionMinor, "Protocol Version Minor"),
                (.publicKey, "Public Key"), (.queryFunction, "Query Function"),
                (.requestHeader, "Request Header"), (.requestMessage, "Request Message"),
                (.requestPayload, "Request Payload"), (.responseHeader, "Response Header"),
                (.responseMessage, "Response Message"), (.responsePayload, "Response Payload"),
                (.resultMessage, "Result Message"), (.resultReason, "Result Reason"),
                (.resultStatus, "Result Status"), (.revocationMessage, "Revocation Message"),
                (.revocationReason, "Revocation Reason"), (.revocationReasonCode, "Revocation Reason Code"),
                (.secretData, "Secret Data"), (.secretDataType, "Secret Data Type"),
                (.serverInformation, "Server Information"), (.splitKey, "Split Key"), (.state, "State"),
                (.storageStatusMask, "Storage Status Mask"), (.symmetricKey, "Symmetric Key"),
                (.template, "Template"), (.templateAttribute, "Template-Attribute"), (.timeStamp, "Time Stamp"),
                (.uniqueBatchItemID, "Unique Batch Item ID"), (.uniqueIdentifier, "Unique Identifier"),
                (.vendorIdentification, "Vendor Identification"), (.extensionInformation, "Extension Information"),
                (.originalCreationDate, "Original Creation Date"), (.pgpKey, "PGP Key"),
                (.offsetItems, "Offset Items"), (.locatedItems, "Located Items"),
                (.clientCorrelationValue, "Client Correlation Value"),
                (.serverCorrelationValue, "Server Correlation Value"),
            ]
            return Dictionary(pairs.map { ($0.0.rawValue, $0.1) }, uniquingKeysWith: { first, _ in first })
        }()
    }
}
