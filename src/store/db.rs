//! The seam between the repository functions and the two engines: a
//! [`Conn`] is either the embedded SQLite file or a PostgreSQL connection,
//! and the repository functions are written once against it.
//!
//! The surface is rusqlite's, cut down to what the store uses
//! (`prepare_cached`, `execute`, `query_row`, `query_map`, `optional`,
//! `params!`), so the SQLite path keeps its prepared-statement cache and
//! binds values without copies. SQL is written with numbered `?N`
//! parameters; for PostgreSQL it is rewritten to `$N` once and the prepared
//! statement cached per connection. Values cross the seam as [`Value`]: an
//! integer, a real, text, bytes or NULL, which is all the schema stores
//! (PostgreSQL's integers are BIGINT, bytes BYTEA; a parameter is converted
//! to whatever type the server inferred for it).
//!
//! Why synchronous, on both engines: a repository function runs on a store
//! thread (the writer, a reader), never on a tokio worker, so that one group
//! commit holds many requests and SQLite never blocks the runtime. The
//! PostgreSQL side keeps that shape with tokio-postgres driven through its
//! blocking facade (the `postgres` crate) on those same threads: each store
//! thread owns one connection, so no pool library is needed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;

use postgres::types::{FromSql, IsNull, ToSql, Type};

/// How long PostgreSQL lets a whatan session sit idle inside a transaction
/// before it ends the session (see [`PgConn::connect`]): at most the
/// smallest `cluster.lease_ttl`, so a frozen node stalls the others' writes
/// (renewals included) for less than a lease.
pub const IDLE_IN_TRANSACTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// A value crossing the seam, borrowed from a parameter or a row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
}

#[derive(Debug)]
pub enum Error {
    Sqlite(rusqlite::Error),
    Pg(postgres::Error),
    /// `query_row` found no row (`optional()` turns it into `None`).
    NoRows,
    /// A stored value is not what the column's Rust type expects.
    Decode(String),
    /// A value cannot be sent as the type PostgreSQL expects.
    Encode(String),
    /// The connection settings cannot be used (a TLS root file).
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Sqlite(e) => e.fmt(f),
            Error::Pg(e) => match e.as_db_error() {
                Some(db) => write!(f, "{}: {}", db.code().code(), db.message()),
                // The cause says what went wrong ("error performing TLS
                // handshake: invalid peer certificate: UnknownIssuer").
                None => {
                    e.fmt(f)?;
                    let mut source = std::error::Error::source(e);
                    while let Some(cause) = source {
                        write!(f, ": {cause}")?;
                        source = cause.source();
                    }
                    Ok(())
                }
            },
            Error::NoRows => f.write_str("query returned no rows"),
            Error::Decode(m) | Error::Encode(m) | Error::Config(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::QueryReturnedNoRows => Error::NoRows,
            e => Error::Sqlite(e),
        }
    }
}

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Self {
        Error::Pg(e)
    }
}

impl Error {
    /// A UNIQUE or PRIMARY KEY violation: the row exists already.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            Error::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
                f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            }
            Error::Pg(e) => e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION),
            _ => false,
        }
    }

    /// Whether the error is the violation of `table`'s unique constraint on
    /// `column` (as SQLite names it, `table.column`; PostgreSQL's default
    /// constraint name, `table_column_key`).
    pub fn names_constraint(&self, table: &str, column: &str) -> bool {
        match self {
            Error::Sqlite(e) => e.to_string().contains(&format!("{table}.{column}")),
            Error::Pg(e) => e
                .as_db_error()
                .and_then(|d| d.constraint())
                .is_some_and(|c| c == format!("{table}_{column}_key")),
            _ => false,
        }
    }

    /// The database cannot take this write now (disk full, read-only, busy,
    /// gone, a serialization conflict between nodes), as opposed to a bug or
    /// a refused statement: nothing was stored, a retry later may succeed.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Sqlite(e) => {
                use rusqlite::ErrorCode::*;
                matches!(
                    e.sqlite_error_code(),
                    Some(
                        DiskFull
                            | SystemIoFailure
                            | ReadOnly
                            | DatabaseBusy
                            | DatabaseLocked
                            | CannotOpen
                            | OutOfMemory
                            | FileLockingProtocolFailed
                    )
                )
            }
            Error::Pg(e) => match e.code() {
                // No SQLSTATE: the connection itself failed, or a value
                // could not be encoded (a bug, not an outage).
                None => {
                    e.is_closed()
                        || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
                }
                Some(code) => {
                    let class = &code.code()[..2];
                    // 08 connection, 40 rollback (serialization, deadlock),
                    // 53 resources, 57 operator intervention (shutdown), 58 I/O.
                    matches!(class, "08" | "40" | "53" | "57" | "58")
                        || code == &postgres::error::SqlState::LOCK_NOT_AVAILABLE
                        || code == &postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION
                }
            },
            _ => false,
        }
    }
}

