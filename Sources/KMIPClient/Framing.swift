/// KMIP messages are TTLV items: a 3-byte tag, a 1-byte item type, a 4-byte big-endian
/// length, then the value. A whole request or response is one Structure (type 0x01), so
/// its header alone says how many bytes follow. Only that much of TTLV is known here; the
/// codec (module `KMIP`) reads the rest.
enum TTLVHeader {
    static let size = 8
    static let structure: UInt8 = 0x01

    static func type(_ header: [UInt8]) -> UInt8 { header[3] }

    static func length(_ header: [UInt8]) -> UInt32 {
        UInt32(header[4]) << 24 | UInt32(header[5]) << 16 | UInt32(header[6]) << 8 | UInt32(header[7])
    }
}

extension TLSConnection {
    /// Sends one request and reads exactly one response: the header, then the length it
    /// declares, checked against `maxResponseBytes` before anything is allocated for it.
    /// Returns header and body.
    func roundTrip(_ request: [UInt8], maxResponseBytes: Int) throws -> [UInt8] {
        try writeAll(request)
        let deadline = Deadline(milliseconds: timeoutMS)
        var header = [UInt8](repeating: 0, count: TTLVHeader.size)
        try readExactly(into: &header, from: 0, count: TTLVHeader.size, total: TTLVHeader.size, deadline: deadline)
        guard TTLVHeader.type(header) == TTLVHeader.structure else {
            markBroken()
            throw KMIPTransportError.notAStructure(server: server, type: TTLVHeader.type(header))
        }
        let length = TTLVHeader.length(header)
        guard UInt64(length) <= UInt64(maxResponseBytes) else {
            markBroken()
            throw KMIPTransportError.responseTooLarge(server: server, declared: length, limit: maxResponseBytes)
        }
        let total = TTLVHeader.size + Int(length)
        var message = [UInt8](repeating: 0, count: total)
        message.replaceSubrange(0..<TTLVHeader.size, with: header)
        try readExactly(into: &message, from: TTLVHeader.size, count: Int(length), total: total, deadline: deadline)
        return message
    }
}
