//! The typed statuses in and out of both backends: each is stored as its
//! word (the stored form every schema version has used, so no migration),
//! and a word that names no variant is a conversion error when read, never
//! a default. PostgreSQL takes them as `as_str()` parameters.

use crate::status::{RunMode, RunStatus, Status};
use postgres::types::{FromSql as PgFromSql, Type};
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

macro_rules! stored_as_word {
    ($($ty:ty),*) => {$(
        impl ToSql for $ty {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $ty {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let word = value.as_str()?;
                word.parse::<$ty>().map_err(|e| FromSqlError::Other(Box::new(e)))
            }
        }

        impl<'a> PgFromSql<'a> for $ty {
            fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
                let word = <&str as PgFromSql>::from_sql(ty, raw)?;
                Ok(word.parse::<$ty>()?)
            }

            fn accepts(ty: &Type) -> bool {
                <&str as PgFromSql>::accepts(ty)
            }
        }
    )*};
}

stored_as_word!(Status, RunStatus, RunMode);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_word_is_an_error_not_a_default() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let ok: Status = conn.query_row("SELECT 'changed'", [], |r| r.get(0)).unwrap();
        assert_eq!(ok, Status::Changed);
        let e = conn
            .query_row("SELECT 'done'", [], |r| r.get::<_, RunStatus>(0))
            .unwrap_err();
        assert!(e.to_string().contains("unknown run status `done`"), "{e}");
        let back: String = conn.query_row("SELECT ?1", [RunMode::Verify], |r| r.get(0)).unwrap();
        assert_eq!(back, "verify");
    }
}