/// `Ok(None)` for "no row" instead of an error, as rusqlite's extension.
pub trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(Error::NoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A Rust value that can be bound as a parameter.
pub trait ToParam {
    fn to_value(&self) -> Value<'_>;
}

impl ToParam for Value<'_> {
    fn to_value(&self) -> Value<'_> {
        *self
    }
}

/// A Rust value that a column can be read as.
pub trait FromValue: Sized {
    fn from_value(v: Value<'_>) -> Result<Self>;
}

fn wrong_type(what: &str, v: Value<'_>) -> Error {
    let got = match v {
        Value::Null => "NULL",
        Value::Int(_) => "an integer",
        Value::Real(_) => "a real",
        Value::Text(_) => "text",
        Value::Blob(_) => "bytes",
    };
    Error::Decode(format!("expected {what} in the database, found {got}"))
}

macro_rules! integer {
    ($($t:ty),*) => {$(
        impl ToParam for $t {
            fn to_value(&self) -> Value<'_> {
                Value::Int(*self as i64)
            }
        }
        impl FromValue for $t {
            fn from_value(v: Value<'_>) -> Result<Self> {
                match v {
                    Value::Int(i) => <$t>::try_from(i)
                        .map_err(|_| Error::Decode(format!("{i} is out of range for {}", stringify!($t)))),
                    v => Err(wrong_type("an integer", v)),
                }
            }
        }
    )*};
}
integer!(i64, i32, u32, u16, u8, usize);

impl ToParam for u64 {
    fn to_value(&self) -> Value<'_> {
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl FromValue for u64 {
    fn from_value(v: Value<'_>) -> Result<Self> {
        let i = i64::from_value(v)?;
        u64::try_from(i).map_err(|_| Error::Decode(format!("{i} is out of range for u64")))
    }
}

impl ToParam for bool {
    fn to_value(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}

impl FromValue for bool {
    fn from_value(v: Value<'_>) -> Result<Self> {
        Ok(i64::from_value(v)? != 0)
    }
}

impl ToParam for f64 {
    fn to_value(&self) -> Value<'_> {
        Value::Real(*self)
    }
}

impl FromValue for f64 {
    fn from_value(v: Value<'_>) -> Result<Self> {
        match v {
            Value::Real(r) => Ok(r),
            Value::Int(i) => Ok(i as f64),
            v => Err(wrong_type("a number", v)),
        }
    }
}

impl ToParam for str {
    fn to_value(&self) -> Value<'_> {
        Value::Text(self)
    }
}

impl ToParam for String {
    fn to_value(&self) -> Value<'_> {
        Value::Text(self)
    }
}

impl FromValue for String {
    fn from_value(v: Value<'_>) -> Result<Self> {
        match v {
            Value::Text(s) => Ok(s.to_string()),
            v => Err(wrong_type("text", v)),
        }
    }
}

impl ToParam for [u8] {
    fn to_value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}

impl<const N: usize> ToParam for [u8; N] {
    fn to_value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}

