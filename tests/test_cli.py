"""`flask fitkart init-db`: the indexes, made idempotently."""


def test_init_db_creates_the_unique_indexes_and_can_run_again(runner, mongo):
    """Each collection gets a unique index on its key (and on id where there is one)."""
    for _ in range(2):
        result = runner.invoke(args=["fitkart", "init-db"])
        assert result.exit_code == 0, result.output
        assert "Indexes ready" in result.output
    expected = {"profiles": [["user_id"], ["id"]], "products": [["id"]], "orders": [["id"]],
                "cart_items": [["id"]], "wishlist_items": [["user_id", "product_id"], ["id"]],
                "user_roles": [["user_id"], ["id"]]}
    for collection, keys in expected.items():
        unique = [[field for field, _ in index["key"]]
                  for index in mongo[collection].index_information().values() if index.get("unique")]
        assert sorted(unique) == sorted(keys), collection
        # and the status page's index on the last write time
        assert mongo[collection].index_information()["written_at"]["key"] == [("_fitkart.written_at", 1)]


def test_init_db_reports_an_unreachable_database(app, runner):
    """The command fails with the reason instead of a trace."""
    app.extensions["fitkart_store"].uri = "mongodb://127.0.0.1:9/database?serverSelectionTimeoutMS=200"
    result = runner.invoke(args=["fitkart", "init-db"])
    assert result.exit_code == 1 and "unreachable" in result.output
