//! What a Postgres error means for the work that met it, and text Postgres always accepts.
//!
//! A store error is either the database being away or busy, which is nobody's fault and passes,
//! or the database refusing one item's data, which no wait cures: treated as an outage, such an
//! item would stall its delivery forever and fail every group commit it joins. The SQLSTATE says
//! which is which (<https://www.postgresql.org/docs/current/errcodes-appendix.html>).

use std::borrow::Cow;

/// What a failed store operation means for the item that asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The database is unreachable, restarting, overloaded or lost a race (no server error at
    /// all, class 08, 57P01-57P03, 40, 53, 58, ...): the same statement succeeds later, so the
    /// caller waits and counts no attempt.
    Transient,
    /// The database refused this item's data (class 22: text with NUL, a number out of range;
    /// class 23 except the primary-key conflicts pokeq's upserts expect; class 54: a value over
    /// a size limit): it fails the same way every time, so the item fails, and only that item.
    Permanent,
    /// Neither the item's fault nor an outage: the schema, a permission or pokeq's own statement
    /// is wrong (class 42 undefined table or column, 42501 permission denied, 28 authentication,
    /// XX internal error, and any code not listed here). Failing items would blame them for
    /// what an operator must fix, and a fixed database (a migration, a grant) lets them through
    /// unchanged, so callers keep waiting as for an outage, but log at error level.
    Operator,
}

impl ErrorClass {
    /// The class of a server error with SQLSTATE `code`, raised on `constraint` if any.
    pub fn of_code(code: &str, constraint: Option<&str>) -> Self {
        match code {
            // A unique violation on a primary key is the conflict every upsert of pokeq
            // expects: ON CONFLICT absorbs it, and should two writers still race past it, the
            // retry finds the winner's row. Any other unique index was added by someone else,
            // and the row breaks it.
            "23505" if constraint.is_some_and(|name| name.ends_with("_pkey")) => Self::Transient,
            // Operator intervention: canceled statement (statement_timeout, pg_cancel_backend),
            // admin shutdown, crash shutdown, cannot connect now (starting up, recovering).
            "57014" | "57P01" | "57P02" | "57P03" => Self::Transient,
            // Locks not available, an object in use (a concurrent DDL), a read-only transaction
            // (connected to a standby during a failover), idle-in-transaction timeout, snapshot
            // too old: all clear by themselves.
            "55P03" | "55006" | "25006" | "25P03" | "72000" => Self::Transient,
            _ => match code.get(..2) {
                // Connection exception, transaction rollback (serialization failure, deadlock),
                // insufficient resources (disk full, out of memory, too many connections),
                // system error (I/O).
                Some("08" | "40" | "53" | "58") => Self::Transient,
                // Data exception, integrity constraint violation, program limit exceeded.
                Some("22" | "23" | "54") => Self::Permanent,
                _ => Self::Operator,
            },
        }
    }

    /// The class of a tokio-postgres error: its server code, or [`ErrorClass::Transient`] when
    /// the server sent none (the connection broke, timed out or was closed). Client-side
    /// encoding errors would also land there, but pokeq's parameter types always encode.
    pub fn of(error: &tokio_postgres::Error) -> Self {
        match error.as_db_error() {
            Some(db) => Self::of_code(db.code().code(), db.constraint()),
            None => Self::Transient,
        }
    }

    pub fn is_permanent(self) -> bool {
        self == Self::Permanent
    }
}

/// `text` as Postgres will store it in a `text` column: NUL, the one character its text type
/// refuses, written out as `\u0000`. For error texts (`last_error`, run errors, dead-letter
/// reasons), which quote the refused data often enough and must never be refused themselves.
pub fn storable(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\\u0000"))
    } else {
        Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorClass::{Operator, Permanent, Transient};
    use super::*;

    #[test]
    fn outages_and_races_are_transient() {
        for code in [
            "08000", "08003", "08006", "08001", "57P01", "57P02", "57P03", "57014", "40001",
            "40P01", "53000", "53100", "53200", "53300", "58000", "58030", "55P03", "25006",
        ] {
            assert_eq!(ErrorClass::of_code(code, None), Transient, "{code}");
        }
        assert_eq!(
            ErrorClass::of_code("23505", Some("ingest_items_pkey")),
            Transient,
            "the conflict an upsert expects"
        );
    }

    #[test]
    fn refused_data_is_permanent() {
        for code in [
            "22P05", // unsupported Unicode escape (\u0000 in jsonb)
            "22021", // invalid byte sequence (NUL in text)
            "22003", // numeric value out of range
            "22001", // string data right truncation
            "23502", // not null violation
            "23503", // foreign key violation
            "23514", // check violation
            "23P01", // exclusion violation
            "54000", // program limit exceeded (array or index row too large)
        ] {
            assert_eq!(ErrorClass::of_code(code, None), Permanent, "{code}");
            assert!(ErrorClass::of_code(code, None).is_permanent());
        }
        assert_eq!(
            ErrorClass::of_code("23505", Some("pokemon_name_key")),
            Permanent,
            "a unique index someone added is the row's conflict"
        );
        assert_eq!(ErrorClass::of_code("23505", None), Permanent);
    }

    #[test]
    fn schema_permission_and_internal_errors_need_an_operator() {
        for code in [
            "42P01", "42703", "42501", "42601", "28P01", "28000", "3D000", "57P04", "XX000",
            "XX001", "0A000", "21000", "P0001", "F0000", "",
        ] {
            assert_eq!(ErrorClass::of_code(code, None), Operator, "{code:?}");
            assert!(!ErrorClass::of_code(code, None).is_permanent());
        }
    }

    #[test]
    fn store_errors_keep_their_class() {
        use crate::store::StoreError;
        let batch = StoreError::Batch {
            message: "group commit failed".into(),
            class: Permanent,
        };
        assert!(batch.is_permanent());
        let timeout = StoreError::Pool(deadpool_postgres::PoolError::Timeout(
            deadpool_postgres::TimeoutType::Wait,
        ));
        assert_eq!(timeout.class(), Transient);
        assert_eq!(StoreError::Tls("no roots".into()).class(), Operator);
    }

    #[test]
    fn storable_text_has_no_nul() {
        assert!(matches!(storable("plain"), Cow::Borrowed("plain")));
        assert_eq!(storable("a\0b\0"), "a\\u0000b\\u0000");
    }
}