impl ToParam for Vec<u8> {
    fn to_value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}

impl FromValue for Vec<u8> {
    fn from_value(v: Value<'_>) -> Result<Self> {
        match v {
            Value::Blob(b) => Ok(b.to_vec()),
            v => Err(wrong_type("bytes", v)),
        }
    }
}

impl<T: ToParam + ?Sized> ToParam for &T {
    fn to_value(&self) -> Value<'_> {
        (**self).to_value()
    }
}

impl<T: ToParam> ToParam for Option<T> {
    fn to_value(&self) -> Value<'_> {
        match self {
            Some(v) => v.to_value(),
            None => Value::Null,
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: Value<'_>) -> Result<Self> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// Parameters of one statement: `()`, an array of one type, or `params![..]`.
pub trait Params {
    fn with_values<R>(&self, f: impl FnOnce(&[&dyn ToParam]) -> R) -> R;
}

impl Params for () {
    fn with_values<R>(&self, f: impl FnOnce(&[&dyn ToParam]) -> R) -> R {
        f(&[])
    }
}

impl Params for &[&dyn ToParam] {
    fn with_values<R>(&self, f: impl FnOnce(&[&dyn ToParam]) -> R) -> R {
        f(self)
    }
}

impl<T: ToParam, const N: usize> Params for [T; N] {
    fn with_values<R>(&self, f: impl FnOnce(&[&dyn ToParam]) -> R) -> R {
        let refs: [&dyn ToParam; N] = std::array::from_fn(|i| &self[i] as &dyn ToParam);
        f(&refs)
    }
}

/// `params![a, b, c]`: parameters of mixed types, as rusqlite's macro.
#[macro_export]
macro_rules! params {
    () => { () };
    ($($p:expr),+ $(,)?) => {
        &[$(&$p as &dyn $crate::store::db::ToParam),+] as &[&dyn $crate::store::db::ToParam]
    };
}
pub use crate::params;

/// A [`Value`] as rusqlite binds it (borrowed, no copy).
struct SqliteValue<'a>(Value<'a>);

impl rusqlite::ToSql for SqliteValue<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self.0 {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(i),
            Value::Real(r) => ValueRef::Real(r),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn sqlite_params<'a>(
    values: &'a [&'a dyn ToParam],
) -> rusqlite::ParamsFromIter<impl Iterator<Item = SqliteValue<'a>>> {
    rusqlite::params_from_iter(values.iter().map(|v| SqliteValue(v.to_value())))
}

/// A [`Value`] as PostgreSQL receives it: converted to the type the server
/// inferred for the parameter.
struct PgValue<'a>(Value<'a>);

/// Only the kind of value: the client logs parameters at debug, and they
/// hold message texts and token hashes.
impl std::fmt::Debug for PgValue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Value::Null => "NULL",
            Value::Int(_) => "<integer>",
            Value::Real(_) => "<real>",
            Value::Text(_) => "<text>",
            Value::Blob(_) => "<bytes>",
        })
    }
}

