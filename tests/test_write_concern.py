"""FITKART_WRITE_CONCERN=auto: majority against a replica set or sharded cluster, 1 against a standalone server.

The choice is a pure function of the server's `hello` reply (`write_concern_for`), checked here against
replies as MongoDB 7 gives them, and against the live test server. No test runs a replica set, so a
failover itself is not exercised.
"""

import datetime

import pymongo
import pytest
from bson import ObjectId, Timestamp

from fitkart_server.storage.store import write_concern_for

NOW = datetime.datetime(2025, 12, 19, 14, 24, tzinfo=datetime.UTC)
COMMON = {"maxBsonObjectSize": 16777216, "maxMessageSizeBytes": 48000000, "maxWriteBatchSize": 100000,
          "localTime": NOW, "logicalSessionTimeoutMinutes": 30, "connectionId": 7, "minWireVersion": 0,
          "maxWireVersion": 21, "readOnly": False, "ok": 1.0}
# `mongod` run alone (FerretDB answers the same, without topologyVersion).
STANDALONE = {"isWritablePrimary": True, "topologyVersion": {"processId": ObjectId(), "counter": 0}, **COMMON}
# The primary of replica set rs0 (what pymongo's admin command reaches).
REPLICA_SET_PRIMARY = {
    "topologyVersion": {"processId": ObjectId(), "counter": 6}, "hosts": ["db1:27017", "db2:27017", "db3:27017"],
    "setName": "rs0", "setVersion": 1, "isWritablePrimary": True, "secondary": False, "primary": "db1:27017",
    "me": "db1:27017", "electionId": ObjectId("7fffffff0000000000000001"),
    "lastWrite": {"opTime": {"ts": Timestamp(1766154240, 1), "t": 1}, "lastWriteDate": NOW,
                  "majorityOpTime": {"ts": Timestamp(1766154240, 1), "t": 1}, "majorityWriteDate": NOW},
    **COMMON, "$clusterTime": {"clusterTime": Timestamp(1766154240, 1)}, "operationTime": Timestamp(1766154240, 1)}
# A mongos in front of a sharded cluster: no setName, but msg "isdbgrid".
MONGOS = {"isWritablePrimary": True, "msg": "isdbgrid", "topologyVersion": {"processId": ObjectId(), "counter": 0},
          **COMMON}


@pytest.mark.parametrize(("hello", "expected"), [
    (STANDALONE, {"w": 1}), (REPLICA_SET_PRIMARY, {"w": "majority"}), (MONGOS, {"w": "majority"})],
    ids=["standalone", "replica-set-primary", "mongos"])
def test_auto_follows_what_the_server_says_it_is(hello, expected):
    """auto: majority where hello names a replica set (setName) or a mongos (isdbgrid), else 1."""
    assert write_concern_for("auto", hello).document == expected


@pytest.mark.parametrize(("setting", "expected"), [("majority", {"w": "majority"}), ("1", {"w": 1}),
                                                   ("2", {"w": 2})])
@pytest.mark.parametrize("hello", [STANDALONE, REPLICA_SET_PRIMARY, MONGOS], ids=["standalone", "rs", "mongos"])
def test_a_set_write_concern_is_used_whatever_the_server(hello, setting, expected):
    """An explicit FITKART_WRITE_CONCERN is taken as it is: a number as a count of members, else as a name."""
    assert write_concern_for(setting, hello).document == expected


def test_the_live_server_gets_what_its_hello_reply_calls_for(make_app, database_uri, decimal_mode):
    """The store asks the real server and applies the function's answer: 1 on the standalone test server."""
    with pymongo.MongoClient(database_uri, serverSelectionTimeoutMS=2000) as client:
        hello = client.admin.command("hello")
    replicated = bool(hello.get("setName")) or hello.get("msg") == "isdbgrid"
    app = make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE=decimal_mode, FITKART_WRITE_CONCERN="auto")
    chosen = app.extensions["fitkart_store"].database().write_concern.document
    assert chosen == write_concern_for("auto", hello).document == ({"w": "majority"} if replicated else {"w": 1})
