//! The PostgreSQL backend, for operators who run several stateless server processes in front of one
//! database. Everything lives in the database; nothing in a process's memory. Schema in
//! `docs/FORMAT.md` ("till-server store").

use super::{
    Cause, Conflict, CreateUserError, Credential, Invite, InvoiceRecord, InvoiceStatus, LeaseWrite,
    Listed, Object, PutError, PutTransaction, RedeemError, Role, Storage, StoreError, StoredToken,
    UserId, check_lease, decode_invoice, encode_invoice, finish, lease_from_fields, state_code,
};
use crate::share::{Note, Share, What, encode_note, new_process_id};
use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Transaction};
use futures_util::StreamExt;
use std::time::Duration;
use till_vss::replica::LeaseHeader;
use tokio::sync::{broadcast, mpsc};
use tokio_postgres::{AsyncMessage, NoTls};

/// The schema version this code creates and expects (`till_schema.version`). Older databases are
/// upgraded on start ([`SCHEMA_V2`], [`SCHEMA_V3`], [`SCHEMA_V4`]).
const SCHEMA_VERSION: i32 = 4;
/// Serialises schema creation between server processes starting at once.
const MIGRATION_LOCK: i64 = 0x7469_6c6c_5f76_7373; // "till_vss"

const SCHEMA_V1: &str = "
CREATE TABLE till_users (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE till_tokens (
    token_id    BYTEA PRIMARY KEY CHECK (length(token_id) = 16),
    user_id     BIGINT NOT NULL REFERENCES till_users (id),
    secret_hash BYTEA NOT NULL CHECK (length(secret_hash) = 32)
);
CREATE SEQUENCE till_objects_created;
CREATE TABLE till_objects (
    user_id     BIGINT NOT NULL REFERENCES till_users (id),
    store_id    TEXT NOT NULL,
    key         TEXT NOT NULL,
    version     BIGINT NOT NULL,
    value       BYTEA NOT NULL,
    created     BIGINT NOT NULL DEFAULT nextval('till_objects_created'),
    PRIMARY KEY (user_id, store_id, key)
);
CREATE INDEX till_objects_by_creation ON till_objects (user_id, store_id, created DESC);
CREATE TABLE till_global_versions (
    user_id     BIGINT NOT NULL REFERENCES till_users (id),
    store_id    TEXT NOT NULL,
    version     BIGINT NOT NULL,
    PRIMARY KEY (user_id, store_id)
);
";

/// From schema 1 to 2: the store's lease (DESIGN.md R4), one row per (user, store), changed in the
/// transaction of the head write that carries it. `epoch` is the lease header's u64; the server
/// refuses epochs above `i64::MAX`, so it always fits.
const SCHEMA_V2: &str = "
CREATE TABLE till_leases (
    user_id     BIGINT NOT NULL REFERENCES till_users (id),
    store_id    TEXT NOT NULL,
    device      BYTEA NOT NULL CHECK (length(device) = 16),
    epoch       BIGINT NOT NULL CHECK (epoch >= 0),
    state       SMALLINT NOT NULL CHECK (state IN (1, 2)),
    PRIMARY KEY (user_id, store_id)
);
";

/// From schema 2 to 3: token roles (existing tokens are owners), single-use invitations (only the
/// code's blake3 hash is stored) and the store invoices the server tracks (a versioned record, see
/// `InvoiceRecord`, plus the columns listings sort by). Written to apply also to a database that
/// already has some of it (a test makes schema 1 from a current database by dropping a table).
const SCHEMA_V3: &str = "
ALTER TABLE till_tokens ADD COLUMN IF NOT EXISTS role SMALLINT NOT NULL DEFAULT 1 CHECK (role IN (1, 2));
CREATE TABLE IF NOT EXISTS till_invites (
    code_hash   BYTEA PRIMARY KEY CHECK (length(code_hash) = 32),
    user_id     BIGINT NOT NULL REFERENCES till_users (id),
    expires_ms  BIGINT NOT NULL,
    redeemed_ms BIGINT
);
CREATE TABLE IF NOT EXISTS till_invoices (
    user_id     BIGINT NOT NULL REFERENCES till_users (id),
    id          TEXT NOT NULL,
    created_ms  BIGINT NOT NULL,
    record      BYTEA NOT NULL,
    PRIMARY KEY (user_id, id)
);
";

/// From schema 3 to 4: what the server processes in front of one database share for the device
/// hub (`crate::share`): commands waiting for the device that holds a store's lease (taken by
/// exactly one process, then answered), and mail for devices that are offline.
const SCHEMA_V4: &str = "
CREATE TABLE IF NOT EXISTS till_hub_commands (
    id          TEXT PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES till_users (id),
    device      TEXT NOT NULL,
    text        TEXT NOT NULL,
    taken       BOOLEAN NOT NULL DEFAULT false,
    answer      TEXT,
    at_ms       BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS till_hub_mail (
    seq         BIGSERIAL PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES till_users (id),
    device      TEXT NOT NULL,
    text        TEXT NOT NULL,
    expires_ms  BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS till_hub_mail_by_device ON till_hub_mail (user_id, device, seq);
";

pub(crate) struct PostgresStorage {
    pool: Pool,
}

fn db(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |e| StoreError::new(context, describe(&e)).with_cause(cause_of(&e))
}

/// Whether a database error means the database is out of reach (down, restarting, the connection
/// lost) or its disk is full, so the client can be told so.
fn cause_of(e: &tokio_postgres::Error) -> Cause {
    match e.as_db_error() {
        // Class 08: connection exception; 57P01-57P03: shutting down, crashed, starting up.
        Some(d) => match d.code().code() {
            c if c.starts_with("08") || c.starts_with("57P") => Cause::Unavailable,
            "53100" => Cause::Full,
            _ => Cause::Other,
        },
        None => {
            let text = e.to_string();
            if e.is_closed()
                || text.starts_with("error connecting")
                || text.starts_with("error communicating")
                || text.starts_with("connection closed")
                || text.starts_with("unexpected EOF")
            {
                Cause::Unavailable
            } else {
                Cause::Other
            }
        }
    }
}

/// A database error with its detail (tokio-postgres' Display alone says only "db error").
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} ({})", d.message(), d.code().code()),
        None => e.to_string(),
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    let cause = match &e {
        deadpool_postgres::PoolError::Backend(e) => cause_of(e),
        deadpool_postgres::PoolError::Timeout(_) => Cause::Unavailable,
        _ => Cause::Other,
    };
    StoreError::new("could not get a PostgreSQL connection", e).with_cause(cause)
}

impl PostgresStorage {
    /// Connects to `url` and creates the schema if the database has none. Refuses a schema of an
    /// unknown version.
    pub(crate) async fn connect(url: &str) -> Result<PostgresStorage, StoreError> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| StoreError::new("invalid --database-url", e))?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .build()
            .map_err(|e| StoreError::new("could not build the PostgreSQL pool", e))?;
        let storage = PostgresStorage { pool };
        storage.migrate().await?;
        Ok(storage)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(db("begin migration"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(db("lock for migration"))?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS till_schema (version INTEGER NOT NULL)")
            .await
            .map_err(db("create till_schema"))?;
        let row = tx
            .query_opt("SELECT version FROM till_schema", &[])
            .await
            .map_err(db("read schema version"))?;
        match row.map(|r| r.get::<_, i32>(0)) {
            None => {
                tx.batch_execute(SCHEMA_V1)
                    .await
                    .map_err(db("create schema v1"))?;
                tx.batch_execute(SCHEMA_V2)
                    .await
                    .map_err(db("create schema v2"))?;
                tx.batch_execute(SCHEMA_V3)
                    .await
                    .map_err(db("create schema v3"))?;
                tx.batch_execute(SCHEMA_V4)
                    .await
                    .map_err(db("create schema v4"))?;
                tx.execute(
                    "INSERT INTO till_schema (version) VALUES ($1)",
                    &[&SCHEMA_VERSION],
                )
                .await
                .map_err(db("record schema version"))?;
            }
            Some(old @ (1..=3)) => {
                if old == 1 {
                    tx.batch_execute(SCHEMA_V2)
                        .await
                        .map_err(db("upgrade schema to v2"))?;
                }
                if old <= 2 {
                    tx.batch_execute(SCHEMA_V3)
                        .await
                        .map_err(db("upgrade schema to v3"))?;
                }
                tx.batch_execute(SCHEMA_V4)
                    .await
                    .map_err(db("upgrade schema to v4"))?;
                tx.execute("UPDATE till_schema SET version = $1", &[&SCHEMA_VERSION])
                    .await
                    .map_err(db("record schema version"))?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(other) => {
                return Err(StoreError::new(
                    "refusing the PostgreSQL database",
                    format!(
                        "its till-server schema is version {other}; this till-server knows versions 1 to {SCHEMA_VERSION} only"
                    ),
                ));
            }
        }
        tx.commit().await.map_err(db("commit migration"))?;
        Ok(())
    }
}

/// The version of a key inside the transaction (for conflict messages).
async fn version_of(
    tx: &Transaction<'_>,
    user: UserId,
    store: &str,
    key: &str,
) -> Result<Option<i64>, StoreError> {
    let stmt = tx
        .prepare_cached(
            "SELECT version FROM till_objects WHERE user_id = $1 AND store_id = $2 AND key = $3",
        )
        .await
        .map_err(db("prepare"))?;
    let row = tx
        .query_opt(&stmt, &[&user.0, &store, &key])
        .await
        .map_err(db("read version"))?;
    Ok(row.map(|r| r.get(0)))
}

fn lease_row(row: &tokio_postgres::Row) -> Result<LeaseHeader, StoreError> {
    let device: Vec<u8> = row.get(0);
    let epoch = u64::try_from(row.get::<_, i64>(1))
        .map_err(|e| StoreError::new("corrupt lease record", e))?;
    let state = u8::try_from(row.get::<_, i16>(2))
        .map_err(|e| StoreError::new("corrupt lease record", e))?;
    lease_from_fields(&device, epoch, state)
}

/// Checks and records the lease of a head write in `tx`. The store's lease row is locked for the
/// rest of the transaction (by the insert that creates it, or by `FOR UPDATE`), so server processes
/// sharing the database decide one after the other, each against the lease the previous one left.
async fn apply_lease(
    tx: &Transaction<'_>,
    user: UserId,
    store: &str,
    write: &LeaseWrite,
) -> Result<Result<(), Conflict>, StoreError> {
    let header = &write.header;
    let epoch = i64::try_from(header.epoch)
        .map_err(|e| StoreError::new("lease epoch out of range (the HTTP layer refuses it)", e))?;
    let state = i16::from(state_code(header.state));
    let device = header.device.0.as_slice();
    // A first lease needs no check. If another transaction is creating the same row, this waits
    // for it, and then finds the row.
    let created = tx
        .execute(
            "INSERT INTO till_leases (user_id, store_id, device, epoch, state)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            &[&user.0, &store, &device, &epoch, &state],
        )
        .await
        .map_err(db("create lease"))?;
    if created == 1 {
        return Ok(Ok(()));
    }
    let row = tx
        .query_one(
            "SELECT device, epoch, state FROM till_leases
             WHERE user_id = $1 AND store_id = $2 FOR UPDATE",
            &[&user.0, &store],
        )
        .await
        .map_err(db("lock lease"))?;
    let stored = lease_row(&row)?;
    if let Err(conflict) = check_lease(store, Some(&stored), write) {
        return Ok(Err(conflict));
    }
    // A running master's uploads carry the lease it already holds: the row stays locked for
    // the transaction, and an unchanged lease writes no new row version.
    if stored == *header {
        return Ok(Ok(()));
    }
    tx.execute(
        "UPDATE till_leases SET device = $3, epoch = $4, state = $5
         WHERE user_id = $1 AND store_id = $2",
        &[&user.0, &store, &device, &epoch, &state],
    )
    .await
    .map_err(db("write lease"))?;
    Ok(Ok(()))
}

/// Runs every item of `put` in `tx`; the first one that matches no row is the conflict.
async fn apply_put(
    tx: &Transaction<'_>,
    user: UserId,
    put: &PutTransaction,
) -> Result<Result<(), Conflict>, StoreError> {
    let store = put.store_id.as_str();
    if let Some(write) = &put.lease
        && let Err(conflict) = apply_lease(tx, user, store, write).await?
    {
        return Ok(Err(conflict));
    }
    let upsert = tx
        .prepare_cached(
            "INSERT INTO till_objects (user_id, store_id, key, version, value) VALUES ($1, $2, $3, 1, $4)
             ON CONFLICT (user_id, store_id, key) DO UPDATE SET version = 1, value = EXCLUDED.value",
        )
        .await
        .map_err(db("prepare"))?;
    let create = tx
        .prepare_cached(
            "INSERT INTO till_objects (user_id, store_id, key, version, value) VALUES ($1, $2, $3, 1, $4)
             ON CONFLICT DO NOTHING",
        )
        .await
        .map_err(db("prepare"))?;
    let update = tx
        .prepare_cached(
            "UPDATE till_objects SET version = version + 1, value = $4
             WHERE user_id = $1 AND store_id = $2 AND key = $3 AND version = $5",
        )
        .await
        .map_err(db("prepare"))?;
    let delete = tx
        .prepare_cached(
            "DELETE FROM till_objects WHERE user_id = $1 AND store_id = $2 AND key = $3
             AND ($4::BIGINT = -1 OR version = $4::BIGINT)",
        )
        .await
        .map_err(db("prepare"))?;
    for w in &put.writes {
        let rows = match w.expected {
            -1 => {
                tx.execute(&upsert, &[&user.0, &store, &w.key, &w.value])
                    .await
            }
            0 => {
                tx.execute(&create, &[&user.0, &store, &w.key, &w.value])
                    .await
            }
            n => {
                tx.execute(&update, &[&user.0, &store, &w.key, &w.value, &n])
                    .await
            }
        }
        .map_err(db("write object"))?;
        if rows == 0 {
            let found = version_of(tx, user, store, &w.key).await?;
            return Ok(Err(Conflict::Write {
                key: w.key.clone(),
                expected: w.expected,
                found,
            }));
        }
    }
    for d in &put.deletes {
        let rows = tx
            .execute(&delete, &[&user.0, &store, &d.key, &d.expected])
            .await
            .map_err(db("delete object"))?;
        if rows == 0 {
            let found = version_of(tx, user, store, &d.key).await?;
            return Ok(Err(Conflict::Delete {
                key: d.key.clone(),
                expected: d.expected,
                found,
            }));
        }
    }
    if let Some(expected) = put.global_version {
        let rows = if expected == 0 {
            tx.execute(
                "INSERT INTO till_global_versions (user_id, store_id, version) VALUES ($1, $2, 1)
                 ON CONFLICT DO NOTHING",
                &[&user.0, &store],
            )
            .await
        } else {
            tx.execute(
                "UPDATE till_global_versions SET version = version + 1
                 WHERE user_id = $1 AND store_id = $2 AND version = $3",
                &[&user.0, &store, &expected],
            )
            .await
        }
        .map_err(db("write global version"))?;
        if rows == 0 {
            let found = tx
                .query_opt(
                    "SELECT version FROM till_global_versions WHERE user_id = $1 AND store_id = $2",
                    &[&user.0, &store],
                )
                .await
                .map_err(db("read global version"))?
                .map_or(0, |r| r.get(0));
            return Ok(Err(Conflict::GlobalVersion { expected, found }));
        }
    }
    Ok(Ok(()))
}

#[async_trait]
impl Storage for PostgresStorage {
    async fn health(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(db("health check"))?;
        Ok(())
    }

    async fn create_user(
        &self,
        name: &str,
        credential: &Credential,
    ) -> Result<UserId, CreateUserError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(db("begin"))?;
        let row = tx
            .query_opt(
                "INSERT INTO till_users (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING id",
                &[&name],
            )
            .await
            .map_err(db("insert user"))?;
        let Some(row) = row else {
            return Err(CreateUserError::Exists(name.to_owned()));
        };
        let user = UserId(row.get(0));
        tx.execute(
            "INSERT INTO till_tokens (token_id, user_id, secret_hash) VALUES ($1, $2, $3)",
            &[
                &credential.token_id.as_slice(),
                &user.0,
                &credential.secret_hash.as_slice(),
            ],
        )
        .await
        .map_err(db("insert token"))?;
        tx.commit().await.map_err(db("commit user"))?;
        Ok(user)
    }

    async fn credential(&self, token_id: [u8; 16]) -> Result<Option<StoredToken>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let stmt = client
            .prepare_cached(
                "SELECT user_id, secret_hash, role FROM till_tokens WHERE token_id = $1",
            )
            .await
            .map_err(db("prepare"))?;
        let row = client
            .query_opt(&stmt, &[&token_id.as_slice()])
            .await
            .map_err(db("read token"))?;
        let Some(row) = row else { return Ok(None) };
        let hash: Vec<u8> = row.get(1);
        let hash: [u8; 32] = hash
            .try_into()
            .map_err(|_| StoreError::new("corrupt token record", "secret hash is not 32 bytes"))?;
        let role: i16 = row.get(2);
        Ok(Some(StoredToken {
            user: UserId(row.get(0)),
            secret_hash: hash,
            role: Role::from_code(u8::try_from(role).unwrap_or(0))?,
        }))
    }

    async fn user_by_name(&self, name: &str, create: bool) -> Result<Option<UserId>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        if create {
            client
                .execute(
                    "INSERT INTO till_users (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
                    &[&name],
                )
                .await
                .map_err(db("insert user"))?;
        }
        let row = client
            .query_opt("SELECT id FROM till_users WHERE name = $1", &[&name])
            .await
            .map_err(db("read user"))?;
        Ok(row.map(|r| UserId(r.get(0))))
    }

    async fn user_name(&self, user: UserId) -> Result<String, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let row = client
            .query_one("SELECT name FROM till_users WHERE id = $1", &[&user.0])
            .await
            .map_err(db("read user name"))?;
        Ok(row.get(0))
    }

    async fn add_token(
        &self,
        user: UserId,
        credential: &Credential,
        role: Role,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        client
            .execute(
                "INSERT INTO till_tokens (token_id, user_id, secret_hash, role) VALUES ($1, $2, $3, $4)",
                &[
                    &credential.token_id.as_slice(),
                    &user.0,
                    &credential.secret_hash.as_slice(),
                    &i16::from(role.code()),
                ],
            )
            .await
            .map_err(db("insert token"))?;
        Ok(())
    }

    async fn create_invite(&self, code_hash: [u8; 32], invite: Invite) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        client
            .execute(
                "INSERT INTO till_invites (code_hash, user_id, expires_ms) VALUES ($1, $2, $3)",
                &[&code_hash.as_slice(), &invite.user.0, &invite.expires_ms],
            )
            .await
            .map_err(db("insert invite"))?;
        Ok(())
    }

    async fn redeem_invite(
        &self,
        code_hash: [u8; 32],
        now_ms: i64,
        credential: &Credential,
    ) -> Result<UserId, RedeemError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(db("begin"))?;
        let row = tx
            .query_opt(
                "SELECT user_id, expires_ms, redeemed_ms FROM till_invites WHERE code_hash = $1 FOR UPDATE",
                &[&code_hash.as_slice()],
            )
            .await
            .map_err(db("read invite"))?
            .ok_or(RedeemError::Unknown)?;
        let user = UserId(row.get(0));
        let expires_ms: i64 = row.get(1);
        if let Some(at_ms) = row.get::<_, Option<i64>>(2) {
            return Err(RedeemError::Used { at_ms });
        }
        if now_ms > expires_ms {
            return Err(RedeemError::Expired { expires_ms });
        }
        tx.execute(
            "UPDATE till_invites SET redeemed_ms = $2 WHERE code_hash = $1",
            &[&code_hash.as_slice(), &now_ms.max(1)],
        )
        .await
        .map_err(db("redeem invite"))?;
        tx.execute(
            "INSERT INTO till_tokens (token_id, user_id, secret_hash, role) VALUES ($1, $2, $3, 1)",
            &[
                &credential.token_id.as_slice(),
                &user.0,
                &credential.secret_hash.as_slice(),
            ],
        )
        .await
        .map_err(db("insert token"))?;
        tx.commit().await.map_err(db("commit redeem"))?;
        Ok(user)
    }

    async fn leases(&self, user: UserId) -> Result<Vec<(String, LeaseHeader)>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client
            .query(
                "SELECT device, epoch, state, store_id FROM till_leases WHERE user_id = $1",
                &[&user.0],
            )
            .await
            .map_err(db("read leases"))?;
        rows.iter()
            .map(|r| Ok((r.get::<_, String>(3), lease_row(r)?)))
            .collect()
    }

    async fn put_invoice(&self, user: UserId, invoice: &InvoiceRecord) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        client
            .execute(
                "INSERT INTO till_invoices (user_id, id, created_ms, record) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (user_id, id) DO UPDATE SET created_ms = $3, record = $4",
                &[&user.0, &invoice.id, &invoice.created_ms, &encode_invoice(invoice)],
            )
            .await
            .map_err(db("write invoice"))?;
        Ok(())
    }

    async fn invoice(&self, user: UserId, id: &str) -> Result<Option<InvoiceRecord>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let row = client
            .query_opt(
                "SELECT record FROM till_invoices WHERE user_id = $1 AND id = $2",
                &[&user.0, &id],
            )
            .await
            .map_err(db("read invoice"))?;
        row.map(|r| decode_invoice(r.get::<_, &[u8]>(0)))
            .transpose()
    }

    async fn invoices(&self, user: UserId) -> Result<Vec<InvoiceRecord>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client
            .query(
                "SELECT record FROM till_invoices WHERE user_id = $1 ORDER BY created_ms DESC, id",
                &[&user.0],
            )
            .await
            .map_err(db("list invoices"))?;
        rows.iter()
            .map(|r| decode_invoice(r.get::<_, &[u8]>(0)))
            .collect()
    }

    async fn open_invoices(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(UserId, InvoiceRecord)>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client
            .query(
                "SELECT user_id, record FROM till_invoices WHERE created_ms >= $1",
                &[&since_ms],
            )
            .await
            .map_err(db("list open invoices"))?;
        let mut out = Vec::new();
        for row in rows {
            let record = decode_invoice(row.get::<_, &[u8]>(1))?;
            if record.status == InvoiceStatus::New {
                out.push((UserId(row.get(0)), record));
            }
        }
        Ok(out)
    }

    async fn finish_invoice(
        &self,
        user: UserId,
        id: &str,
        to: InvoiceStatus,
        at_ms: i64,
        received_msat: Option<u64>,
    ) -> Result<Option<InvoiceRecord>, StoreError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(db("begin"))?;
        let row = tx
            .query_opt(
                "SELECT record FROM till_invoices WHERE user_id = $1 AND id = $2 FOR UPDATE",
                &[&user.0, &id],
            )
            .await
            .map_err(db("read invoice"))?;
        let current = row
            .map(|r| decode_invoice(r.get::<_, &[u8]>(0)))
            .transpose()?;
        let Some(changed) = current.and_then(|r| finish(r, to, at_ms, received_msat)) else {
            return Ok(None);
        };
        tx.execute(
            "UPDATE till_invoices SET record = $3 WHERE user_id = $1 AND id = $2",
            &[&user.0, &id, &encode_invoice(&changed)],
        )
        .await
        .map_err(db("write invoice"))?;
        tx.commit().await.map_err(db("commit invoice"))?;
        Ok(Some(changed))
    }

    async fn get(
        &self,
        user: UserId,
        store_id: &str,
        key: &str,
    ) -> Result<Option<Object>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let stmt = client
            .prepare_cached("SELECT version, value FROM till_objects WHERE user_id = $1 AND store_id = $2 AND key = $3")
            .await
            .map_err(db("prepare"))?;
        let row = client
            .query_opt(&stmt, &[&user.0, &store_id, &key])
            .await
            .map_err(db("read object"))?;
        Ok(row.map(|r| Object {
            version: r.get(0),
            value: r.get(1),
        }))
    }

    async fn global_version(&self, user: UserId, store_id: &str) -> Result<i64, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let stmt = client
            .prepare_cached(
                "SELECT version FROM till_global_versions WHERE user_id = $1 AND store_id = $2",
            )
            .await
            .map_err(db("prepare"))?;
        let row = client
            .query_opt(&stmt, &[&user.0, &store_id])
            .await
            .map_err(db("read global version"))?;
        Ok(row.map_or(0, |r| r.get(0)))
    }

    async fn put(&self, user: UserId, put: PutTransaction) -> Result<(), PutError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(db("begin"))?;
        match apply_put(&tx, user, &put).await? {
            Ok(()) => {
                tx.commit().await.map_err(db("commit"))?;
                Ok(())
            }
            Err(conflict) => {
                tx.rollback().await.map_err(db("rollback"))?;
                Err(PutError::Conflict(conflict))
            }
        }
    }

    async fn lease(&self, user: UserId, store_id: &str) -> Result<Option<LeaseHeader>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let row = client
            .query_opt(
                "SELECT device, epoch, state FROM till_leases WHERE user_id = $1 AND store_id = $2",
                &[&user.0, &store_id],
            )
            .await
            .map_err(db("read lease"))?;
        row.as_ref().map(lease_row).transpose()
    }

    async fn delete(
        &self,
        user: UserId,
        store_id: &str,
        key: &str,
        expected: i64,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let stmt = client
            .prepare_cached(
                "DELETE FROM till_objects WHERE user_id = $1 AND store_id = $2 AND key = $3
                 AND ($4::BIGINT = -1 OR version = $4::BIGINT)",
            )
            .await
            .map_err(db("prepare"))?;
        client
            .execute(&stmt, &[&user.0, &store_id, &key, &expected])
            .await
            .map_err(db("delete object"))?;
        Ok(())
    }

    async fn list(
        &self,
        user: UserId,
        store_id: &str,
        prefix: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Listed>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let stmt = client
            .prepare_cached(
                "SELECT key, version, created FROM till_objects
                 WHERE user_id = $1 AND store_id = $2 AND created < $3 AND starts_with(key, $4)
                 ORDER BY created DESC LIMIT $5",
            )
            .await
            .map_err(db("prepare"))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let before = before.unwrap_or(i64::MAX);
        let rows = client
            .query(&stmt, &[&user.0, &store_id, &before, &prefix, &limit])
            .await
            .map_err(db("list objects"))?;
        Ok(rows
            .into_iter()
            .map(|r| Listed {
                key: r.get(0),
                version: r.get(1),
                created: r.get(2),
            })
            .collect())
    }
}

