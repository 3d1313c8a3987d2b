"""Who may read and write which rows: the shop's row-level security, mirrored.

Plain Python like the engine that calls it. Every check sees the stored record as well
as the payload, so a write that names someone else's record by `id` is refused, not a
takeover. As under Supabase's row-level security, another user's rows are invisible: a
read or a delete of one answers as if it did not exist, and every write the rules refuse
gets the one answer, whether the row it names is someone else's, its owner field is, or
a unique value it holds is taken by a row the caller cannot see (docs/security.md).
"""

from dataclasses import dataclass

from pymongo.database import Database

SERVICE_ROLE = "service_role"
AUTHENTICATED = "authenticated"
ANON = "anon"


@dataclass(frozen=True)
class Caller:
    """Who sent a request: a Supabase role and, for signed-in users, their id (`sub`)."""

    role: str
    user_id: str | None = None

    @property
    def is_service(self) -> bool:
        """Full rights: the service_role key, or a loopback client when auth is off."""
        return self.role == SERVICE_ROLE

    @property
    def is_user(self) -> bool:
        """A signed-in shop user."""
        return self.role == AUTHENTICATED and self.user_id is not None


SERVICE = Caller(SERVICE_ROLE)


class Forbidden(Exception):
    """The caller is known but may not do this."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# One answer for every write the ownership rule refuses, so it never says whether another user's row exists.
NOT_YOURS = "The row-level rules refuse this change: a user writes only their own records, under their own id."


class OwnRows:
    """profiles, cart_items, wishlist_items, orders: a user reads and writes only their own rows."""

    def __init__(self, owner_field: str = "user_id") -> None:
        self.owner_field = owner_field

    def read_query(self, caller: Caller) -> dict:
        """The filter that limits reads to what the caller may see."""
        if caller.is_service:
            return {}
        if caller.is_user:
            return {self.owner_field: caller.user_id}
        raise Forbidden("Sign in to read these records.")

    def can_read(self, caller: Caller, stored: dict) -> bool:
        """Whether the caller may see the stored record (one they may not is, to them, not there)."""
        query = self.read_query(caller)
        return all(stored.get(field) == value for field, value in query.items())

    def check_writer(self, caller: Caller) -> None:
        """Only signed-in users and the service role write: asked first, before anything about a stored record."""
        if not caller.is_service:
            self._require_user(caller)

    def check_write(self, caller: Caller, values: dict, stored: dict | None, database: Database) -> None:
        """Refuse an upsert of someone else's record, or one that would move it to someone else."""
        if caller.is_service:
            return
        self._require_user(caller)
        if (stored is not None and stored.get(self.owner_field) != caller.user_id) or \
                values.get(self.owner_field, caller.user_id if stored is not None else None) != caller.user_id:
            raise Forbidden(NOT_YOURS)

    def stored_guard(self, caller: Caller, values: dict) -> dict | None:
        """What the stored record must match for `check_write` to allow `values`; None: check it on a read."""
        if caller.is_service:
            return {}
        if not caller.is_user or values.get(self.owner_field, caller.user_id) != caller.user_id:
            return None
        return {self.owner_field: caller.user_id}

    def deletable(self, caller: Caller, query: dict, found: list[dict], database: Database) -> list[dict]:
        """The records found that the caller may delete: their own (someone else's are, to them, not there)."""
        if caller.is_service:
            return found
        self._require_user(caller)
        if query.get(self.owner_field, caller.user_id) != caller.user_id:
            return []
        return [doc for doc in found if doc.get(self.owner_field) == caller.user_id]

    def names_own(self, caller: Caller, query: dict) -> bool:
        """Whether a delete's query may name a record of the caller's (one naming another owner names none)."""
        return caller.is_service or query.get(self.owner_field, caller.user_id) == caller.user_id

    def _require_user(self, caller: Caller) -> None:
        """Only signed-in users (and the service role) write."""
        if not caller.is_user:
            raise Forbidden("Sign in to change these records.")


class OwnRole(OwnRows):
    """user_roles: a user reads their own role and may create it as `customer`, nothing more."""

    def check_write(self, caller: Caller, values: dict, stored: dict | None, database: Database) -> None:
        """Allow a user their own `customer` role; `seller` is granted by the service role only."""
        super().check_write(caller, values, stored, database)
        if not caller.is_service and values.get("role", "customer") != "customer":
            raise Forbidden("Only the service role can make a user a seller.")

    def stored_guard(self, caller: Caller, values: dict) -> dict | None:
        """Only a `customer` role is written without a read (a refusal is decided on one)."""
        if not caller.is_service and values.get("role", "customer") != "customer":
            return None
        return super().stored_guard(caller, values)

    def deletable(self, caller: Caller, query: dict, found: list[dict], database: Database) -> list[dict]:
        """Roles are removed by the service role only."""
        if not caller.is_service:
            raise Forbidden("Only the service role can remove a role.")
        return found


class SellerCatalogue(OwnRows):
    """products: everyone reads them; sellers write their own (`seller_id`)."""

    def __init__(self) -> None:
        super().__init__("seller_id")

    def read_query(self, caller: Caller) -> dict:
        """The catalogue is public."""
        return {}

    def check_write(self, caller: Caller, values: dict, stored: dict | None, database: Database) -> None:
        """A seller may create and change only products whose seller_id is theirs."""
        super().check_write(caller, values, stored, database)
        if not caller.is_service:
            self._require_seller(caller, database)

    def stored_guard(self, caller: Caller, values: dict) -> dict | None:
        """A seller's write needs the mirror's user_roles read first: only the service role skips it."""
        return {} if caller.is_service else None

    def deletable(self, caller: Caller, query: dict, found: list[dict], database: Database) -> list[dict]:
        """A seller may delete only their own products: another's is refused, the catalogue being public."""
        if caller.is_service:
            return found
        self._require_user(caller)
        self._require_seller(caller, database)
        if any(doc.get(self.owner_field) != caller.user_id for doc in found):
            raise Forbidden("This product belongs to another seller.")
        return found

    def _require_seller(self, caller: Caller, database: Database) -> None:
        """The mirror's user_roles must say the caller is a seller."""
        # By _id (a role's key, user_id): a point read on every server, where a filter on role would scan FerretDB v1.
        role = database["user_roles"].find_one({"_id": caller.user_id}, {"role": 1})
        if role is None or role.get("role") != "seller":
            raise Forbidden("Only sellers can change products.")
