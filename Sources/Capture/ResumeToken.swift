import Archive
import BSON

/// Reads the cluster time out of a change stream resume token (see `ClusterTime(resumeTokenData:)`).
public enum ResumeToken {
    public static func clusterTime(_ token: Document) -> Timestamp? {
        token["_data"]?.stringValue.flatMap { ClusterTime(resumeTokenData: $0) }
    }
}
