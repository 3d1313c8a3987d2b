"""What the database itself does with the server's work: the mix's writes as raw pymongo calls.

Every ceiling writes the documents bench/mix.py generates into the server's own database and
collections (cart_items, profiles, orders, with the indexes the server made), so it meets the
same collection sizes as the server does in the rounds it alternates with.
"""

from collections.abc import Callable

from pymongo import InsertOne, ReturnDocument, UpdateOne
from pymongo.database import Database
from pymongo.errors import BulkWriteError, ConnectionFailure, PyMongoError

from bench.load import BATCH_SIZE, Tally
from bench.mix import KEY_FIELD, CartPool, Mix, cart_row, new_id, provenance, stored_fields


def counted(units: int, operation: Callable[[], int]) -> Tally:
    """Run a write of `units` documents (it returns how many it did); failures counted, never raised."""
    try:
        done = operation()
    except BulkWriteError as error:
        details = error.details
        done = details.get("nInserted", 0) + details.get("nMatched", 0) + details.get("nUpserted", 0)
        return done, units - done, 0, 0
    except ConnectionFailure:
        return 0, 0, units, 0
    except PyMongoError:
        return 0, units, 0, 0
    return done, units - done, 0, 0


def update_one_step(database: Database, seed: int) -> Callable[[], Tally]:
    """Ceiling A: each mix request as one update_one(upsert) by `_id` (the server's key), or delete_one."""
    mix = Mix(seed)

    def step() -> Tally:
        request = mix.next()
        collection = database[request.collection]

        def write() -> int:
            if request.body is None:
                collection.delete_one({"_id": request.key})
            else:
                collection.update_one({"_id": request.key}, {"$set": stored_fields(request.body)}, upsert=True)
            return 1

        return counted(1, write)

    return step


def express_step(database: Database, seed: int) -> Callable[[], Tally]:
    """Yardstick B, the shop's old Express design: one find_one_and_update(upsert) on the key, no validation."""
    mix = Mix(seed)

    def step() -> Tally:
        request = mix.next()
        collection = database[request.collection]
        key = {KEY_FIELD[request.collection]: request.key}

        def write() -> int:
            if request.body is None:
                collection.find_one_and_delete(key)
            else:
                collection.find_one_and_update(key, {"$set": request.body}, upsert=True,
                                               return_document=ReturnDocument.AFTER)
            return 1

        return counted(1, write)

    return step


def bulk_new_step(database: Database, pool: CartPool) -> Callable[[], Tally]:
    """Bulk ceiling for new records: the cart rows of one batch as one bulk_write of InsertOne."""
    collection = database["cart_items"]

    def step() -> Tally:
        rows = [cart_row(new_id(), 1 + n % 5) for n in range(BATCH_SIZE)]
        tally = counted(len(rows), lambda: collection.bulk_write(
            [InsertOne({"_id": row["id"], **stored_fields(row)}) for row in rows], ordered=False).inserted_count)
        if tally[0] == len(rows):
            pool.add(rows)  # stored as the server stores them: later partial updates may touch them
        return tally

    return step


def bulk_partial_step(database: Database, pool: CartPool, chunk: int = BATCH_SIZE) -> Callable[[], Tally]:
    """Bulk ceiling for partial updates: one batch's {id, quantity} as bulk_write of UpdateOne by `_id`.

    One bulk_write per batch, or per `chunk` updates where the database cannot take a whole batch at once.
    """
    collection = database["cart_items"]

    def write(updates: list[dict]) -> int:
        done = 0
        for first in range(0, len(updates), chunk):
            done += collection.bulk_write(
                [UpdateOne({"_id": update["id"]}, {"$set": {"quantity": update["quantity"], "_fitkart": provenance()}})
                 for update in updates[first:first + chunk]], ordered=False).matched_count
        return done

    def step() -> Tally:
        updates = pool.take(BATCH_SIZE)
        # A row that is not there is not updated: matched, not sent, is what counts as done.
        return counted(len(updates), lambda: write(updates))

    return step
