"""Admin helper for ops/mongod.sh: initiate a single-node replica set and wait for primary."""
import sys
import time

from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError


def initiate(port: int, name: str) -> None:
    client = MongoClient(f"mongodb://127.0.0.1:{port}/?directConnection=true",
                         serverSelectionTimeoutMS=30000)
    try:
        client.admin.command("replSetInitiate", {
            "_id": name, "members": [{"_id": 0, "host": f"127.0.0.1:{port}"}]})
    except OperationFailure as e:
        if e.code != 23:  # AlreadyInitialized
            raise
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if client.admin.command("hello").get("isWritablePrimary"):
                print(f"replica set {name} on port {port} is primary", file=sys.stderr)
                return
        except PyMongoError:
            pass
        time.sleep(0.2)
    sys.exit(f"replica set {name} on port {port} did not become primary within 60 s")


if __name__ == "__main__":
    if sys.argv[1] == "initiate":
        initiate(int(sys.argv[2]), sys.argv[3])
    else:
        sys.exit(f"unknown command {sys.argv[1]}")
