import BSON
import Digest

/// Reads the cluster time out of a change stream resume token. The `_data` string is a
/// hex KeyString whose first value is the event's timestamp: type byte 0x82, then the
/// seconds and increment as big-endian 32-bit integers.
public enum ResumeToken {
    public static func clusterTime(_ token: Document) -> Timestamp? {
        guard let hex = token["_data"]?.stringValue, hex.count >= 18,
              let bytes = [UInt8](hex: String(hex.prefix(18))), bytes[0] == 0x82 else { return nil }
        let t = bytes[1..<5].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        let i = bytes[5..<9].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        return Timestamp(t: t, i: i)
    }
}
