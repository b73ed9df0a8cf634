//! Migrations embedded in the binary, one folder per backend. Append new files only: sqlx
//! refuses to start against a database whose applied migration changed.

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};

pub(super) fn migrator(files: &'static [(i64, &'static str, &'static str)]) -> Migrator {
    let migrations = files
        .iter()
        .map(|&(version, description, sql)| {
            Migration::new(
                version,
                Cow::Borrowed(description),
                MigrationType::Simple,
                Cow::Borrowed(sql),
                false,
            )
        })
        .collect::<Vec<_>>();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}
