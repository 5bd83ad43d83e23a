import BSON
import FieldCrypto
import Mongo

/// Moves CSFLE key documents between a key vault file and a MongoDB key vault collection.
/// The documents stay wrapped by the master key; nothing is unwrapped on the way.
public enum KeyTransfer {
    public static func export(_ vault: any KeyVault, to connection: ConnectionString, namespace: Namespace) throws -> Int {
        let client = try Client(connection)
        let bulk = client.collection(namespace).bulk(ordered: true)
        let keys = try vault.allKeys()
        for k in keys {
            guard let id = k["_id"] else { continue }
            try bulk.replaceOne(Document(["_id": id]), with: k, upsert: true)
        }
        try bulk.execute()
        return keys.count
    }

    public static func `import`(from connection: ConnectionString, namespace: Namespace, into vault: any KeyVault) throws -> Int {
        let client = try Client(connection)
        let have = Set(try vault.allKeys().compactMap { try? DataKeyInfo($0).id })
        var added = 0
        for k in try client.collection(namespace).find().all() {
            let info = try DataKeyInfo(k)
            if have.contains(info.id) { continue }
            try vault.insert(k)
            added += 1
        }
        return added
    }
}