impl ToSql for PgValue<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let encode_error = || -> Box<dyn std::error::Error + Sync + Send> {
            format!("cannot send {self:?} as PostgreSQL type {ty}").into()
        };
        match self.0 {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
                Type::BOOL => (i != 0).to_sql(ty, out),
                Type::FLOAT8 => (i as f64).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => i.to_string().as_str().to_sql(ty, out),
                _ => Err(encode_error()),
            },
            Value::Real(r) => match *ty {
                Type::FLOAT8 => r.to_sql(ty, out),
                Type::FLOAT4 => (r as f32).to_sql(ty, out),
                _ => Err(encode_error()),
            },
            Value::Text(s) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    s.to_sql(&Type::TEXT, out)
                }
                Type::BYTEA => s.as_bytes().to_sql(ty, out),
                _ => Err(encode_error()),
            },
            Value::Blob(b) => match *ty {
                Type::BYTEA => b.to_sql(ty, out),
                _ => Err(encode_error()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// A column of a PostgreSQL row, read as a [`Value`].
struct PgColumn<'a>(Value<'a>);

impl<'a> FromSql<'a> for PgColumn<'a> {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let v = match *ty {
            Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => Value::Int(i16::from_sql(ty, raw)?.into()),
            Type::BOOL => Value::Int(bool::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Value::Real(f32::from_sql(ty, raw)?.into()),
            Type::BYTEA => Value::Blob(<&[u8]>::from_sql(ty, raw)?),
            _ => Value::Text(<&str>::from_sql(&Type::TEXT, raw)?),
        };
        Ok(PgColumn(v))
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(PgColumn(Value::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A column's position in a row (0-based); only `usize`, so that a literal
/// `r.get(0)` needs no suffix.
pub trait ColumnIndex {
    fn index(self) -> usize;
}

impl ColumnIndex for usize {
    fn index(self) -> usize {
        self
    }
}

/// A result row of either engine.
pub enum Row<'a> {
    Sqlite(&'a rusqlite::Row<'a>),
    Pg(&'a postgres::Row),
}

impl Row<'_> {
    /// Column `idx` (0-based) as `T`.
    pub fn get<I: ColumnIndex, T: FromValue>(&self, idx: I) -> Result<T> {
        let idx = idx.index();
        match self {
            Row::Sqlite(r) => {
                use rusqlite::types::ValueRef;
                let v = match r.get_ref(idx)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(i) => Value::Int(i),
                    ValueRef::Real(f) => Value::Real(f),
                    ValueRef::Text(t) => Value::Text(
                        std::str::from_utf8(t)
                            .map_err(|e| Error::Decode(format!("column {idx}: {e}")))?,
                    ),
                    ValueRef::Blob(b) => Value::Blob(b),
                };
                T::from_value(v)
            }
            Row::Pg(r) => {
                let PgColumn(v) = r.try_get::<_, PgColumn<'_>>(idx)?;
                T::from_value(v)
            }
        }
    }
}

/// Which engine a [`Conn`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// One connection: the SQLite file's, or a PostgreSQL server's.
pub enum Conn {
    Sqlite(rusqlite::Connection),
    Pg(Box<PgConn>),
}

pub struct PgConn {
    client: RefCell<postgres::Client>,
    /// Statements prepared on this connection, by their `?N` SQL.
    statements: RefCell<HashMap<String, postgres::Statement>>,
}

impl PgConn {
    pub fn connect(url: &str) -> Result<PgConn> {
        let target = super::pg_url::parse(url).map_err(Error::Config)?;
        let mut client = super::pg_url::connect(&target).map_err(|e| match e {
            super::pg_url::ConnectError::Pg(e) => Error::Pg(e),
            super::pg_url::ConnectError::Tls(m) => Error::Config(m),
        })?;
        // A node that stops in the middle of a transaction (frozen, paused,
        // cut off) holds the writers' lock and row locks until the server
        // ends its session: at most this long, so the other nodes' writes
        // and lease take-overs go on. whatan's own transactions never wait
        // between statements.
        client.batch_execute(&format!(
            "SET idle_in_transaction_session_timeout = {}",
            IDLE_IN_TRANSACTION_TIMEOUT.as_millis()
        ))?;
        Ok(PgConn {
            client: RefCell::new(client),
            statements: RefCell::new(HashMap::new()),
        })
    }

    fn prepare(&self, sql: &str) -> Result<postgres::Statement> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let stmt = self.client.borrow_mut().prepare(&to_postgres(sql))?;
        let mut cache = self.statements.borrow_mut();
        if cache.len() >= 256 {
            cache.clear();
        }
        cache.insert(sql.to_string(), stmt.clone());
        Ok(stmt)
    }

    fn query(
        &self,
        stmt: &postgres::Statement,
        values: &[&dyn ToParam],
    ) -> Result<Vec<postgres::Row>> {
        Ok(pg_params(values, |p| {
            self.client.borrow_mut().query(stmt, p)
        })?)
    }

    fn execute(&self, stmt: &postgres::Statement, values: &[&dyn ToParam]) -> Result<u64> {
        Ok(pg_params(values, |p| {
            self.client.borrow_mut().execute(stmt, p)
        })?)
    }
}

