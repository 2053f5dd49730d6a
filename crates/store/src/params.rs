//! Bound parameters for statements written as text: numbered placeholders
//! (`$n` on PostgreSQL, `?n` on SQLite, so one value may appear twice), the
//! values kept in order.

use sea_orm::{Statement, Value};

use crate::Backend;

/// A statement's values, and the placeholder of each.
pub(crate) struct Params {
    backend: Backend,
    pub(crate) values: Vec<Value>,
}

impl Params {
    /// No values yet.
    pub(crate) const fn new(backend: Backend) -> Self {
        Self {
            backend,
            values: Vec::new(),
        }
    }

    /// Binds `value`, answering its placeholder.
    pub(crate) fn push(&mut self, value: impl Into<Value>) -> String {
        self.values.push(value.into());
        match self.backend {
            Backend::Postgres => format!("${}", self.values.len()),
            Backend::Sqlite => format!("?{}", self.values.len()),
        }
    }

    /// Placeholders for each of `values`, comma-separated.
    pub(crate) fn list<V: Into<Value> + Copy>(&mut self, values: &[V]) -> String {
        values
            .iter()
            .map(|v| self.push(*v))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `sql` with these values.
    pub(crate) fn statement(self, sql: impl Into<String>) -> Statement {
        Statement::from_sql_and_values(self.backend.db(), sql, self.values)
    }
}
