"""Schema migrations: ``NNNN_name.sql`` files (numbers above 1, the baseline), applied in order
by ``python -m pvekvm init-db`` (:func:`pvekvm.db.apply_schema`), each recorded in
``schema_version``. A migration changes an existing database; schema.sql must be changed to
match in the same commit, because a fresh database gets schema.sql and the newest number."""