/// `values` as the client binds them (see [`PgValue`]).
fn pg_params<R>(values: &[&dyn ToParam], f: impl FnOnce(&[&(dyn ToSql + Sync)]) -> R) -> R {
    let owned: Vec<PgValue<'_>> = values.iter().map(|v| PgValue(v.to_value())).collect();
    let refs: Vec<&(dyn ToSql + Sync)> = owned.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
    f(&refs)
}

/// The store's SQL as PostgreSQL takes it: `?N` parameters become `$N`
/// (outside quoted strings and names), and SQLite's planner hint `INDEXED
/// BY index` is dropped (PostgreSQL plans with the same partial indexes on
/// its own).
pub fn to_postgres(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if quote.is_none() && (c == 'I' || c == 'i') {
            let rest: String = std::iter::once(c).chain(chars.clone().take(10)).collect();
            if rest.eq_ignore_ascii_case("INDEXED BY ") {
                // Skip the keyword pair and the index name.
                for _ in 0..10 {
                    chars.next();
                }
                while chars
                    .peek()
                    .is_some_and(|d| d.is_ascii_alphanumeric() || *d == '_')
                {
                    chars.next();
                }
                continue;
            }
        }
        match quote {
            Some(q) => {
                out.push(c);
                if c == q {
                    quote = None;
                }
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '?' && chars.peek().is_some_and(|d| d.is_ascii_digit()) => out.push('$'),
            None => out.push(c),
        }
    }
    out
}

impl Conn {
    pub fn engine(&self) -> Engine {
        match self {
            Conn::Sqlite(_) => Engine::Sqlite,
            Conn::Pg(_) => Engine::Postgres,
        }
    }

    /// The SQLite connection, for what only SQLite has (pragmas, backup).
    pub fn sqlite(&self) -> Option<&rusqlite::Connection> {
        match self {
            Conn::Sqlite(c) => Some(c),
            Conn::Pg(_) => None,
        }
    }

    /// A prepared statement, cached per connection.
    pub fn prepare_cached(&self, sql: &str) -> Result<Stmt<'_>> {
        Ok(match self {
            Conn::Sqlite(c) => Stmt::Sqlite(c.prepare_cached(sql)?),
            Conn::Pg(c) => Stmt::Pg {
                conn: c,
                stmt: c.prepare(sql)?,
            },
        })
    }

    /// The same as [`Conn::prepare_cached`]: every statement is cached.
    pub fn prepare(&self, sql: &str) -> Result<Stmt<'_>> {
        self.prepare_cached(sql)
    }

    pub fn execute<P: Params>(&self, sql: &str, params: P) -> Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    pub fn query_row<T, P: Params, F: FnOnce(&Row<'_>) -> Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }

    /// Statements without parameters, separated by `;` (migrations, fixtures).
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match self {
            Conn::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Conn::Pg(c) => Ok(c.client.borrow_mut().batch_execute(sql)?),
        }
    }

    /// Whether the connection can no longer be used (PostgreSQL's socket
    /// closed); the store thread that owns it opens a new one.
    pub fn is_broken(&self) -> bool {
        match self {
            Conn::Sqlite(_) => false,
            Conn::Pg(c) => c.client.borrow().is_closed(),
        }
    }

    /// Whether no transaction is open. SQLite ends one by itself on some
    /// errors (disk full, I/O); PostgreSQL only when the connection is lost.
    pub fn is_autocommit(&self) -> bool {
        match self {
            Conn::Sqlite(c) => c.is_autocommit(),
            Conn::Pg(c) => c.client.borrow().is_closed(),
        }
    }
}

