"""PostgreSQL adapters of the migrator (async SQLAlchemy Core), one module per thing they hold.

- `common`: the engine, the SQL state lists, switch completion;
- `plan`: switches, their plan (the rows), supersession and retries;
- `claim`: the executor's leased claims and each provider's daily quota;
- `outcome`: how a claimed row ends, in one transaction with its event;
- `token_slots`: the connection's tokens (current and kept previous);
- `rollback`: the rollback's and the cleanup's transactions;
- `group_commit`: rows finishing together written in one statement and transaction.
"""
