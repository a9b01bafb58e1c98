use sqlx::postgres::PgConnection;
use sqlx::Connection;

/// Tables, created idempotently. Positions are dense and commit-ordered: every append batch
/// locks the single `log_head` row first, so a transaction that commits later always gets
/// higher positions than every transaction that committed before it. A tailing reader
/// paging by position therefore never skips an event that commits late.
const TABLES: &str = r"
CREATE TABLE IF NOT EXISTS events (
    position       BIGINT      PRIMARY KEY,
    stream_id      TEXT        NOT NULL,
    stream_type    TEXT        NOT NULL,
    version        BIGINT      NOT NULL,
    event_id       UUID        NOT NULL UNIQUE,
    event_type     TEXT        NOT NULL,
    schema_version INT         NOT NULL,
    occurred_at    TIMESTAMPTZ NOT NULL,
    metadata       JSON        NOT NULL,
    payload        JSON        NOT NULL,
    UNIQUE (stream_id, version)
);
CREATE TABLE IF NOT EXISTS streams (
    stream_id   TEXT   PRIMARY KEY,
    stream_type TEXT   NOT NULL,
    version     BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS log_head (
    id       BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    position BIGINT  NOT NULL
);
INSERT INTO log_head (id, position) VALUES (TRUE, 0) ON CONFLICT (id) DO NOTHING;
";

/// Creates the schema and tables; safe to run concurrently from several processes.
pub(crate) async fn migrate(conn: &mut PgConnection, schema: &str) -> Result<(), sqlx::Error> {
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('vodsource-migrate'))")
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(&format!("CREATE SCHEMA IF NOT EXISTS {}", quote(schema)))
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(&format!("SET LOCAL search_path TO {}", quote(schema)))
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(TABLES).execute(&mut *tx).await?;
    tx.commit().await
}

/// Quotes an identifier.
pub(crate) fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}