/// A prepared statement of either engine.
pub enum Stmt<'c> {
    Sqlite(rusqlite::CachedStatement<'c>),
    Pg {
        conn: &'c PgConn,
        stmt: postgres::Statement,
    },
}

impl Stmt<'_> {
    /// Runs the statement; the number of rows it changed.
    pub fn execute<P: Params>(&mut self, params: P) -> Result<usize> {
        match self {
            Stmt::Sqlite(s) => params.with_values(|v| Ok(s.execute(sqlite_params(v))?)),
            Stmt::Pg { conn, stmt } => params
                .with_values(|v| conn.execute(stmt, v))
                .map(|n| n as usize),
        }
    }

    /// The first row through `f`, or [`Error::NoRows`].
    pub fn query_row<T, P: Params, F: FnOnce(&Row<'_>) -> Result<T>>(
        &mut self,
        params: P,
        f: F,
    ) -> Result<T> {
        match self {
            Stmt::Sqlite(s) => params.with_values(|v| {
                let mut rows = s.query(sqlite_params(v))?;
                match rows.next()? {
                    Some(r) => f(&Row::Sqlite(r)),
                    None => Err(Error::NoRows),
                }
            }),
            Stmt::Pg { conn, stmt } => {
                let rows = params.with_values(|v| conn.query(stmt, v))?;
                match rows.first() {
                    Some(r) => f(&Row::Pg(r)),
                    None => Err(Error::NoRows),
                }
            }
        }
    }

    /// Every row through `f`.
    pub fn query_map<T, P: Params, F: FnMut(&Row<'_>) -> Result<T>>(
        &mut self,
        params: P,
        mut f: F,
    ) -> Result<std::vec::IntoIter<Result<T>>> {
        let mut out = Vec::new();
        match self {
            Stmt::Sqlite(s) => params.with_values(|v| -> Result<()> {
                let mut rows = s.query(sqlite_params(v))?;
                while let Some(r) = rows.next()? {
                    out.push(f(&Row::Sqlite(r)));
                }
                Ok(())
            })?,
            Stmt::Pg { conn, stmt } => {
                for r in params.with_values(|v| conn.query(stmt, v))? {
                    out.push(f(&Row::Pg(&r)));
                }
            }
        }
        Ok(out.into_iter())
    }

    /// Whether the query returns a row.
    pub fn exists<P: Params>(&mut self, params: P) -> Result<bool> {
        self.query_row(params, |_| Ok(()))
            .optional()
            .map(|r| r.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_parameters_become_dollar_parameters_outside_quotes() {
        assert_eq!(
            to_postgres("SELECT a FROM t WHERE b = ?1 AND c = '?2' AND \"d?3\" = ?10"),
            "SELECT a FROM t WHERE b = $1 AND c = '?2' AND \"d?3\" = $10"
        );
    }

    #[test]
    fn sqlite_index_hints_are_dropped_for_postgres() {
        assert_eq!(
            to_postgres("SELECT a FROM t INDEXED BY t_by_b\n WHERE b = ?1 AND c = 'INDEXED BY x'"),
            "SELECT a FROM t \n WHERE b = $1 AND c = 'INDEXED BY x'"
        );
    }

    #[test]
    fn values_round_trip_through_sqlite() {
        let conn = Conn::Sqlite(rusqlite::Connection::open_in_memory().unwrap());
        let (i, s, b, n): (i64, String, Vec<u8>, Option<String>) = conn
            .query_row(
                "SELECT ?1, ?2, ?3, ?4",
                params![7i64, "x", vec![1u8, 2], None::<String>],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!((i, s.as_str(), b, n), (7, "x", vec![1, 2], None));
        let missing = conn
            .query_row("SELECT 1 WHERE 1 = 0", (), |r| r.get::<_, i64>(0))
            .optional()
            .unwrap();
        assert_eq!(missing, None);
        let wrong = conn.query_row("SELECT 'a'", (), |r| r.get::<_, i64>(0));
        assert!(matches!(wrong, Err(Error::Decode(_))), "{wrong:?}");
    }
}
