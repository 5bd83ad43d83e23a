import CMongoCrypt

/// libmongocrypt, the CSFLE engine. Field encryption (issue #3) builds on this module; for now
/// it proves the library is linked and reports its version.
public enum MongoCrypt {
    public static var version: String {
        var len: UInt32 = 0
        return String(cString: mongocrypt_version(&len))
    }
}
