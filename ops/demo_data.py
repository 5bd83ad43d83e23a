"""Demo data for ops/demo.sh: seed a small shop database, and compare two databases."""
import datetime
import random
import sys

from bson import Decimal128
from pymongo import MongoClient


def seed(uri: str) -> None:
    client = MongoClient(uri)
    client.drop_database("shop")
    db = client.shop
    rng = random.Random(42)
    users = []
    for i in range(2000):
        users.append({
            "_id": i, "userId": f"u{i:05d}", "name": f"Customer {i}", "email": f"customer{i}@example.com",
            "ssn": f"{rng.randint(100, 999)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}",
            "address": {"street": f"{rng.randint(1, 999)} Main St", "city": "Springfield", "zip": f"{rng.randint(10000, 99999)}"},
            "orders": [{"orderId": f"o{i}-{k}", "price": Decimal128(f"{rng.randint(1, 500)}.{rng.randint(0, 99):02d}")}
                       for k in range(rng.randint(0, 3))],
        })
    db.users.insert_many(users)
    db.users.create_index("email", unique=True)
    db.users.create_index([("address.zip", 1), ("name", 1)])
    db.create_collection("events", capped=True, size=1 << 20)
    db.events.insert_many([{"n": i, "kind": "login"} for i in range(500)])
    db.create_collection("metrics", timeseries={"timeField": "t", "metaField": "host"})
    start = datetime.datetime(2026, 1, 1)
    db.metrics.insert_many([{"t": start + datetime.timedelta(minutes=i), "host": f"h{i % 3}", "cpu": i % 100} for i in range(1000)])
    db.create_collection("big_spenders", viewOn="users", pipeline=[{"$match": {"orders.2": {"$exists": True}}}])
    print("seeded shop: 2000 users, 500 capped events, 1000 time series measurements, 1 view")


def compare(uri: str, a: str, b: str) -> None:
    client = MongoClient(uri)
    ok = True
    for info in client[a].list_collections():
        name = info["name"]
        if name.startswith("system."):
            continue
        other = next(client[b].list_collections(filter={"name": name}), None)
        same_opts = other is not None and other.get("options") == info.get("options")
        sort = None if info.get("options", {}).get("capped") else [("_id", 1)]
        if info["type"] == "timeseries":
            sort = [("t", 1)]
        docs_a = list(client[a][name].find({}, {"_id": 0} if info["type"] == "timeseries" else None, sort=sort))
        docs_b = list(client[b][name].find({}, {"_id": 0} if info["type"] == "timeseries" else None, sort=sort))
        idx_a = list(client[a][name].list_indexes()) if info["type"] != "view" else []
        idx_b = list(client[b][name].list_indexes()) if info["type"] != "view" else []
        same = same_opts and docs_a == docs_b and idx_a == idx_b
        ok &= same
        print(f"  {name:14} {info['type']:10} {len(docs_a):5} documents  {len(idx_a)} indexes  {'MATCH' if same else 'DIFFERENT'}")
    print("databases match" if ok else "databases DIFFER")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    if sys.argv[1] == "seed":
        seed(sys.argv[2])
    else:
        compare(sys.argv[2], sys.argv[3], sys.argv[4])
