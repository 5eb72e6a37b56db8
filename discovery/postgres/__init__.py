"""The discovery node's storage on a PostgreSQL server (``DATABASE_URL``), shared by every node of a site.

psycopg 3 with its connection pool (the optional extra ``postgres``); the schema is brought up to date at
start by :mod:`discovery.postgres.migrate`; the history lives in time-partitioned tables
(:mod:`discovery.postgres.history`); the duties that must run on one node at a time follow an advisory
lock (:mod:`discovery.postgres.lease`).
"""