/// The channel the server processes of one database send their hub notes on.
const HUB_CHANNEL: &str = "till_hub";
/// How long a command nobody answered stays in `till_hub_commands` (its sender gave up long ago).
const COMMAND_ROW_TTL_MS: i64 = 86_400_000;

/// The device hub the server processes of one PostgreSQL database share (`crate::share`): notes by
/// `LISTEN`/`NOTIFY`, commands and mail in `till_hub_commands` and `till_hub_mail`.
pub(crate) struct PostgresShare {
    pool: Pool,
    process: String,
    notes: broadcast::Sender<Note>,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for PostgresShare {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PostgresStorage {
    /// The hub this database's server processes share. Its listener keeps a connection of its own
    /// (`LISTEN` needs one) and reconnects after a failure.
    pub(crate) fn share(&self, url: &str) -> Result<PostgresShare, StoreError> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| StoreError::new("invalid --database-url", e))?;
        let notes = broadcast::channel(1024).0;
        let listener = tokio::spawn(listen(config, notes.clone()));
        Ok(PostgresShare {
            pool: self.pool.clone(),
            process: new_process_id(),
            notes,
            listener,
        })
    }
}

/// Hears the hub's notes on a connection of its own, forever: after a failure it connects again
/// (100 ms doubling to 5 s) and sends [`What::Resync`], since notes may have been missed.
async fn listen(config: tokio_postgres::Config, notes: broadcast::Sender<Note>) {
    let mut backoff = Duration::from_millis(100);
    let mut failing = false;
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (tx, mut rx) = mpsc::unbounded_channel::<String>();
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(n)) => {
                                if tx.send(n.payload().to_owned()).is_err() {
                                    break;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                eprintln!(
                                    "till-server: hub: the database connection for notes failed: {}",
                                    describe(&e)
                                );
                                break;
                            }
                        }
                    }
                });
                match client.batch_execute(&format!("LISTEN {HUB_CHANNEL}")).await {
                    Ok(()) => {
                        if failing {
                            eprintln!("till-server: hub: hearing the other server processes again");
                            failing = false;
                        }
                        backoff = Duration::from_millis(100);
                        let _ = notes.send(Note {
                            from: String::new(),
                            user: 0,
                            what: What::Resync,
                        });
                        while let Some(payload) = rx.recv().await {
                            match serde_json::from_str::<Note>(&payload) {
                                Ok(Note {
                                    what: What::Resync, ..
                                }) => {}
                                Ok(note) => {
                                    let _ = notes.send(note);
                                }
                                Err(e) => {
                                    eprintln!(
                                        "till-server: hub: ignoring a note that does not parse: {e}"
                                    )
                                }
                            }
                        }
                    }
                    Err(e) => eprintln!("till-server: hub: LISTEN failed: {}", describe(&e)),
                }
                driver.abort();
            }
            Err(e) => {
                if !failing {
                    eprintln!(
                        "till-server: hub: cannot hear the other server processes ({}); retrying",
                        describe(&e)
                    );
                    failing = true;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[async_trait]
impl Share for PostgresShare {
    fn process(&self) -> &str {
        &self.process
    }

    async fn publish(&self, user: UserId, what: What) -> Result<(), StoreError> {
        let text = encode_note(&Note {
            from: self.process.clone(),
            user: user.0,
            what,
        });
        let client = self.pool.get().await.map_err(pool_err)?;
        client
            .execute("SELECT pg_notify($1, $2)", &[&HUB_CHANNEL, &text])
            .await
            .map_err(db("send a hub note"))?;
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<Note> {
        self.notes.subscribe()
    }

    async fn post_command(
        &self,
        id: &str,
        user: UserId,
        device: &str,
        text: &str,
    ) -> Result<(), StoreError> {
        let now = crate::invoices::now_ms();
        let client = self.pool.get().await.map_err(pool_err)?;
        client
            .execute(
                "DELETE FROM till_hub_commands WHERE at_ms < $1",
                &[&(now - COMMAND_ROW_TTL_MS)],
            )
            .await
            .map_err(db("drop old hub commands"))?;
        client
            .execute(
                "INSERT INTO till_hub_commands (id, user_id, device, text, at_ms)
                 VALUES ($1, $2, $3, $4, $5)",
                &[&id, &user.0, &device, &text, &now],
            )
            .await
            .map_err(db("store a hub command"))?;
        Ok(())
    }

    async fn take_command(&self, id: &str) -> Result<Option<String>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let row = client
            .query_opt(
                "UPDATE till_hub_commands SET taken = true WHERE id = $1 AND NOT taken RETURNING text",
                &[&id],
            )
            .await
            .map_err(db("take a hub command"))?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn untake_command(&self, id: &str) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        client
            .execute(
                "UPDATE till_hub_commands SET taken = false WHERE id = $1 AND answer IS NULL",
                &[&id],
            )
            .await
            .map_err(db("put a hub command back"))?;
        Ok(())
    }

    async fn withdraw_command(&self, id: &str) -> Result<bool, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let n = client
            .execute(
                "DELETE FROM till_hub_commands WHERE id = $1 AND NOT taken",
                &[&id],
            )
            .await
            .map_err(db("withdraw a hub command"))?;
        Ok(n == 1)
    }

    async fn answer_command(&self, id: &str, answer: &str) -> Result<bool, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let n = client
            .execute(
                "UPDATE till_hub_commands SET answer = $2 WHERE id = $1 AND answer IS NULL",
                &[&id, &answer],
            )
            .await
            .map_err(db("store a hub answer"))?;
        Ok(n == 1)
    }

    async fn take_answer(&self, id: &str) -> Result<Option<String>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let row = client
            .query_opt(
                "DELETE FROM till_hub_commands WHERE id = $1 AND answer IS NOT NULL RETURNING answer",
                &[&id],
            )
            .await
            .map_err(db("read a hub answer"))?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn forget_command(&self, id: &str) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        client
            .execute("DELETE FROM till_hub_commands WHERE id = $1", &[&id])
            .await
            .map_err(db("forget a hub command"))?;
        Ok(())
    }

    async fn post_mail(
        &self,
        user: UserId,
        device: &str,
        text: &str,
        ttl_ms: i64,
    ) -> Result<(), StoreError> {
        let now = crate::invoices::now_ms();
        let client = self.pool.get().await.map_err(pool_err)?;
        client
            .execute("DELETE FROM till_hub_mail WHERE expires_ms < $1", &[&now])
            .await
            .map_err(db("drop expired hub mail"))?;
        client
            .execute(
                "INSERT INTO till_hub_mail (user_id, device, text, expires_ms) VALUES ($1, $2, $3, $4)",
                &[&user.0, &device, &text, &(now + ttl_ms)],
            )
            .await
            .map_err(db("store hub mail"))?;
        Ok(())
    }

    async fn take_mail(&self, user: UserId, device: &str) -> Result<Vec<String>, StoreError> {
        let now = crate::invoices::now_ms();
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client
            .query(
                "DELETE FROM till_hub_mail WHERE user_id = $1 AND device = $2
                 RETURNING seq, text, expires_ms",
                &[&user.0, &device],
            )
            .await
            .map_err(db("read hub mail"))?;
        let mut mail: Vec<(i64, String)> = rows
            .into_iter()
            .filter(|r| r.get::<_, i64>(2) >= now)
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        mail.sort_by_key(|(seq, _)| *seq);
        Ok(mail.into_iter().map(|(_, text)| text).collect())
    }
}
