"""The independent side of the CSFLE interop test: pymongo with libmongocrypt (pymongocrypt).

  read-sealed URI DB KEYVAULT_NS MASTER_KEY_FILE    print the users, decrypted automatically, as JSON
  write-explicit URI DB KEYVAULT_NS MASTER_KEY_FILE encrypt two values explicitly and store them
  read-sealed-kmip URI DB KEYVAULT_NS KMIP_ENDPOINT CA_FILE CLIENT_PEM
                                                    the same as read-sealed, the master key in a KMIP server
"""
import json
import sys

from bson.binary import STANDARD
from bson.codec_options import CodecOptions
from pymongo import MongoClient
from pymongo.encryption import Algorithm, ClientEncryption
from pymongo.encryption_options import AutoEncryptionOpts


def kms(master_key_file):
    with open(master_key_file, "rb") as f:
        return {"local": {"key": f.read()}}


def read_sealed(uri, db, kv_ns, key_file, opts=None):
    opts = opts or AutoEncryptionOpts(kms(key_file), kv_ns, bypass_auto_encryption=True)
    client = MongoClient(uri, auto_encryption_opts=opts)
    out = []
    for d in client[db].users.find({}, sort=[("_id", 1)]).limit(5):
        out.append({"_id": d["_id"], "name": d.get("name"), "email": d.get("email"), "ssn": d.get("ssn"),
                    "street": d.get("address", {}).get("street"), "card": d.get("orders", [{}])[0].get("card")})
    print(json.dumps(out))


def write_explicit(uri, db, kv_ns, key_file):
    client = MongoClient(uri)
    ce = ClientEncryption(kms(key_file), kv_ns, client, CodecOptions(uuid_representation=STANDARD))
    key_id = ce.create_data_key("local", key_alt_names=["pymongo-interop-key"])
    det = ce.encrypt("PYCANARY-DETERMINISTIC", Algorithm.AEAD_AES_256_CBC_HMAC_SHA_512_Deterministic, key_id=key_id)
    rnd = ce.encrypt("PYCANARY-RANDOM", Algorithm.AEAD_AES_256_CBC_HMAC_SHA_512_Random, key_alt_name="pymongo-interop-key")
    client[db].pyenc.insert_one({"_id": 1, "det": det, "rnd": rnd, "plain": "visible"})
    print(json.dumps({"keyId": key_id.hex()}))


def read_sealed_kmip(uri, db, kv_ns, endpoint, ca_file, client_pem):
    opts = AutoEncryptionOpts({"kmip": {"endpoint": endpoint}}, kv_ns, bypass_auto_encryption=True,
                              kms_tls_options={"kmip": {"tlsCAFile": ca_file, "tlsCertificateKeyFile": client_pem}})
    read_sealed(uri, db, kv_ns, None, opts)


if __name__ == "__main__":
    if sys.argv[1] == "read-sealed-kmip":
        read_sealed_kmip(*sys.argv[2:8])
    else:
        {"read-sealed": read_sealed, "write-explicit": write_explicit}[sys.argv[1]](*sys.argv[2:6])
